//! Two `palaver signaling` nodes sharing a PostgreSQL database and routing
//! through Redis, both started by scripts/test.sh (scripts/postgres.sh and
//! scripts/redis.sh): accounts on different nodes chat 1:1 and in groups,
//! see each other's presence and typing, and killing a node with SIGKILL
//! loses no message the server acknowledged.

use palaver_client::proto::ClientMsgId;
use palaver_client::proto::frames::EnvelopeKind;
use palaver_client::{Client, Event, Registration};
use palaver_tests::{Server, fresh_schema, next_envelope, next_event, phone};
use std::collections::BTreeSet;

fn id(s: &str) -> ClientMsgId {
    ClientMsgId::new(s).unwrap()
}

/// Two nodes on one fresh schema.
fn two_nodes() -> (Server, Server) {
    let schema = fresh_schema();
    let a = Server::start_node(&schema, "node-a");
    let b = Server::start_node(&schema, "node-b");
    (a, b)
}

/// Connects an existing device to `node`.
async fn reconnect(node: &Server, reg: &Registration) -> Client {
    let mut c = node.connect().await;
    c.auth(reg.device, &reg.credential).await.expect("auth");
    c
}

/// Waits for the next envelope of `kind`, acknowledging others on the way.
async fn next_of_kind(c: &mut Client, kind: EnvelopeKind) -> palaver_client::Envelope {
    loop {
        let env = next_envelope(c).await;
        if env.kind == kind {
            return env;
        }
        c.ack(vec![env.seq]).await.unwrap();
    }
}

/// Reads until the server drops the connection.
async fn until_closed(c: &mut Client) {
    loop {
        match tokio::time::timeout(palaver_tests::PATIENCE, c.next_event()).await {
            Ok(Ok(_)) => continue,
            Ok(Err(_)) => return,
            Err(_) => panic!("the connection to the killed node stayed open"),
        }
    }
}

/// Waits for the next event that is not a presence or typing notice.
async fn next_non_presence(c: &mut Client) -> Event {
    loop {
        match next_event(c).await {
            Event::Presence(_) | Event::Typing { .. } => continue,
            other => return other,
        }
    }
}

#[tokio::test]
async fn accounts_on_different_nodes_chat_and_see_each_other() {
    let (n1, n2) = two_nodes();
    let (mut alice, a) = n1.device(&phone()).await;
    let (mut bob, b) = n2.device(&phone()).await;

    // Presence: Bob is online, on the other node.
    let p = alice.subscribe_presence(vec![b.account]).await.unwrap();
    assert_eq!(p[0].online, Some(true));

    // 1:1, both ways, with receipts.
    alice
        .send(b.account, &id("a1"), vec![(b.device, b"hi bob".to_vec())])
        .await
        .unwrap();
    let env = next_envelope(&mut bob).await;
    assert_eq!((env.from, env.msg.clone()), (a.account, id("a1")));
    assert_eq!(env.payload.as_deref(), Some(&b"hi bob"[..]));
    bob.ack(vec![env.seq]).await.unwrap();
    let receipt = next_envelope(&mut alice).await;
    assert_eq!(receipt.kind, EnvelopeKind::Delivered);
    assert_eq!(receipt.msg, id("a1"));
    alice.ack(vec![receipt.seq]).await.unwrap();
    bob.send(a.account, &id("b1"), vec![(a.device, b"hi alice".to_vec())])
        .await
        .unwrap();
    let env = next_envelope(&mut alice).await;
    assert_eq!((env.from, env.msg.clone()), (b.account, id("b1")));
    alice.ack(vec![env.seq]).await.unwrap();

    // Typing crosses nodes.
    bob.typing(a.account, true).await.unwrap();
    loop {
        match next_event(&mut alice).await {
            Event::Typing { from, typing, .. } => {
                assert_eq!((from, typing), (b.account, true));
                break;
            }
            Event::Envelope(e) => panic!("unexpected envelope {e:?}"),
            _ => continue,
        }
    }

    // A group with members on both nodes.
    let (mut carol, c) = n2.device(&phone()).await;
    let group = alice
        .group_create("both nodes", &[b.account, c.account])
        .await
        .unwrap();
    for client in [&mut bob, &mut carol, &mut alice] {
        let created = next_of_kind(client, EnvelopeKind::GroupEvent).await;
        client.ack(vec![created.seq]).await.unwrap();
    }
    alice
        .group_send(group.group, &id("g1"), b"to all".to_vec())
        .await
        .unwrap();
    for client in [&mut bob, &mut carol] {
        let env = next_of_kind(client, EnvelopeKind::Message).await;
        assert_eq!((env.msg.clone(), env.group), (id("g1"), Some(group.group)));
        client.ack(vec![env.seq]).await.unwrap();
    }
    carol
        .group_send(group.group, &id("g2"), b"from n2".to_vec())
        .await
        .unwrap();
    let env = next_of_kind(&mut alice, EnvelopeKind::Message).await;
    assert_eq!((env.from, env.msg.clone()), (c.account, id("g2")));

    // Bob leaves: Alice, on the other node, sees him go offline.
    bob.close().await.unwrap();
    loop {
        if let Event::Presence(p) = next_event(&mut alice).await
            && p.account == b.account
        {
            assert_eq!(p.online, Some(false));
            break;
        }
    }
    let p = alice.subscribe_presence(vec![b.account]).await.unwrap();
    assert_eq!(p[0].online, Some(false));
}

