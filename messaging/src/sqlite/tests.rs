use super::*;
use crate::policy::{hash_code, hash_credential};

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Arc<StoredEnvelope>>>,
    revoked: Mutex<Vec<DeviceId>>,
}

impl Notifier for Recorder {
    fn envelopes(&self, envelopes: &[Arc<StoredEnvelope>]) {
        self.seen.lock().extend(envelopes.iter().cloned());
    }
    fn device_revoked(&self, device: DeviceId) {
        self.revoked.lock().push(device);
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: SqliteStore,
    notes: Arc<Recorder>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let notes = Arc::new(Recorder::default());
    let store =
        SqliteStore::open(SqliteConfig::new(dir.path().join("t.db")), notes.clone()).unwrap();
    Fixture {
        _dir: dir,
        store,
        notes,
    }
}

async fn link(store: &SqliteStore, phone: &str) -> (AccountId, DeviceId) {
    let phone = Phone::parse(phone).unwrap();
    store
        .put_code(&phone, hash_code(&phone, "123456"), 10_000)
        .await
        .unwrap();
    let out = store
        .verify_and_link(
            NewDevice {
                phone: phone.clone(),
                code_hash: hash_code(&phone, "123456"),
                name: "test".into(),
                credential_hash: hash_credential("cred"),
            },
            1,
            5,
            5,
        )
        .await
        .unwrap();
    match out {
        VerifyOutcome::Linked {
            account, device, ..
        } => (account, device),
        other => panic!("not linked: {other:?}"),
    }
}

fn msg(s: &str) -> ClientMsgId {
    ClientMsgId::new(s).unwrap()
}

fn send_req(
    from: (AccountId, DeviceId),
    to: AccountId,
    id: &str,
    devs: &[DeviceId],
) -> SendRequest {
    SendRequest {
        from: from.0,
        from_device: from.1,
        msg: msg(id),
        to,
        envelopes: devs.iter().map(|d| (*d, id.as_bytes().to_vec())).collect(),
        now_ms: 100,
        expires_at_ms: 1_000_000,
        edit_of: None,
        edit_window_ms: 0,
    }
}

#[tokio::test]
async fn codes_link_devices_and_are_single_use() {
    let f = fixture();
    let phone = Phone::parse("+14155552671").unwrap();
    let new = |code: &str| NewDevice {
        phone: phone.clone(),
        code_hash: hash_code(&phone, code),
        name: "d".into(),
        credential_hash: hash_credential("c"),
    };
    assert_eq!(
        f.store
            .verify_and_link(new("123456"), 0, 5, 5)
            .await
            .unwrap(),
        VerifyOutcome::Rejected(CodeDecision::Expired)
    );
    f.store
        .put_code(&phone, hash_code(&phone, "123456"), 1000)
        .await
        .unwrap();
    assert_eq!(
        f.store
            .verify_and_link(new("000000"), 0, 5, 5)
            .await
            .unwrap(),
        VerifyOutcome::Rejected(CodeDecision::Wrong)
    );
    let linked = f
        .store
        .verify_and_link(new("123456"), 0, 5, 5)
        .await
        .unwrap();
    assert!(matches!(
        linked,
        VerifyOutcome::Linked {
            new_account: true,
            ..
        }
    ));
    assert_eq!(
        f.store
            .verify_and_link(new("123456"), 0, 5, 5)
            .await
            .unwrap(),
        VerifyOutcome::Rejected(CodeDecision::Used)
    );
    // A second device on the same account, then the limit.
    f.store
        .put_code(&phone, hash_code(&phone, "222222"), 1000)
        .await
        .unwrap();
    let second = f
        .store
        .verify_and_link(new("222222"), 0, 5, 2)
        .await
        .unwrap();
    assert!(matches!(
        second,
        VerifyOutcome::Linked {
            new_account: false,
            ..
        }
    ));
    f.store
        .put_code(&phone, hash_code(&phone, "333333"), 1000)
        .await
        .unwrap();
    assert_eq!(
        f.store
            .verify_and_link(new("333333"), 0, 5, 2)
            .await
            .unwrap(),
        VerifyOutcome::DeviceLimit
    );
}

#[tokio::test]
async fn wrong_codes_exhaust_the_code() {
    let f = fixture();
    let phone = Phone::parse("+14155552671").unwrap();
    f.store
        .put_code(&phone, hash_code(&phone, "123456"), 1000)
        .await
        .unwrap();
    let new = |code: &str| NewDevice {
        phone: phone.clone(),
        code_hash: hash_code(&phone, code),
        name: "d".into(),
        credential_hash: hash_credential("c"),
    };
    for _ in 0..3 {
        assert_eq!(
            f.store
                .verify_and_link(new("999999"), 0, 3, 5)
                .await
                .unwrap(),
            VerifyOutcome::Rejected(CodeDecision::Wrong)
        );
    }
    assert_eq!(
        f.store
            .verify_and_link(new("123456"), 0, 3, 5)
            .await
            .unwrap(),
        VerifyOutcome::Rejected(CodeDecision::Exhausted)
    );
}

#[tokio::test]
async fn send_fetch_ack_and_receipts() {
    let f = fixture();
    let alice = link(&f.store, "+14155552671").await;
    let bob = link(&f.store, "+14155552672").await;
    let out = f
        .store
        .send(send_req(alice, bob.0, "m1", &[bob.1]))
        .await
        .unwrap();
    assert_eq!(out, SendOutcome::Stored { ts: 100 });
    let again = f
        .store
        .send(send_req(alice, bob.0, "m1", &[bob.1]))
        .await
        .unwrap();
    assert_eq!(again, SendOutcome::Duplicate { ts: 100 });
    f.store
        .send(send_req(alice, bob.0, "m2", &[bob.1]))
        .await
        .unwrap();

    let queued = f.store.fetch(bob.1, Seq(0), 10).await.unwrap();
    assert_eq!(queued.len(), 2);
    assert_eq!(queued[0].msg, msg("m1"));
    assert_eq!(queued[0].payload.as_deref(), Some(&b"m1"[..]));
    assert!(queued[0].seq < queued[1].seq);
    assert_eq!(f.notes.seen.lock().len(), 2);

    f.store
        .ack(bob.1, vec![queued[0].seq, Seq(999_999)], 200, 1_000_000)
        .await
        .unwrap();
    let left = f.store.fetch(bob.1, Seq(0), 10).await.unwrap();
    assert_eq!(left.len(), 1);
    let receipts = f.store.fetch(alice.1, Seq(0), 10).await.unwrap();
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].kind, EnvelopeKind::Delivered);
    assert_eq!(receipts[0].from, bob.0);
    assert_eq!(receipts[0].msg, msg("m1"));

    // Alice cannot ack Bob's envelopes.
    f.store
        .ack(alice.1, vec![left[0].seq], 200, 1_000_000)
        .await
        .unwrap();
    assert_eq!(f.store.fetch(bob.1, Seq(0), 10).await.unwrap().len(), 1);

    assert!(
        f.store
            .read_receipts(bob.0, bob.1, alice.0, vec![msg("m2")], 300, 1_000_000)
            .await
            .unwrap()
    );
    let all = f.store.fetch(alice.1, Seq(0), 10).await.unwrap();
    assert_eq!(all.last().unwrap().kind, EnvelopeKind::Read);
}

