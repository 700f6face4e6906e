//! Client frames come straight from the network: decoding any text must
//! either succeed or give a malformed/unknown-type error, never panic, and a
//! decoded frame must survive a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palaver_proto::ErrorCode;
use palaver_proto::codec::{decode_client, encode_client};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match decode_client(text) {
        Ok(frame) => {
            let again = decode_client(&encode_client(&frame)).expect("re-encoded frame decodes");
            assert_eq!(again, frame);
        }
        Err(e) => assert!(matches!(
            e.code,
            ErrorCode::MalformedFrame | ErrorCode::UnknownFrameType
        )),
    }
});
