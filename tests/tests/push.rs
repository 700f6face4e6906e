//! Web Push, the part that exists: the VAPID public key on the main
//! listener, made once in the data directory and kept across restarts.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use palaver_tests::{Server, http_get};

async fn key_of(server: &Server) -> String {
    let base = format!("http://{}", server.main_addr);
    let (status, body) = http_get(&base, "/v1/push/vapid-key").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["public_key"].as_str().expect("public_key").to_owned()
}

#[tokio::test]
async fn vapid_public_key_is_served_and_survives_a_restart() {
    let mut server = Server::start();
    let key = key_of(&server).await;
    let point = URL_SAFE_NO_PAD.decode(&key).unwrap();
    assert_eq!(point.len(), 65, "an uncompressed P-256 point");
    assert_eq!(point[0], 4);

    use std::os::unix::fs::PermissionsExt;
    let file = server.data_dir.join("push/vapid.key");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the private key is not readable by others");
    assert!(
        !server
            .log()
            .contains(std::fs::read_to_string(&file).unwrap().trim())
    );

    let st = server.terminate();
    assert!(st.success(), "{st:?}\n{}", server.log());
    server.restart();
    assert_eq!(key_of(&server).await, key);
}

use palaver_client::proto::frames::{EndReason, Media, ServerFrame};
use palaver_client::proto::push::PushTarget;
use palaver_client::proto::{ClientMsgId, ErrorCode};
use palaver_client::{Client, Event, Registration};
use palaver_tests::push_endpoint::{PushEndpoint, Received, UaKeys, python_hmac};
use palaver_tests::{expect_ended, next_call, next_event, phone};
use std::time::Duration;

/// Push settings for tests: plain-http endpoints on 127.0.0.1, one push in
/// flight at a time (so pushes reach the endpoint in the order they were
/// decided, which the "no push" checks rely on), fast retries, a relay.
fn config(ep: &PushEndpoint, window: &str) -> String {
    format!(
        "[push]\nallow_http = true\nallow = [\"127.0.0.1/32\"]\nconcurrency = 1\n\
         retry_base = \"50ms\"\nwindow = \"{window}\"\n\n[[push.relays]]\nname = \"test\"\n\
         url = \"{}\"\nsecret = \"relay-secret\"\n",
        ep.url("/relay")
    )
}

fn web(ep: &PushEndpoint, path: &str, keys: &UaKeys) -> PushTarget {
    PushTarget::WebPush {
        endpoint: ep.url(path),
        p256dh: keys.p256dh.clone(),
        auth: keys.auth.clone(),
    }
}

/// Waits until `account` is reported offline to `watcher`.
async fn wait_offline(watcher: &mut Client, account: palaver_client::proto::AccountId) {
    let now = watcher.subscribe_presence(vec![account]).await.unwrap();
    if now.iter().any(|p| p.online == Some(false)) {
        return;
    }
    loop {
        if let Event::Presence(p) = next_event(watcher).await
            && p.account == account
            && p.online == Some(false)
        {
            return;
        }
    }
}

/// A new device that subscribed (and maybe set a quiet time) and then
/// went offline, as `watcher` has seen.
async fn offline(
    server: &Server,
    watcher: &mut Client,
    target: PushTarget,
    quiet_until: Option<u64>,
) -> Registration {
    let (mut c, reg) = server.device(&phone()).await;
    c.push_subscribe(target).await.unwrap();
    if quiet_until.is_some() {
        c.push_quiet(quiet_until).await.unwrap();
    }
    drop(c);
    wait_offline(watcher, reg.account).await;
    reg
}

/// Connects `reg`'s device, runs `f` on it, and waits until it is offline again.
async fn visit(
    server: &Server,
    watcher: &mut Client,
    reg: &Registration,
    quiet: Option<Option<u64>>,
) {
    let mut c = server.connect().await;
    c.auth(reg.device, &reg.credential).await.unwrap();
    if let Some(q) = quiet {
        c.push_quiet(q).await.unwrap();
    }
    drop(c);
    wait_offline(watcher, reg.account).await;
}

async fn send(from: &mut Client, to: &Registration) {
    let id = ClientMsgId::new(format!("m{}", rand::random::<u64>())).unwrap();
    from.send(to.account, &id, vec![(to.device, b"sealed".to_vec())])
        .await
        .unwrap();
}

