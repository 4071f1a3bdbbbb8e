//! CSV the console hands out (group reports, bulk results), written with the `csv`
//! crate. Cells that a spreadsheet would run as a formula (starting with `=`, `+`, `-`,
//! `@`, tab or CR) get a leading `'`, since some of them come from attacker-controlled
//! input (uploaded rows, reasons).

use crate::web::body::{Body, full, with_type};
use http::{HeaderValue, Response, StatusCode, header};

/// A cell made safe to open in a spreadsheet.
pub fn cell(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    }
}

/// The CSV text of `rows` under `headers`.
pub fn write(headers: &[&str], rows: &[Vec<String>]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(headers)?;
    for r in rows {
        w.write_record(r.iter().map(|c| cell(c)))?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// A CSV download named `filename` (letters, digits, `-`, `_`, `.` only).
pub fn download(filename: &str, bytes: Vec<u8>) -> Response<Body> {
    let mut r = with_type(StatusCode::OK, "text/csv; charset=utf-8", full(bytes));
    let safe: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    let h = r.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn formulas_are_defused_and_quoting_is_csv() {
        let out = super::write(
            &["user", "note"],
            &[
                vec!["=HYPERLINK(\"x\")".into(), "a, b".into()],
                vec!["ok@x.com".into(), "-1".into()],
            ],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "user,note\n\"'=HYPERLINK(\"\"x\"\")\",\"a, b\"\nok@x.com,'-1\n"
        );
    }
}
