//! Group calls across several nodes, without Docker: two `palaver
//! signaling` nodes (PostgreSQL from scripts/postgres.sh, Redis from
//! scripts/redis.sh) and two `palaver sfu` nodes registered in Redis, as
//! separate processes; participants on different signaling nodes talk
//! through headless Chromium pages (tests/browser/sfu-cluster.mjs).
//!
//! - SIGKILL of the SFU node hosting the room: signaling notices the missed
//!   heartbeats, moves the room and pushes `group_call_moved`; the pages
//!   rejoin on the surviving node and decode each other again within 5 s of
//!   the kill (the bound, asserted as is).
//! - SIGTERM drains a node: new calls go elsewhere, its room moves, and it
//!   exits once empty.
//!
//! The binary name puts these tests in the nextest `browser` group.

use palaver_client::proto::frames::{Media, ServerFrame};
use palaver_client::{Client, Event, GroupCallTicket};
use palaver_tests::sfu_node::SfuNode;
use palaver_tests::{Server, fresh_schema, next_event, phone};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// The bound from the kill to media flowing again.
const RECOVERY_LIMIT_MS: u64 = 5000;
const SECRET: &str = "sfu-cluster-test-secret-0123456789";

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
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

/// The Chromium driver, one JSON command and reply per line.
struct Driver {
    child: Child,
    io: Arc<Mutex<(ChildStdin, BufReader<ChildStdout>)>>,
}

