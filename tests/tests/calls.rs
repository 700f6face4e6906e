//! 1:1 call signalling through the real server, driven by the SDK (the
//! browser tests drive the same frames from Chromium).

use palaver_client::Event;
use palaver_client::proto::ErrorCode;
use palaver_client::proto::frames::{EndReason, Media, SdpKind, ServerFrame};
use palaver_tests::{Server, expect_ended, next_call, next_event, phone};

#[tokio::test]
async fn a_call_rings_every_device_and_the_first_answer_wins() {
    let server = Server::start_with(
        "[calls]\nturn_urls = [\"turn:127.0.0.1:3478?transport=udp\"]\nturn_secret = \"s3cret\"\n",
    );
    let (mut alice, a) = server.device(&phone()).await;
    let bob_phone = phone();
    let (mut bob1, b1) = server.device(&bob_phone).await;
    let (mut bob2, b2) = server.device(&bob_phone).await;

    let (call, ice) = alice
        .call_offer(b1.account, Media::Video, "v=0 offer")
        .await
        .unwrap();
    assert_eq!(ice.len(), 1);
    assert!(
        ice[0]
            .username
            .as_deref()
            .unwrap()
            .ends_with(&format!(":{}", a.device))
    );
    assert!(
        matches!(next_call(&mut alice).await, ServerFrame::CallRinging { call: c } if c == call)
    );
    for bob in [&mut bob1, &mut bob2] {
        match next_call(bob).await {
            ServerFrame::CallIncoming {
                call: c,
                from,
                from_device,
                media,
                sdp,
                ice_servers,
            } => {
                assert_eq!(
                    (c, from, from_device, media),
                    (call, a.account, a.device, Media::Video)
                );
                assert_eq!(sdp, "v=0 offer");
                assert_eq!(
                    ice_servers[0].urls,
                    vec!["turn:127.0.0.1:3478?transport=udp"]
                );
            }
            other => panic!("expected call_incoming, got {other:?}"),
        }
    }
    // Early ICE from the caller reaches the ringing devices.
    alice.call_ice(call, "{\"candidate\":\"a\"}").await.unwrap();
    for bob in [&mut bob1, &mut bob2] {
        assert!(
            matches!(next_call(bob).await, ServerFrame::CallIce { from_device, .. } if from_device == a.device)
        );
    }

    bob2.call_accept(call, "v=0 answer").await.unwrap();
    match next_call(&mut alice).await {
        ServerFrame::CallAccepted {
            call: c,
            device,
            sdp,
        } => {
            assert_eq!((c, device, sdp.as_str()), (call, b2.device, "v=0 answer"))
        }
        other => panic!("expected call_accepted, got {other:?}"),
    }
    assert!(matches!(
        next_call(&mut bob1).await,
        ServerFrame::CallAnsweredElsewhere { .. }
    ));
    let e = bob1.call_accept(call, "late").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::AlreadyAnswered));

    // Renegotiation and trickle ICE go only between the two devices.
    alice
        .call_sdp(call, SdpKind::Offer, "add video")
        .await
        .unwrap();
    match next_call(&mut bob2).await {
        ServerFrame::CallSdp {
            kind,
            sdp,
            from_device,
            ..
        } => {
            assert_eq!(
                (kind, sdp.as_str(), from_device),
                (SdpKind::Offer, "add video", a.device)
            )
        }
        other => panic!("expected call_sdp, got {other:?}"),
    }
    bob2.call_ice(call, "{\"candidate\":\"b\"}").await.unwrap();
    assert!(
        matches!(next_call(&mut alice).await, ServerFrame::CallIce { from_device, .. } if from_device == b2.device)
    );
    let e = bob1.call_ice(call, "inject").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotInCall));
    let (mut mallory, _) = server.device(&phone()).await;
    let e = mallory
        .call_sdp(call, SdpKind::Offer, "inject")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotInCall));
    let e = mallory.call_hangup(call).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotInCall));

    bob2.call_hangup(call).await.unwrap();
    expect_ended(&mut alice, call, EndReason::HungUp).await;

    let history = alice.call_history(10).await.unwrap();
    assert_eq!(history.len(), 1);
    let h = &history[0];
    assert_eq!(
        (h.call, h.caller, h.callee, h.answered_by),
        (call, a.account, b1.account, Some(b2.device))
    );
    assert_eq!(h.reason, EndReason::HungUp);
    assert!(h.answered_at.is_some() && h.ended_at >= h.started_at);
    let bob_history = bob1.call_history(10).await.unwrap();
    assert_eq!(bob_history, history, "both parties see the call");
}

