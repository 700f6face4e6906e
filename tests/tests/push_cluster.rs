//! Push on two `palaver signaling` nodes sharing PostgreSQL and Redis
//! (started by scripts/test.sh): the node that stores an envelope pushes
//! for it, and a device connected to the other node is not pushed.

use palaver_client::proto::ClientMsgId;
use palaver_client::proto::push::PushTarget;
use palaver_client::{Client, Event, Registration};
use palaver_tests::push_endpoint::{PushEndpoint, UaKeys};
use palaver_tests::{Server, fresh_schema, http_get, next_event, phone};

fn web(ep: &PushEndpoint, path: &str, keys: &UaKeys) -> PushTarget {
    PushTarget::WebPush {
        endpoint: ep.url(path),
        p256dh: keys.p256dh.clone(),
        auth: keys.auth.clone(),
    }
}

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

async fn send(from: &mut Client, to: &Registration) {
    let id = ClientMsgId::new(format!("m{}", rand::random::<u64>())).unwrap();
    from.send(to.account, &id, vec![(to.device, b"sealed".to_vec())])
        .await
        .unwrap();
}

#[tokio::test]
async fn the_storing_node_pushes_and_skips_devices_connected_elsewhere() {
    let mut ep = PushEndpoint::start("127.0.0.1").await;
    let schema = fresh_schema();
    let shared = tempfile::tempdir().unwrap();
    let key_file = shared.path().join("vapid.key");
    let env = [
        ("PALAVER__PUSH__VAPID_KEY_FILE", key_file.to_str().unwrap()),
        ("PALAVER__PUSH__ALLOW_HTTP", "true"),
        ("PALAVER__PUSH__ALLOW", "[\"127.0.0.1/32\"]"),
        ("PALAVER__PUSH__CONCURRENCY", "1"),
    ];
    let a = Server::start_node_with(&schema, "node-a", &env);
    let b = Server::start_node_with(&schema, "node-b", &env);
    let key = |s: &Server| format!("http://{}", s.main_addr);
    let (ka, kb_) = (
        http_get(&key(&a), "/v1/push/vapid-key").await.1,
        http_get(&key(&b), "/v1/push/vapid-key").await.1,
    );
    assert_eq!(ka, kb_, "both nodes sign with the shared key");
    let (mut alice, _) = a.device(&phone()).await;
    let (kb, kd) = (UaKeys::generate(), UaKeys::generate());
    let (mut bob_c, bob) = b.device(&phone()).await;
    bob_c.push_subscribe(web(&ep, "/bob", &kb)).await.unwrap();
    let (mut dave_c, dave) = a.device(&phone()).await;
    dave_c.push_subscribe(web(&ep, "/dave", &kd)).await.unwrap();
    drop(dave_c);
    wait_offline(&mut alice, dave.account).await;

    // Bob is connected to node b: node a, which stores the message, does
    // not push him. Dave's push, decided after, comes first.
    send(&mut alice, &bob).await;
    send(&mut alice, &dave).await;
    assert_eq!(ep.next().await.path, "/dave");

    drop(bob_c);
    wait_offline(&mut alice, bob.account).await;
    send(&mut alice, &bob).await;
    let r = ep.next().await;
    assert_eq!(r.path, "/bob");
    let (plaintext, _) = kb.open(&r, &format!("http://{}", ep.addr));
    assert_eq!(plaintext["kind"], "message");
    let sent = "palaver_push_sent_total{kind=\"message\"}";
    assert!(a.metrics().await.contains(&format!("{sent} 2")));
    assert!(
        !b.metrics().await.contains(&format!("{sent} ")),
        "node b pushed nothing"
    );
}
