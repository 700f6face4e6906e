//! The key directory and end-to-end encryption through the real server:
//! the SDK encrypts with vodozemac, the server's database and logs never
//! hold a plaintext, one-time keys are handed out once, bad keys are refused.

use palaver_client::e2e::vodozemac::olm::Account;
use palaver_client::e2e::{Crypto, Decrypted};
use palaver_client::proto::frames::{EnvelopeKind, Payload};
use palaver_client::proto::keys::{
    KeyUpload, OneTimeKey, SignedKey, SignedKeyKind, prekey_signature_message,
};
use palaver_client::proto::{AccountId, ClientMsgId, DeviceId, ErrorCode};
use palaver_client::{Client, Envelope, Event};
use palaver_tests::{Server, next_envelope, next_event, phone};
use std::collections::BTreeSet;

fn id(s: &str) -> ClientMsgId {
    ClientMsgId::new(s).unwrap()
}

/// Every byte the server keeps on disk: the database, its WAL and the log.
fn server_bytes(server: &Server) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(&server.data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            all.extend(std::fs::read(&path).unwrap());
        }
    }
    all.extend(std::fs::read(&server.stderr_log).unwrap());
    if palaver_tests::on_postgres() {
        // The database lives in the test PostgreSQL cluster: its tables
        // and its write-ahead log.
        let dir = std::env::var("PALAVER_TEST_POSTGRES_DIR").expect("PALAVER_TEST_POSTGRES_DIR");
        read_tree(&std::path::Path::new(&dir).join("data"), &mut all);
    }
    all
}