async fn wait_metric(server: &Server, line: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !server.metrics().await.lines().any(|l| l == line) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "metric {line} never seen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Opens a Web Push request and checks its VAPID token against the key
/// the server publishes.
async fn open(
    server: &Server,
    ep: &PushEndpoint,
    keys: &UaKeys,
    r: &Received,
) -> serde_json::Value {
    let (plaintext, claims) = keys.open(r, &format!("http://{}", ep.addr));
    assert_eq!(claims["sub"], "mailto:postmaster@localhost");
    let k = r
        .header("authorization")
        .unwrap()
        .split("k=")
        .nth(1)
        .unwrap();
    assert_eq!(k, key_of(server).await, "signed with the published key");
    assert_eq!(r.header("content-encoding"), Some("aes128gcm"));
    plaintext
}

#[tokio::test]
async fn an_offline_device_gets_one_push_per_burst_and_a_connected_one_none() {
    let mut ep = PushEndpoint::start("127.0.0.1").await;
    let server = Server::start_with(&config(&ep, "10s"));
    let (mut alice, _) = server.device(&phone()).await;
    let (kb, kd, kc) = (UaKeys::generate(), UaKeys::generate(), UaKeys::generate());
    let bob = offline(&server, &mut alice, web(&ep, "/bob", &kb), None).await;
    let dave = offline(&server, &mut alice, web(&ep, "/dave", &kd), None).await;
    let (mut carol_c, carol) = server.device(&phone()).await;
    carol_c
        .push_subscribe(web(&ep, "/carol", &kc))
        .await
        .unwrap();

    for _ in 0..5 {
        send(&mut alice, &bob).await;
        send(&mut alice, &carol).await;
    }
    send(&mut alice, &dave).await;

    let first = ep.next().await;
    assert_eq!(first.path, "/bob");
    let p = open(&server, &ep, &kb, &first).await;
    assert_eq!(p, serde_json::json!({"kind": "message", "count": 1}));
    assert_eq!(first.header("urgency"), Some("normal"));
    assert_eq!(first.header("ttl"), Some("86400"));
    assert_eq!(first.header("topic"), Some("messages"));
    // Pushes leave one at a time in the order they were decided: had bob
    // got a second push, or carol (connected) any, it would come first.
    let second = ep.next().await;
    assert_eq!(second.path, "/dave");
    let p = open(&server, &ep, &kd, &second).await;
    assert_eq!(p["count"], 1);
    // When the window closes, one more push carries the burst's count.
    let third = ep.next().await;
    assert_eq!(third.path, "/bob");
    let p = open(&server, &ep, &kb, &third).await;
    assert_eq!(p, serde_json::json!({"kind": "message", "count": 5}));
    let m = server.metrics().await;
    assert!(
        m.contains("palaver_push_coalesced_total{kind=\"message\"} 4"),
        "{m}"
    );
    drop(carol_c);
}

#[tokio::test]
async fn quiet_time_silences_message_and_call_pushes() {
    let mut ep = PushEndpoint::start("127.0.0.1").await;
    let server = Server::start_with(&config(&ep, "1h"));
    let (mut alice, _) = server.device(&phone()).await;
    let (kb, kd) = (UaKeys::generate(), UaKeys::generate());
    let hour = Some(now_ms() + 3_600_000);
    let bob = offline(&server, &mut alice, web(&ep, "/bob", &kb), hour).await;
    let dave = offline(&server, &mut alice, web(&ep, "/dave", &kd), None).await;

    send(&mut alice, &bob).await;
    send(&mut alice, &dave).await;
    assert_eq!(
        ep.next().await.path,
        "/dave",
        "no push to the quiet device first"
    );
    wait_metric(&server, "palaver_push_quiet_total{kind=\"message\"} 1").await;
    // A quiet device does not ring either: with no other device the call
    // is unavailable at once.
    let (call, _) = alice
        .call_offer(bob.account, Media::Audio, "v=0")
        .await
        .unwrap();
    expect_ended(&mut alice, call, EndReason::Unavailable).await;

    visit(&server, &mut alice, &bob, Some(None)).await;
    send(&mut alice, &bob).await;
    let r = ep.next().await;
    assert_eq!(r.path, "/bob", "quiet time over");
    assert_eq!(open(&server, &ep, &kb, &r).await["count"], 1);
}

#[tokio::test]
async fn a_gone_subscription_is_dropped() {
    let mut ep = PushEndpoint::start("127.0.0.1").await;
    let server = Server::start_with(&config(&ep, "1h"));
    let (mut alice, _) = server.device(&phone()).await;
    let (ke, kd) = (UaKeys::generate(), UaKeys::generate());
    ep.script("/gone", &[(410, None)]);
    let eve = offline(&server, &mut alice, web(&ep, "/gone", &ke), None).await;
    let dave = offline(&server, &mut alice, web(&ep, "/dave", &kd), None).await;

    send(&mut alice, &eve).await;
    assert_eq!(ep.next().await.path, "/gone");
    wait_metric(&server, "palaver_push_subscriptions_gone_total 1").await;
    // Connecting ends eve's burst: another message would push at once.
    visit(&server, &mut alice, &eve, None).await;
    send(&mut alice, &eve).await;
    send(&mut alice, &dave).await;
    assert_eq!(
        ep.next().await.path,
        "/dave",
        "nothing more to the gone endpoint"
    );
}

#[tokio::test]
async fn endpoints_must_be_valid_and_lead_to_allowed_addresses() {
    let mut ep = PushEndpoint::start("127.0.0.1").await;
    let mut private = PushEndpoint::start("127.0.0.2").await;
    let server = Server::start_with(&config(&ep, "1h"));
    let (mut alice, _) = server.device(&phone()).await;
    let (kf, kd) = (UaKeys::generate(), UaKeys::generate());

    let (mut c, _) = server.device(&phone()).await;
    let long = format!("/{}", "a".repeat(1100));
    let refused = [
        PushTarget::WebPush {
            endpoint: format!("ftp://{}/x", ep.addr),
            p256dh: kf.p256dh.clone(),
            auth: kf.auth.clone(),
        },
        web(&ep, &long, &kf),
        PushTarget::WebPush {
            endpoint: ep.url("/x"),
            p256dh: "AAAA".into(),
            auth: kf.auth.clone(),
        },
        PushTarget::Relay {
            relay: "nope".into(),
            token: "t".into(),
        },
    ];
    for t in refused {
        match c.push_subscribe(t.clone()).await {
            Err(palaver_client::Error::Server(e)) => {
                assert_eq!(e.code, ErrorCode::BadRequest, "{t:?}")
            }
            other => panic!("{t:?} accepted: {other:?}"),
        }
    }
    drop(c);

    // 127.0.0.2 is loopback and not in push.allow: refused at send time.
    let frank = offline(&server, &mut alice, web(&private, "/x", &kf), None).await;
    let dave = offline(&server, &mut alice, web(&ep, "/dave", &kd), None).await;
    send(&mut alice, &frank).await;
    send(&mut alice, &dave).await;
    assert_eq!(ep.next().await.path, "/dave");
    assert!(
        private.rx.try_recv().is_err(),
        "no request to a refused address"
    );
    wait_metric(&server, "palaver_push_dropped_total{kind=\"message\"} 1").await;
}

#[tokio::test]
async fn a_relay_gets_a_signed_post_retried_after_a_503() {
    let mut ep = PushEndpoint::start("127.0.0.1").await;
    ep.script("/relay", &[(503, Some(1))]);
    let server = Server::start_with(&config(&ep, "1h"));
    let (mut alice, _) = server.device(&phone()).await;
    let target = PushTarget::Relay {
        relay: "test".into(),
        token: "tok-1".into(),
    };
    let grace = offline(&server, &mut alice, target, None).await;
    send(&mut alice, &grace).await;

    let first = ep.next().await;
    let second = ep.next().await;
    assert!(
        second.at - first.at >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    for r in [&first, &second] {
        assert_eq!(r.path, "/relay");
        let ts = r.header("x-palaver-timestamp").unwrap();
        let age = (now_ms() / 1000).abs_diff(ts.parse().unwrap());
        assert!(age < 300, "fresh timestamp");
        let sig = r.header("x-palaver-signature").unwrap();
        assert_eq!(
            sig,
            format!("sha256={}", python_hmac("relay-secret", ts, &r.body))
        );
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "device": grace.device.0, "account": grace.account.0, "token": "tok-1",
                "payload": {"kind": "message", "count": 1}, "urgency": "normal", "ttl": 86400
            })
        );
    }
    wait_metric(&server, "palaver_push_sent_total{kind=\"message\"} 1").await;
    wait_metric(&server, "palaver_push_retries_total{kind=\"message\"} 1").await;
}

