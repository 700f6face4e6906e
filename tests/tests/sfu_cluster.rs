//! Group calls across several nodes, without Docker: two `palaver
//! signaling` nodes (PostgreSQL from scripts/postgres.sh, Redis from
//! scripts/redis.sh) and two `palaver sfu` nodes registered in Redis, as
//! separate processes; participants on different signaling nodes talk
//! through headless Chromium pages (tests/browser/sfu-cluster.mjs).
//!
//! SIGTERM drains a node: new calls go elsewhere, its room moves, and it
//! exits once empty. (SIGKILL of the SFU node hosting the room, together
//! with a signaling node: tests/tests/multinode.rs.)
//!
//! The binary name puts these tests in the nextest `browser` group.

use palaver_client::proto::ErrorCode;
use palaver_client::proto::frames::{Media, ServerFrame};
use palaver_client::{Client, Event, GroupCallTicket};
use palaver_tests::sfu_driver::{Driver, check_tools, now_ms};
use palaver_tests::sfu_node::SfuNode;
use palaver_tests::{Server, fresh_schema, next_event, phone};
use serde_json::json;

const SECRET: &str = "sfu-cluster-test-secret-0123456789";

/// Two signaling nodes, two SFU nodes.
struct Cluster {
    sig: [Server; 2],
    sfus: Vec<SfuNode>,
}

fn cluster(sfu_env: &[(&str, &str)]) -> Cluster {
    let schema = fresh_schema();
    let env = [("PALAVER__SFU__TOKEN_SECRET", SECRET)];
    let sig = [
        Server::start_node_with(&schema, "sig-1", &env),
        Server::start_node_with(&schema, "sig-2", &env),
    ];
    let sfus = ["sfu-1", "sfu-2"]
        .iter()
        .map(|id| SfuNode::start(&schema, id, SECRET, sfu_env))
        .collect();
    Cluster { sig, sfus }
}

impl Cluster {
    fn logs(&self) -> String {
        palaver_tests::sfu_node::cluster_logs(&self.sig, &self.sfus)
    }

    fn host_of(&self, t: &GroupCallTicket) -> usize {
        palaver_tests::sfu_node::host_of(&self.sfus, t)
    }
}

/// Alice on signaling node 1 starts a call with Bob on node 2; both get
/// tickets (Bob's join crosses nodes through Redis).
async fn call(c: &Cluster) -> ([Client; 2], [GroupCallTicket; 2]) {
    let (mut alice, _) = c.sig[0].device(&phone()).await;
    let (mut bob, b) = c.sig[1].device(&phone()).await;
    let ta = alice
        .group_call_start(vec![b.account], Media::Video)
        .await
        .unwrap();
    let room = loop {
        match next_event(&mut bob).await {
            Event::Call(ServerFrame::GroupCallIncoming { room, .. }) => break room,
            Event::Presence(_) => continue,
            e => panic!("expected group_call_incoming, got {e:?}"),
        }
    };
    let tb = bob.group_call_join(&room).await.unwrap();
    assert_eq!(ta.sfu_url, tb.sfu_url, "one room, one node");
    ([alice, bob], [ta, tb])
}

async fn next_moved(c: &mut Client) -> GroupCallTicket {
    loop {
        if let Event::Call(f) = c.next_event().await.expect("event")
            && let Some(t) = GroupCallTicket::from_moved(&f)
        {
            return t;
        }
    }
}

/// Both pages in the call, decoding each other.
async fn both_in(d: &Driver, tickets: &[GroupCallTicket; 2]) {
    d.join(0, &tickets[0], false).await;
    d.join(1, &tickets[1], false).await;
    d.media_since_join(0).await;
    d.media_since_join(1).await;
}

/// Hands each page its `group_call_moved` ticket; returns when both decode
/// again, with the time of the later first frame.
async fn follow_move(
    d: &Driver,
    cluster: &Cluster,
    clients: &mut [Client; 2],
    room: &str,
    to: &str,
) -> (u64, u64) {
    let mut moved_at = 0;
    for (i, c) in clients.iter_mut().enumerate() {
        let t = tokio::time::timeout(palaver_tests::PATIENCE, next_moved(c))
            .await
            .unwrap_or_else(|_| panic!("no group_call_moved\n{}", cluster.logs()));
        moved_at = moved_at.max(now_ms());
        assert_eq!((t.room.as_str(), t.sfu_url.as_str()), (room, to));
        d.moved(i, &t).await;
    }
    let first = d.media_since_join(0).await.max(d.media_since_join(1).await);
    (moved_at, first)
}