fn read_tree(dir: &std::path::Path, into: &mut Vec<u8>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            read_tree(&path, into);
        } else if let Ok(bytes) = std::fs::read(&path) {
            into.extend(bytes);
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn next_message(c: &mut Client) -> Envelope {
    loop {
        let e = next_envelope(c).await;
        c.ack(vec![e.seq]).await.unwrap();
        if e.kind == EnvelopeKind::Message {
            return e;
        }
    }
}

/// Decrypts envelopes until an application message comes.
async fn next_plaintext(c: &mut Client, crypto: &mut Crypto) -> (Envelope, Vec<u8>) {
    loop {
        let e = next_message(c).await;
        match crypto.decrypt(&e).unwrap() {
            Decrypted::Message(m) => return (e, m),
            Decrypted::GroupKey(_) => {}
        }
    }
}

#[tokio::test]
async fn the_server_never_sees_plaintext() {
    let server = Server::start();
    let alice_phone = phone();
    let (mut alice, a) = server.device(&alice_phone).await;
    let (mut alice2, _) = server.device(&alice_phone).await;
    let (mut bob, b) = server.device(&phone()).await;
    let (mut ca, mut ca2, mut cb) = (Crypto::new(), Crypto::new(), Crypto::new());
    ca.publish(&mut alice, 5).await.unwrap();
    ca2.publish(&mut alice2, 5).await.unwrap();
    cb.publish(&mut bob, 5).await.unwrap();
    bob.close().await.unwrap();

    // A 1:1 message while Bob is offline: it sits in his queue, encrypted.
    let secret = format!("meet me at the old mill {}", rand::random::<u64>());
    let envelopes = ca
        .encrypt_for(&mut alice, b.account, secret.as_bytes())
        .await
        .unwrap();
    assert_eq!(envelopes.len(), 2, "Bob's device and Alice's other device");
    let to_bob = envelopes
        .iter()
        .find(|(d, _)| *d == b.device)
        .unwrap()
        .1
        .clone();
    alice.send(b.account, &id("m1"), envelopes).await.unwrap();
    alice.ping().await.unwrap();
    let disk = server_bytes(&server);
    assert!(
        contains(&disk, &to_bob[..48]),
        "the ciphertext is on disk (the scan works)"
    );
    assert!(
        !contains(&disk, secret.as_bytes()),
        "no plaintext on disk or in the log"
    );

    // Bob comes back and reads it; so does Alice's other device.
    let mut bob = server.connect().await;
    bob.auth(b.device, &b.credential).await.unwrap();
    let (e, plain) = next_plaintext(&mut bob, &mut cb).await;
    assert_eq!((e.from, plain), (a.account, secret.as_bytes().to_vec()));
    let (_, plain) = next_plaintext(&mut alice2, &mut ca2).await;
    assert_eq!(plain, secret.as_bytes());

    // Bob's app restarts: his state comes back from storage, encrypted
    // with his key; the wrong key reads nothing.
    let key = [7u8; 32];
    let saved = cb.save(&key);
    assert!(!saved.contains(&secret), "no plaintext in the saved state");
    assert!(Crypto::restore(&saved, &[8u8; 32]).is_err());
    let mut cb = Crypto::restore(&saved, &key).unwrap();

    // Bob answers over the session Alice opened.
    let reply = format!("the mill it is {}", rand::random::<u64>());
    cb.send(&mut bob, a.account, &id("r1"), reply.as_bytes())
        .await
        .unwrap();
    let (_, plain) = next_plaintext(&mut alice, &mut ca).await;
    assert_eq!(plain, reply.as_bytes());

    // A group message: one Megolm ciphertext for everyone, its key shared
    // over Olm first.
    let group = alice
        .group_create("mill", &[b.account])
        .await
        .unwrap()
        .group;
    let group_secret = format!("bring lanterns {}", rand::random::<u64>());
    ca.group_send(&mut alice, group, &id("g1"), group_secret.as_bytes())
        .await
        .unwrap();
    alice.ping().await.unwrap();
    assert!(!contains(&server_bytes(&server), group_secret.as_bytes()));
    let (e, plain) = next_plaintext(&mut bob, &mut cb).await;
    assert_eq!(
        (e.group, plain),
        (Some(group), group_secret.as_bytes().to_vec())
    );
    // Restored again, Bob still reads the group: the Megolm session survives.
    let mut cb = Crypto::restore(&cb.save(&key), &key).unwrap();
    let again = format!("second lantern {}", rand::random::<u64>());
    ca.group_send(&mut alice, group, &id("g2"), again.as_bytes())
        .await
        .unwrap();
    let (_, plain) = next_plaintext(&mut bob, &mut cb).await;
    assert_eq!(plain, again.as_bytes());
    // Alice's other device got Bob's reply too, then the group message.
    let (_, plain) = next_plaintext(&mut alice2, &mut ca2).await;
    assert_eq!(plain, reply.as_bytes());
    let (_, plain) = next_plaintext(&mut alice2, &mut ca2).await;
    assert_eq!(plain, group_secret.as_bytes());
    assert!(!contains(&server_bytes(&server), reply.as_bytes()));
}

/// A valid upload made with a real Olm account.
fn upload(account: &Account, spk_id: u32, otk_ids: std::ops::Range<u32>) -> KeyUpload {
    let identity = account.identity_keys();
    let sign = |kind, key_id, public: [u8; 32]| {
        let message = prekey_signature_message(kind, key_id, &public);
        SignedKey {
            key_id,
            public: Payload(public.to_vec()),
            signature: Payload(account.sign(message.as_bytes()).to_bytes().to_vec()),
        }
    };
    KeyUpload {
        identity_key: Payload(identity.curve25519.to_vec()),
        signing_key: Payload(identity.ed25519.as_bytes().to_vec()),
        signed_prekey: Some(sign(
            SignedKeyKind::SignedPrekey,
            spk_id,
            [spk_id as u8; 32],
        )),
        one_time_keys: otk_ids
            .map(|i| OneTimeKey {
                key_id: i,
                public: Payload(vec![(i % 251) as u8 + 1; 32]),
            })
            .collect(),
        last_resort: Some(sign(SignedKeyKind::LastResort, 99, [99; 32])),
    }
}

#[tokio::test]
async fn one_time_keys_are_handed_out_once() {
    let server = Server::start();
    let (mut bob, b) = server.device(&phone()).await;
    let (mut carol, _) = server.device(&phone()).await;
    let (mut dave, _) = server.device(&phone()).await;
    let account = Account::new();
    assert_eq!(
        bob.keys_upload(upload(&account, 1, 0..12)).await.unwrap(),
        12
    );

    // Two claimants at once never get the same key.
    let mut seen = BTreeSet::new();
    for _ in 0..5 {
        let (x, y) = tokio::join!(
            carol.keys_claim(b.account, None),
            dave.keys_claim(b.account, Some(b.device))
        );
        for claim in [x.unwrap(), y.unwrap()] {
            let k = claim.bundles[0].one_time_key.clone().expect("stock left");
            assert!(seen.insert(k.key_id), "key {} handed out twice", k.key_id);
            assert!(claim.bundles[0].last_resort.is_none());
        }
    }
    assert_eq!(bob.keys_count().await.unwrap(), 2);
    // Below the low-stock mark, Bob is told.
    loop {
        if let Event::KeysLow { one_time_keys } = next_event(&mut bob).await {
            assert!(one_time_keys < 10);
            break;
        }
    }
    // Once the stock is gone, claims get the last-resort key.
    for _ in 0..2 {
        carol.keys_claim(b.account, None).await.unwrap();
    }
    let claim = carol.keys_claim(b.account, None).await.unwrap();
    let bundle = &claim.bundles[0];
    assert!(bundle.one_time_key.is_none());
    assert_eq!(bundle.last_resort.as_ref().unwrap().key_id, 99);
    assert_eq!(bundle.signed_prekey.key_id, 1);
    // More keys, and a new signed prekey, are accepted; the identity is not.
    assert_eq!(
        bob.keys_upload(upload(&account, 2, 100..105))
            .await
            .unwrap(),
        5
    );
    let e = bob
        .keys_upload(upload(&Account::new(), 3, 200..201))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));
    assert_eq!(
        bob.keys_count().await.unwrap(),
        5,
        "refused uploads change nothing"
    );
}

