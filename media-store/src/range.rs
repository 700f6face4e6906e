//! `Range: bytes=...` parsing and resolution (RFC 9110 section 14).
//!
//! Parsing is pure and total: any byte string either parses into a list of
//! range specs or is "not a byte range set" (the header is then ignored and
//! the whole representation is served, as RFC 9110 14.2 requires for an
//! invalid or unknown-unit Range).

/// One `range-spec` as written by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `first-last` (inclusive) or `first-` (`last` = None).
    Int { first: u64, last: Option<u64> },
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

/// A resolved byte range, `start..end` (end exclusive), never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// What to answer to a (syntactically valid) Range header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// 206 with one or more parts (ascending, non-overlapping, non-adjacent).
    Partial(Vec<ByteRange>),
    /// 416 with `Content-Range: bytes */LEN`: no range satisfiable, or
    /// more ranges than the server accepts.
    Unsatisfiable,
}

/// Parses the value of a Range header. `None` means "ignore the header"
/// (unknown unit or invalid syntax, including `last < first`).
pub fn parse(value: &[u8]) -> Option<Vec<RangeSpec>> {
    let text = std::str::from_utf8(value).ok()?;
    let (unit, set) = text.split_once('=')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    for elem in set.split(',') {
        let elem = elem.trim_matches([' ', '\t']);
        if elem.is_empty() {
            // RFC 9110 5.6.1: empty list elements are ignored.
            continue;
        }
        specs.push(parse_spec(elem)?);
    }
    (!specs.is_empty()).then_some(specs)
}

fn parse_spec(s: &str) -> Option<RangeSpec> {
    let (first, last) = s.split_once('-')?;
    if first.is_empty() {
        return Some(RangeSpec::Suffix(digits(last)?));
    }
    let first = digits(first)?;
    if last.is_empty() {
        return Some(RangeSpec::Int { first, last: None });
    }
    let last = digits(last)?;
    (last >= first).then_some(RangeSpec::Int {
        first,
        last: Some(last),
    })
}

/// 1*DIGIT. Values beyond u64 saturate (they can only mean "to the end").
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |acc, b| {
        acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// Resolves specs against a representation of `len` bytes. More than
/// `max_ranges` specs is refused outright (RFC 9110 14.2 lets a server
/// reject many-range requests: they are a denial-of-service pattern).
/// Satisfiable ranges are sorted and overlapping or adjacent ones
/// coalesced, so a response never sends the same byte twice.
pub fn resolve(specs: &[RangeSpec], len: u64, max_ranges: usize) -> Resolved {
    if specs.len() > max_ranges {
        return Resolved::Unsatisfiable;
    }
    let mut ranges: Vec<ByteRange> = specs.iter().filter_map(|s| satisfy(*s, len)).collect();
    if ranges.is_empty() {
        return Resolved::Unsatisfiable;
    }
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<ByteRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(prev) if r.start <= prev.end => prev.end = prev.end.max(r.end),
            _ => merged.push(r),
        }
    }
    Resolved::Partial(merged)
}

