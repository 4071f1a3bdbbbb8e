//! The rows of a bulk revocation: the parser is shared with the admin console
//! ([`crate::console::rows`]); here its reason becomes the API's 400.

use super::ControlError;

/// The user of each row (empty when the row has none) and a reason the body gave.
pub fn rows(ctype: &str, bytes: &[u8]) -> Result<(Vec<String>, Option<String>), ControlError> {
    crate::console::rows::rows(ctype, bytes).map_err(ControlError::BadRequest)
}

#[cfg(test)]
mod tests {
    #[test]
    fn bad_rows_are_a_bad_request() {
        let e = super::rows("text/csv", b"name\nx\n").unwrap_err();
        assert!(matches!(e, super::ControlError::BadRequest(m) if m.contains("`user` column")));
        assert_eq!(
            super::rows("text/csv", b"user\na@x.com\n").unwrap().0,
            vec!["a@x.com"]
        );
    }
}
