//! Conditional requests (RFC 9110 section 13): `If-Match`,
//! `If-Unmodified-Since`, `If-None-Match`, `If-Modified-Since`, `If-Range`,
//! evaluated in the order of section 13.2.2.
//!
//! Every object here has a strong ETag and a Last-Modified time in whole
//! seconds; objects are immutable, so the date validator is strong too.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The request headers that matter, raw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Preconditions<'a> {
    pub if_match: Option<&'a [u8]>,
    pub if_none_match: Option<&'a [u8]>,
    pub if_modified_since: Option<&'a [u8]>,
    pub if_unmodified_since: Option<&'a [u8]>,
    pub if_range: Option<&'a [u8]>,
}

/// The validators of the selected representation.
#[derive(Debug, Clone, Copy)]
pub struct Validators<'a> {
    /// Strong entity tag including its quotes, e.g. `"abc"`.
    pub etag: &'a str,
    /// Unix seconds.
    pub last_modified: u64,
}

/// What the preconditions decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 412 Precondition Failed.
    PreconditionFailed,
    /// 304 Not Modified (GET and HEAD only).
    NotModified,
    /// Serve the request; `use_range` is false when an `If-Range` did not
    /// match (then a Range header is ignored and the full body is sent).
    Proceed { use_range: bool },
}

/// Evaluates the preconditions for a GET (`is_get_or_head` true) or another
/// method on an existing representation.
pub fn evaluate(p: &Preconditions<'_>, v: &Validators<'_>, is_get_or_head: bool) -> Outcome {
    // Step 1 and 2.
    if let Some(im) = p.if_match {
        if !matches_list(im, v.etag, true) {
            return Outcome::PreconditionFailed;
        }
    } else if let Some(date) = p.if_unmodified_since.and_then(parse_date)
        && v.last_modified > date
    {
        return Outcome::PreconditionFailed;
    }
    // Step 3 and 4.
    if let Some(inm) = p.if_none_match {
        if matches_list(inm, v.etag, false) {
            return if is_get_or_head {
                Outcome::NotModified
            } else {
                Outcome::PreconditionFailed
            };
        }
    } else if is_get_or_head
        && let Some(date) = p.if_modified_since.and_then(parse_date)
        && v.last_modified <= date
    {
        return Outcome::NotModified;
    }
    // Step 5: If-Range (only meaningful with a Range header, which the
    // caller checks).
    let use_range = p.if_range.is_none_or(|ir| if_range_matches(ir, v));
    Outcome::Proceed { use_range }
}

/// `If-Range`: an entity tag compared strongly (a weak tag never matches),
/// or an HTTP date equal to Last-Modified.
fn if_range_matches(value: &[u8], v: &Validators<'_>) -> bool {
    let value = trim(value);
    if value.starts_with(b"\"") || value.starts_with(b"W/") {
        return value == v.etag.as_bytes();
    }
    parse_date(value) == Some(v.last_modified)
}

/// `*` or a comma-separated list of entity tags. `strong` selects the
/// comparison function (strong for If-Match, weak for If-None-Match). An
/// unparsable list matches nothing.
fn matches_list(value: &[u8], etag: &str, strong: bool) -> bool {
    let value = trim(value);
    if value == b"*" {
        return true;
    }
    let Some(tags) = parse_etags(value) else {
        return false;
    };
    let ours = etag.as_bytes();
    tags.iter().any(|(weak, opaque)| {
        if strong && *weak {
            return false;
        }
        ours.len() == opaque.len() + 2 && &ours[1..ours.len() - 1] == *opaque
    })
}

