//! Palaver as separate processes, as on several machines, without Docker:
//! PostgreSQL and Redis from scripts/test.sh, a Garage node per test, then
//! two `palaver signaling` nodes, `palaver media` (S3 blobs, Redis job
//! queue), `palaver turn` and a `palaver transcoder` worker, each with its
//! own data directory. Users on different signaling nodes chat; one sends
//! a video that the worker transcodes, the other downloads the variant;
//! then one signaling node is SIGKILLed and no acknowledged message is
//! lost once its clients reconnect to the survivor.
//! (Group calls on two SFU nodes and their failover: tests/tests/sfu_cluster.rs.)

use palaver_client::proto::ClientMsgId;
use palaver_client::{Client, Event, Registration};
use palaver_tests::garage::Garage;
use palaver_tests::{Server, fresh_schema, next_envelope, phone, postgres_env, redis_url};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Bounds a hang on a busy machine; not a speed requirement.
const JOB_PATIENCE: Duration = Duration::from_secs(300);
const TURN_SECRET: &str = "multinode-test-turn-secret-0123456789";

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

#[tokio::test]
async fn roles_as_separate_processes_chat_transcode_and_survive_a_killed_node() {
    let schema = fresh_schema();
    let turn_env = [("PALAVER__CALLS__TURN_SECRET", TURN_SECRET)];
    let mut n1 = Server::start_node_with(&schema, "node-a", &turn_env);
    let n2 = Server::start_node_with(&schema, "node-b", &turn_env);
    // The media role authenticates devices against the shared database;
    // jobs go to workers through Redis, keys named after this test.
    let garage = Garage::start();
    let queue = format!(
        "[cluster]\nname = \"{schema}\"\n[transcoder]\nqueue_backend = \"redis\"\n\
         redis_url = \"{}\"\npoll_interval = \"200ms\"\n",
        redis_url()
    );
    let mut env = postgres_env(&schema);
    env.extend(garage.env(5 << 20));
    let media_role = Role::start(
        "media",
        &format!("{queue}in_process = false\n"),
        &env,
        &["media", "admin"],
    );
    let worker = Role::start("transcoder", &queue, &[], &["admin"]);
    let turn_env = vec![("PALAVER__CALLS__TURN_SECRET".into(), TURN_SECRET.into())];
    let turn = Role::start("turn", "", &turn_env, &["turn udp", "admin"]);
    let media = media_role.url("media");

    // Alice on node B, Bob on node A: they chat across nodes.
    let (mut alice, a) = n2.device(&phone()).await;
    let (mut bob, b) = n1.device(&phone()).await;
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

    // Alice sends a video: the worker transcodes it, Bob downloads the
    // variant from the link in her message.
    let dir = tempfile::tempdir().unwrap();
    let j = send_video(&media, &a, &video(dir.path())).await;
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
    let env = next_message(&mut bob).await;
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
    let (status, m) = palaver_tests::http_get(&worker.url("admin"), "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        m.contains("palaver_transcoder_jobs_completed_total 1"),
        "{m}"
    );
    let (status, _) = palaver_tests::http_get(&turn.url("admin"), "/healthz").await;
    assert_eq!(status, 200);
    // Every role reports ready on its admin listener, with metrics.
    for (role, what) in [(&worker, "redis"), (&media_role, "database")] {
        let (status, body) = palaver_tests::http_get(&role.url("admin"), "/readyz").await;
        assert_eq!((status, body.as_str()), (200, "ready\n"), "{what}");
    }
    let (_, m) = palaver_tests::http_get(&media_role.url("admin"), "/metrics").await;
    assert!(
        m.contains("palaver_transcoder_jobs_completed_total 1"),
        "{m}"
    );

    // Alice sends Bob messages the server acknowledges; Bob's node dies
    // before he reads them, he reconnects to the survivor.
    let mut expected = BTreeSet::new();
    for i in 0..15 {
        let m = format!("m{i}");
        alice
            .send(b.account, &id(&m), vec![(b.device, m.clone().into_bytes())])
            .await
            .unwrap();
        expected.insert(m);
    }
    n1.kill();
    until_closed(&mut bob).await;
    for i in 15..25 {
        let m = format!("m{i}");
        alice
            .send(b.account, &id(&m), vec![(b.device, m.clone().into_bytes())])
            .await
            .unwrap();
        expected.insert(m);
    }
    let mut bob = reconnect(&n2, &b).await;
    let mut got = BTreeSet::new();
    while got.len() < expected.len() {
        let Event::Envelope(env) = palaver_tests::next_event(&mut bob).await else {
            continue;
        };
        bob.ack(vec![env.seq]).await.unwrap();
        if env.kind == palaver_client::proto::frames::EnvelopeKind::Message {
            got.insert(env.msg.as_str().to_owned());
        }
    }
    assert_eq!(got, expected);

    // The media role's readiness follows its object store.
    drop(garage);
    let start = Instant::now();
    loop {
        let (status, body) = palaver_tests::http_get(&media_role.url("admin"), "/readyz").await;
        if status == 503 {
            assert_eq!(body, "s3 unavailable\n");
            break;
        }
        assert!(start.elapsed() < JOB_PATIENCE, "still ready without S3");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
