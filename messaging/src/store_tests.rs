//! Tests of the [`Store`] contract, run on every backend: each test is an
//! `async fn(Fixture)`, and `on_both!` makes a SQLite and a PostgreSQL test
//! of it. The PostgreSQL ones need `PALAVER_TEST_POSTGRES_URL` (set by
//! `scripts/test.sh`, which starts a server with `scripts/postgres.sh`);
//! each test gets a schema of its own.

use crate::policy::{CodeDecision, Phone, hash_code, hash_credential};
use crate::postgres::{PostgresConfig, PostgresStore};
use crate::sqlite::{SqliteConfig, SqliteStore};
use crate::store::*;
use palaver_proto::frames::EnvelopeKind;
use palaver_proto::{AccountId, ClientMsgId, DeviceId, Seq};
use parking_lot::Mutex;
use std::sync::Arc;

#[derive(Default)]
pub(crate) struct Recorder {
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

enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(PostgresConfig),
}

pub(crate) struct Fixture {
    store: Arc<dyn Store>,
    notes: Arc<Recorder>,
    place: Place,
}

/// The server the PostgreSQL tests use.
pub(crate) fn postgres_url() -> String {
    std::env::var("PALAVER_TEST_POSTGRES_URL").expect(
        "PALAVER_TEST_POSTGRES_URL is not set: run the tests with scripts/test.sh, or \
         `eval \"$(scripts/postgres.sh start)\"` first",
    )
}

impl Fixture {
    fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let notes = Arc::new(Recorder::default());
        let store =
            SqliteStore::open(SqliteConfig::new(dir.path().join("t.db")), notes.clone()).unwrap();
        Fixture {
            store: Arc::new(store),
            notes,
            place: Place::Sqlite(dir),
        }
    }

    async fn postgres() -> Fixture {
        let mut config = PostgresConfig::new(postgres_url());
        config.schema = format!("t_{:016x}", rand::random::<u64>());
        config.pool_size = 8;
        let notes = Arc::new(Recorder::default());
        let store = PostgresStore::open(config.clone(), notes.clone())
            .await
            .unwrap();
        Fixture {
            store: Arc::new(store),
            notes,
            place: Place::Postgres(config),
        }
    }

    /// A second store on the same data, as after a restart.
    async fn reopen(&self) -> Arc<dyn Store> {
        let notes = Arc::new(Recorder::default());
        match &self.place {
            Place::Sqlite(dir) => Arc::new(
                SqliteStore::open(SqliteConfig::new(dir.path().join("t.db")), notes).unwrap(),
            ),
            Place::Postgres(config) => {
                Arc::new(PostgresStore::open(config.clone(), notes).await.unwrap())
            }
        }
    }
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Fixture::sqlite()).await
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Fixture::postgres().await).await
                }
            )*
        }
    };
}

on_both!(
    codes_link_devices_and_are_single_use,
    wrong_codes_exhaust_the_code,
    send_fetch_ack_and_receipts,
    sends_must_cover_current_devices,
    revoke_drops_queue_and_notifies,
    expiry_removes_old_envelopes,
    chat_timers_cut_queue_life_short,
    concurrent_sends_are_batched_and_ordered,
    call_history_is_kept_for_both_parties_newest_first,
    blocking_drops_messages_silently_or_refuses_them,
    data_survives_reopen,
    statuses_disappear_with_their_lifetime,
    concurrent_fan_outs_keep_every_device_in_order,
    concurrent_claims_never_share_a_one_time_key,
    concurrent_group_changes_number_events_once,
    settings_versions_conflict_under_concurrency,
    push_settings_are_per_device_and_forgotten_on_revoke,
);