#[tokio::test]
async fn a_killed_node_loses_no_acknowledged_message() {
    let (mut n1, n2) = two_nodes();
    let (mut alice, _) = n2.device(&phone()).await;
    let (mut carol, c) = n1.device(&phone()).await;
    let (mut bob, b) = n1.device(&phone()).await;
    let mut expected = BTreeSet::new();

    // Carol (on the node that dies) and Alice (on the survivor) send to
    // Bob (on the node that dies); every send is acknowledged.
    for i in 0..20 {
        let m = format!("c{i}");
        let sent = carol
            .send(b.account, &id(&m), vec![(b.device, m.clone().into_bytes())])
            .await
            .unwrap();
        assert!(!sent.duplicate);
        expected.insert(m);
        let m = format!("a{i}");
        alice
            .send(b.account, &id(&m), vec![(b.device, m.clone().into_bytes())])
            .await
            .unwrap();
        expected.insert(m);
    }
    // Bob got some of them live and acknowledged none.
    let first = next_envelope(&mut bob).await;
    assert_eq!(first.kind, EnvelopeKind::Message);

    n1.kill();
    until_closed(&mut bob).await;
    until_closed(&mut carol).await;

    // While Bob is away, more arrive; then he reconnects to the survivor.
    for i in 20..30 {
        let m = format!("a{i}");
        alice
            .send(b.account, &id(&m), vec![(b.device, m.clone().into_bytes())])
            .await
            .unwrap();
        expected.insert(m);
    }
    let mut bob = reconnect(&n2, &b).await;
    // And more while he is connected there, live.
    for i in 30..40 {
        let m = format!("a{i}");
        alice
            .send(b.account, &id(&m), vec![(b.device, m.clone().into_bytes())])
            .await
            .unwrap();
        expected.insert(m);
    }
    let mut got = BTreeSet::new();
    let mut last_seq = 0;
    while got.len() < expected.len() {
        let Event::Envelope(env) = next_non_presence(&mut bob).await else {
            continue;
        };
        assert!(env.seq.0 > last_seq, "in order, no repeats");
        last_seq = env.seq.0;
        assert_eq!(env.payload.as_deref(), Some(env.msg.as_str().as_bytes()));
        got.insert(env.msg.as_str().to_owned());
        bob.ack(vec![env.seq]).await.unwrap();
    }
    assert_eq!(got, expected);

    // Carol's device moves too, and her delivered receipts wait for her.
    let mut carol = reconnect(&n2, &c).await;
    let mut receipts = BTreeSet::new();
    while receipts.len() < 20 {
        let Event::Envelope(env) = next_non_presence(&mut carol).await else {
            continue;
        };
        assert_eq!(env.kind, EnvelopeKind::Delivered);
        receipts.insert(env.msg.as_str().to_owned());
        carol.ack(vec![env.seq]).await.unwrap();
    }
}