#[tokio::test]
async fn unanswered_calls_time_out_into_missed_calls() {
    let server = Server::start_with("[serve]\nturn = false\n[calls]\nring_timeout = \"300ms\"\n");
    let (mut alice, _) = server.device(&phone()).await;
    let (mut bob, b) = server.device(&phone()).await;
    let (call, ice) = alice
        .call_offer(b.account, Media::Audio, "o")
        .await
        .unwrap();
    assert!(
        ice.is_empty(),
        "no STUN/TURN configured: host candidates only"
    );
    assert!(matches!(
        next_call(&mut bob).await,
        ServerFrame::CallIncoming { .. }
    ));
    assert!(matches!(
        next_call(&mut alice).await,
        ServerFrame::CallRinging { .. }
    ));
    expect_ended(&mut alice, call, EndReason::NoAnswer).await;
    expect_ended(&mut bob, call, EndReason::NoAnswer).await;
    let h = bob.call_history(5).await.unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].reason, EndReason::NoAnswer);
    assert!(h[0].reason.is_missed());
}

#[tokio::test]
async fn reject_cancel_busy_and_unavailable() {
    let server = Server::start();
    let (mut alice, _) = server.device(&phone()).await;
    let (mut bob, b) = server.device(&phone()).await;
    let (mut carol, _) = server.device(&phone()).await;

    let (call, _) = alice
        .call_offer(b.account, Media::Audio, "o")
        .await
        .unwrap();
    assert!(matches!(
        next_call(&mut bob).await,
        ServerFrame::CallIncoming { .. }
    ));
    bob.call_reject(call).await.unwrap();
    assert!(matches!(
        next_call(&mut alice).await,
        ServerFrame::CallRinging { .. }
    ));
    expect_ended(&mut alice, call, EndReason::Rejected).await;

    let (call, _) = alice
        .call_offer(b.account, Media::Audio, "o")
        .await
        .unwrap();
    assert!(matches!(
        next_call(&mut bob).await,
        ServerFrame::CallIncoming { .. }
    ));
    alice.call_hangup(call).await.unwrap();
    expect_ended(&mut bob, call, EndReason::Cancelled).await;

    // Bob in a call with Alice: Carol hears busy, Bob sees call waiting.
    let (call, _) = alice
        .call_offer(b.account, Media::Audio, "o")
        .await
        .unwrap();
    assert!(matches!(
        next_call(&mut bob).await,
        ServerFrame::CallIncoming { .. }
    ));
    bob.call_accept(call, "a").await.unwrap();
    let (busy, _) = carol
        .call_offer(b.account, Media::Video, "o")
        .await
        .unwrap();
    expect_ended(&mut carol, busy, EndReason::Busy).await;
    assert!(
        matches!(next_call(&mut bob).await, ServerFrame::CallWaiting { call: c, .. } if c == busy)
    );
    let e = alice
        .call_offer(b.account, Media::Audio, "o")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::AlreadyInCall));

    // Nobody connected: unavailable at once.
    let (dave, d) = server.device(&phone()).await;
    dave.close().await.unwrap();
    // Wait until the server has seen Dave leave (presence says so).
    let p = carol.subscribe_presence(vec![d.account]).await.unwrap();
    if p[0].online == Some(true) {
        loop {
            if let Event::Presence(p) = next_event(&mut carol).await
                && p.online == Some(false)
            {
                break;
            }
        }
    }
    let (gone, _) = carol
        .call_offer(d.account, Media::Audio, "o")
        .await
        .unwrap();
    expect_ended(&mut carol, gone, EndReason::Unavailable).await;

    let e = carol
        .call_offer(
            palaver_client::proto::AccountId(9_999_999),
            Media::Audio,
            "o",
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
}

