//! Probing hostile bytes: FFmpeg's demuxers (under the transcoder's
//! white-lists) open whatever the fuzzer writes, and the planner judges
//! the result. Neither may crash or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palaver_transcoder::{Limits, MediaKind, Request, Settings, plan, probe};
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("palaver-fuzz-probe-{}", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(p) = probe::probe_file(&path, Duration::from_secs(2)) {
        for kind in [MediaKind::Video, MediaKind::Voice, MediaKind::Image] {
            let req = Request { kind, no_audio: false };
            let _ = plan::plan(req, data.len() as u64, &p, &Settings::default(), &Limits::default());
        }
    }
    let _ = std::fs::remove_file(&path);
});
