//! Two accounts chat through a real server: online, offline, resends,
//! receipts, typing, presence, multiple devices.

use palaver_client::Event;
use palaver_client::proto::frames::{EnvelopeKind, LastSeenPrivacy};
use palaver_client::proto::{ClientMsgId, ErrorCode};
use palaver_tests::{Server, next_envelope, next_event, phone};

fn id(s: &str) -> ClientMsgId {
    ClientMsgId::new(s).unwrap()
}

#[tokio::test]
async fn online_chat_with_delivered_and_read_receipts() {
    let server = Server::start();
    let (mut alice, a) = server.device(&phone()).await;
    let (mut bob, b) = server.device(&phone()).await;

    let sent = alice
        .send(
            b.account,
            &id("hello-1"),
            vec![(b.device, b"hi bob".to_vec())],
        )
        .await
        .unwrap();
    assert!(!sent.duplicate);

    let env = next_envelope(&mut bob).await;
    assert_eq!(env.kind, EnvelopeKind::Message);
    assert_eq!(env.from, a.account);
    assert_eq!(env.from_device, a.device);
    assert_eq!(env.msg, id("hello-1"));
    assert_eq!(env.payload.as_deref(), Some(&b"hi bob"[..]));
    assert_eq!(env.ts, sent.ts);
    bob.ack(vec![env.seq]).await.unwrap();

    let receipt = next_envelope(&mut alice).await;
    assert_eq!(receipt.kind, EnvelopeKind::Delivered);
    assert_eq!((receipt.from, receipt.from_device), (b.account, b.device));
    assert_eq!(receipt.msg, id("hello-1"));
    alice.ack(vec![receipt.seq]).await.unwrap();

    bob.read(a.account, vec![id("hello-1")]).await.unwrap();
    let read = next_envelope(&mut alice).await;
    assert_eq!(read.kind, EnvelopeKind::Read);
    assert_eq!(read.msg, id("hello-1"));
    assert_eq!(read.from, b.account);
}

#[tokio::test]
async fn offline_messages_arrive_in_order_and_resends_are_not_duplicated() {
    let server = Server::start();
    let (mut alice, a) = server.device(&phone()).await;
    let (bob_conn, b) = server.device(&phone()).await;
    bob_conn.close().await.unwrap();

    for i in 0..50 {
        let m = id(&format!("m{i}"));
        let s = alice
            .send(
                b.account,
                &m,
                vec![(b.device, format!("message {i}").into_bytes())],
            )
            .await
            .unwrap();
        assert!(!s.duplicate);
    }
    // A resend of an already stored message is recognised.
    let again = alice
        .send(
            b.account,
            &id("m7"),
            vec![(b.device, b"message 7".to_vec())],
        )
        .await
        .unwrap();
    assert!(again.duplicate);

    let mut bob = server.connect().await;
    bob.auth(b.device, &b.credential).await.unwrap();
    let mut seqs = Vec::new();
    for i in 0..50 {
        let env = next_envelope(&mut bob).await;
        assert_eq!(env.msg, id(&format!("m{i}")), "in send order");
        assert_eq!(env.from, a.account);
        seqs.push(env.seq);
    }
    // Nothing more is queued: the resend did not create a copy.
    bob.ping().await.unwrap();
    bob.ack(seqs[..10].to_vec()).await.unwrap();
    // Frames are handled in order: the pong means the ack is committed.
    bob.ping().await.unwrap();
    bob.close().await.unwrap();

    // Unacknowledged envelopes come back on the next connection, in order.
    let mut bob = server.connect().await;
    bob.auth(b.device, &b.credential).await.unwrap();
    for i in 10..50 {
        let env = next_envelope(&mut bob).await;
        assert_eq!(env.msg, id(&format!("m{i}")));
    }
    bob.ping().await.unwrap();
}

#[tokio::test]
async fn sends_must_cover_every_device_and_other_devices_get_copies() {
    let server = Server::start();
    let alice_phone = phone();
    let (mut alice1, a1) = server.device(&alice_phone).await;
    let (mut alice2, a2) = server.device(&alice_phone).await;
    assert_eq!(a1.account, a2.account);
    assert!(a1.new_account && !a2.new_account);
    let (mut bob, b) = server.device(&phone()).await;

    let err = alice1
        .send(b.account, &id("x1"), vec![(b.device, b"only bob".to_vec())])
        .await
        .unwrap_err();
    let palaver_client::Error::Server(e) = err else {
        panic!("expected a server error")
    };
    assert_eq!(e.code, ErrorCode::MismatchedDevices);
    assert_eq!(e.missing, vec![a2.device]);
    assert!(e.extra.is_empty());

    let sent = alice1
        .send_to_all(b.account, &id("x1"), |d| format!("for {d}").into_bytes())
        .await
        .unwrap();
    assert!(!sent.duplicate);
    let to_bob = next_envelope(&mut bob).await;
    assert_eq!(
        to_bob.payload.unwrap(),
        format!("for {}", b.device).into_bytes()
    );
    let to_alice2 = next_envelope(&mut alice2).await;
    assert_eq!(to_alice2.msg, id("x1"));
    assert_eq!(to_alice2.from_device, a1.device);
    assert_eq!(
        to_alice2.payload.unwrap(),
        format!("for {}", a2.device).into_bytes()
    );
    assert_eq!(
        alice1.devices(a1.account).await.unwrap(),
        vec![a1.device, a2.device]
    );
}

