//! 1:1 calls between two headless Chromium pages through the real server:
//! Chromium's own WebRTC stack, signalled over /v1/ws, must decode the other
//! side's audio and video. Needs Debian's `chromium` and `npm ci` in
//! tests/browser (scripts/test.sh installs both).

use palaver_client::proto::frames::EndReason;
use palaver_tests::{Server, phone};
use std::path::PathBuf;
use std::process::Command;

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

fn check_tools() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).is_file(),
        "{chromium} not found: apt-get install chromium (scripts/test.sh does)"
    );
    assert!(
        browser_dir().join("node_modules/playwright-core").is_dir(),
        "playwright-core missing: run `npm ci` in {} (scripts/test.sh does)",
        browser_dir().display()
    );
}

async fn run_call(server: &Server, media: &str, relay_only: bool) -> serde_json::Value {
    check_tools();
    let (_a, caller) = server.device(&phone()).await;
    let (_b, callee) = server.device(&phone()).await;
    let spec = serde_json::json!({
        "wsUrl": server.ws_url,
        "caller": { "device": caller.device, "credential": caller.credential },
        "callee": { "account": callee.account, "device": callee.device, "credential": callee.credential },
        "relayOnly": relay_only,
        "media": media,
        "minFps": 15,
        "seconds": 3,
    });
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(browser_dir().join("call.mjs"))
            .arg(spec.to_string())
            .output()
            .expect("run node")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    let result: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "no result from the browser driver\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success() && result["ok"] == true,
        "call failed: {result:#}"
    );
    result
}

#[tokio::test]
async fn two_chromium_pages_call_each_other_with_video() {
    let server = Server::start();
    let r = run_call(&server, "video", false).await;
    for side in ["caller", "callee"] {
        let fps = r[side]["fps"].as_f64().unwrap();
        assert!(fps >= 15.0, "{side} decoded {fps} fps");
        assert!(r[side]["width"].as_u64().unwrap() > 0);
        assert!(r[side]["audioSamplesPerSec"].as_f64().unwrap() > 8000.0);
    }
    let history = r["history"].as_array().unwrap();
    assert_eq!(history.len(), 1);
    let reason: EndReason = serde_json::from_value(history[0]["reason"].clone()).unwrap();
    assert_eq!(reason, EndReason::HungUp);
    assert!(history[0]["answered_at"].is_u64());
}

#[tokio::test]
async fn a_relay_only_call_goes_through_the_embedded_turn_server() {
    // Chromium's relay candidates are on 127.0.0.1 here, and the peer policy
    // refuses loopback peers by default: allow them in this test only.
    let server = Server::start_with("[turn]\npeer_allow = [\"127.0.0.0/8\"]\n");
    let r = run_call(&server, "video", true).await;
    for side in ["caller", "callee"] {
        assert_eq!(
            r[side]["relay"], true,
            "{side} did not use a relay pair: {r:#}"
        );
        assert_eq!(r[side]["localType"], "relay");
        let fps = r[side]["fps"].as_f64().unwrap();
        assert!(fps >= 15.0, "{side} decoded {fps} fps through TURN");
    }
    let m = server.metrics().await;
    let relayed = m
        .lines()
        .find(|l| l.starts_with("palaver_turn_relayed_packets_total{direction=\"to_peer\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .expect("TURN metrics on the admin listener");
    assert!(relayed > 100, "the TURN server relayed {relayed} packets");
}
