//! Group chats through the real server: membership, roles, events in
//! order, fan-out to every member device, invite links and limits.

use palaver_client::proto::frames::EnvelopeKind;
use palaver_client::proto::groups::{GroupChange, GroupEdit, GroupEvent, GroupRole};
use palaver_client::proto::{AccountId, ClientMsgId, ErrorCode, GroupId};
use palaver_client::{Client, Envelope};
use palaver_tests::{Server, next_envelope, phone};

fn id(s: &str) -> ClientMsgId {
    ClientMsgId::new(s).unwrap()
}

/// The next envelope that is not a delivery or read receipt, acked.
async fn next_item(c: &mut Client) -> Envelope {
    loop {
        let e = next_envelope(c).await;
        c.ack(vec![e.seq]).await.unwrap();
        if matches!(e.kind, EnvelopeKind::Message | EnvelopeKind::GroupEvent) {
            return e;
        }
    }
}

async fn next_group_event(c: &mut Client) -> GroupEvent {
    let e = next_item(c).await;
    assert_eq!(
        e.kind,
        EnvelopeKind::GroupEvent,
        "expected a group event, got {e:?}"
    );
    let event = e.event.expect("group events carry the event");
    assert_eq!(e.group, Some(event.group));
    event
}

async fn next_group_message(c: &mut Client, group: GroupId) -> Envelope {
    let e = next_item(c).await;
    assert_eq!(
        (e.kind, e.group),
        (EnvelopeKind::Message, Some(group)),
        "{e:?}"
    );
    e
}

#[tokio::test]
async fn members_admins_and_events_in_order() {
    let server = Server::start();
    let alice_phone = phone();
    let (mut alice, a) = server.device(&alice_phone).await;
    let (mut alice2, _) = server.device(&alice_phone).await;
    let (mut bob, b) = server.device(&phone()).await;
    let (mut carol, c) = server.device(&phone()).await;
    let (mut dave, d) = server.device(&phone()).await;

    let g = alice
        .group_create("Sunday hikes", &[b.account, c.account])
        .await
        .unwrap();
    assert_eq!(g.members.len(), 3);
    assert_eq!(g.members[0].role, GroupRole::Creator);
    let group = g.group;
    for client in [&mut alice, &mut alice2, &mut bob, &mut carol] {
        let ev = next_group_event(client).await;
        assert_eq!((ev.event, ev.by), (1, a.account));
        assert_eq!(
            ev.change,
            GroupChange::Created {
                name: "Sunday hikes".into(),
                members: vec![a.account, b.account, c.account],
            }
        );
    }
    // Dave is not a member: he sees nothing of the group.
    assert_eq!(
        dave.group_get(group).await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    assert!(dave.group_list().await.unwrap().is_empty());

    // One payload reaches every member device but the sending one.
    alice
        .group_send(group, &id("m1"), b"sender-key ciphertext".to_vec())
        .await
        .unwrap();
    for client in [&mut alice2, &mut bob, &mut carol] {
        let m = next_group_message(client, group).await;
        assert_eq!((m.from, m.msg.as_str()), (a.account, "m1"));
        assert_eq!(m.payload.as_deref(), Some(&b"sender-key ciphertext"[..]));
    }

    // Members cannot administer; admins can.
    let e = bob.group_add(group, &[d.account]).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));
    alice
        .group_set_admin(group, &[b.account], true)
        .await
        .unwrap();
    let g = bob.group_add(group, &[d.account]).await.unwrap();
    assert_eq!(g.members.len(), 4);
    // Admins cannot touch the creator.
    let e = bob.group_remove(group, &[a.account]).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));

    // Everyone sees the same events in the same order.
    for client in [&mut alice, &mut bob, &mut carol] {
        let promoted = next_group_event(client).await;
        assert_eq!(promoted.event, 2);
        assert_eq!(
            promoted.change,
            GroupChange::Promoted {
                accounts: vec![b.account]
            }
        );
        let added = next_group_event(client).await;
        assert_eq!((added.event, added.by), (3, b.account));
        assert_eq!(
            added.change,
            GroupChange::Added {
                accounts: vec![d.account]
            }
        );
    }
    // Dave's history starts with his own addition.
    let added = next_group_event(&mut dave).await;
    assert_eq!(added.event, 3);
    assert_eq!(dave.group_get(group).await.unwrap().members.len(), 4);

    // Removing Carol: she is told, then hears nothing more of the group.
    alice.group_remove(group, &[c.account]).await.unwrap();
    let removed = next_group_event(&mut carol).await;
    assert_eq!(
        removed.change,
        GroupChange::Removed {
            accounts: vec![c.account]
        }
    );
    alice
        .group_send(group, &id("m2"), b"after".to_vec())
        .await
        .unwrap();
    let removed = next_group_event(&mut dave).await;
    assert_eq!(
        removed.change,
        GroupChange::Removed {
            accounts: vec![c.account]
        }
    );
    let m = next_group_message(&mut dave, group).await;
    assert_eq!(m.msg.as_str(), "m2");
    // A probe sent after the group message arrives first at Carol: the group
    // message never reached her queue.
    let devices = alice.devices(a.account).await.unwrap();
    let mut envs = vec![(c.device, b"probe".to_vec())];
    envs.extend(
        devices
            .iter()
            .filter(|d| **d != a.device)
            .map(|d| (*d, b"probe".to_vec())),
    );
    alice.send(c.account, &id("probe"), envs).await.unwrap();
    let probe = next_item(&mut carol).await;
    assert_eq!((probe.msg.as_str(), probe.group), ("probe", None));
    let e = carol
        .group_send(group, &id("c1"), b"x".to_vec())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    assert_eq!(
        carol.group_get(group).await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );

    // Announcement-only: members read, admins speak.
    bob.group_update(
        group,
        GroupEdit {
            announce_only: Some(true),
            description: Some("Meet at 9".into()),
            ..GroupEdit::default()
        },
    )
    .await
    .unwrap();
    let e = dave
        .group_send(group, &id("d1"), b"x".to_vec())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));
    bob.group_send(group, &id("b1"), b"from an admin".to_vec())
        .await
        .unwrap();

    // Leaving: the others are told; the group list of the leaver is empty.
    dave.group_leave(group).await.unwrap();
    assert!(dave.group_list().await.unwrap().is_empty());

    // Alice's second device saw everything, in one order.
    let expected = [
        format!(
            "event 2 {:?}",
            GroupChange::Promoted {
                accounts: vec![b.account]
            }
        ),
        format!(
            "event 3 {:?}",
            GroupChange::Added {
                accounts: vec![d.account]
            }
        ),
        format!(
            "event 4 {:?}",
            GroupChange::Removed {
                accounts: vec![c.account]
            }
        ),
        "message m2 in group".to_owned(),
        "message probe".to_owned(),
        format!(
            "event 5 {:?}",
            GroupChange::Described {
                description: "Meet at 9".into()
            }
        ),
        format!("event 6 {:?}", GroupChange::AnnounceOnly { on: true }),
        "message b1 in group".to_owned(),
        format!("event 7 {:?}", GroupChange::Left),
    ];
    for want in expected {
        let e = next_item(&mut alice2).await;
        let got = match (&e.event, e.group) {
            (Some(ev), _) => format!("event {} {:?}", ev.event, ev.change),
            (None, Some(_)) => format!("message {} in group", e.msg.as_str()),
            (None, None) => format!("message {}", e.msg.as_str()),
        };
        assert_eq!(got, want);
    }
}

