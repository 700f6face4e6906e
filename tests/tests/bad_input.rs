//! Bad input gets its documented error, the connection stays usable where
//! that is safe, and no state is corrupted.

use palaver_client::proto::frames::EnvelopeKind;
use palaver_client::proto::{ClientMsgId, DeviceId, ErrorCode};
use palaver_client::{Client, Error, Event};
use palaver_tests::{PATIENCE, Server, next_envelope, next_event, phone};

async fn expect_error_event(c: &mut Client) -> palaver_client::proto::frames::ErrorFrame {
    match next_event(c).await {
        Event::Error(e) => e,
        other => panic!("expected an error frame, got {other:?}"),
    }
}

async fn wait_closed(c: &mut Client) -> Error {
    loop {
        match tokio::time::timeout(PATIENCE, c.next_event()).await {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => return e,
            Err(_) => panic!("connection stayed open"),
        }
    }
}

#[tokio::test]
async fn malformed_unknown_and_binary_frames_get_errors_and_the_connection_survives() {
    let server = Server::start();
    let mut c = server.connect().await;

    c.send_raw("{this is not json").await.unwrap();
    let e = expect_error_event(&mut c).await;
    assert_eq!(
        (e.code, e.id, e.fatal),
        (ErrorCode::MalformedFrame, None, false)
    );

    c.send_raw(r#"{"type":"ping","id":41,"surprise":true}"#)
        .await
        .unwrap();
    let e = expect_error_event(&mut c).await;
    assert_eq!(e.code, ErrorCode::MalformedFrame);
    assert_eq!(e.id.map(|i| i.0), Some(41), "the error names the request");

    c.send_raw(r#"{"type":"teleport","id":42}"#).await.unwrap();
    let e = expect_error_event(&mut c).await;
    assert_eq!(
        (e.code, e.id.map(|i| i.0)),
        (ErrorCode::UnknownFrameType, Some(42))
    );

    c.send_raw(r#"{"type":"send","id":43,"msg":"has space","to":1,"envelopes":[]}"#)
        .await
        .unwrap();
    assert_eq!(
        expect_error_event(&mut c).await.code,
        ErrorCode::MalformedFrame
    );

    c.send_raw_binary(vec![0, 159, 146, 150]).await.unwrap();
    assert_eq!(
        expect_error_event(&mut c).await.code,
        ErrorCode::UnsupportedFrame
    );

    c.ping().await.expect("connection still usable");
}

#[tokio::test]
async fn oversize_frames_are_refused_and_the_connection_closed() {
    let server = Server::start_with("[signaling]\nmax_frame_bytes = 2048\n");
    let mut c = server.connect().await;
    assert_eq!(c.hello().max_frame_bytes, 2048);
    let big = format!(r#"{{"type":"ping","id":1,"pad":"{}"}}"#, "x".repeat(4096));
    c.send_raw(big).await.unwrap();
    let e = expect_error_event(&mut c).await;
    assert_eq!(e.code, ErrorCode::FrameTooLarge);
    assert!(e.fatal);
    match wait_closed(&mut c).await {
        Error::Closed(Some(f)) => assert_eq!(u16::from(f.code), 1009),
        other => panic!("expected close 1009, got {other:?}"),
    }
    // The server itself is fine.
    server.connect().await.ping().await.unwrap();
}

#[tokio::test]
async fn authentication_errors() {
    let server = Server::start();
    let (_, reg) = server.device(&phone()).await;
    let mut c = server.connect().await;

    let e = c
        .send(
            reg.account,
            &ClientMsgId::new("m").unwrap(),
            vec![(reg.device, vec![1])],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unauthenticated));

    let e = c.auth(reg.device, "not-the-credential").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadCredential));
    let e = c
        .auth(DeviceId(999_999), &reg.credential)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadCredential));

    c.auth(reg.device, &reg.credential)
        .await
        .expect("right credential still works");
    let e = c.auth(reg.device, &reg.credential).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::AlreadyAuthenticated));
    c.ping().await.unwrap();
}

