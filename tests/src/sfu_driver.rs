//! Headless Chromium pages in a group call on Palaver's SFU nodes, driven
//! through tests/browser/sfu-cluster.mjs (one JSON command and reply per
//! line); used by the multi-node tests.

use palaver_client::GroupCallTicket;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Wall-clock milliseconds, comparable with the pages' `Date.now()`.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Fails with a hint when Chromium or playwright-core is missing.
pub fn check_tools() {
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

/// The Chromium driver.
#[derive(Debug)]
pub struct Driver {
    child: Child,
    io: Arc<Mutex<(ChildStdin, BufReader<ChildStdout>)>>,
}

impl Driver {
    pub fn start() -> Driver {
        let mut child = Command::new("node")
            .arg(browser_dir().join("sfu-cluster.mjs"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run node");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Driver {
            child,
            io: Arc::new(Mutex::new((stdin, stdout))),
        }
    }

    /// Runs one command; panics unless the driver answers `ok`.
    pub async fn cmd(&self, c: Value) -> Value {
        let io = self.io.clone();
        let sent = c.clone();
        let reply = tokio::task::spawn_blocking(move || {
            let mut io = io.lock().unwrap();
            writeln!(io.0, "{sent}").expect("write to the driver");
            let mut line = String::new();
            io.1.read_line(&mut line).expect("read from the driver");
            line
        })
        .await
        .unwrap();
        let v: Value = serde_json::from_str(&reply)
            .unwrap_or_else(|_| panic!("driver reply to {c}: {reply:?}"));
        assert_eq!(v["ok"], true, "driver command {c} failed: {v:#}");
        v
    }

    /// Opens `page` and joins the ticket's room; with `relay`, the page
    /// uses only the ticket's TURN servers (`iceTransportPolicy: relay`).
    pub async fn join(&self, page: usize, t: &GroupCallTicket, relay: bool) {
        let url = format!("{}/v1/rooms/{}/join", t.sfu_url, t.room);
        self.cmd(json!({
            "cmd": "join", "page": page, "joinUrl": url, "token": t.token,
            "iceServers": t.ice_servers, "relayOnly": relay,
        }))
        .await;
    }

    /// Waits until `page` decodes audio and video from one other page;
    /// returns the wall-clock time of its first frame since (re)joining.
    pub async fn media_since_join(&self, page: usize) -> u64 {
        let r = self
            .cmd(json!({"cmd": "wait_media", "page": page, "n": 1, "ms": 20000}))
            .await;
        r["firstFrameWall"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(Value::as_u64)
            .max()
            .unwrap()
    }

    /// Hands `page` a `group_call_moved` ticket: it rejoins there.
    pub async fn moved(&self, page: usize, t: &GroupCallTicket) {
        let frame = json!({"room": t.room, "sfu_url": t.sfu_url, "token": t.token});
        self.cmd(json!({"cmd": "moved", "page": page, "frame": frame}))
            .await;
    }

    /// The local candidate type of each page's selected pair
    /// (`relay`, `host`, ...).
    pub async fn candidate_types(&self, pages: &[usize]) -> Vec<String> {
        let r = self.cmd(json!({"cmd": "candidates", "pages": pages})).await;
        r["types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap_or("none").to_owned())
            .collect()
    }

    /// Sends `msg` to the SFU on `page`'s data channel.
    pub async fn send(&self, page: usize, msg: Value) {
        self.cmd(json!({"cmd": "send", "page": page, "msg": msg}))
            .await;
    }

    /// Waits until the SFU sent `page` a message of type `kind`; returns it.
    pub async fn wait_event(&self, page: usize, kind: &str) -> Value {
        let r = self
            .cmd(json!({"cmd": "wait_event", "page": page, "type": kind, "ms": 20000}))
            .await;
        r["event"].clone()
    }

    /// Asserts both pages decode each other's video and audio.
    pub async fn assert_flowing(&self) {
        let r = self
            .cmd(json!({"cmd": "rates", "pages": [0, 1], "seconds": 2}))
            .await;
        for page in r["rates"].as_array().unwrap() {
            let streams: Vec<&Value> = page.as_object().unwrap().values().collect();
            // A freeze is ~0 fps; 5 fps proves media flows without measuring
            // how busy the machine is.
            assert!(
                streams.iter().any(|s| s["fps"].as_f64().unwrap() >= 5.0
                    && s["samplesPerSec"].as_f64().unwrap() > 8000.0),
                "{r:#}"
            );
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
