//! Two WebRTC stacks in one group call through the SFU of `palaver serve`:
//! the webrtc-rs peer of this crate and a headless Chromium page
//! (tests/browser/sfu-one.mjs). Both join with tickets from signaling, both
//! publish and subscribe: Chromium must decode the Rust peer's VP8 and Opus,
//! and the Rust peer must receive Chromium's audio and video RTP.
//!
//! Needs `ffmpeg`, `chromium` and `npm ci` in tests/browser; the binary name
//! puts it in the `browser` test group (one Chromium test at a time).

use palaver_client::Event;
use palaver_client::proto::frames::{Media, ServerFrame};
use palaver_tests::{Server, next_event, phone};
use palaver_webrtc_peer::group::join_group;
use palaver_webrtc_peer::{PeerConfig, media};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(30);

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
}

#[tokio::test]
async fn webrtc_rs_and_chromium_share_a_group_call() {
    assert!(
        browser_dir().join("node_modules/playwright-core").is_dir(),
        "run `npm ci` in tests/browser (scripts/test.sh does)"
    );
    let server = Server::start();
    let (mut a, _) = server.device(&phone()).await;
    let (mut b, rb) = server.device(&phone()).await;
    let ticket_a = a
        .group_call_start(vec![rb.account], Media::Video)
        .await
        .unwrap();
    let room = match next_event(&mut b).await {
        Event::Call(ServerFrame::GroupCallIncoming { room, .. }) => room,
        e => panic!("expected group_call_incoming, got {e:?}"),
    };
    let ticket_b = b.group_call_join(&room).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let files = media::generate(dir.path()).unwrap();
    let mut rust = join_group(&ticket_b, &files, &PeerConfig::default())
        .await
        .unwrap();
    rust.wait_connected(PATIENCE).await.unwrap();

    let spec = serde_json::json!({
        "joinUrl": format!("{}/v1/rooms/{}/join", ticket_a.sfu_url, ticket_a.room),
        "token": ticket_a.token,
        "minFps": 15,
        "seconds": 3,
    });
    let node = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(browser_dir().join("sfu-one.mjs"))
            .arg(spec.to_string())
            .output()
            .expect("run node")
    });
    // While Chromium is in the room, the Rust peer receives its media.
    let got = rust
        .wait_received(Duration::from_secs(60), |r| {
            r.video_packets > 50 && r.audio_packets > 50
        })
        .await;
    let out = node.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|_| {
            panic!(
                "no result from the browser driver\nstdout: {stdout}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        out.status.success() && result["ok"] == true,
        "Chromium did not decode the webrtc-rs peer: {result:#}\nserver log: {}",
        server.log()
    );
    let got = got.expect("the webrtc-rs peer received Chromium's audio and video");
    assert!(rust.sent().video_frames > 0);
    let messages = rust.messages();
    assert!(
        messages.iter().any(|m| m["type"] == "welcome"),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m["type"] == "joined"),
        "{messages:?}"
    );
    eprintln!("chromium: {result:#}\nwebrtc-rs received: {got:?}");
    rust.leave().await.unwrap();
}