#[tokio::test]
async fn a_call_wakes_an_offline_callee_and_is_cancelled_when_the_caller_hangs_up() {
    let mut ep = PushEndpoint::start("127.0.0.1").await;
    let server = Server::start_with(&config(&ep, "1h"));
    let (mut alice, a) = server.device(&phone()).await;
    let kb = UaKeys::generate();
    let bob = offline(&server, &mut alice, web(&ep, "/bob", &kb), None).await;

    let (call, _) = alice
        .call_offer(bob.account, Media::Video, "v=0 offer")
        .await
        .unwrap();
    assert!(
        matches!(next_call(&mut alice).await, ServerFrame::CallRinging { call: c } if c == call)
    );
    let ring = ep.next().await;
    assert_eq!(ring.header("urgency"), Some("high"));
    assert_eq!(ring.header("ttl"), Some("30"));
    let topic = format!("call-{}", call.0);
    assert_eq!(ring.header("topic"), Some(topic.as_str()));
    assert_eq!(
        open(&server, &ep, &kb, &ring).await,
        serde_json::json!({"kind": "call", "call": call.0.to_string(),
            "from": a.account.0.to_string(), "video": true})
    );

    // Woken, the device connects and the call rings on it.
    let mut bob_c = server.connect().await;
    bob_c.auth(bob.device, &bob.credential).await.unwrap();
    match next_call(&mut bob_c).await {
        ServerFrame::CallIncoming { call: c, sdp, .. } => {
            assert_eq!((c, sdp.as_str()), (call, "v=0 offer"))
        }
        other => panic!("expected call_incoming, got {other:?}"),
    }
    alice.call_hangup(call).await.unwrap();
    expect_ended(&mut bob_c, call, EndReason::Cancelled).await;
    let cancel = ep.next().await;
    assert_eq!(cancel.header("urgency"), Some("high"));
    assert_eq!(
        open(&server, &ep, &kb, &cancel).await,
        serde_json::json!({"kind": "call_cancel", "call": call.0.to_string()})
    );
}