#[tokio::test]
async fn a_dropped_device_rejoins_within_the_grace_period() {
    let server = Server::start();
    let (mut alice, _) = server.device(&phone()).await;
    let (mut bob, b) = server.device(&phone()).await;
    let (call, _) = alice
        .call_offer(b.account, Media::Video, "o")
        .await
        .unwrap();
    assert!(matches!(
        next_call(&mut bob).await,
        ServerFrame::CallIncoming { .. }
    ));
    bob.call_accept(call, "a").await.unwrap();
    assert!(matches!(
        next_call(&mut alice).await,
        ServerFrame::CallRinging { .. }
    ));
    assert!(matches!(
        next_call(&mut alice).await,
        ServerFrame::CallAccepted { .. }
    ));

    bob.close().await.unwrap();
    assert!(matches!(
        next_call(&mut alice).await,
        ServerFrame::CallPeer {
            connected: false,
            ..
        }
    ));
    let mut bob = server.connect().await;
    bob.auth(b.device, &b.credential).await.unwrap();
    assert!(matches!(
        next_call(&mut alice).await,
        ServerFrame::CallPeer {
            connected: true,
            ..
        }
    ));
    // ICE restart: a new offer from the returning device.
    bob.call_sdp(call, SdpKind::Offer, "ice restart")
        .await
        .unwrap();
    assert!(matches!(
        next_call(&mut alice).await,
        ServerFrame::CallSdp {
            kind: SdpKind::Offer,
            ..
        }
    ));
    alice.call_hangup(call).await.unwrap();
    expect_ended(&mut bob, call, EndReason::HungUp).await;
}

#[tokio::test]
async fn calls_end_when_a_dropped_device_does_not_return() {
    let server = Server::start_with("[calls]\nreconnect_grace = \"300ms\"\n");
    let (mut alice, _) = server.device(&phone()).await;
    let (mut bob, b) = server.device(&phone()).await;
    let (call, _) = alice
        .call_offer(b.account, Media::Video, "o")
        .await
        .unwrap();
    assert!(matches!(
        next_call(&mut bob).await,
        ServerFrame::CallIncoming { .. }
    ));
    bob.call_accept(call, "a").await.unwrap();
    bob.close().await.unwrap();
    assert!(matches!(
        next_call(&mut alice).await,
        ServerFrame::CallRinging { .. }
    ));
    assert!(matches!(
        next_call(&mut alice).await,
        ServerFrame::CallAccepted { .. }
    ));
    assert!(matches!(
        next_call(&mut alice).await,
        ServerFrame::CallPeer {
            connected: false,
            ..
        }
    ));
    expect_ended(&mut alice, call, EndReason::ConnectionLost).await;
}

#[tokio::test]
async fn call_offers_are_rate_limited() {
    let server = Server::start_with(
        "[signaling.rate_limits.call_offers_per_device]\nburst = 2\nper_minute = 1.0\n",
    );
    let (mut alice, _) = server.device(&phone()).await;
    let (_bob, b) = server.device(&phone()).await;
    for _ in 0..2 {
        let (call, _) = alice
            .call_offer(b.account, Media::Audio, "o")
            .await
            .unwrap();
        alice.call_hangup(call).await.unwrap();
    }
    let e = alice
        .call_offer(b.account, Media::Audio, "o")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::RateLimited));
}
