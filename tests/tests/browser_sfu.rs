//! Group calls through the SFU inside `palaver serve`, with headless
//! Chromium participants (real encoders, real WebRTC stack). Needs Debian's
//! `chromium` and `npm ci` in tests/browser (scripts/test.sh installs both).

use palaver_proto::join_token::{self, JoinClaims};
use palaver_proto::{AccountId, DeviceId};
use palaver_tests::Server;
use std::path::PathBuf;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

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

/// A join token signed with the secret `palaver serve` keeps in its data dir.
fn token(server: &Server, room: &str, n: u64) -> String {
    let secret = std::fs::read_to_string(server.data_dir.join("sfu.secret")).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = JoinClaims {
        room: room.into(),
        account: AccountId(n),
        device: DeviceId(1000 + n),
        publish: true,
        subscribe: true,
        exp: now + 300,
    };
    join_token::sign(secret.trim_end().as_bytes(), &claims).unwrap()
}

fn http_base(server: &Server) -> String {
    server
        .ws_url
        .replace("ws://", "http://")
        .trim_end_matches("/v1/ws")
        .to_owned()
}

#[test]
fn three_chromium_participants_leave_and_late_join() {
    check_tools();
    let server = Server::start();
    let spec = serde_json::json!({
        "joinUrl": format!("{}/v1/rooms/standup/join", http_base(&server)),
        "tokens": (1..=4).map(|n| token(&server, "standup", n)).collect::<Vec<_>>(),
        "minFps": 15,
        "seconds": 3,
    });
    let out = Command::new("node")
        .arg(browser_dir().join("sfu.mjs"))
        .arg(spec.to_string())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    let result: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "no result from the browser driver\nstdout: {stdout}\nstderr: {}\nserver log: {}",
            String::from_utf8_lossy(&out.stderr),
            server.log()
        )
    });
    assert!(
        out.status.success() && result["ok"] == true,
        "group call failed: {result:#}\nserver log: {}",
        server.log()
    );
    eprintln!("{result:#}");
}