#[tokio::test]
async fn sends_must_cover_current_devices() {
    let f = fixture();
    let alice = link(&f.store, "+14155552671").await;
    let alice2 = link(&f.store, "+14155552671").await;
    let bob = link(&f.store, "+14155552672").await;
    assert_eq!(alice.0, alice2.0);
    let out = f
        .store
        .send(send_req(alice, bob.0, "m1", &[bob.1]))
        .await
        .unwrap();
    let SendOutcome::Mismatch(m) = out else {
        panic!("expected a mismatch, got {out:?}")
    };
    assert_eq!(m.missing, vec![alice2.1]);
    let out = f
        .store
        .send(send_req(
            alice,
            bob.0,
            "m1",
            &[bob.1, alice2.1, DeviceId(77)],
        ))
        .await
        .unwrap();
    assert!(matches!(out, SendOutcome::Mismatch(ref m) if m.extra == vec![DeviceId(77)]));
    assert!(f.store.fetch(bob.1, Seq(0), 10).await.unwrap().is_empty());
    let out = f
        .store
        .send(send_req(alice, bob.0, "m1", &[bob.1, alice2.1]))
        .await
        .unwrap();
    assert_eq!(out, SendOutcome::Stored { ts: 100 });
    assert_eq!(f.store.fetch(alice2.1, Seq(0), 10).await.unwrap().len(), 1);
    let out = f
        .store
        .send(send_req(alice, AccountId(999), "m2", &[]))
        .await
        .unwrap();
    assert_eq!(out, SendOutcome::UnknownRecipient);
}