#[tokio::test]
async fn invite_links_and_limits() {
    let server = Server::start_with("[signaling]\nmax_group_members = 3\n");
    let (mut alice, _) = server.device(&phone()).await;
    let (mut bob, b) = server.device(&phone()).await;
    let (mut carol, _) = server.device(&phone()).await;
    let (mut dave, d) = server.device(&phone()).await;

    let group = alice
        .group_create("book club", &[b.account])
        .await
        .unwrap()
        .group;
    // Only admins share the link.
    let e = bob.group_invite(group, false).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));
    let code = alice.group_invite(group, false).await.unwrap();
    assert_eq!(
        alice.group_invite(group, false).await.unwrap(),
        code,
        "stable until reset"
    );

    let g = carol.group_join(&code).await.unwrap();
    assert_eq!(g.members.len(), 3);
    // Full: neither a join nor an add gets past the limit.
    let e = dave.group_join(&code).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::GroupFull));
    let e = alice.group_add(group, &[d.account]).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::GroupFull));
    let e = alice
        .group_create("too big", &[b.account, d.account, AccountId(999_999)])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::GroupFull));

    // A reset link: the old code is dead, the new one works.
    carol.group_leave(group).await.unwrap();
    let fresh = alice.group_invite(group, true).await.unwrap();
    assert_ne!(fresh, code);
    let e = dave.group_join(&code).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    dave.group_join(&fresh).await.unwrap();
    let e = dave.group_join(&fresh).await.unwrap_err();
    assert_eq!(
        e.code(),
        Some(ErrorCode::InvalidArgument),
        "already a member"
    );

    // Bad input changes nothing.
    let e = alice.group_create("", &[]).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument));
    let e = alice
        .group_create("ghosts", &[AccountId(999_999)])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    let e = alice
        .group_send(GroupId(424_242), &id("x"), b"x".to_vec())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    let e = alice.group_join("no-such-code").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    assert_eq!(alice.group_list().await.unwrap().len(), 1);
}