#[tokio::test]
async fn typing_and_presence_respect_privacy() {
    let server = Server::start();
    let (mut alice, a) = server.device(&phone()).await;
    let (mut bob, b) = server.device(&phone()).await;

    let p = alice.subscribe_presence(vec![b.account]).await.unwrap();
    assert_eq!(p[0].online, Some(true));

    bob.typing(a.account, true).await.unwrap();
    match next_event(&mut alice).await {
        Event::Typing { from, typing, .. } => assert_eq!((from, typing), (b.account, true)),
        other => panic!("expected typing, got {other:?}"),
    }

    bob.close().await.unwrap();
    match next_event(&mut alice).await {
        Event::Presence(p) => {
            assert_eq!(p.account, b.account);
            assert_eq!(p.online, Some(false));
            assert!(p.last_seen.is_some());
        }
        other => panic!("expected presence, got {other:?}"),
    }

    let mut bob = server.connect().await;
    bob.auth(b.device, &b.credential).await.unwrap();
    match next_event(&mut alice).await {
        Event::Presence(p) => assert_eq!(p.online, Some(true)),
        other => panic!("expected presence, got {other:?}"),
    }
    bob.set_privacy(LastSeenPrivacy::Nobody).await.unwrap();
    let hidden = alice.subscribe_presence(vec![b.account]).await.unwrap();
    assert_eq!(hidden[0].online, None);
    assert_eq!(hidden[0].last_seen, None);
}

#[tokio::test]
async fn revoked_devices_are_disconnected_and_refused() {
    let server = Server::start();
    let p = phone();
    let (mut first, _a1) = server.device(&p).await;
    let (mut second, a2) = server.device(&p).await;
    first.revoke_device(a2.device).await.unwrap();
    let err = loop {
        match tokio::time::timeout(palaver_tests::PATIENCE, second.next_event()).await {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => break e,
            Err(_) => panic!("revoked device stayed connected"),
        }
    };
    match err {
        palaver_client::Error::Closed(Some(c)) => assert_eq!(u16::from(c.code), 4003),
        other => panic!("expected close 4003, got {other:?}"),
    }
    let mut again = server.connect().await;
    let e = again.auth(a2.device, &a2.credential).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadCredential));
    assert_eq!(first.devices(_a1.account).await.unwrap(), vec![_a1.device]);
}

#[tokio::test]
async fn device_limit_is_enforced() {
    let server = Server::start_with("[signaling]\nmax_devices = 2\n");
    let p = phone();
    server.device(&p).await;
    server.device(&p).await;
    let mut c = server.connect().await;
    c.request_code(&p).await.unwrap();
    let code = palaver_client::dev_code(&server.admin_url, &p)
        .await
        .unwrap();
    let e = c.verify(&p, &code, "third").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::DeviceLimit));
}

#[tokio::test]
async fn a_newer_connection_of_the_same_device_replaces_the_older() {
    let server = Server::start();
    let (mut old, a) = server.device(&phone()).await;
    let mut new = server.connect().await;
    new.auth(a.device, &a.credential).await.unwrap();
    let err = loop {
        match tokio::time::timeout(palaver_tests::PATIENCE, old.next_event()).await {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => break e,
            Err(_) => panic!("old connection stayed open"),
        }
    };
    assert!(
        matches!(err, palaver_client::Error::Closed(Some(ref c)) if u16::from(c.code) == 4001),
        "{err:?}"
    );
    new.ping().await.unwrap();
}

#[tokio::test]
async fn a_device_gets_at_most_the_inflight_window_until_it_acks() {
    let server = Server::start_with("[signaling]\ninflight_window = 10\n");
    let (mut alice, _) = server.device(&phone()).await;
    let (bob, b) = server.device(&phone()).await;
    bob.close().await.unwrap();
    for i in 0..25 {
        alice
            .send(
                b.account,
                &id(&format!("w{i}")),
                vec![(b.device, vec![i as u8])],
            )
            .await
            .unwrap();
    }
    let mut bob = server.connect().await;
    bob.auth(b.device, &b.credential).await.unwrap();
    bob.ping().await.unwrap();
    assert_eq!(
        bob.buffered_events(),
        10,
        "exactly one window before any ack"
    );
    let mut seqs = Vec::new();
    for i in 0..10 {
        let env = next_envelope(&mut bob).await;
        assert_eq!(env.msg, id(&format!("w{i}")));
        seqs.push(env.seq);
    }
    bob.ack(seqs).await.unwrap();
    let mut seqs = Vec::new();
    for i in 10..25 {
        let env = next_envelope(&mut bob).await;
        assert_eq!(env.msg, id(&format!("w{i}")));
        seqs.push(env.seq);
        if seqs.len() == 10 {
            bob.ack(std::mem::take(&mut seqs)).await.unwrap();
        }
    }
}
