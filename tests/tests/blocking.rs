//! Blocking: the blocker is told, the blocked account cannot tell.

use palaver_client::Event;
use palaver_client::proto::frames::{EndReason, Media, ServerFrame};
use palaver_client::proto::{ClientMsgId, ErrorCode};
use palaver_tests::{Server, next_envelope, next_event, phone};

fn id(s: &str) -> ClientMsgId {
    ClientMsgId::new(s).unwrap()
}

#[tokio::test]
async fn blocked_accounts_reach_nobody_and_cannot_tell() {
    let server = Server::start();
    let (mut alice, a) = server.device(&phone()).await;
    let (mut bob, b) = server.device(&phone()).await;

    assert_eq!(
        bob.subscribe_presence(vec![a.account]).await.unwrap()[0].online,
        Some(true)
    );
    alice.block(b.account, true).await.unwrap();
    assert_eq!(alice.blocked_list().await.unwrap(), vec![b.account]);
    let e = alice
        .block(palaver_client::proto::AccountId(77_777), true)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));

    // Bob's message is accepted as usual but never reaches Alice.
    let sent = bob
        .send(a.account, &id("b1"), vec![(a.device, b"hi".to_vec())])
        .await
        .unwrap();
    assert!(!sent.duplicate);
    bob.typing(a.account, true).await.unwrap();
    // Alice sends to Bob: refused, she knows she blocks him.
    let e = alice
        .send(b.account, &id("a1"), vec![(b.device, b"x".to_vec())])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Blocked));
    // Bob's call rings nowhere: to him it looks like Alice is offline.
    let (call, _) = bob.call_offer(a.account, Media::Audio, "o").await.unwrap();
    loop {
        match next_event(&mut bob).await {
            Event::Call(ServerFrame::CallEnded { call: c, reason }) => {
                assert_eq!((c, reason), (call, EndReason::Unavailable));
                break;
            }
            Event::Call(ServerFrame::CallRinging { .. }) => panic!("must not ring"),
            _ => {}
        }
    }
    let e = alice
        .call_offer(b.account, Media::Audio, "o")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Blocked));
    // Bob no longer sees Alice's presence.
    let p = bob.subscribe_presence(vec![a.account]).await.unwrap();
    assert_eq!((p[0].online, p[0].last_seen), (None, None));
    alice.ping().await.unwrap();
    assert_eq!(
        alice.buffered_events(),
        0,
        "nothing from Bob reached Alice: {:?}",
        alice.next_event().await
    );

    // After unblocking, messages flow again (the dropped one stays dropped).
    alice.block(b.account, false).await.unwrap();
    assert!(alice.blocked_list().await.unwrap().is_empty());
    bob.send(a.account, &id("b2"), vec![(a.device, b"again".to_vec())])
        .await
        .unwrap();
    let env = next_envelope(&mut alice).await;
    assert_eq!(env.msg, id("b2"));
}

#[tokio::test]
async fn reports_reach_the_operators_and_can_block() {
    let server = Server::start();
    let (mut alice, a) = server.device(&phone()).await;
    let (mut bob, b) = server.device(&phone()).await;
    alice
        .report(
            b.account,
            "spam",
            &[id("m1"), id("m2")],
            Some(b"buy now!!!".to_vec()),
            true,
        )
        .await
        .unwrap();
    assert_eq!(alice.blocked_list().await.unwrap(), vec![b.account]);
    let (status, body) = palaver_tests::http_get(&server.admin_url, "/reports").await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let r = &list[0];
    assert_eq!(
        (r["reporter"].as_u64(), r["reported"].as_u64()),
        (Some(a.account.0), Some(b.account.0))
    );
    assert_eq!(r["reason"], "spam");
    assert_eq!(r["msgs"], serde_json::json!(["m1", "m2"]));
    assert_eq!(r["evidence"], "YnV5IG5vdyEhIQ==");
    // Bad reports change nothing.
    let e = bob
        .report(
            palaver_client::proto::AccountId(999_999),
            "x",
            &[],
            None,
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    let e = bob
        .report(a.account, "", &[], None, false)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument));
    let (_, body) = palaver_tests::http_get(&server.admin_url, "/reports").await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