#[tokio::test]
async fn revoke_drops_queue_and_notifies() {
    let f = fixture();
    let alice = link(&f.store, "+14155552671").await;
    let bob = link(&f.store, "+14155552672").await;
    f.store
        .send(send_req(alice, bob.0, "m1", &[bob.1]))
        .await
        .unwrap();
    assert!(f.store.revoke_device(bob.0, bob.1, 5).await.unwrap());
    assert!(!f.store.revoke_device(bob.0, bob.1, 5).await.unwrap());
    assert!(!f.store.revoke_device(alice.0, bob.1, 5).await.unwrap());
    assert!(f.store.fetch(bob.1, Seq(0), 10).await.unwrap().is_empty());
    assert_eq!(*f.notes.revoked.lock(), vec![bob.1]);
    assert!(f.store.device(bob.1).await.unwrap().unwrap().revoked);
    assert_eq!(f.store.devices(bob.0).await.unwrap(), Some(vec![]));
    assert_eq!(f.store.devices(AccountId(1234)).await.unwrap(), None);
}

#[tokio::test]
async fn expiry_removes_old_envelopes() {
    let f = fixture();
    let alice = link(&f.store, "+14155552671").await;
    let bob = link(&f.store, "+14155552672").await;
    let mut req = send_req(alice, bob.0, "old", &[bob.1]);
    req.expires_at_ms = 500;
    f.store.send(req).await.unwrap();
    f.store
        .send(send_req(alice, bob.0, "new", &[bob.1]))
        .await
        .unwrap();
    assert_eq!(f.store.expire(600, 0).await.unwrap(), 1);
    let left = f.store.fetch(bob.1, Seq(0), 10).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].msg, msg("new"));
}