#[tokio::test]
async fn bad_keys_and_claims_are_refused() {
    let server = Server::start();
    let bob_phone = phone();
    let (mut bob, b) = server.device(&bob_phone).await;
    let (mut carol, c) = server.device(&phone()).await;
    let account = Account::new();

    let mut forged = upload(&account, 1, 0..3);
    forged.signed_prekey.as_mut().unwrap().public.0[0] ^= 0xff;
    let e = bob.keys_upload(forged).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::BadSignature));
    let mut no_spk = upload(&account, 1, 0..3);
    no_spk.signed_prekey = None;
    let e = bob.keys_upload(no_spk).await.unwrap_err();
    assert_eq!(
        e.code(),
        Some(ErrorCode::InvalidArgument),
        "the first upload needs a signed prekey"
    );
    let mut short = upload(&account, 1, 0..3);
    short.identity_key.0.truncate(31);
    let e = bob.keys_upload(short).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument));
    assert_eq!(bob.keys_count().await.unwrap(), 0, "nothing stored");

    // A device without keys is reported, not invented.
    let claim = carol.keys_claim(b.account, None).await.unwrap();
    assert!(claim.bundles.is_empty());
    assert_eq!(claim.without_keys, vec![b.device]);
    let e = carol
        .keys_claim(AccountId(987_654), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    let e = carol
        .keys_claim(b.account, Some(DeviceId(987_654)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
    let e = carol
        .keys_claim(b.account, Some(c.device))
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Some(ErrorCode::NotFound),
        "a device of another account"
    );

    // An unlinked device's keys are gone with it.
    bob.keys_upload(upload(&account, 1, 0..3)).await.unwrap();
    // A second device keeps Bob's account alive through the unlink.
    let (mut bob2, _) = server.device(&bob_phone).await;
    bob2.revoke_device(b.device).await.unwrap();
    let claim = carol.keys_claim(b.account, Some(b.device)).await;
    assert_eq!(claim.unwrap_err().code(), Some(ErrorCode::NotFound));
}