/// Not a test: how fast pushes leave a debug build on this machine. Run
/// with `cargo nextest run -p palaver-tests --test push --run-ignored only`
/// and read the printed line.
#[tokio::test]
#[ignore = "a measurement, not a test"]
async fn measure_push_latency_and_throughput() {
    const N: usize = 200;
    let mut ep = PushEndpoint::start("127.0.0.1").await;
    let limits = "\n[signaling.rate_limits]\ncode_requests_per_ip = { burst = 1000, per_minute = 1000.0 }\n\
                  verify_per_ip = { burst = 1000, per_minute = 1000.0 }\n";
    let cfg = config(&ep, "1h").replace("concurrency = 1", "concurrency = 32") + limits;
    let server = Server::start_with(&cfg);
    let (mut alice, _) = server.device(&phone()).await;
    let keys = UaKeys::generate();
    let mut devices = Vec::new();
    for i in 0..N {
        devices.push(
            offline(
                &server,
                &mut alice,
                web(&ep, &format!("/d{i}"), &keys),
                None,
            )
            .await,
        );
    }
    // One at a time: latency from the send's acknowledgement to the request.
    let mut lat = Vec::new();
    for d in devices.iter().take(20) {
        send(&mut alice, d).await;
        let acked = std::time::Instant::now();
        lat.push(ep.next().await.at - acked);
    }
    lat.sort();
    // A burst: one message to each of the other devices, as fast as acked.
    let start = std::time::Instant::now();
    for d in devices.iter().skip(20) {
        send(&mut alice, d).await;
    }
    let last_ack = std::time::Instant::now();
    let mut last = start;
    for _ in 20..N {
        last = ep.next().await.at;
    }
    let took = last - start;
    eprintln!(
        "push latency median {:?} max {:?}; {} sends acked in {:?}, their pushes all in by {:?} \
         ({:?} after the last ack) = {:.0} pushes/s",
        lat[lat.len() / 2],
        lat[lat.len() - 1],
        N - 20,
        last_ack - start,
        took,
        last.saturating_duration_since(last_ack),
        (N - 20) as f64 / took.as_secs_f64()
    );
}
