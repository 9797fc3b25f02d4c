//! The HTTP `Range` request header (RFC 9110 §14) for blob GETs, with the
//! one semantics both servers answer with. Only a single `bytes` range is
//! served; everything the RFC lets a server ignore is ignored (the whole
//! blob is sent with 200), and a range that cannot be satisfied is refused
//! with 416:
//!
//! - another unit, a malformed value or several ranges (no
//!   `multipart/byteranges`): ignored, the whole blob;
//! - `first-last`, with `last` past the end clamped to the end;
//! - `first-`: from `first` to the end;
//! - `-suffix`: the last `suffix` bytes (the whole blob when it is
//!   shorter);
//! - `first` at or past the end, `-0`, any range of an empty blob, and
//!   `last < first` (invalid; refused as Go's `net/http` and nginx do, which
//!   clients expect): unsatisfiable.
//!
//! Pure: no I/O, no HTTP types.

use std::ops::Range;

/// A `Range` header that no byte of the blob satisfies: answer 416 with
/// `Content-Range: bytes */<len>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsatisfiable {
    /// The blob's length, for `Content-Range: bytes */<len>`.
    pub len: u64,
}

impl std::fmt::Display for Unsatisfiable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the range is outside the blob of {} bytes", self.len)
    }
}

impl std::error::Error for Unsatisfiable {}

/// The bytes of a `len`-byte blob that `header` asks for: `None` for the
/// whole blob (no header, or one to ignore), a non-empty range within
/// `0..len`, or [`Unsatisfiable`].
pub fn parse_range(header: Option<&str>, len: u64) -> Result<Option<Range<u64>>, Unsatisfiable> {
    let Some(value) = header else {
        return Ok(None);
    };
    let value = value.trim();
    // The unit is case-insensitive (RFC 9110 §14.1).
    let Some(spec) = value
        .split_once('=')
        .filter(|(unit, _)| unit.trim().eq_ignore_ascii_case("bytes"))
        .map(|(_, spec)| spec.trim())
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let unsatisfiable = Unsatisfiable { len };
    let range = match (first, last) {
        ("", suffix) if digits(suffix) => {
            // A suffix longer than u64 is longer than any blob.
            let n = suffix.parse::<u64>().unwrap_or(u64::MAX);
            if n == 0 {
                return Err(unsatisfiable);
            }
            len.saturating_sub(n)..len
        }
        (first, "") if digits(first) => first.parse::<u64>().unwrap_or(u64::MAX)..len,
        (first, last) if digits(first) && digits(last) => {
            let first = first.parse::<u64>().unwrap_or(u64::MAX);
            let last = last.parse::<u64>().unwrap_or(u64::MAX);
            if last < first {
                return Err(unsatisfiable);
            }
            first..last.saturating_add(1).min(len)
        }
        _ => return Ok(None),
    };
    if range.start >= len || range.is_empty() {
        return Err(unsatisfiable);
    }
    Ok(Some(range))
}

/// The `Content-Range` value of a 206 answer with `range` of `len` bytes.
pub fn content_range(range: &Range<u64>, len: u64) -> String {
    format!(
        "bytes {}-{}/{len}",
        range.start,
        range.end.saturating_sub(1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        type Want = Result<Option<Range<u64>>, ()>;
        let cases: &[(Option<&str>, u64, Want)] = &[
            (None, 100, Ok(None)),
            (Some("bytes=0-9"), 100, Ok(Some(0..10))),
            (Some("bytes=5-"), 100, Ok(Some(5..100))),
            (Some("bytes=99-"), 100, Ok(Some(99..100))),
            (Some("bytes=0-0"), 100, Ok(Some(0..1))),
            // Suffix ranges: the last n bytes, the whole blob when shorter.
            (Some("bytes=-10"), 100, Ok(Some(90..100))),
            (Some("bytes=-100"), 100, Ok(Some(0..100))),
            (Some("bytes=-1000"), 100, Ok(Some(0..100))),
            (
                Some("bytes=-99999999999999999999999"),
                100,
                Ok(Some(0..100)),
            ),
            (Some("bytes=-0"), 100, Err(())),
            // Past the end: clamped, or unsatisfiable if it starts there.
            (Some("bytes=90-1000"), 100, Ok(Some(90..100))),
            (
                Some("bytes=0-99999999999999999999999"),
                100,
                Ok(Some(0..100)),
            ),
            (Some("bytes=100-"), 100, Err(())),
            (Some("bytes=200-300"), 100, Err(())),
            (Some("bytes=99999999999999999999999-"), 100, Err(())),
            (Some("bytes=9-0"), 100, Err(())),
            // An empty blob satisfies no range.
            (Some("bytes=0-"), 0, Err(())),
            (Some("bytes=-5"), 0, Err(())),
            (None, 0, Ok(None)),
            // Several ranges: not served as multipart, the whole blob.
            (Some("bytes=0-1,5-6"), 100, Ok(None)),
            (Some("bytes=0-1, 200-300"), 100, Ok(None)),
            // Units and syntax: case-insensitive unit, OWS around the value.
            (Some("Bytes=0-9"), 100, Ok(Some(0..10))),
            (Some("  bytes=0-9 "), 100, Ok(Some(0..10))),
            (Some("items=0-1"), 100, Ok(None)),
            (Some("bytes=x-y"), 100, Ok(None)),
            (Some("bytes=+1-2"), 100, Ok(None)),
            (Some("bytes=1"), 100, Ok(None)),
            (Some("bytes=-"), 100, Ok(None)),
            (Some("bytes="), 100, Ok(None)),
            (Some("bytes"), 100, Ok(None)),
            (Some(""), 100, Ok(None)),
        ];
        for (h, len, want) in cases {
            let got = parse_range(*h, *len).map_err(|e| assert_eq!(e.len, *len));
            assert_eq!(&got, want, "{h:?} of {len}");
        }
    }

    #[test]
    fn content_ranges() {
        assert_eq!(content_range(&(2..6), 10), "bytes 2-5/10");
        assert_eq!(content_range(&(0..1), 1), "bytes 0-0/1");
    }
}