fn satisfy(spec: RangeSpec, len: u64) -> Option<ByteRange> {
    match spec {
        RangeSpec::Int { first, last } => {
            if first >= len {
                return None;
            }
            let end = last.map_or(len, |l| l.saturating_add(1).min(len));
            Some(ByteRange { start: first, end })
        }
        RangeSpec::Suffix(n) => {
            if n == 0 || len == 0 {
                return None;
            }
            Some(ByteRange {
                start: len - n.min(len),
                end: len,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(start: u64, end: u64) -> ByteRange {
        ByteRange { start, end }
    }

    fn res(h: &str, len: u64) -> Option<Resolved> {
        parse(h.as_bytes()).map(|s| resolve(&s, len, 64))
    }

    #[test]
    fn single_open_suffix() {
        assert_eq!(
            res("bytes=0-9", 100),
            Some(Resolved::Partial(vec![r(0, 10)]))
        );
        assert_eq!(
            res("bytes=90-", 100),
            Some(Resolved::Partial(vec![r(90, 100)]))
        );
        assert_eq!(
            res("bytes=-10", 100),
            Some(Resolved::Partial(vec![r(90, 100)]))
        );
        assert_eq!(
            res("bytes=-1000", 100),
            Some(Resolved::Partial(vec![r(0, 100)]))
        );
        assert_eq!(
            res("bytes=50-1000", 100),
            Some(Resolved::Partial(vec![r(50, 100)]))
        );
        assert_eq!(
            res("BYTES=0-0", 100),
            Some(Resolved::Partial(vec![r(0, 1)]))
        );
        assert_eq!(
            res("bytes=0-99999999999999999999999", 100),
            Some(Resolved::Partial(vec![r(0, 100)]))
        );
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(res("bytes=100-", 100), Some(Resolved::Unsatisfiable));
        assert_eq!(res("bytes=100-200", 100), Some(Resolved::Unsatisfiable));
        assert_eq!(res("bytes=-0", 100), Some(Resolved::Unsatisfiable));
        assert_eq!(res("bytes=0-", 0), Some(Resolved::Unsatisfiable));
        assert_eq!(res("bytes=-5", 0), Some(Resolved::Unsatisfiable));
        // One satisfiable range is enough.
        assert_eq!(
            res("bytes=200-300, 0-0", 100),
            Some(Resolved::Partial(vec![r(0, 1)]))
        );
    }

    #[test]
    fn invalid_is_ignored() {
        for h in [
            "bytes=5-1",
            "bytes=",
            "bytes=,",
            "bytes=a-b",
            "bytes=1-2-3",
            "bytes=-",
            "bytes=+1-2",
            "bytes=1 -2",
            "items=0-1",
            "bytes 0-1",
            "0-1",
            "bytes=0x1-2",
            " bytes=0-1",
        ] {
            assert_eq!(res(h, 100), None, "{h}");
        }
    }

    #[test]
    fn multiple_are_sorted_and_coalesced() {
        assert_eq!(
            res("bytes=50-59, 0-9", 100),
            Some(Resolved::Partial(vec![r(0, 10), r(50, 60)]))
        );
        assert_eq!(
            res("bytes=0-9,10-19,,5-12", 100),
            Some(Resolved::Partial(vec![r(0, 20)]))
        );
        assert_eq!(
            res("bytes=0-0,-1", 100),
            Some(Resolved::Partial(vec![r(0, 1), r(99, 100)]))
        );
    }

    #[test]
    fn too_many_ranges_are_refused() {
        let many: Vec<String> = (0..1000).map(|i| format!("{i}-{i}")).collect();
        let h = format!("bytes={}", many.join(","));
        assert_eq!(res(&h, 10_000), Some(Resolved::Unsatisfiable));
        let ok: Vec<String> = (0..64).map(|i| format!("{}-{}", i * 2, i * 2)).collect();
        let h = format!("bytes={}", ok.join(","));
        assert!(matches!(res(&h, 10_000), Some(Resolved::Partial(v)) if v.len() == 64));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), len in 0u64..1000) {
            if let Some(specs) = parse(&bytes) {
                let _ = resolve(&specs, len, 64);
            }
        }

        #[test]
        fn resolved_ranges_are_within_bounds_sorted_and_disjoint(
            specs in proptest::collection::vec((0u64..300, proptest::option::of(0u64..300), any::<bool>()), 1..10),
            len in 0u64..256,
        ) {
            let header = specs.iter().map(|(a, b, suffix)| if *suffix {
                format!("-{a}")
            } else {
                match b { Some(b) => format!("{a}-{}", a + b), None => format!("{a}-") }
            }).collect::<Vec<_>>().join(",");
            let parsed = parse(format!("bytes={header}").as_bytes()).expect("valid");
            prop_assert_eq!(parsed.len(), specs.len());
            if let Resolved::Partial(v) = resolve(&parsed, len, 64) {
                prop_assert!(!v.is_empty());
                for w in v.windows(2) {
                    prop_assert!(w[0].end < w[1].start);
                }
                for x in &v {
                    prop_assert!(x.start < x.end && x.end <= len);
                }
            }
        }
    }
}
