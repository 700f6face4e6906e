//! Delete for everyone, edits, disappearing timers, synced settings and
//! linking a device with a code, through the real server.

use palaver_client::proto::frames::EnvelopeKind;
use palaver_client::proto::groups::GroupChange;
use palaver_client::proto::{AccountId, ClientMsgId, ErrorCode};
use palaver_client::{ChatRef, Client, Envelope, Event};
use palaver_tests::{Server, next_envelope, next_event, phone};

fn id(s: &str) -> ClientMsgId {
    ClientMsgId::new(s).unwrap()
}

/// The next envelope that is not a receipt, acked.
async fn next_item(c: &mut Client) -> Envelope {
    loop {
        let e = next_envelope(c).await;
        c.ack(vec![e.seq]).await.unwrap();
        if !matches!(e.kind, EnvelopeKind::Delivered | EnvelopeKind::Read) {
            return e;
        }
    }
}

async fn text(c: &mut Client, to: AccountId, dev: palaver_client::proto::DeviceId, m: &str) {
    c.send(to, &id(m), vec![(dev, m.as_bytes().to_vec())])
        .await
        .unwrap();
}

#[tokio::test]
async fn delete_for_everyone_and_edits() {
    let server = Server::start();
    let (mut alice, a) = server.device(&phone()).await;
    let (bob, b) = server.device(&phone()).await;
    bob.close().await.unwrap();

    // Revoked while still queued: Bob never sees it, only that it was
    // deleted (as WhatsApp shows "this message was deleted").
    text(&mut alice, b.account, b.device, "m1").await;
    text(&mut alice, b.account, b.device, "m2").await;
    alice.revoke(&id("m1")).await.unwrap();
    let mut bob = server.connect().await;
    bob.auth(b.device, &b.credential).await.unwrap();
    let e = next_item(&mut bob).await;
    assert_eq!((e.kind, e.msg.as_str()), (EnvelopeKind::Message, "m2"));
    let e = next_item(&mut bob).await;
    assert_eq!((e.kind, e.msg.as_str()), (EnvelopeKind::Revoke, "m1"));

    // Revoked after delivery: Bob gets a revoke naming the message.
    text(&mut alice, b.account, b.device, "m3").await;
    assert_eq!(next_item(&mut bob).await.msg.as_str(), "m3");
    alice.revoke(&id("m3")).await.unwrap();
    let e = next_item(&mut bob).await;
    assert_eq!(
        (e.kind, e.msg.as_str(), e.from),
        (EnvelopeKind::Revoke, "m3", a.account)
    );
    alice.revoke(&id("m3")).await.unwrap(); // idempotent: nothing new queued

    // Only the author can revoke, only what exists.
    let e = bob.revoke(&id("m2")).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    let e = alice.revoke(&id("never-sent")).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));

    // Edits name the message they replace; a revoked message cannot be
    // edited, nor someone else's.
    let edit = |m: &str| (b.device, m.as_bytes().to_vec());
    alice
        .send_edit(
            b.account,
            &id("m2e"),
            vec![edit("m2 fixed")],
            Some(&id("m2")),
        )
        .await
        .unwrap();
    let e = next_item(&mut bob).await;
    assert_eq!((e.msg.as_str(), e.edit_of), ("m2e", Some(id("m2"))));
    let err = alice
        .send_edit(b.account, &id("m3e"), vec![edit("x")], Some(&id("m3")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    let err = bob
        .send_edit(
            a.account,
            &id("hijack"),
            vec![(a.device, b"x".to_vec())],
            Some(&id("m2")),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound));

    // Revoking a message drops its queued edits as well.
    bob.close().await.unwrap();
    text(&mut alice, b.account, b.device, "m4").await;
    alice
        .send_edit(
            b.account,
            &id("m4e"),
            vec![edit("m4 fixed")],
            Some(&id("m4")),
        )
        .await
        .unwrap();
    alice.revoke(&id("m4")).await.unwrap();
    text(&mut alice, b.account, b.device, "m5").await;
    let mut bob = server.connect().await;
    bob.auth(b.device, &b.credential).await.unwrap();
    let e = next_item(&mut bob).await;
    assert_eq!((e.kind, e.msg.as_str()), (EnvelopeKind::Revoke, "m4"));
    assert_eq!(next_item(&mut bob).await.msg.as_str(), "m5");
}

