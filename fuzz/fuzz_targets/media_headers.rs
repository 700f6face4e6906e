//! Media request headers come straight from the network: Range, the
//! conditional headers, capability queries and object ids must never
//! panic, and resolved ranges must stay inside the object, sorted and
//! disjoint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palaver_media_store::capability::CapabilityKey;
use palaver_media_store::conditional::{Preconditions, Validators, evaluate};
use palaver_media_store::id::ObjectId;
use palaver_media_store::range::{Resolved, parse, resolve};

fuzz_target!(|data: &[u8]| {
    // First 4 bytes: object length; the rest: fields split at 0xff.
    if data.len() < 4 {
        return;
    }
    let len = u64::from(u32::from_le_bytes([data[0], data[1], data[2], data[3]]));
    let fields: Vec<&[u8]> = data[4..].split(|&b| b == 0xff).collect();
    let field = |i: usize| fields.get(i).copied();

    if let Some(specs) = field(0).and_then(parse) {
        if let Resolved::Partial(v) = resolve(&specs, len, 64) {
            assert!(!v.is_empty() && v.len() <= 64);
            for r in &v {
                assert!(r.start < r.end && r.end <= len);
            }
            for w in v.windows(2) {
                assert!(w[0].end < w[1].start);
            }
        }
    }
    let p = Preconditions {
        if_match: field(1),
        if_none_match: field(2),
        if_modified_since: field(3),
        if_unmodified_since: field(4),
        if_range: field(5),
    };
    let v = Validators {
        etag: "\"0123abcd\"",
        last_modified: len,
    };
    let _ = evaluate(&p, &v, true);
    let _ = evaluate(&p, &v, false);
    if let Some(q) = field(6) {
        let key = CapabilityKey::new(b"fuzzing capability key of 32 bytes");
        let id = ObjectId::Processed([7; 16]);
        assert!(key.verify(&id, Some(q), 0).is_err(), "an unsigned query never verifies");
    }
    if let Some(s) = field(7)
        && let Ok(id) = ObjectId::parse(s)
    {
        assert_eq!(id.to_string().as_bytes(), s);
    }
});
