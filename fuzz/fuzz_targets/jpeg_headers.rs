//! The pure JPEG header readers (frame size, EXIF orientation) on hostile
//! bytes: no panic, and answers only in range.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palaver_transcoder::jpeg;

fuzz_target!(|data: &[u8]| {
    let _ = jpeg::jpeg_size(data);
    if let Some(o) = jpeg::exif_orientation(data) {
        assert!((1..=8).contains(&o));
    }
});
