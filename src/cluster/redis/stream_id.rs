//! Redis Stream entry ids (`<milliseconds>-<sequence>`): ordered, parsed and printed.
//! The tail resumes from one, a snapshot returns one, and lag is their time difference.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    /// Redis server time in milliseconds when the entry was added.
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    /// Before every entry: a tail from here delivers the whole stream.
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a stream id: {0:?}")]
pub struct BadStreamId(pub String);

impl FromStr for StreamId {
    type Err = BadStreamId;
    fn from_str(s: &str) -> Result<StreamId, BadStreamId> {
        let bad = || BadStreamId(s.to_owned());
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        Ok(StreamId {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// Serialized as its text form, `"<ms>-<seq>"`.
impl serde::Serialize for StreamId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for StreamId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<StreamId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prints_and_orders() {
        let a: StreamId = "1700000000000-3".parse().unwrap();
        assert_eq!(
            a,
            StreamId {
                ms: 1_700_000_000_000,
                seq: 3
            }
        );
        assert_eq!(a.to_string(), "1700000000000-3");
        assert!(a < "1700000000000-10".parse().unwrap());
        assert!(a > "999-99".parse().unwrap());
        assert_eq!("5".parse::<StreamId>().unwrap(), StreamId { ms: 5, seq: 0 });
        assert!("x-1".parse::<StreamId>().is_err());
        assert!("1-".parse::<StreamId>().is_err());
    }
}
