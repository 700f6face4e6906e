//! Crash safety: every message acknowledged as sent survives SIGKILL and is
//! delivered exactly once after a restart.

use palaver_client::proto::ClientMsgId;
use palaver_tests::{Server, next_envelope, phone};
use std::collections::BTreeSet;

#[tokio::test]
async fn acknowledged_messages_survive_sigkill_exactly_once() {
    let mut server = Server::start();
    let (bob, b) = server.device(&phone()).await;
    bob.close().await.unwrap();

    // Several senders at once, so that commits are batched when the kill comes.
    let mut senders = Vec::new();
    for s in 0..4 {
        let (mut c, _) = server.device(&phone()).await;
        senders.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..100 {
                let id = format!("s{s}-m{i}");
                let msg = ClientMsgId::new(id.clone()).unwrap();
                let sent = c
                    .send(b.account, &msg, vec![(b.device, id.clone().into_bytes())])
                    .await
                    .expect("sent");
                assert!(!sent.duplicate);
                acked.push(id);
            }
            acked
        }));
    }
    let mut acked = BTreeSet::new();
    for t in senders {
        acked.extend(t.await.unwrap());
    }
    // Right after the last "sent": no graceful shutdown, no final flush.
    server.kill();
    server.restart();

    let mut bob = server.connect().await;
    bob.auth(b.device, &b.credential).await.unwrap();
    let mut got = BTreeSet::new();
    let mut order = Vec::new();
    let mut seqs = Vec::new();
    while got.len() < acked.len() {
        let env = next_envelope(&mut bob).await;
        let id = env.msg.as_str().to_owned();
        assert_eq!(
            env.payload.as_deref(),
            Some(id.as_bytes()),
            "payload intact"
        );
        assert!(got.insert(id.clone()), "{id} delivered twice");
        order.push(id);
        seqs.push(env.seq);
        if seqs.len() % 50 == 0 {
            bob.ack(seqs.clone()).await.unwrap();
        }
    }
    assert_eq!(got, acked);
    // Per sender, messages arrive in the order they were sent.
    for s in 0..4 {
        let prefix = format!("s{s}-m");
        let seen: Vec<u32> = order
            .iter()
            .filter_map(|id| id.strip_prefix(&prefix)?.parse().ok())
            .collect();
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "sender {s} out of order: {seen:?}"
        );
    }
    bob.ack(seqs).await.unwrap();
    bob.ping().await.unwrap();
    assert_eq!(
        bob.buffered_events(),
        0,
        "nothing beyond what was acknowledged as sent"
    );
    bob.close().await.unwrap();

    // Acknowledged deliveries stay deleted across another crash.
    server.kill();
    server.restart();
    let mut bob = server.connect().await;
    bob.auth(b.device, &b.credential).await.unwrap();
    bob.ping().await.unwrap();
    assert_eq!(
        bob.buffered_events(),
        0,
        "acked envelopes are not redelivered"
    );
}
