//! Two WebRTC stacks in one call through the real `palaver serve`: the
//! webrtc-rs peer of this crate and Debian's headless Chromium (driven by
//! tests/browser/rust-peer.mjs on tests/browser/call-page.html). Both send
//! real media: the Rust peer a VP8 and an Opus track encoded by the `ffmpeg`
//! CLI, Chromium its fake camera and microphone. Trickle ICE both ways
//! through Palaver; every candidate is on 127.0.0.1 (host, plus srflx and
//! relay from the STUN/TURN server `palaver serve` runs and hands out in
//! `call_started` / `call_incoming`), and the pair selected is host to host.
//!
//! Needs `ffmpeg`, `chromium`, and `npm ci` in tests/browser
//! (scripts/test.sh installs them); the server binary must be fresh
//! (`cargo build -p palaver-server`). The binary is named `browser_call` so
//! that nextest runs it in the `browser` test group (.config/nextest.toml),
//! one Chromium test at a time.

use palaver_client::proto::frames::{EndReason, Media};
use palaver_tests::{Server, phone};
use palaver_webrtc_peer::{PeerConfig, Received, answer_call, media, place_call, wait_incoming};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Bound on every wait for something that should happen promptly.
const PATIENCE: Duration = Duration::from_secs(30);
/// Chromium's start-up on a loaded 2-core machine.
const BROWSER_START: Duration = Duration::from_secs(60);
/// The measurement window of the browser driver, in seconds.
const WINDOW_SECS: u64 = 3;

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
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

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The node driver of one Chromium page, reporting JSON events line by line.
struct Browser {
    child: Option<Child>,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Browser {
    fn spawn(spec: &Value) -> Browser {
        let mut child = Command::new("node")
            .arg(browser_dir().join("rust-peer.mjs"))
            .arg(spec.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run node");
        let (tx, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Browser {
            child: Some(child),
            lines,
            stderr,
        }
    }

    /// The next event named `name`; fails on an `error` event, on the
    /// driver's exit, or after `timeout`.
    async fn expect(&mut self, name: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Err(_) => panic!(
                    "browser: no `{name}` within {timeout:?}; stderr:\n{}",
                    self.stderr()
                ),
                Ok(None) => panic!(
                    "browser driver exited before `{name}`; stderr:\n{}",
                    self.stderr()
                ),
                Ok(Some(line)) => line,
            };
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                eprintln!("browser: {line}");
                continue;
            };
            match event["event"].as_str() {
                Some(n) if n == name => return event,
                Some("error") => panic!(
                    "browser failed waiting for `{name}`: {}\nerrors: {}\nstderr:\n{}",
                    event["error"].as_str().unwrap_or_default(),
                    event["errors"],
                    self.stderr()
                ),
                _ => eprintln!("browser: {line}"),
            }
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the driver to exit and checks it succeeded.
    async fn finish(mut self) {
        let mut child = self.child.take().expect("running");
        let status = tokio::time::timeout(
            PATIENCE,
            tokio::task::spawn_blocking(move || child.wait().expect("wait for node")),
        )
        .await
        .expect("browser driver did not exit")
        .expect("join");
        assert!(
            status.success(),
            "browser driver: {status}; stderr:\n{}",
            self.stderr()
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Chromium's inbound statistics over the driver's window: it decodes the
/// Rust peer's 320x240 VP8 and receives its Opus.
fn assert_chromium_window(w: &Value) {
    let from = &w["from"];
    let to = &w["to"];
    let frames =
        to["videoFrames"].as_u64().unwrap_or(0) - from["videoFrames"].as_u64().unwrap_or(0);
    let fps = w["fps"].as_f64().unwrap_or(0.0);
    let samples_per_sec = w["audioSamplesPerSec"].as_f64().unwrap_or(0.0);
    eprintln!(
        "chromium: {frames} frames decoded in {WINDOW_SECS} s ({fps:.1} fps), width {}, \
         {samples_per_sec:.0} audio samples/s, {} audio packets in total; \
         candidate pair {} -> {}",
        w["width"], to["audioPackets"], to["localType"], to["remoteType"]
    );
    assert!(
        frames >= 10 * WINDOW_SECS,
        "Chromium decoded only {frames} frames in {WINDOW_SECS} s: {w:#}"
    );
    let (width, _) = media::VIDEO_SIZE;
    assert_eq!(
        w["width"].as_u64(),
        Some(u64::from(width)),
        "frame width: {w:#}"
    );
    assert!(
        samples_per_sec > 8000.0,
        "Chromium received {samples_per_sec} audio samples/s: {w:#}"
    );
    assert!(
        to["audioPackets"].as_u64().unwrap_or(0) > from["audioPackets"].as_u64().unwrap_or(0),
        "no audio packets over the window: {w:#}"
    );
}

/// RTP the Rust peer received from Chromium over the same window.
fn assert_rust_window(r: &Received) {
    eprintln!(
        "webrtc-rs: {} video packets ({} bytes), {} audio packets ({} bytes) in about {WINDOW_SECS} s",
        r.video_packets, r.video_bytes, r.audio_packets, r.audio_bytes
    );
    // Chromium's fake camera runs at 30 fps (at least one packet a frame),
    // its Opus at 50 packets a second: ask for a third of that.
    assert!(r.video_packets >= 10 * WINDOW_SECS, "video: {r:?}");
    assert!(r.video_bytes >= 5_000 * WINDOW_SECS, "video: {r:?}");
    assert!(r.audio_packets >= 16 * WINDOW_SECS, "audio: {r:?}");
    assert!(r.audio_bytes >= 500 * WINDOW_SECS, "audio: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_rs_calls_chromium_and_both_receive_media() {
    init_tracing();
    check_tools();
    let dir = tempfile::tempdir().unwrap();
    let files = media::generate(dir.path()).expect("encode test media with ffmpeg");
    let server = Server::start();
    let (rust_client, _rust) = server.device(&phone()).await;
    let page =
        palaver_client::register_dev(&server.ws_url, &server.admin_url, &phone(), "chromium")
            .await
            .expect("register the browser's device");

    let mut browser = Browser::spawn(&json!({
        "wsUrl": server.ws_url,
        "device": page.device,
        "credential": page.credential,
        "role": "answer",
        "seconds": WINDOW_SECS,
        "timeoutMs": PATIENCE.as_millis() as u64,
    }));
    browser.expect("ready", BROWSER_START).await;

    let mut call = place_call(rust_client, page.account, &files, &PeerConfig::default())
        .await
        .expect("place the call");
    call.wait_connected(PATIENCE)
        .await
        .expect("ICE and DTLS with Chromium");
    call.wait_received(PATIENCE, |r| r.video_packets > 0 && r.audio_packets > 0)
        .await
        .expect("RTP from Chromium");

    browser.expect("media", PATIENCE).await;
    let before = call.received();
    let window = browser.expect("window", PATIENCE).await;
    let received = call.received().since(&before);
    assert_chromium_window(&window);
    assert_rust_window(&received);
    let sent = call.sent();
    eprintln!(
        "webrtc-rs sent {} VP8 frames and {} Opus packets",
        sent.video_frames, sent.audio_packets
    );

    let call_id = call.id();
    let mut client = call.hang_up().await.expect("hang up");
    let ended = browser.expect("ended", PATIENCE).await;
    assert_eq!(ended["reason"], "hung_up", "Chromium's call_ended: {ended}");
    browser.finish().await;

    let history = client.call_history(10).await.expect("call_history");
    assert_eq!(history.len(), 1, "{history:?}");
    let entry = &history[0];
    assert_eq!(entry.call, call_id);
    assert_eq!(entry.answered_by, Some(page.device));
    assert_eq!(entry.reason, EndReason::HungUp);
    assert!(entry.answered_at.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_calls_webrtc_rs_and_both_receive_media() {
    init_tracing();
    check_tools();
    let dir = tempfile::tempdir().unwrap();
    let files = media::generate(dir.path()).expect("encode test media with ffmpeg");
    let server = Server::start();
    let (mut rust_client, rust) = server.device(&phone()).await;
    let page =
        palaver_client::register_dev(&server.ws_url, &server.admin_url, &phone(), "chromium")
            .await
            .expect("register the browser's device");

    let mut browser = Browser::spawn(&json!({
        "wsUrl": server.ws_url,
        "device": page.device,
        "credential": page.credential,
        "role": "call",
        "to": rust.account,
        "seconds": WINDOW_SECS,
        "timeoutMs": PATIENCE.as_millis() as u64,
    }));
    browser.expect("ready", BROWSER_START).await;

    let incoming = wait_incoming(&mut rust_client, PATIENCE)
        .await
        .expect("call_incoming from Chromium");
    assert_eq!(incoming.from, page.account);
    assert_eq!(incoming.media, Media::Video);
    let mut call = answer_call(rust_client, incoming, &files, &PeerConfig::default())
        .await
        .expect("answer the call");
    call.wait_connected(PATIENCE)
        .await
        .expect("ICE and DTLS with Chromium");
    call.wait_received(PATIENCE, |r| r.video_packets > 0 && r.audio_packets > 0)
        .await
        .expect("RTP from Chromium");

    browser.expect("media", PATIENCE).await;
    let before = call.received();
    let window = browser.expect("window", PATIENCE).await;
    let received = call.received().since(&before);
    assert_chromium_window(&window);
    assert_rust_window(&received);

    browser.expect("hung_up", PATIENCE).await;
    let (reason, _client) = call.wait_ended(PATIENCE).await.expect("call_ended");
    assert_eq!(reason, EndReason::HungUp);
    browser.finish().await;
}
