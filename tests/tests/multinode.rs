//! Palaver as separate processes, as on several machines, without Docker:
//! PostgreSQL and Redis from scripts/test.sh, a Garage node per test, then
//! two `palaver signaling` nodes, two `palaver sfu` nodes, `palaver media`
//! (S3 blobs, Redis job queue), `palaver turn` and a `palaver transcoder`
//! worker, each with its own data directory.
//!
//! Users on different signaling nodes chat; one sends a video that the
//! worker transcodes, the other downloads the variant; two users on
//! different signaling nodes hold a group call in headless Chromium
//! (tests/browser/sfu-cluster.mjs), media relayed through the TURN role.
//! Then, while messages flow both ways, one signaling node and the SFU node
//! hosting the call are SIGKILLed together. Asserted: every message the
//! server acknowledged (before, during and after the kill) is delivered
//! once, and the call decodes again on the surviving SFU node within 5 s of
//! the kill. The times are printed.
//!
//! The binary name puts this test in the nextest `browser` group.

use palaver_client::proto::ClientMsgId;
use palaver_client::proto::frames::{EnvelopeKind, Media, ServerFrame};
use palaver_client::{Client, Event, GroupCallTicket, Registration};
use palaver_tests::garage::Garage;
use palaver_tests::sfu_driver::{Driver, check_tools, now_ms};
use palaver_tests::sfu_node::SfuNode;
use palaver_tests::{
    PATIENCE, Server, fresh_schema, next_envelope, next_event, phone, postgres_env, redis_url,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Bounds a hang on a busy machine; not a speed requirement.
const JOB_PATIENCE: Duration = Duration::from_secs(300);
const TURN_SECRET: &str = "multinode-test-turn-secret-0123456789";
const SFU_SECRET: &str = "multinode-test-sfu-secret-0123456789";
/// The bound from the kill to media decoded again.
const RECOVERY_LIMIT_MS: u64 = 5000;

fn id(s: &str) -> ClientMsgId {
    ClientMsgId::new(s).unwrap()
}

/// A `palaver ROLE` process with its own data directory.
struct Role {
    child: Child,
    _dir: tempfile::TempDir,
    /// What it announced: `media` -> `127.0.0.1:PORT`, ...
    addrs: HashMap<String, String>,
}

impl Role {
    /// Starts `palaver role` and waits until it announced every `want`.
    fn start(role: &str, config: &str, env: &[(String, String)], want: &[&str]) -> Role {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("palaver.toml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut child = Command::new(palaver_tests::palaver_bin())
            .arg("--config")
            .arg(&cfg)
            .arg(role)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "--admin-listen",
                "127.0.0.1:0",
                "--media-listen",
                "127.0.0.1:0",
            ])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("PALAVER__TURN__LISTEN_UDP", "\"127.0.0.1:0\"")
            .env("PALAVER__TURN__LISTEN_TCP", "\"127.0.0.1:0\"")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut addrs = HashMap::new();
        while want.iter().any(|w| !addrs.contains_key(*w)) {
            let Some(Ok(line)) = lines.next() else {
                let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
                panic!("palaver {role} exited before listening:\n{log}");
            };
            if let Some(rest) = line.strip_prefix("palaver: ")
                && let Some((what, addr)) = rest.split_once(" listening on ")
            {
                addrs.insert(what.to_owned(), addr.to_owned());
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Role {
            child,
            _dir: dir,
            addrs,
        }
    }

    fn url(&self, what: &str) -> String {
        format!("http://{}", self.addrs[what])
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn auth(r: &Registration) -> String {
    format!("Bearer {}:{}", r.device.0, r.credential)
}

async fn reconnect(node: &Server, reg: &Registration) -> Client {
    let mut c = node.connect().await;
    c.auth(reg.device, &reg.credential).await.expect("auth");
    c
}

async fn until_closed(c: &mut Client) {
    loop {
        match tokio::time::timeout(palaver_tests::PATIENCE, c.next_event()).await {
            Ok(Ok(_)) => continue,
            Ok(Err(_)) => return,
            Err(_) => panic!("the connection to the killed node stayed open"),
        }
    }
}

/// Waits for the next envelope that is a message, acknowledging others.
async fn next_message(c: &mut Client) -> palaver_client::Envelope {
    loop {
        let env = next_envelope(c).await;
        if env.kind == palaver_client::proto::frames::EnvelopeKind::Message {
            return env;
        }
        c.ack(vec![env.seq]).await.unwrap();
    }
}

/// Uploads a video to the media role and waits for its transcoding job.
async fn send_video(media: &str, who: &Registration, bytes: &[u8]) -> Value {
    use palaver_client::media::request;
    let a = auth(who);
    let res = request(
        &format!("{media}/v1/media"),
        "POST",
        &[("Authorization", &a), ("Content-Type", "video/mp4")],
        bytes,
    )
    .await
    .unwrap();
    assert_eq!(res.status, 201, "{}", String::from_utf8_lossy(&res.body));
    let up: Value = serde_json::from_slice(&res.body).unwrap();
    let job_url = format!("{media}/v1/media/{}/job", up["id"].as_str().unwrap());
    let start = Instant::now();
    loop {
        let res = request(&job_url, "GET", &[("Authorization", &a)], &[])
            .await
            .unwrap();
        let j: Value = serde_json::from_slice(&res.body).unwrap();
        if j["state"] == "done" || j["state"] == "failed" {
            return j;
        }
        assert!(start.elapsed() < JOB_PATIENCE, "job still {j}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn video(dir: &Path) -> Vec<u8> {
    use palaver_transcoder::corpus::{self, VideoSpec};
    let p = dir.join("clip.mp4");
    let spec = VideoSpec {
        width: 640,
        height: 360,
        secs: 2,
        ..Default::default()
    };
    corpus::video(&p, &spec).unwrap();
    std::fs::read(p).unwrap()
}

/// Every process of the topology.
struct Topology {
    /// Signaling node 0 is killed, node 1 survives.
    sig: [Server; 2],
    sfus: Vec<SfuNode>,
    media: Role,
    worker: Role,
    turn: Role,
    garage: Option<Garage>,
}

fn start_topology() -> Topology {
    let schema = fresh_schema();
    let garage = Garage::start();
    let turn_env = vec![("PALAVER__CALLS__TURN_SECRET".into(), TURN_SECRET.into())];
    // Chromium's relay candidates and the SFU are on 127.0.0.1 here.
    let turn = Role::start(
        "turn",
        "[turn]\npeer_allow = [\"127.0.0.0/8\"]\n",
        &turn_env,
        &["turn udp", "admin"],
    );
    let turn_urls = format!(
        "[\"turn:{}?transport=udp\"]",
        turn.addrs["turn udp"].as_str()
    );
    let env = [
        ("PALAVER__CALLS__TURN_SECRET", TURN_SECRET),
        ("PALAVER__CALLS__TURN_URLS", turn_urls.as_str()),
        ("PALAVER__SFU__TOKEN_SECRET", SFU_SECRET),
    ];
    let sig = [
        Server::start_node_with(&schema, "node-a", &env),
        Server::start_node_with(&schema, "node-b", &env),
    ];
    let sfus = ["sfu-1", "sfu-2"]
        .iter()
        .map(|id| SfuNode::start(&schema, id, SFU_SECRET, &[]))
        .collect();
    // The media role authenticates devices against the shared database;
    // jobs go to workers through Redis, keys named after this test.
    let queue = format!(
        "[cluster]\nname = \"{schema}\"\n[transcoder]\nqueue_backend = \"redis\"\n\
         redis_url = \"{}\"\npoll_interval = \"200ms\"\n",
        redis_url()
    );
    let mut media_env = postgres_env(&schema);
    media_env.extend(garage.env(5 << 20));
    let media = Role::start(
        "media",
        &format!("{queue}in_process = false\n"),
        &media_env,
        &["media", "admin"],
    );
    let worker = Role::start("transcoder", &queue, &[], &["admin"]);
    Topology {
        sig,
        sfus,
        media,
        worker,
        turn,
        garage: Some(garage),
    }
}

impl Topology {
    fn logs(&self) -> String {
        palaver_tests::sfu_node::cluster_logs(&self.sig, &self.sfus)
    }

    fn host_of(&self, t: &GroupCallTicket) -> usize {
        palaver_tests::sfu_node::host_of(&self.sfus, t)
    }
}

/// Alice (node B) and Bob (node A) chat across nodes.
async fn chat(t: &Topology) -> ((Client, Registration), (Client, Registration)) {
    let (mut alice, a) = t.sig[1].device(&phone()).await;
    let (mut bob, b) = t.sig[0].device(&phone()).await;
    alice
        .send(
            b.account,
            &id("hello"),
            vec![(b.device, b"hi bob".to_vec())],
        )
        .await
        .unwrap();
    let env = next_message(&mut bob).await;
    assert_eq!(env.payload.as_deref(), Some(&b"hi bob"[..]));
    bob.ack(vec![env.seq]).await.unwrap();
    bob.send(a.account, &id("re"), vec![(a.device, b"hi alice".to_vec())])
        .await
        .unwrap();
    let env = next_message(&mut alice).await;
    assert_eq!(env.payload.as_deref(), Some(&b"hi alice"[..]));
    alice.ack(vec![env.seq]).await.unwrap();
    ((alice, a), (bob, b))
}

/// Alice sends a video: the worker transcodes it, Bob downloads the
/// variant from the link in her message.
async fn video_message(
    t: &Topology,
    alice: &mut Client,
    a: &Registration,
    bob: &mut Client,
    b: &Registration,
) {
    let dir = tempfile::tempdir().unwrap();
    let j = send_video(&t.media.url("media"), a, &video(dir.path())).await;
    assert_eq!(j["state"], "done", "{j}");
    let link = j["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "video")
        .unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    alice
        .send(b.account, &id("video"), vec![(b.device, link.into_bytes())])
        .await
        .unwrap();
    let env = next_message(bob).await;
    bob.ack(vec![env.seq]).await.unwrap();
    let url = String::from_utf8(env.payload.unwrap()).unwrap();
    let got = palaver_client::media::request(&url, "GET", &[], &[])
        .await
        .unwrap();
    assert_eq!(got.status, 200);
    let path = dir.path().join("variant.mp4");
    std::fs::write(&path, &got.body).unwrap();
    let p = palaver_transcoder::corpus::ffprobe(&path).unwrap();
    assert_eq!(p["streams"][0]["codec_name"], "h264", "{p}");
    for role in [&t.worker, &t.media] {
        let (status, m) = palaver_tests::http_get(&role.url("admin"), "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            m.contains("palaver_transcoder_jobs_completed_total 1"),
            "{m}"
        );
    }
    let (status, _) = palaver_tests::http_get(&t.turn.url("admin"), "/healthz").await;
    assert_eq!(status, 200);
    for (role, what) in [(&t.worker, "redis"), (&t.media, "database")] {
        let (status, body) = palaver_tests::http_get(&role.url("admin"), "/readyz").await;
        assert_eq!((status, body.as_str()), (200, "ready\n"), "{what}");
    }
}

/// Frank (node B) calls Gina (node A); both get tickets for one room.
async fn group_call(t: &Topology) -> ([Client; 2], Registration, [GroupCallTicket; 2]) {
    let (mut frank, _) = t.sig[1].device(&phone()).await;
    let (mut gina, g) = t.sig[0].device(&phone()).await;
    let tf = frank
        .group_call_start(vec![g.account], Media::Video)
        .await
        .unwrap();
    let room = loop {
        match next_event(&mut gina).await {
            Event::Call(ServerFrame::GroupCallIncoming { room, .. }) => break room,
            Event::Presence(_) => continue,
            e => panic!("expected group_call_incoming, got {e:?}"),
        }
    };
    let tg = gina.group_call_join(&room).await.unwrap();
    assert_eq!(tf.sfu_url, tg.sfu_url, "one room, one node");
    assert!(
        tf.ice_servers.iter().any(|s| s.credential.is_some()),
        "the ticket carries TURN credentials: {:?}",
        tf.ice_servers
    );
    ([frank, gina], g, [tf, tg])
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

/// What a sender loop saw: the messages the server acknowledged, and the
/// one in flight when its connection died (if it died).
struct Sent {
    client: Client,
    acked: Vec<String>,
    unacked: Option<String>,
}

/// Sends `prefix0`, `prefix1`, ... to `to` every 20 ms, up to `max` or
/// until the connection dies; reports how many were acknowledged.
async fn send_loop(
    mut c: Client,
    to: &Registration,
    prefix: &str,
    max: usize,
    progress: tokio::sync::watch::Sender<usize>,
) -> Sent {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut acked = Vec::new();
    for i in 0..max {
        tick.tick().await;
        let m = format!("{prefix}{i}");
        let body = vec![(to.device, m.clone().into_bytes())];
        if c.send(to.account, &id(&m), body).await.is_err() {
            return Sent {
                client: c,
                acked,
                unacked: Some(m),
            };
        }
        acked.push(m);
        progress.send_replace(acked.len());
    }
    Sent {
        client: c,
        acked,
        unacked: None,
    }
}

/// Reads messages until `end`, acknowledging them; returns how often each
/// message id arrived.
async fn receive_until(c: &mut Client, end: &str) -> BTreeMap<String, usize> {
    let mut got = BTreeMap::new();
    loop {
        let Event::Envelope(env) = palaver_tests::next_event(c).await else {
            continue;
        };
        c.ack(vec![env.seq]).await.unwrap();
        if env.kind != EnvelopeKind::Message {
            continue;
        }
        let m = env.msg.as_str().to_owned();
        *got.entry(m.clone()).or_insert(0) += 1;
        if m == end {
            return got;
        }
    }
}

/// Asserts every acknowledged message arrived exactly once.
fn assert_delivered(
    who: &str,
    (acked, unacked): (&Vec<String>, &Option<String>),
    got: &BTreeMap<String, usize>,
) {
    let lost: Vec<&String> = acked.iter().filter(|m| !got.contains_key(*m)).collect();
    let twice: Vec<(&String, &usize)> = got.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "{who}: {} acknowledged, {} delivered (with the end marker), {} lost, {} duplicated; \
         in flight at the kill: {:?} ({})",
        acked.len(),
        got.len(),
        lost.len(),
        twice.len(),
        unacked,
        if unacked.as_ref().is_some_and(|m| got.contains_key(m)) {
            "delivered"
        } else {
            "not delivered"
        },
    );
    assert!(lost.is_empty(), "{who}: acknowledged but lost: {lost:?}");
    assert!(twice.is_empty(), "{who}: delivered twice: {twice:?}");
}

/// The surviving node's per-participant stats show both pages, sending and
/// receiving.
async fn assert_participants(node: &SfuNode, room: &str) {
    let (status, body) = palaver_tests::http_get(&node.admin_url, "/sfu/participants").await;
    assert_eq!(status, 200, "{body}");
    let list: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(list.len(), 2, "{body}");
    for p in &list {
        assert_eq!(p["room"], room);
        assert!(p["bitrate_in_bps"].as_u64().unwrap() > 0, "{p}");
        assert!(p["bitrate_out_bps"].as_u64().unwrap() > 0, "{p}");
    }
}

/// Once both senders are under way, SIGKILLs signaling node A and the SFU
/// node hosting the call; follows the call to the surviving SFU node.
/// Returns Frank's and Gina's clients (Gina's on node B now).
async fn kill_and_follow(
    t: &mut Topology,
    d: &Driver,
    [mut frank, mut gina]: [Client; 2],
    g: &Registration,
    tickets: &[GroupCallTicket; 2],
    mut progress: [tokio::sync::watch::Receiver<usize>; 2],
) -> [Client; 2] {
    for p in &mut progress {
        p.wait_for(|n| *n >= 10)
            .await
            .expect("a sender stopped early");
    }
    let host = t.host_of(&tickets[0]);
    let survivor = t.sfus[1 - host].url.clone();
    let killed_at = now_ms();
    t.sig[0].kill();
    t.sfus[host].kill();
    // Frank (node B) is told the room moved; his page rejoins.
    let tf = tokio::time::timeout(PATIENCE, next_moved(&mut frank))
        .await
        .unwrap_or_else(|_| panic!("no group_call_moved\n{}", t.logs()));
    let moved_at = now_ms();
    assert_eq!(tf.sfu_url, survivor);
    d.moved(0, &tf).await;
    // Gina lost her signaling node too: her app reconnects through the
    // load balancer (node B) and joins the call again.
    until_closed(&mut gina).await;
    let mut gina = reconnect(&t.sig[1], g).await;
    let tg = gina.group_call_join(&tickets[1].room).await.unwrap();
    let rejoined_at = now_ms();
    assert_eq!(tg.sfu_url, survivor);
    d.moved(1, &tg).await;
    let first = d.media_since_join(0).await.max(d.media_since_join(1).await);
    let recovery = first.saturating_sub(killed_at);
    eprintln!(
        "SIGKILL -> group_call_moved at Frank: {} ms; -> Gina reconnected and rejoined: {} ms; \
         -> both decode again on the surviving SFU node: {recovery} ms",
        moved_at - killed_at,
        rejoined_at - killed_at,
    );
    assert!(
        recovery <= RECOVERY_LIMIT_MS,
        "media resumed {recovery} ms after the kill\n{}",
        t.logs()
    );
    [frank, gina]
}

#[tokio::test]
async fn roles_as_separate_processes_survive_a_killed_signaling_and_sfu_node() {
    check_tools();
    let mut t = start_topology();
    let ((mut alice, a), (mut bob, b)) = chat(&t).await;
    video_message(&t, &mut alice, &a, &mut bob, &b).await;

    // The group call, both pages relaying through TURN.
    let (callers, g, tickets) = group_call(&t).await;
    let d = Driver::start();
    d.join(0, &tickets[0], true).await;
    d.join(1, &tickets[1], true).await;
    d.media_since_join(0).await;
    d.media_since_join(1).await;
    assert_eq!(d.candidate_types(&[0, 1]).await, ["relay", "relay"]);

    // Messages both ways while the nodes die: Alice (node B) to Bob
    // (node A), Carol (node A) to Dave (node B).
    let (carol, c) = t.sig[0].device(&phone()).await;
    let (mut dave, dv) = t.sig[1].device(&phone()).await;
    let (tx_a, rx_a) = tokio::sync::watch::channel(0);
    let (tx_c, rx_c) = tokio::sync::watch::channel(0);
    let (from_alice, from_carol, callers) = tokio::join!(
        send_loop(alice, &b, "a", 100, tx_a),
        send_loop(carol, &dv, "c", usize::MAX, tx_c),
        kill_and_follow(&mut t, &d, callers, &g, &tickets, [rx_a, rx_c]),
    );
    assert!(from_alice.unacked.is_none(), "Alice's node survived");
    assert!(from_carol.unacked.is_some(), "Carol's node was killed");
    d.assert_flowing().await;
    assert_eq!(d.candidate_types(&[0, 1]).await, ["relay", "relay"]);
    let survivor = &t.sfus[1 - t.host_of(&tickets[0])];
    assert_participants(survivor, &tickets[0].room).await;
    let (_, m) = palaver_tests::http_get(&t.turn.url("admin"), "/metrics").await;
    let relayed = m
        .lines()
        .find(|l| l.starts_with("palaver_turn_relayed_packets_total{direction=\"to_peer\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .expect("TURN metrics on the admin listener");
    eprintln!("packets the TURN role relayed to the SFU nodes: {relayed}");
    assert!(relayed > 100, "the TURN server relayed {relayed} packets");
    drop(callers);

    // Bob and Carol reconnect to the survivor; Carol sends again what was
    // in flight (same id: stored at most once) and marks her end.
    let Sent {
        client: mut alice,
        acked,
        unacked,
    } = from_alice;
    let from_alice = (&acked, &unacked);
    alice
        .send(b.account, &id("a-end"), vec![(b.device, b"end".to_vec())])
        .await
        .unwrap();
    let mut bob = reconnect(&t.sig[1], &b).await;
    let got = receive_until(&mut bob, "a-end").await;
    assert_delivered("Alice -> Bob", from_alice, &got);
    let Sent {
        client,
        acked,
        unacked,
    } = from_carol;
    drop(client);
    let from_carol = (&acked, &unacked);
    let mut carol = reconnect(&t.sig[1], &c).await;
    let m = unacked.clone().unwrap();
    carol
        .send(
            dv.account,
            &id(&m),
            vec![(dv.device, m.clone().into_bytes())],
        )
        .await
        .unwrap();
    carol
        .send(dv.account, &id("c-end"), vec![(dv.device, b"end".to_vec())])
        .await
        .unwrap();
    let got = receive_until(&mut dave, "c-end").await;
    assert_delivered("Carol -> Dave", from_carol, &got);
    assert!(got.contains_key(&m), "the message sent again arrived");

    // The media role's readiness follows its object store.
    drop(t.garage.take());
    let start = Instant::now();
    loop {
        let (status, body) = palaver_tests::http_get(&t.media.url("admin"), "/readyz").await;
        if status == 503 {
            assert_eq!(body, "s3 unavailable\n");
            break;
        }
        assert!(start.elapsed() < JOB_PATIENCE, "still ready without S3");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.cmd(json!({"cmd": "quit"})).await;
}
