//! Phone numbers are parsed from unauthenticated requests: never panic, and
//! whatever is accepted is canonical.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palaver_messaging::policy::Phone;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = Phone::parse(text) {
        assert_eq!(p.as_str(), text);
        assert!(Phone::parse(p.as_str()).is_ok());
    }
});