async fn link(store: &dyn Store, phone: &str) -> (AccountId, DeviceId) {
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

async fn codes_link_devices_and_are_single_use(f: Fixture) {
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

async fn wrong_codes_exhaust_the_code(f: Fixture) {
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

async fn send_fetch_ack_and_receipts(f: Fixture) {
    let alice = link(f.store.as_ref(), "+14155552671").await;
    let bob = link(f.store.as_ref(), "+14155552672").await;
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

async fn sends_must_cover_current_devices(f: Fixture) {
    let alice = link(f.store.as_ref(), "+14155552671").await;
    let alice2 = link(f.store.as_ref(), "+14155552671").await;
    let bob = link(f.store.as_ref(), "+14155552672").await;
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

async fn revoke_drops_queue_and_notifies(f: Fixture) {
    let alice = link(f.store.as_ref(), "+14155552671").await;
    let bob = link(f.store.as_ref(), "+14155552672").await;
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

async fn expiry_removes_old_envelopes(f: Fixture) {
    let alice = link(f.store.as_ref(), "+14155552671").await;
    let bob = link(f.store.as_ref(), "+14155552672").await;
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

async fn chat_timers_cut_queue_life_short(f: Fixture) {
    let alice = link(f.store.as_ref(), "+14155552671").await;
    let bob = link(f.store.as_ref(), "+14155552672").await;
    let carol = link(f.store.as_ref(), "+14155552673").await;
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

async fn statuses_disappear_with_their_lifetime(f: Fixture) {
    let alice = link(f.store.as_ref(), "+14155552671").await;
    let bob = link(f.store.as_ref(), "+14155552672").await;
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

async fn data_survives_reopen(f: Fixture) {
    let (alice, bob) = {
        let store = &f.store;
        let alice = link(store.as_ref(), "+14155552671").await;
        let bob = link(store.as_ref(), "+14155552672").await;
        store
            .send(send_req(alice, bob.0, "m1", &[bob.1]))
            .await
            .unwrap();
        (alice, bob)
    };
    let store = f.reopen().await;
    let queued = store.fetch(bob.1, Seq(0), 10).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].from, alice.0);
    let again = store
        .send(send_req(alice, bob.0, "m1", &[bob.1]))
        .await
        .unwrap();
    assert_eq!(again, SendOutcome::Duplicate { ts: 100 });
}

async fn concurrent_sends_are_batched_and_ordered(f: Fixture) {
    let alice = link(f.store.as_ref(), "+14155552671").await;
    let bob = link(f.store.as_ref(), "+14155552672").await;
    let store = f.store.clone();
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

async fn call_history_is_kept_for_both_parties_newest_first(f: Fixture) {
    use palaver_proto::CallId;
    use palaver_proto::frames::{CallLogEntry, EndReason, Media};
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

async fn blocking_drops_messages_silently_or_refuses_them(f: Fixture) {
    let alice = link(f.store.as_ref(), "+14155552671").await;
    let alice2 = link(f.store.as_ref(), "+14155552671").await;
    let bob = link(f.store.as_ref(), "+14155552672").await;
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

/// Checks what the notifier saw against the queues: every stored envelope
/// was notified once, per device in increasing order (consecutive where the
/// store promises dense numbers).
async fn check_order(f: &Fixture, devices: &[DeviceId]) {
    let seen = f.notes.seen.lock().clone();
    for d in devices {
        let notified: Vec<Seq> = seen
            .iter()
            .filter(|e| e.device == *d)
            .map(|e| e.seq)
            .collect();
        assert!(
            notified.windows(2).all(|w| w[0] < w[1]),
            "device {d}: notified out of order: {notified:?}"
        );
        let stored: Vec<Seq> = f
            .store
            .fetch(*d, Seq(0), 10_000)
            .await
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(notified, stored, "device {d}");
        if f.store.dense_seqs() {
            let dense: Vec<Seq> = (1..=stored.len() as u64).map(Seq).collect();
            assert_eq!(stored, dense, "device {d}: numbers have gaps");
        }
    }
}

async fn concurrent_fan_outs_keep_every_device_in_order(f: Fixture) {
    let mut people = Vec::new();
    for i in 0..4 {
        people.push(link(f.store.as_ref(), &format!("+1415555267{i}")).await);
    }
    let info = f
        .store
        .create_group(NewGroup {
            creator: people[0].0,
            name: "g".into(),
            members: people[1..].iter().map(|p| p.0).collect(),
            now_ms: 1,
            expires_at_ms: 1_000_000,
            limit: 100,
        })
        .await
        .unwrap()
        .unwrap();
    let mut tasks = Vec::new();
    for (n, sender) in people.iter().take(3).enumerate() {
        let (store, sender, group) = (f.store.clone(), *sender, info.group);
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let out = store
                    .group_send(GroupSendRequest {
                        from: sender.0,
                        from_device: sender.1,
                        group,
                        msg: msg(&format!("m{n}.{i}")),
                        payload: vec![1, 2, 3],
                        now_ms: 10,
                        expires_at_ms: 1_000_000,
                        edit_of: None,
                        edit_window_ms: 0,
                    })
                    .await
                    .unwrap();
                assert!(matches!(out, GroupSendOutcome::Stored { .. }), "{out:?}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let devices: Vec<DeviceId> = people.iter().map(|p| p.1).collect();
    check_order(&f, &devices).await;
    // Everyone got the event and the 60 messages but their own 20.
    let last = f.store.fetch(people[3].1, Seq(0), 1000).await.unwrap();
    assert_eq!(last.len(), 61);
    let first = f.store.fetch(people[0].1, Seq(0), 1000).await.unwrap();
    assert_eq!(first.len(), 41);
}

fn upload(keys: u32) -> crate::keys::CheckedUpload {
    use crate::keys::CheckedSignedKey;
    let signed = |key_id| CheckedSignedKey {
        key_id,
        public: [3; 32],
        signature: [4; 64],
    };
    crate::keys::CheckedUpload {
        identity_key: [1; 32],
        signing_key: [2; 32],
        signed_prekey: Some(signed(1)),
        one_time_keys: (1..=keys).map(|i| (i, [i as u8; 32])).collect(),
        last_resort: Some(signed(99)),
    }
}

async fn concurrent_claims_never_share_a_one_time_key(f: Fixture) {
    let bob = link(f.store.as_ref(), "+14155552672").await;
    assert_eq!(f.store.key_stock(bob.1).await.unwrap(), None);
    let stock = f.store.upload_keys(bob.1, upload(10)).await.unwrap();
    assert_eq!(stock, Ok(10));
    let mut tasks = Vec::new();
    for _ in 0..25 {
        let store = f.store.clone();
        tasks.push(tokio::spawn(async move {
            store.claim_keys(bob.0, None).await.unwrap().unwrap()
        }));
    }
    let mut taken = Vec::new();
    let mut fallbacks = 0;
    for t in tasks {
        let claim = t.await.unwrap();
        assert_eq!(claim.bundles.len(), 1);
        let bundle = &claim.bundles[0];
        match &bundle.one_time_key {
            Some(k) => taken.push(k.key_id),
            None => {
                assert_eq!(bundle.last_resort.as_ref().map(|k| k.key_id), Some(99));
                fallbacks += 1;
            }
        }
    }
    taken.sort_unstable();
    assert_eq!(
        taken,
        (1..=10).collect::<Vec<u32>>(),
        "each key exactly once"
    );
    assert_eq!(fallbacks, 15);
    assert_eq!(f.store.key_stock(bob.1).await.unwrap(), Some(0));
}

async fn concurrent_group_changes_number_events_once(f: Fixture) {
    use crate::groups::GroupOp;
    let alice = link(f.store.as_ref(), "+14155552670").await;
    let mut others = Vec::new();
    for i in 0..8 {
        others.push(link(f.store.as_ref(), &format!("+1415555268{i}")).await);
    }
    let info = f
        .store
        .create_group(NewGroup {
            creator: alice.0,
            name: "g".into(),
            members: Vec::new(),
            now_ms: 1,
            expires_at_ms: 1_000_000,
            limit: 100,
        })
        .await
        .unwrap()
        .unwrap();
    let mut tasks = Vec::new();
    for other in &others {
        let (store, other) = (f.store.clone(), *other);
        tasks.push(tokio::spawn(async move {
            store
                .change_group(GroupChangeRequest {
                    actor: alice.0,
                    target: GroupTarget::Id(info.group),
                    op: GroupOp::Add(vec![other.0]),
                    new_code: None,
                    now_ms: 2,
                    expires_at_ms: 1_000_000,
                    limit: 100,
                })
                .await
                .unwrap()
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let group = f.store.group(alice.0, info.group).await.unwrap().unwrap();
    assert_eq!(group.members.len(), 9);
    assert_eq!(group.event, 9);
    let events: Vec<u64> = f
        .store
        .fetch(alice.1, Seq(0), 100)
        .await
        .unwrap()
        .iter()
        .map(|e| {
            let ev: palaver_proto::groups::GroupEvent =
                serde_json::from_slice(e.payload.as_deref().unwrap()).unwrap();
            ev.event
        })
        .collect();
    assert_eq!(events, (1..=9).collect::<Vec<u64>>());
    check_order(&f, &[alice.1]).await;
}

async fn settings_versions_conflict_under_concurrency(f: Fixture) {
    let alice = link(f.store.as_ref(), "+14155552671").await;
    let mut tasks = Vec::new();
    for i in 0..10u8 {
        let store = f.store.clone();
        tasks.push(tokio::spawn(async move {
            store.put_settings(alice.0, 0, vec![i]).await.unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(1) => won += 1,
            Err(1) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(f.store.settings(alice.0).await.unwrap().0, 1);
    assert_eq!(
        f.store.put_settings(alice.0, 0, vec![]).await.unwrap(),
        Err(1)
    );
    assert_eq!(
        f.store.put_settings(alice.0, 1, vec![7]).await.unwrap(),
        Ok(2)
    );
    assert_eq!(f.store.settings(alice.0).await.unwrap(), (2, vec![7]));
}

async fn push_settings_are_per_device_and_forgotten_on_revoke(f: Fixture) {
    use palaver_proto::push::PushTarget;
    let alice = link(f.store.as_ref(), "+14155552671").await;
    let web = PushTarget::WebPush {
        endpoint: "https://push.example/a".into(),
        p256dh: "k".into(),
        auth: "a".into(),
    };
    let relay = PushTarget::Relay {
        relay: "apns".into(),
        token: "t".into(),
    };
    let empty = PushSettings {
        account: alice.0,
        target: None,
        quiet_until_ms: None,
    };
    assert_eq!(
        f.store.push_settings(alice.1).await.unwrap(),
        Some(empty.clone())
    );
    assert!(
        f.store
            .set_push_target(alice.1, Some(web.clone()))
            .await
            .unwrap()
    );
    assert!(f.store.set_push_quiet(alice.1, Some(500)).await.unwrap());
    // A new subscription replaces the old one; the quiet time stays.
    assert!(
        f.store
            .set_push_target(alice.1, Some(relay.clone()))
            .await
            .unwrap()
    );
    let got = f.store.push_settings(alice.1).await.unwrap().unwrap();
    assert_eq!(
        (got.target, got.quiet_until_ms),
        (Some(relay.clone()), Some(500))
    );
    // Gone only if it is still the subscription the push service refused.
    assert!(
        !f.store
            .drop_push_target(alice.1, web.clone())
            .await
            .unwrap()
    );
    assert!(f.store.drop_push_target(alice.1, relay).await.unwrap());
    assert!(f.store.set_push_quiet(alice.1, None).await.unwrap());
    assert_eq!(f.store.push_settings(alice.1).await.unwrap(), Some(empty));
    assert!(
        f.store
            .set_push_target(alice.1, Some(web.clone()))
            .await
            .unwrap()
    );
    assert!(f.store.revoke_device(alice.0, alice.1, 5).await.unwrap());
    assert_eq!(f.store.push_settings(alice.1).await.unwrap(), None);
    assert!(!f.store.set_push_target(alice.1, Some(web)).await.unwrap());
    assert!(
        !f.store
            .set_push_quiet(DeviceId(9999), Some(1))
            .await
            .unwrap()
    );
    assert_eq!(f.store.push_settings(DeviceId(9999)).await.unwrap(), None);
}