/// Runs `redis-cli` against the test Redis.
fn redis_cli(args: &[&str]) -> String {
    // redis://:PASSWORD@HOST:PORT/ (scripts/redis.sh); the password goes in
    // the environment, not on the command line.
    let url = palaver_tests::redis_url();
    let rest = url.trim_start_matches("redis://").trim_end_matches('/');
    let (auth, hostport) = rest.split_once('@').expect("a password in the URL");
    let (host, port) = hostport.rsplit_once(':').expect("host:port");
    let out = std::process::Command::new("redis-cli")
        .env("REDISCLI_AUTH", auth.trim_start_matches(':'))
        .args(["-h", host, "-p", port])
        .args(args)
        .output()
        .expect("redis-cli (scripts/redis.sh installs it)");
    assert!(out.status.success(), "redis-cli {args:?} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn a_lost_notification_is_caught_up_by_the_next_one() {
    // A slow heartbeat, so that nothing repairs the registry behind the
    // test's back.
    let slow = [
        ("PALAVER__CLUSTER__HEARTBEAT", "60s"),
        ("PALAVER__CLUSTER__REGISTRY_TTL", "120s"),
    ];
    let schema = fresh_schema();
    let n1 = Server::start_node_with(&schema, "node-a", &slow);
    let n2 = Server::start_node_with(&schema, "node-b", &slow);
    let (mut alice, _) = n1.device(&phone()).await;
    let (mut bob, b) = n2.device(&phone()).await;
    let key = format!("{schema}:dev:{}", b.device.0);
    assert_eq!(redis_cli(&["GET", &key]), "node-b");

    // The registry points at a node that does not exist: the notification
    // of m1 goes nowhere (as a lost pub/sub message would).
    redis_cli(&["SET", &key, "node-gone", "PX", "120000"]);
    alice
        .send(b.account, &id("m1"), vec![(b.device, b"one".to_vec())])
        .await
        .unwrap();
    redis_cli(&["SET", &key, "node-b", "PX", "120000"]);
    alice
        .send(b.account, &id("m2"), vec![(b.device, b"two".to_vec())])
        .await
        .unwrap();
    // m2's notification shows a gap; Bob's connection re-reads its queue.
    let first = next_of_kind(&mut bob, EnvelopeKind::Message).await;
    assert_eq!(first.msg, id("m1"));
    let second = next_of_kind(&mut bob, EnvelopeKind::Message).await;
    assert_eq!(second.msg, id("m2"));
    assert!(second.seq > first.seq);
}

#[tokio::test]
async fn accounts_of_a_killed_node_go_offline_for_watchers_elsewhere() {
    let (mut n1, n2) = two_nodes();
    let (mut alice, _) = n2.device(&phone()).await;
    let (_bob, b) = n1.device(&phone()).await;
    // Carol has a device on each node: she stays online.
    let carol_phone = phone();
    let (_carol1, c) = n1.device(&carol_phone).await;
    let (_carol2, _) = n2.device(&carol_phone).await;
    let p = alice
        .subscribe_presence(vec![b.account, c.account])
        .await
        .unwrap();
    assert_eq!((p[0].online, p[1].online), (Some(true), Some(true)));

    n1.kill();
    // The survivor notices the dead node and tells Alice Bob is gone.
    loop {
        if let Event::Presence(p) = next_event(&mut alice).await {
            assert_ne!(p.account, c.account, "Carol is still online on n2");
            if p.account == b.account {
                assert_eq!(p.online, Some(false));
                assert!(p.last_seen.is_some());
                break;
            }
        }
    }
    let p = alice
        .subscribe_presence(vec![b.account, c.account])
        .await
        .unwrap();
    assert_eq!((p[0].online, p[1].online), (Some(false), Some(true)));
}

/// A node whose Redis goes away stops reporting ready (so a load balancer
/// sends new connections elsewhere).
#[tokio::test]
async fn readiness_follows_redis() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut redis = std::process::Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--dir"])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server (scripts/redis.sh installs it)");
    let url = format!("redis://127.0.0.1:{port}/");
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < palaver_tests::PATIENCE,
            "redis-server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let schema = fresh_schema();
    let node = Server::start_node_with(&schema, "node-a", &[("PALAVER__CLUSTER__REDIS_URL", &url)]);
    let base = format!("http://{}", node.main_addr);
    assert_eq!(palaver_tests::http_get(&base, "/readyz").await.0, 200);

    redis.kill().unwrap();
    redis.wait().unwrap();
    let start = std::time::Instant::now();
    loop {
        let (status, body) = palaver_tests::http_get(&base, "/readyz").await;
        if status == 503 {
            assert!(body.contains("redis"), "{body}");
            break;
        }
        assert!(
            start.elapsed() < palaver_tests::PATIENCE,
            "still ready without Redis"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