#[tokio::test]
async fn chat_timers_cut_queue_life_short() {
    let f = fixture();
    let alice = link(&f.store, "+14155552671").await;
    let bob = link(&f.store, "+14155552672").await;
    let carol = link(&f.store, "+14155552673").await;
    let timer = |chat, seconds| crate::store::TimerRequest {
        actor: alice.0,
        chat,
        seconds,
        now_ms: 100,
        expires_at_ms: 1_000_000_000,
    };
    use crate::chats::Chat;
    f.store
        .set_timer(timer(Chat::Direct(bob.0), 86_400))
        .await
        .unwrap()
        .unwrap();
    // Sent at 100 ms with a queue life of 1,000,000 s: to Bob it disappears
    // after a day, to Carol (no timer) it stays.
    let mut to_bob = send_req(alice, bob.0, "b", &[bob.1]);
    to_bob.expires_at_ms = 1_000_000_000;
    f.store.send(to_bob).await.unwrap();
    let mut to_carol = send_req(alice, carol.0, "c", &[carol.1]);
    to_carol.expires_at_ms = 1_000_000_000;
    f.store.send(to_carol).await.unwrap();
    f.store.expire(100 + 86_400_000, 0).await.unwrap();
    let kinds = |v: Vec<StoredEnvelope>| v.into_iter().map(|e| e.kind).collect::<Vec<_>>();
    // Bob keeps the timer notice (it has the long queue life), not the message.
    assert_eq!(
        kinds(f.store.fetch(bob.1, Seq(0), 10).await.unwrap()),
        vec![EnvelopeKind::Timer]
    );
    assert_eq!(
        kinds(f.store.fetch(carol.1, Seq(0), 10).await.unwrap()),
        vec![EnvelopeKind::Message]
    );
    // Turning the timer off restores the normal life for new messages.
    f.store
        .set_timer(timer(Chat::Direct(bob.0), 0))
        .await
        .unwrap()
        .unwrap();
    let mut later = send_req(alice, bob.0, "b2", &[bob.1]);
    later.expires_at_ms = 1_000_000_000;
    f.store.send(later).await.unwrap();
    f.store.expire(100 + 86_400_001, 0).await.unwrap();
    let left = f.store.fetch(bob.1, Seq(0), 10).await.unwrap();
    assert!(left.iter().any(|e| e.msg == msg("b2")));
}

#[tokio::test]
async fn statuses_disappear_with_their_lifetime() {
    let f = fixture();
    let alice = link(&f.store, "+14155552671").await;
    let bob = link(&f.store, "+14155552672").await;
    let post = crate::store::StatusRequest {
        author: alice.0,
        device: alice.1,
        msg: msg("s1"),
        payload: b"p".to_vec(),
        audience: vec![bob.0],
        now_ms: 100,
        expires_at_ms: 1_000,
    };
    let out = f.store.post_status(post).await.unwrap();
    assert_eq!(
        out,
        crate::store::StatusOutcome::Stored {
            ts: 100,
            reached: 1
        }
    );
    assert!(
        f.store
            .view_status(bob, alice.0, msg("s1"), 500)
            .await
            .unwrap()
    );
    f.store.expire(1_000, 0).await.unwrap();
    assert!(f.store.fetch(bob.1, Seq(0), 10).await.unwrap().is_empty());
    assert!(
        !f.store
            .view_status(bob, alice.0, msg("s1"), 1_001)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let (alice, bob) = {
        let store =
            SqliteStore::open(SqliteConfig::new(&path), Arc::new(Recorder::default())).unwrap();
        let alice = link(&store, "+14155552671").await;
        let bob = link(&store, "+14155552672").await;
        store
            .send(send_req(alice, bob.0, "m1", &[bob.1]))
            .await
            .unwrap();
        (alice, bob)
    };
    let store = SqliteStore::open(SqliteConfig::new(&path), Arc::new(Recorder::default())).unwrap();
    let queued = store.fetch(bob.1, Seq(0), 10).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].from, alice.0);
    let again = store
        .send(send_req(alice, bob.0, "m1", &[bob.1]))
        .await
        .unwrap();
    assert_eq!(again, SendOutcome::Duplicate { ts: 100 });
}

#[tokio::test]
async fn concurrent_sends_are_batched_and_ordered() {
    let f = fixture();
    let alice = link(&f.store, "+14155552671").await;
    let bob = link(&f.store, "+14155552672").await;
    let store = Arc::new(f.store);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .send(send_req(alice, bob.0, &format!("m{i}"), &[bob.1]))
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        assert!(matches!(t.await.unwrap(), SendOutcome::Stored { .. }));
    }
    {
        let seen = f.notes.seen.lock();
        assert_eq!(seen.len(), 200);
        assert!(seen.windows(2).all(|w| w[0].seq < w[1].seq));
    }
    let fetched = store.fetch(bob.1, Seq(0), 500).await.unwrap();
    assert_eq!(fetched.len(), 200);
}