#[tokio::test]
async fn windows_close() {
    let server =
        Server::start_with("[signaling]\nedit_window = \"1ms\"\nrevoke_window = \"1ms\"\n");
    let (mut alice, _) = server.device(&phone()).await;
    let (_bob, b) = server.device(&phone()).await;
    text(&mut alice, b.account, b.device, "old").await;
    // The feature under test is wall-clock time passing, not synchronisation.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let err = alice
        .send_edit(
            b.account,
            &id("new"),
            vec![(b.device, b"x".to_vec())],
            Some(&id("old")),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::WindowClosed));
    let err = alice.revoke(&id("old")).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::WindowClosed));
}

#[tokio::test]
async fn disappearing_timers_are_announced() {
    let server = Server::start();
    let (mut alice, a) = server.device(&phone()).await;
    let (mut bob, b) = server.device(&phone()).await;
    alice
        .set_timer(ChatRef::Direct(b.account), 86_400)
        .await
        .unwrap();
    for c in [&mut alice, &mut bob] {
        let e = next_item(c).await;
        assert_eq!(e.kind, EnvelopeKind::Timer);
        assert_eq!(
            (e.from, e.timer, e.to),
            (a.account, Some(86_400), Some(b.account))
        );
    }
    let err = alice
        .set_timer(ChatRef::Direct(b.account), 3600)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidArgument));
    let err = alice
        .set_timer(ChatRef::Direct(AccountId(999_999)), 86_400)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound));

    // In groups, admins set the timer; it is a group event.
    let group = alice.group_create("t", &[b.account]).await.unwrap().group;
    let err = bob
        .set_timer(ChatRef::Group(group), 604_800)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    alice
        .set_timer(ChatRef::Group(group), 604_800)
        .await
        .unwrap();
    loop {
        let e = next_item(&mut bob).await;
        if let Some(ev) = e.event
            && ev.change
                != (GroupChange::Created {
                    name: "t".into(),
                    members: vec![a.account, b.account],
                })
        {
            assert_eq!(ev.change, GroupChange::Timer { seconds: 604_800 });
            break;
        }
    }
}

#[tokio::test]
async fn settings_sync_detects_conflicts() {
    let server = Server::start();
    let p = phone();
    let (mut one, _) = server.device(&p).await;
    let (mut two, _) = server.device(&p).await;
    assert_eq!(one.settings().await.unwrap(), (0, Vec::new()));
    assert_eq!(
        one.put_settings(0, b"pinned: bob".to_vec()).await.unwrap(),
        1
    );
    loop {
        if let Event::SettingsChanged { version } = next_event(&mut two).await {
            assert_eq!(version, 1);
            break;
        }
    }
    // Two based its change on version 0: refused, nothing overwritten.
    let err = two
        .put_settings(0, b"archived: carol".to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::StaleVersion));
    assert_eq!(two.settings().await.unwrap(), (1, b"pinned: bob".to_vec()));
    assert_eq!(
        two.put_settings(1, b"pinned: bob; archived: carol".to_vec())
            .await
            .unwrap(),
        2
    );
    let err = one.put_settings(2, vec![0; 70_000]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidArgument));
}

#[tokio::test]
async fn a_device_links_with_a_code_from_another() {
    let server = Server::start();
    let (mut alice, a) = server.device(&phone()).await;
    let (code, ttl) = alice.link_code().await.unwrap();
    assert!(ttl > 0);
    let mut fresh = server.connect().await;
    let reg = fresh.link(&code, "laptop").await.unwrap();
    assert_eq!((reg.account, reg.new_account), (a.account, false));
    let mut laptop = server.connect().await;
    laptop.auth(reg.device, &reg.credential).await.unwrap();
    assert_eq!(
        alice.devices(a.account).await.unwrap(),
        vec![a.device, reg.device]
    );
    // Single use, and never for an authenticated connection.
    let mut again = server.connect().await;
    let err = again.link(&code, "phone").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::CodeInvalid));
    let err = again.link("made-up", "phone").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::CodeInvalid));
    let (code, _) = alice.link_code().await.unwrap();
    let err = laptop.link(&code, "x").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::AlreadyAuthenticated));
}

