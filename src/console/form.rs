//! Posted forms: `application/x-www-form-urlencoded`, and `multipart/form-data` for the
//! CSV upload (the one form with a file). Multipart is read from a body already held in
//! memory (bounded by the caller): parts split on the boundary, each part's name (and
//! file name) from its Content-Disposition, its content kept as text. Fields may repeat
//! (several targets).

use memchr::memmem;

/// The fields of one posted form, in order.
#[derive(Debug, Default)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    /// The first value of `name`, or "".
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// Why a body is not a form this console reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("the form is not valid multipart/form-data: {0}")]
    Multipart(&'static str),
    #[error("a form field is not UTF-8 text")]
    NotText,
}

/// Parses `body` by its Content-Type.
pub fn parse(ctype: &str, body: &[u8]) -> Result<Fields, FormError> {
    let lower = ctype.to_ascii_lowercase();
    if lower.starts_with("multipart/form-data") {
        let boundary = boundary(ctype).ok_or(FormError::Multipart("no boundary"))?;
        return multipart(&boundary, body);
    }
    Ok(Fields(
        form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    ))
}

/// The `boundary` parameter of a multipart Content-Type.
fn boundary(ctype: &str) -> Option<String> {
    ctype.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let b = v.trim().trim_matches('"');
        (!b.is_empty() && b.len() <= 70).then(|| b.to_string())
    })
}

fn multipart(boundary: &str, body: &[u8]) -> Result<Fields, FormError> {
    let delim = format!("--{boundary}");
    let next_delim = format!("\r\n--{boundary}");
    let first = memmem::find(body, delim.as_bytes()).ok_or(FormError::Multipart("no parts"))?;
    let mut rest = &body[first + delim.len()..];
    let mut out = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Ok(Fields(out));
        }
        rest = rest.strip_prefix(b"\r\n").ok_or(FormError::Multipart(
            "a boundary is not followed by a line end",
        ))?;
        let head_end =
            memmem::find(rest, b"\r\n\r\n").ok_or(FormError::Multipart("a part has no head"))?;
        let head = std::str::from_utf8(&rest[..head_end]).map_err(|_| FormError::NotText)?;
        let content = &rest[head_end + 4..];
        let end = memmem::find(content, next_delim.as_bytes())
            .ok_or(FormError::Multipart("the last part is not closed"))?;
        if let Some(name) = part_name(head) {
            let value = std::str::from_utf8(&content[..end]).map_err(|_| FormError::NotText)?;
            out.push((name, value.to_string()));
        }
        rest = &content[end + next_delim.len()..];
    }
}

/// The `name` of a part, from its Content-Disposition header.
fn part_name(head: &str) -> Option<String> {
    let disposition = head.split("\r\n").find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-disposition")
            .then_some(v)
    })?;
    disposition.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        (k.trim() == "name").then(|| v.trim().trim_matches('"').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = "multipart/form-data; boundary=----WebKitFormBoundaryX1";

    fn body() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"------WebKitFormBoundaryX1\r\n");
        b.extend_from_slice(b"Content-Disposition: form-data; name=\"csrf\"\r\n\r\ntok\r\n");
        b.extend_from_slice(b"------WebKitFormBoundaryX1\r\n");
        b.extend_from_slice(
            b"Content-Disposition: form-data; name=\"file\"; filename=\"leavers.csv\"\r\n",
        );
        b.extend_from_slice(b"Content-Type: text/csv\r\n\r\n");
        b.extend_from_slice(b"user\r\na@x.com\r\n\"b, c\"@x.com\r\n");
        b.extend_from_slice(b"\r\n------WebKitFormBoundaryX1\r\n");
        b.extend_from_slice(b"Content-Disposition: form-data; name=\"reason\"\r\n\r\n\r\n");
        b.extend_from_slice(b"------WebKitFormBoundaryX1--\r\n");
        b
    }

    #[test]
    fn reads_multipart_with_a_file() {
        let f = parse(CT, &body()).unwrap();
        assert_eq!(f.get("csrf"), "tok");
        assert_eq!(f.get("file"), "user\r\na@x.com\r\n\"b, c\"@x.com\r\n");
        assert_eq!(f.get("reason"), "");
        assert_eq!(f.get("missing"), "");
    }

    #[test]
    fn refuses_broken_multipart() {
        let b = body();
        assert!(parse(CT, &b[..b.len() - 40]).is_err(), "unclosed part");
        assert!(parse("multipart/form-data", &b).is_err(), "no boundary");
        assert!(parse(CT, b"nothing here").is_err());
        let mut bad = body();
        bad.splice(110..111, [0xff]);
        assert!(parse(CT, &bad).is_err());
    }

    #[test]
    fn reads_urlencoded_with_repeats() {
        let f = parse(
            "application/x-www-form-urlencoded",
            b"target=a%40x.com&target=b&reason=x+y",
        )
        .unwrap();
        assert_eq!(f.all("target"), vec!["a@x.com", "b"]);
        assert_eq!(f.get("reason"), "x y");
    }
}
