//! Entry points for the fuzz targets in `fuzz/` (and the property tests) into parsers
//! that are crate-private. Thin wrappers only: each calls the real parser and returns
//! plain data, so the crate's internals stay private. Not part of the supported API.

use crate::origin::OriginError;
use bytes::BytesMut;

pub use crate::store::{Framing, RecordLog, StoreError, Sync as LogSync};

/// The rows of a bulk revocation body (the parser the control API and the console
/// share, `console::rows`): the user of each row and a reason the body gave, or the 400
/// reason.
pub fn bulk_rows(content_type: &str, body: &[u8]) -> Result<(Vec<String>, Option<String>), String> {
    crate::console::rows::rows(content_type, body)
}

/// How a body decoded by [`decode_body`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyEnd {
    /// The framing says the body is complete.
    Complete,
    /// The bytes ran out before the end (the origin closed early).
    NeedMore,
    /// The framing is broken: the connection is closed with this reason.
    Malformed(&'static str),
    /// Any other error (the decoder has none: a fuzz target treats this as a bug).
    Other(String),
}

/// Which framing [`decode_body`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Length(u64),
    Chunked,
}

/// Feeds `reads` (the bytes of successive reads from the origin) through the origin
/// client's body decoder (`origin/body.rs`), as its `poll_frame` does: decode what is
/// buffered until it needs more, then append the next read. Returns the body's data,
/// how it ended and how many of the bytes read it consumed.
pub fn decode_body<'a>(
    framing: BodyFraming,
    reads: impl IntoIterator<Item = &'a [u8]>,
) -> (Vec<u8>, BodyEnd, usize) {
    use crate::origin::body::{State, Step, decode};
    let mut state = match framing {
        BodyFraming::Length(0) => State::Done,
        BodyFraming::Length(n) => State::Length(n),
        BodyFraming::Chunked => State::ChunkSize,
    };
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut reads = reads.into_iter();
    let mut fed = 0;
    let end = loop {
        match decode(&mut state, &mut buf) {
            Ok(Step::Data(d)) => out.extend_from_slice(&d),
            Ok(Step::End) => break BodyEnd::Complete,
            Ok(Step::NeedMore) => match reads.next() {
                Some(r) => {
                    fed += r.len();
                    buf.extend_from_slice(r);
                }
                None => break BodyEnd::NeedMore,
            },
            Err(OriginError::Malformed(why)) => break BodyEnd::Malformed(why),
            Err(e) => break BodyEnd::Other(e.to_string()),
        }
    };
    (out, end, fed - buf.len())
}
