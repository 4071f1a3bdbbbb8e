//! The rows of a bulk revocation, shared by the control API (`POST /v1/revocations/bulk`)
//! and the console's Bulk page: a CSV with a `user` column (read with the `csv` crate:
//! quoting, embedded commas and CRLF as RFC 4180 has them), or JSON (a list of emails, a
//! list of `{"user": ...}` objects, or `{"users": [...], "reason": ...}`). Errors are the
//! reason, for a 400 or the page.

/// The user of each row (empty when the row has none) and a reason the body gave.
pub fn rows(ctype: &str, bytes: &[u8]) -> Result<(Vec<String>, Option<String>), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "body is not UTF-8".to_string())?;
    if ctype.contains("json") || text.trim_start().starts_with(['[', '{']) {
        return json_rows(text);
    }
    csv_rows(text).map(|r| (r, None))
}

fn json_rows(text: &str) -> Result<(Vec<String>, Option<String>), String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let (list, reason) = match &v {
        serde_json::Value::Array(a) => (a.clone(), None),
        serde_json::Value::Object(o) => (
            o.get("users")
                .and_then(|u| u.as_array())
                .cloned()
                .ok_or_else(|| "expected {\"users\": [...]}".to_string())?,
            o.get("reason").and_then(|r| r.as_str()).map(str::to_string),
        ),
        _ => return Err("expected a JSON list".into()),
    };
    let rows = list
        .iter()
        .map(|x| match x {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(o) => o
                .get("user")
                .and_then(|u| u.as_str())
                .unwrap_or("")
                .to_string(),
            _ => String::new(),
        })
        .collect();
    Ok((rows, reason))
}

fn csv_rows(text: &str) -> Result<Vec<String>, String> {
    let mut r = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let bad = |e: csv::Error| format!("invalid CSV: {e}");
    let headers = r.headers().map_err(bad)?.clone();
    if headers.is_empty() || headers.iter().all(str::is_empty) {
        return Err("empty CSV".into());
    }
    let idx = headers
        .iter()
        .position(|c| {
            c.trim_start_matches('\u{feff}')
                .eq_ignore_ascii_case("user")
        })
        .ok_or_else(|| "the CSV has no `user` column".to_string())?;
    let mut rows = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(bad)?;
        if rec.iter().all(str::is_empty) {
            continue;
        }
        rows.push(rec.get(idx).unwrap_or("").to_string());
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_json_rows() {
        let (r, _) = rows(
            "text/csv",
            b"name,user\n\"Doe, J\",j@x.com\r\nA,a@x.com\n\n",
        )
        .unwrap();
        assert_eq!(r, vec!["j@x.com", "a@x.com"]);
        let (r, reason) = rows(
            "application/json",
            br#"{"users":["a@x.com",{"user":"b@x.com"}],"reason":"hr"}"#,
        )
        .unwrap();
        assert_eq!(r, vec!["a@x.com", "b@x.com"]);
        assert_eq!(reason.as_deref(), Some("hr"));
        // Spreadsheets often start a UTF-8 file with a byte-order mark.
        let (r, _) = rows("text/csv", "\u{feff}user\nz@x.com\n".as_bytes()).unwrap();
        assert_eq!(r, vec!["z@x.com"]);
        assert!(rows("text/csv", b"name\nx\n").is_err());
        assert!(rows("text/csv", b"").is_err());
        assert!(rows("text/csv", b"\xff\xfe").is_err());
    }
}