#[tokio::test]
async fn call_history_is_kept_for_both_parties_newest_first() {
    use palaver_proto::CallId;
    use palaver_proto::frames::{CallLogEntry, EndReason, Media};
    let f = fixture();
    let entry = |call: u64, caller: u64, callee: u64, started: u64, reason| CallLogEntry {
        call: CallId(call),
        caller: AccountId(caller),
        caller_device: DeviceId(caller * 10),
        callee: AccountId(callee),
        answered_by: None,
        media: Media::Video,
        reason,
        started_at: started,
        answered_at: None,
        ended_at: started + 5,
    };
    f.store
        .record_call(entry(1, 1, 2, 100, EndReason::NoAnswer))
        .await
        .unwrap();
    f.store
        .record_call(entry(2, 2, 1, 200, EndReason::HungUp))
        .await
        .unwrap();
    f.store
        .record_call(entry(3, 2, 3, 300, EndReason::Busy))
        .await
        .unwrap();
    // Recording the same call twice keeps one entry.
    f.store
        .record_call(entry(3, 2, 3, 300, EndReason::Busy))
        .await
        .unwrap();
    let a = f
        .store
        .call_history(AccountId(1), u64::MAX, 10)
        .await
        .unwrap();
    assert_eq!(a.iter().map(|e| e.call.0).collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(a[1].reason, EndReason::NoAnswer);
    let b = f.store.call_history(AccountId(2), 300, 10).await.unwrap();
    assert_eq!(b.iter().map(|e| e.call.0).collect::<Vec<_>>(), vec![2, 1]);
    let b = f
        .store
        .call_history(AccountId(2), u64::MAX, 1)
        .await
        .unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0], entry(3, 2, 3, 300, EndReason::Busy));
}

#[tokio::test]
async fn blocking_drops_messages_silently_or_refuses_them() {
    let f = fixture();
    let alice = link(&f.store, "+14155552671").await;
    let alice2 = link(&f.store, "+14155552671").await;
    let bob = link(&f.store, "+14155552672").await;
    assert!(f.store.set_block(bob.0, alice.0, true, 1).await.unwrap());
    assert!(
        !f.store
            .set_block(bob.0, AccountId(999), true, 1)
            .await
            .unwrap()
    );
    assert_eq!(f.store.blocks(alice.0, bob.0).await.unwrap(), (false, true));
    assert_eq!(
        f.store.blocked_accounts(bob.0).await.unwrap(),
        vec![alice.0]
    );

    // Alice cannot tell: her send is accepted and her other device gets it.
    let out = f
        .store
        .send(send_req(alice, bob.0, "m1", &[bob.1, alice2.1]))
        .await
        .unwrap();
    assert_eq!(out, SendOutcome::Stored { ts: 100 });
    assert!(f.store.fetch(bob.1, Seq(0), 10).await.unwrap().is_empty());
    assert_eq!(f.store.fetch(alice2.1, Seq(0), 10).await.unwrap().len(), 1);
    // Bob, who blocks Alice, is told.
    let out = f
        .store
        .send(send_req(bob, alice.0, "m2", &[alice.1, alice2.1]))
        .await
        .unwrap();
    assert_eq!(out, SendOutcome::Blocked);
    assert!(
        f.store
            .read_receipts(alice.0, alice.1, bob.0, vec![msg("m1")], 1, 9)
            .await
            .unwrap()
    );
    assert!(f.store.fetch(bob.1, Seq(0), 10).await.unwrap().is_empty());

    assert!(f.store.set_block(bob.0, alice.0, false, 2).await.unwrap());
    let out = f
        .store
        .send(send_req(alice, bob.0, "m3", &[bob.1, alice2.1]))
        .await
        .unwrap();
    assert_eq!(out, SendOutcome::Stored { ts: 100 });
    assert_eq!(f.store.fetch(bob.1, Seq(0), 10).await.unwrap().len(), 1);
}