impl Driver {
    fn start() -> Driver {
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

    async fn cmd(&self, c: Value) -> Value {
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

    async fn join(&self, page: usize, t: &GroupCallTicket) {
        let url = format!("{}/v1/rooms/{}/join", t.sfu_url, t.room);
        self.cmd(json!({"cmd": "join", "page": page, "joinUrl": url, "token": t.token}))
            .await;
    }

    /// Waits until `page` decodes audio and video from one other page;
    /// returns the wall-clock time of its first frame since (re)joining.
    async fn media_since_join(&self, page: usize) -> u64 {
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

    async fn moved(&self, page: usize, t: &GroupCallTicket) {
        let frame = json!({"room": t.room, "sfu_url": t.sfu_url, "token": t.token});
        self.cmd(json!({"cmd": "moved", "page": page, "frame": frame}))
            .await;
    }

    /// Asserts both pages decode each other's video and audio.
    async fn assert_flowing(&self) {
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

/// Two signaling nodes, two SFU nodes.
struct Cluster {
    sig: [Server; 2],
    sfus: Vec<SfuNode>,
}

fn cluster(sfu_env: &[(&str, &str)]) -> Cluster {
    let schema = fresh_schema();
    let env = [("PALAVER__SFU__TOKEN_SECRET", SECRET)];
    let sig = [
        Server::start_node_with(&schema, "sig-1", &env),
        Server::start_node_with(&schema, "sig-2", &env),
    ];
    let sfus = ["sfu-1", "sfu-2"]
        .iter()
        .map(|id| SfuNode::start(&schema, id, SECRET, sfu_env))
        .collect();
    Cluster { sig, sfus }
}

impl Cluster {
    fn logs(&self) -> String {
        let mut out = String::new();
        for (i, s) in self.sig.iter().enumerate() {
            out += &format!("--- signaling {i}\n{}\n", s.log());
        }
        for s in &self.sfus {
            out += &format!("--- {}\n{}\n", s.id, s.log());
        }
        out
    }

    fn host_of(&self, t: &GroupCallTicket) -> usize {
        self.sfus
            .iter()
            .position(|s| s.url == t.sfu_url)
            .unwrap_or_else(|| panic!("{} is no SFU node", t.sfu_url))
    }
}

/// Alice on signaling node 1 starts a call with Bob on node 2; both get
/// tickets (Bob's join crosses nodes through Redis).
async fn call(c: &Cluster) -> ([Client; 2], [GroupCallTicket; 2]) {
    let (mut alice, _) = c.sig[0].device(&phone()).await;
    let (mut bob, b) = c.sig[1].device(&phone()).await;
    let ta = alice
        .group_call_start(vec![b.account], Media::Video)
        .await
        .unwrap();
    let room = loop {
        match next_event(&mut bob).await {
            Event::Call(ServerFrame::GroupCallIncoming { room, .. }) => break room,
            Event::Presence(_) => continue,
            e => panic!("expected group_call_incoming, got {e:?}"),
        }
    };
    let tb = bob.group_call_join(&room).await.unwrap();
    assert_eq!(ta.sfu_url, tb.sfu_url, "one room, one node");
    ([alice, bob], [ta, tb])
}

async fn next_moved(c: &mut Client) -> GroupCallTicket {
    loop {
        if let Event::Call(f) = c.next_event().await.expect("event")
            && let Some(t) = GroupCallTicket::from_moved(&f)
        {
            return t;
        }
    }
}

/// Both pages in the call, decoding each other.
async fn both_in(d: &Driver, tickets: &[GroupCallTicket; 2]) {
    d.join(0, &tickets[0]).await;
    d.join(1, &tickets[1]).await;
    d.media_since_join(0).await;
    d.media_since_join(1).await;
}

/// Hands each page its `group_call_moved` ticket; returns when both decode
/// again, with the time of the later first frame.
async fn follow_move(
    d: &Driver,
    cluster: &Cluster,
    clients: &mut [Client; 2],
    room: &str,
    to: &str,
) -> (u64, u64) {
    let mut moved_at = 0;
    for (i, c) in clients.iter_mut().enumerate() {
        let t = tokio::time::timeout(palaver_tests::PATIENCE, next_moved(c))
            .await
            .unwrap_or_else(|_| panic!("no group_call_moved\n{}", cluster.logs()));
        moved_at = moved_at.max(now_ms());
        assert_eq!((t.room.as_str(), t.sfu_url.as_str()), (room, to));
        d.moved(i, &t).await;
    }
    let first = d.media_since_join(0).await.max(d.media_since_join(1).await);
    (moved_at, first)
}

#[tokio::test]
async fn call_resumes_on_the_surviving_sfu_after_sigkill() {
    check_tools();
    let mut c = cluster(&[]);
    let (mut clients, tickets) = call(&c).await;
    let host = c.host_of(&tickets[0]);
    let survivor = c.sfus[1 - host].url.clone();
    let d = Driver::start();
    both_in(&d, &tickets).await;
    d.assert_flowing().await;

    let killed_at = now_ms();
    c.sfus[host].kill();
    let (moved_at, first) = follow_move(&d, &c, &mut clients, &tickets[0].room, &survivor).await;
    let recovery = first.saturating_sub(killed_at);
    eprintln!(
        "SIGKILL -> group_call_moved at both clients: {} ms; -> first frame decoded on the \
         surviving node: {recovery} ms",
        moved_at - killed_at
    );
    assert!(
        recovery <= RECOVERY_LIMIT_MS,
        "media resumed {recovery} ms after the kill\n{}",
        c.logs()
    );
    d.assert_flowing().await;

    // The surviving node's per-participant stats show both, sending and
    // receiving.
    let (status, body) =
        palaver_tests::http_get(&c.sfus[1 - host].admin_url, "/sfu/participants").await;
    assert_eq!(status, 200, "{body}");
    let list: Vec<Value> = serde_json::from_str(&body).unwrap();
    eprintln!("participants on the surviving node: {list:#?}");
    assert_eq!(list.len(), 2, "{body}");
    for p in &list {
        assert_eq!(p["room"], tickets[0].room.as_str());
        assert!(p["bitrate_in_bps"].as_u64().unwrap() > 0, "{p}");
        assert!(p["bitrate_out_bps"].as_u64().unwrap() > 0, "{p}");
    }
    d.cmd(json!({"cmd": "quit"})).await;
}

#[tokio::test]
async fn a_draining_sfu_hands_its_room_over_and_exits() {
    check_tools();
    let mut c = cluster(&[("PALAVER__SFU__DRAIN_TIMEOUT", "20s")]);
    let (mut clients, tickets) = call(&c).await;
    let host = c.host_of(&tickets[0]);
    let survivor = c.sfus[1 - host].url.clone();
    let d = Driver::start();
    both_in(&d, &tickets).await;

    c.sfus[host].sigterm();
    follow_move(&d, &c, &mut clients, &tickets[0].room, &survivor).await;
    d.assert_flowing().await;
    // New calls avoid the draining node (it may have exited already).
    let (_, fresh) = call(&c).await;
    assert_eq!(fresh[0].sfu_url, survivor);
    // Once the pages left it, the node exits by itself, cleanly, before
    // its drain timeout.
    let mut node = c.sfus.remove(host);
    let logs = c.logs();
    let (status, log) = tokio::task::spawn_blocking(move || (node.wait(), node.log()))
        .await
        .unwrap();
    assert!(status.success(), "{status:?}\n{log}\n{logs}");
    assert!(!log.contains("still connected"), "{log}");
    d.cmd(json!({"cmd": "quit"})).await;
}