/// Parses `1#entity-tag` into (weak, opaque-tag-without-quotes).
fn parse_etags(mut s: &[u8]) -> Option<Vec<(bool, &[u8])>> {
    let mut out = Vec::new();
    loop {
        s = trim_start(s);
        while let Some(rest) = s.strip_prefix(b",") {
            s = trim_start(rest);
        }
        if s.is_empty() {
            break;
        }
        let weak = s.starts_with(b"W/");
        if weak {
            s = &s[2..];
        }
        let rest = s.strip_prefix(b"\"")?;
        let end = rest.iter().position(|&b| b == b'"')?;
        let opaque = &rest[..end];
        if !opaque
            .iter()
            .all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
        {
            return None;
        }
        out.push((weak, opaque));
        s = trim_start(&rest[end + 1..]);
        if !(s.is_empty() || s.starts_with(b",")) {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
    &s[n..]
}

fn trim(s: &[u8]) -> &[u8] {
    let s = trim_start(s);
    let n = s
        .iter()
        .rev()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count();
    &s[..s.len() - n]
}

/// An HTTP-date (IMF-fixdate, or the obsolete RFC 850 and asctime forms)
/// as Unix seconds; `None` if invalid (the header is then ignored).
pub fn parse_date(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(trim(value)).ok()?;
    let t = httpdate::parse_http_date(text).ok()?;
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Formats Unix seconds as an IMF-fixdate.
pub fn format_date(secs: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LM: u64 = 1_700_000_000; // Tue, 14 Nov 2023 22:13:20 GMT
    const V: Validators<'static> = Validators {
        etag: "\"abc\"",
        last_modified: LM,
    };

    fn eval(p: Preconditions<'_>) -> Outcome {
        evaluate(&p, &V, true)
    }

    const GO: Outcome = Outcome::Proceed { use_range: true };

    #[test]
    fn if_none_match() {
        let p = |v: &'static str| Preconditions {
            if_none_match: Some(v.as_bytes()),
            ..Default::default()
        };
        assert_eq!(eval(p("\"abc\"")), Outcome::NotModified);
        assert_eq!(
            eval(p("W/\"abc\"")),
            Outcome::NotModified,
            "weak comparison"
        );
        assert_eq!(eval(p("\"x\", \"abc\"")), Outcome::NotModified);
        assert_eq!(eval(p("*")), Outcome::NotModified);
        assert_eq!(eval(p("\"abd\"")), GO);
        assert_eq!(eval(p("abc")), GO, "unquoted is invalid: no match");
        assert_eq!(
            evaluate(&p("\"abc\""), &V, false),
            Outcome::PreconditionFailed
        );
    }

    #[test]
    fn if_match_is_strong() {
        let p = |v: &'static str| Preconditions {
            if_match: Some(v.as_bytes()),
            ..Default::default()
        };
        assert_eq!(eval(p("\"abc\"")), GO);
        assert_eq!(eval(p("*")), GO);
        assert_eq!(eval(p(" \"z\" , \"abc\" ")), GO);
        assert_eq!(eval(p("W/\"abc\"")), Outcome::PreconditionFailed);
        assert_eq!(eval(p("\"nope\"")), Outcome::PreconditionFailed);
        assert_eq!(eval(p("garbage")), Outcome::PreconditionFailed);
    }

    #[test]
    fn dates() {
        let before = b"Tue, 14 Nov 2023 22:13:19 GMT".as_slice();
        let exact = b"Tue, 14 Nov 2023 22:13:20 GMT".as_slice();
        let after = b"Tue, 14 Nov 2023 22:13:21 GMT".as_slice();
        let ims = |d| Preconditions {
            if_modified_since: Some(d),
            ..Default::default()
        };
        assert_eq!(eval(ims(exact)), Outcome::NotModified);
        assert_eq!(eval(ims(after)), Outcome::NotModified);
        assert_eq!(eval(ims(before)), GO);
        assert_eq!(eval(ims(b"yesterday")), GO, "invalid date ignored");
        assert_eq!(
            eval(ims(b"Tuesday, 14-Nov-23 22:13:20 GMT")),
            Outcome::NotModified,
            "RFC 850 form"
        );
        assert_eq!(
            eval(ims(b"Tue Nov 14 22:13:20 2023")),
            Outcome::NotModified,
            "asctime form"
        );
        let ius = |d| Preconditions {
            if_unmodified_since: Some(d),
            ..Default::default()
        };
        assert_eq!(eval(ius(before)), Outcome::PreconditionFailed);
        assert_eq!(eval(ius(exact)), GO);
        assert_eq!(eval(ius(b"nonsense")), GO);
    }

    #[test]
    fn precedence() {
        // If-None-Match wins over If-Modified-Since.
        let p = Preconditions {
            if_none_match: Some(b"\"other\""),
            if_modified_since: Some(b"Tue, 14 Nov 2023 22:13:20 GMT"),
            ..Default::default()
        };
        assert_eq!(eval(p), GO);
        // If-Match wins over If-Unmodified-Since.
        let p = Preconditions {
            if_match: Some(b"\"abc\""),
            if_unmodified_since: Some(b"Tue, 14 Nov 2023 22:13:19 GMT"),
            ..Default::default()
        };
        assert_eq!(eval(p), GO);
        // 412 before 304.
        let p = Preconditions {
            if_match: Some(b"\"no\""),
            if_none_match: Some(b"\"abc\""),
            ..Default::default()
        };
        assert_eq!(eval(p), Outcome::PreconditionFailed);
    }

    #[test]
    fn if_range() {
        let p = |v: &'static str| Preconditions {
            if_range: Some(v.as_bytes()),
            ..Default::default()
        };
        assert_eq!(eval(p("\"abc\"")), GO);
        assert_eq!(
            eval(p("W/\"abc\"")),
            Outcome::Proceed { use_range: false },
            "weak tags never match If-Range"
        );
        assert_eq!(eval(p("\"old\"")), Outcome::Proceed { use_range: false });
        assert_eq!(eval(p("Tue, 14 Nov 2023 22:13:20 GMT")), GO);
        assert_eq!(
            eval(p("Tue, 14 Nov 2023 22:13:21 GMT")),
            Outcome::Proceed { use_range: false },
            "a date must equal Last-Modified exactly"
        );
        assert_eq!(eval(p("junk")), Outcome::Proceed { use_range: false });
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(format_date(LM), "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(parse_date(format_date(LM).as_bytes()), Some(LM));
    }

    proptest! {
        #[test]
        fn never_panics(a in proptest::collection::vec(any::<u8>(), 0..48),
                        b in proptest::collection::vec(any::<u8>(), 0..48)) {
            let p = Preconditions {
                if_match: Some(&a), if_none_match: Some(&b), if_range: Some(&a),
                if_modified_since: Some(&b), if_unmodified_since: Some(&a),
            };
            let _ = evaluate(&p, &V, true);
        }
    }
}