#[tokio::test]
async fn connections_that_never_authenticate_are_closed() {
    let server = Server::start_with("[signaling]\nauth_timeout = \"300ms\"\n");
    let mut c = server.connect().await;
    let e = expect_error_event(&mut c).await;
    assert_eq!(e.code, ErrorCode::AuthTimeout);
    match wait_closed(&mut c).await {
        Error::Closed(Some(f)) => assert_eq!(u16::from(f.code), 4000),
        other => panic!("expected close 4000, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_phone_numbers_are_refused() {
    let server = Server::start();
    let mut c = server.connect().await;
    for bad in [
        "4915112345678",
        "+49 151 12345678",
        "+0151",
        "+999123456789",
        "",
        "+4915112345678\n",
    ] {
        let e = c.request_code(bad).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::InvalidPhone), "{bad:?}");
    }
    c.ping().await.unwrap();
}

#[tokio::test]
async fn expired_codes_are_refused() {
    let server = Server::start_with("[signaling]\ncode_ttl = \"1ns\"\n");
    let p = phone();
    let mut c = server.connect().await;
    c.request_code(&p).await.unwrap();
    let code = palaver_client::dev_code(&server.admin_url, &p)
        .await
        .unwrap();
    let e = c.verify(&p, &code, "phone").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::CodeExpired));
}

#[tokio::test]
async fn wrong_and_replayed_codes_are_refused() {
    let server = Server::start();
    let p = phone();
    let mut c = server.connect().await;
    let e = c.verify(&p, "123456", "phone").await.unwrap_err();
    assert_eq!(
        e.code(),
        Some(ErrorCode::CodeExpired),
        "no code was requested"
    );

    c.request_code(&p).await.unwrap();
    let code = palaver_client::dev_code(&server.admin_url, &p)
        .await
        .unwrap();
    let wrong = if code == "000000" { "000001" } else { "000000" };
    let e = c.verify(&p, wrong, "phone").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::CodeInvalid));
    let e = c.verify(&p, "12ab56", "phone").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::CodeInvalid));
    c.verify(&p, &code, "phone")
        .await
        .expect("right code works");
    let e = c.verify(&p, &code, "phone").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::CodeUsed), "a code works once");

    // Guessing exhausts the code, even for the right one afterwards.
    let q = phone();
    c.request_code(&q).await.unwrap();
    let code = palaver_client::dev_code(&server.admin_url, &q)
        .await
        .unwrap();
    let wrong = if code == "000000" { "000001" } else { "000000" };
    for _ in 0..5 {
        let e = c.verify(&q, wrong, "phone").await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::CodeInvalid));
    }
    let e = c.verify(&q, &code, "phone").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::TooManyAttempts));
    let e = c.lookup(&q).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Unauthenticated));
}

#[tokio::test]
async fn code_requests_are_rate_limited() {
    let server = Server::start();
    let p = phone();
    let mut c = server.connect().await;
    for _ in 0..3 {
        c.request_code(&p).await.unwrap();
    }
    match c.request_code(&p).await.unwrap_err() {
        Error::Server(e) => {
            assert_eq!(e.code, ErrorCode::RateLimited);
            assert!(e.retry_after_ms.unwrap() > 1000);
        }
        other => panic!("expected rate_limited, got {other:?}"),
    }
    // Another number is not affected.
    c.request_code(&phone()).await.unwrap();
}

#[tokio::test]
async fn requests_with_bad_arguments_change_nothing() {
    let server = Server::start();
    let (mut alice, a) = server.device(&phone()).await;
    let (mut bob, b) = server.device(&phone()).await;
    let m = ClientMsgId::new("m1").unwrap();

    let e = alice.send(b.account, &m, vec![]).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument));
    let e = alice
        .send(
            b.account,
            &m,
            vec![(b.device, vec![1]), (b.device, vec![2])],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument));
    let e = alice
        .send(
            palaver_client::proto::AccountId(987_654),
            &m,
            vec![(b.device, vec![1])],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    let e = alice.lookup(&phone()).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    let e = alice.revoke_device(b.device).await.unwrap_err();
    assert_eq!(
        e.code(),
        Some(ErrorCode::NotFound),
        "cannot unlink someone else's device"
    );
    bob.ping().await.unwrap();
    assert_eq!(bob.buffered_events(), 0, "nothing was queued for bob");

    // The same message id still works after the failures.
    alice
        .send(b.account, &m, vec![(b.device, b"ok".to_vec())])
        .await
        .unwrap();
    let env = next_envelope(&mut bob).await;
    assert_eq!(
        (env.kind, env.from, env.payload.as_deref()),
        (EnvelopeKind::Message, a.account, Some(&b"ok"[..]))
    );
}