#[tokio::test]
async fn status_posts_reach_their_audience_only() {
    let server = Server::start();
    let (mut alice, a) = server.device(&phone()).await;
    let (mut bob, b) = server.device(&phone()).await;
    let (mut carol, c) = server.device(&phone()).await;

    alice
        .status_post(&id("s1"), &[b.account], b"sunset photo".to_vec())
        .await
        .unwrap();
    let e = next_item(&mut bob).await;
    assert_eq!((e.kind, e.msg.as_str()), (EnvelopeKind::Status, "s1"));
    assert_eq!(e.payload.as_deref(), Some(&b"sunset photo"[..]));
    // Carol is not in the audience: the next thing she gets is this probe.
    text(&mut alice, c.account, c.device, "probe").await;
    assert_eq!(next_item(&mut carol).await.msg.as_str(), "probe");
    let err = carol.status_view(a.account, &id("s1")).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound));

    // Bob's view receipt reaches Alice.
    bob.status_view(a.account, &id("s1")).await.unwrap();
    let e = next_item(&mut alice).await;
    assert_eq!(
        (e.kind, e.from, e.msg.as_str()),
        (EnvelopeKind::StatusView, b.account, "s1")
    );

    // Deleted early: Bob, who saw it, is told.
    alice.revoke(&id("s1")).await.unwrap();
    let e = next_item(&mut bob).await;
    assert_eq!((e.kind, e.msg.as_str()), (EnvelopeKind::Revoke, "s1"));
    let err = alice
        .status_post(&id("s2"), &[AccountId(999_999)], b"x".to_vec())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
}

#[tokio::test]
async fn businesses_greet_and_answer_when_away() {
    use palaver_client::proto::business::{AutoMessages, AwaySchedule, BusinessProfile};
    let server = Server::start();
    let (mut shop, s) = server.device(&phone()).await;
    let (mut bob, b) = server.device(&phone()).await;
    let profile = BusinessProfile {
        name: "Corner Bakery".into(),
        website: "https://bakery.example".into(),
        ..BusinessProfile::default()
    };
    let auto = AutoMessages {
        greeting: Some("Hello from the bakery!".into()),
        away: Some("We are closed right now.".into()),
        away_schedule: Some(AwaySchedule::Always),
    };
    shop.business_set(Some(profile.clone()), Some(auto))
        .await
        .unwrap();
    assert_eq!(bob.business_get(s.account).await.unwrap(), Some(profile));
    assert_eq!(shop.business_get(b.account).await.unwrap(), None);

    // Bob's first message: greeting and away message, to him and the shop.
    text(&mut bob, s.account, s.device, "hi").await;
    for want in ["Hello from the bakery!", "We are closed right now."] {
        let e = next_item(&mut bob).await;
        assert_eq!(
            (e.kind, e.from, e.to),
            (EnvelopeKind::Auto, s.account, Some(b.account))
        );
        assert_eq!(e.payload.as_deref(), Some(want.as_bytes()));
    }
    assert_eq!(next_item(&mut shop).await.msg.as_str(), "hi");
    assert_eq!(next_item(&mut shop).await.kind, EnvelopeKind::Auto);
    assert_eq!(next_item(&mut shop).await.kind, EnvelopeKind::Auto);

    // The second message triggers nothing; the shop's reply comes next.
    text(&mut bob, s.account, s.device, "again").await;
    text(&mut shop, b.account, b.device, "reply").await;
    assert_eq!(next_item(&mut bob).await.msg.as_str(), "reply");

    let bad = BusinessProfile {
        utc_offset_minutes: 5000,
        ..BusinessProfile::default()
    };
    let err = shop.business_set(Some(bad), None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidArgument));
}
