//! Group calls over signaling: `group_call_start` rings the invited
//! accounts, `group_call_join` hands out tickets only to members, and a
//! ticket opens the SFU's join endpoint.

use palaver_client::{Event, sfu_join};
use palaver_proto::ErrorCode;
use palaver_proto::frames::{Media, ServerFrame};
use palaver_tests::{Server, next_event, phone};
use std::time::Instant;

fn offer() -> String {
    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    let mut change = rtc.sdp_api();
    change.add_media(
        str0m::media::MediaKind::Audio,
        str0m::media::Direction::SendOnly,
        None,
        None,
        None,
    );
    change.add_channel("palaver".into());
    change.apply().unwrap().0.to_sdp_string()
}

/// The `admin` claim of a join token (the claims are readable by anyone;
/// only the signature is secret).
fn is_admin(token: &str) -> bool {
    use base64::Engine;
    let body = token.split('.').next().unwrap();
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .unwrap();
    let claims: palaver_proto::join_token::JoinClaims = serde_json::from_slice(&json).unwrap();
    claims.admin
}

#[tokio::test]
async fn invited_accounts_ring_and_join_others_cannot() {
    let server = Server::start();
    let (mut a, _) = server.device(&phone()).await;
    let (mut b, rb) = server.device(&phone()).await;
    let (mut c, _) = server.device(&phone()).await;
    let t = a
        .group_call_start(vec![rb.account], Media::Audio)
        .await
        .unwrap();
    assert!(t.sfu_url.starts_with("http://127.0.0.1:"), "{}", t.sfu_url);
    assert!(!t.ice_servers.is_empty(), "TURN credentials come along");
    let room = match next_event(&mut b).await {
        Event::Call(ServerFrame::GroupCallIncoming { room, media, .. }) => {
            assert_eq!(media, Media::Audio);
            room
        }
        e => panic!("expected group_call_incoming, got {e:?}"),
    };
    assert_eq!(room, t.room);
    let tb = b.group_call_join(&room).await.unwrap();
    assert_ne!(tb.token, t.token);
    // The starter is the call's admin (may kick, ask to mute); not b.
    assert!(is_admin(&t.token));
    assert!(!is_admin(&tb.token));
    // Not invited: the room does not exist for c.
    let e = c.group_call_join(&room).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    let e = c.group_call_join("nope").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    // The tickets open the SFU.
    let answer = sfu_join(&t, &offer()).await.unwrap();
    assert!(answer.starts_with("v=0"));
    sfu_join(&tb, &offer()).await.unwrap();
    // A ticket for one room does not open another.
    let mut wrong = tb.clone();
    wrong.room = "elsewhere".into();
    let e = sfu_join(&wrong, &offer()).await.unwrap_err();
    assert!(e.to_string().contains("403"), "{e}");
}

#[tokio::test]
async fn unknown_invitees_are_refused() {
    let server = Server::start();
    let (mut a, _) = server.device(&phone()).await;
    let e = a
        .group_call_start(vec![palaver_proto::AccountId(999_999)], Media::Video)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
}

#[tokio::test]
async fn a_call_in_a_chat_group_rings_its_members() {
    let server = Server::start();
    let (mut a, _) = server.device(&phone()).await;
    let (mut b, rb) = server.device(&phone()).await;
    let (mut c, _) = server.device(&phone()).await;
    let group = a.group_create("team", &[rb.account]).await.unwrap().group;
    let t = a
        .group_call_start_in_group(group, Media::Video)
        .await
        .unwrap();
    loop {
        if let Event::Call(ServerFrame::GroupCallIncoming { room, media, .. }) =
            next_event(&mut b).await
        {
            assert_eq!((room.as_str(), media), (t.room.as_str(), Media::Video));
            break;
        }
    }
    b.group_call_join(&t.room).await.unwrap();
    // Not a member: neither start a call in the group nor join its room.
    let e = c
        .group_call_start_in_group(group, Media::Audio)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    let e = c.group_call_join(&t.room).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
}