#[tokio::test]
async fn a_draining_sfu_hands_its_room_over_and_exits() {
    check_tools();
    let mut c = cluster(&[("PALAVER__SFU__DRAIN_TIMEOUT", "20s")]);
    let (mut clients, tickets) = call(&c).await;
    let host = c.host_of(&tickets[0]);
    let survivor = c.sfus[1 - host].url.clone();
    let d = Driver::start();
    both_in(&d, &tickets).await;

    c.sfus[host].sigterm();
    follow_move(&d, &c, &mut clients, &tickets[0].room, &survivor).await;
    d.assert_flowing().await;
    // New calls avoid the draining node (it may have exited already).
    let (_, fresh) = call(&c).await;
    assert_eq!(fresh[0].sfu_url, survivor);
    // Once the pages left it, the node exits by itself, cleanly, before
    // its drain timeout.
    let mut node = c.sfus.remove(host);
    let logs = c.logs();
    let (status, log) = tokio::task::spawn_blocking(move || (node.wait(), node.log()))
        .await
        .unwrap();
    assert!(status.success(), "{status:?}\n{log}\n{logs}");
    assert!(!log.contains("still connected"), "{log}");
    d.cmd(json!({"cmd": "quit"})).await;
}

/// Bob's join with `ticket`'s token on `node`: the SFU's status and error
/// code. The offer is no SDP: a join that passes the token and kick checks
/// fails on it (400 `bad_sdp`), a kicked account is refused before (403
/// `kicked`).
async fn try_join(node: &str, room: &str, token: &str) -> (u16, String) {
    let url = format!("{node}/v1/rooms/{room}/join");
    let auth = format!("Bearer {token}");
    let res = palaver_client::media::request(
        &url,
        "POST",
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/sdp"),
        ],
        b"not sdp",
    )
    .await
    .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    (res.status, body["error"].as_str().unwrap_or("").to_owned())
}

#[tokio::test]
async fn a_kick_holds_after_the_room_moves_to_another_sfu_node() {
    check_tools();
    let mut c = cluster(&[]);
    // Alice (node 1) starts the call, so she is its admin; Bob and Carol
    // (node 2) are invited.
    let (mut alice, _) = c.sig[0].device(&phone()).await;
    let (mut bob, b) = c.sig[1].device(&phone()).await;
    let (mut carol, cr) = c.sig[1].device(&phone()).await;
    let carol_account = cr.account;
    let ta = alice
        .group_call_start(vec![b.account, carol_account], Media::Video)
        .await
        .unwrap();
    let tb = bob.group_call_join(&ta.room).await.unwrap();
    let d = Driver::start();
    both_in(&d, &[ta.clone(), tb.clone()]).await;

    // Alice kicks Bob: his page is told, and the room refuses him.
    let target = json!({"account": b.account.0, "device": b.device.0});
    d.send(0, json!({"type": "kick", "participant": target}))
        .await;
    d.wait_event(1, "kicked").await;
    let host = c.host_of(&ta);
    assert_eq!(
        try_join(&ta.sfu_url, &ta.room, &tb.token).await,
        (403, "kicked".into())
    );
    // Signaling knows it too (once the SFU's write reached Redis): no new
    // ticket.
    let start = std::time::Instant::now();
    loop {
        match bob.group_call_join(&ta.room).await {
            Err(e) if e.code() == Some(ErrorCode::Forbidden) => break,
            r => assert!(start.elapsed() < palaver_tests::PATIENCE, "{r:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // The hosting node dies; the room moves with Alice.
    c.sfus[host].kill();
    let moved = tokio::time::timeout(palaver_tests::PATIENCE, next_moved(&mut alice))
        .await
        .unwrap_or_else(|_| panic!("no group_call_moved\n{}", c.logs()));
    let survivor = c.sfus[1 - host].url.clone();
    assert_eq!(moved.sfu_url, survivor);
    d.moved(0, &moved).await;

    // On the new node Bob is still refused, with his old token (signaling
    // gave him no new one); Carol, never kicked, gets past the check.
    let refused = bob.group_call_join(&ta.room).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden), "{refused}");
    assert_eq!(
        try_join(&survivor, &ta.room, &tb.token).await,
        (403, "kicked".into())
    );
    let tc = carol.group_call_join(&ta.room).await.unwrap();
    assert_eq!(
        try_join(&survivor, &ta.room, &tc.token).await,
        (400, "bad_sdp".into())
    );
    d.cmd(json!({"cmd": "quit"})).await;
}
