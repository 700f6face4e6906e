//! The PostgreSQL store, for deployments with more than one signaling node.
//!
//! Every operation is one transaction on a pooled connection, run in its own
//! task so that a caller that goes away cannot cut a commit in half.
//!
//! Ordering. Each device has its own sequence counter (`devices.next_seq`).
//! A transaction buffers the envelopes it creates and, as its last step,
//! locks the rows of every recipient device in id order (`FOR UPDATE`),
//! takes consecutive numbers from their counters and inserts the envelopes.
//! The row locks are held until commit, so a device's sequence numbers are
//! dense and become visible in increasing order: when N+1 is committed, N
//! is committed already. Locking in id order, after every other lock the
//! transaction takes, keeps two fan-outs to overlapping devices from
//! deadlocking; a deadlock or serialization failure elsewhere is retried.
//!
//! Notifications. Just before its commit, a transaction that created
//! envelopes takes a ticket; results are handed to the [`Notifier`] in
//! ticket order. A transaction that waited for another's device lock takes
//! its ticket after that one committed, so per device the notifier sees
//! commits in order, as the contract of [`Notifier`] requires.

use crate::store::*;
use deadpool_postgres::{Pool, Runtime};
use palaver_proto::frames::{EnvelopeKind, LastSeenPrivacy};
use palaver_proto::{AccountId, ClientMsgId, DeviceId, GroupId, Seq};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

mod account;
mod business;
mod chats;
mod groups;
mod keys;
mod messages;
mod migrations;
mod push;
mod status;
mod store_impl;

/// Settings of the PostgreSQL store.
#[derive(Clone)]
pub struct PostgresConfig {
    /// A `postgres://` URL or a key=value connection string. A secret: it
    /// usually holds a password, and is never logged.
    pub url: String,
    /// The schema holding Palaver's tables; created if missing.
    pub schema: String,
    /// Most connections kept open.
    pub pool_size: usize,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &"[redacted]")
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl PostgresConfig {
    /// Defaults (schema `public`, 16 connections) for a URL.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresConfig {
            url: url.into(),
            schema: "public".into(),
            pool_size: 16,
        }
    }
}

/// Whether `s` is a schema name the store accepts: lower-case letters,
/// digits and `_`, not starting with a digit, at most 63 bytes.
pub fn valid_schema(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && s.len() <= 63
}

/// An error inside the store, before it becomes a [`StoreError`].
#[derive(Debug)]
pub(crate) enum PgError {
    Db(tokio_postgres::Error),
    Data(String),
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::Db(e)
    }
}

impl PgError {
    /// A deadlock or serialization failure: the transaction may be retried.
    fn retryable(&self) -> bool {
        use tokio_postgres::error::SqlState;
        match self {
            PgError::Db(e) => matches!(
                e.code(),
                Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::T_R_SERIALIZATION_FAILURE
            ),
            _ => false,
        }
    }
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> Self {
        match e {
            PgError::Db(e) => StoreError::Database(match e.as_db_error() {
                Some(db) => format!("{}: {}", db.code().code(), db.message()),
                None => e.to_string(),
            }),
            PgError::Data(m) => StoreError::Database(m),
        }
    }
}

pub(crate) type PgResult<T> = Result<T, PgError>;
pub(crate) type Tx<'a> = deadpool_postgres::Transaction<'a>;
pub(crate) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = PgResult<T>> + Send + 'a>>;

/// Runs a cached statement and returns its rows.
pub(crate) async fn query(
    tx: &Tx<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> PgResult<Vec<Row>> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.query(&st, params).await?)
}

/// Runs a cached statement and returns its first row, if any.
pub(crate) async fn query_opt(
    tx: &Tx<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> PgResult<Option<Row>> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.query_opt(&st, params).await?)
}

/// Runs a cached statement and returns how many rows it changed.
pub(crate) async fn execute(
    tx: &Tx<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> PgResult<u64> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&st, params).await?)
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn kind_to_i16(kind: EnvelopeKind) -> i16 {
    match kind {
        EnvelopeKind::Message => 0,
        EnvelopeKind::Delivered => 1,
        EnvelopeKind::Read => 2,
        EnvelopeKind::GroupEvent => 3,
        EnvelopeKind::Revoke => 4,
        EnvelopeKind::Timer => 5,
        EnvelopeKind::Status => 6,
        EnvelopeKind::StatusView => 7,
        EnvelopeKind::Auto => 8,
    }
}

pub(crate) fn kind_from_i16(v: i16) -> PgResult<EnvelopeKind> {
    Ok(match v {
        0 => EnvelopeKind::Message,
        1 => EnvelopeKind::Delivered,
        2 => EnvelopeKind::Read,
        3 => EnvelopeKind::GroupEvent,
        4 => EnvelopeKind::Revoke,
        5 => EnvelopeKind::Timer,
        6 => EnvelopeKind::Status,
        7 => EnvelopeKind::StatusView,
        8 => EnvelopeKind::Auto,
        _ => return Err(PgError::Data(format!("unknown envelope kind {v}"))),
    })
}

pub(crate) fn privacy_to_i16(p: LastSeenPrivacy) -> i16 {
    match p {
        LastSeenPrivacy::Everyone => 0,
        LastSeenPrivacy::Nobody => 1,
    }
}

pub(crate) fn msg_id(s: String) -> PgResult<ClientMsgId> {
    ClientMsgId::new(s).map_err(|e| PgError::Data(format!("bad message id in the database: {e}")))
}

/// An envelope a transaction will insert when it finishes.
pub(crate) struct NewEnvelope {
    pub(crate) device: DeviceId,
    pub(crate) kind: EnvelopeKind,
    pub(crate) from: AccountId,
    pub(crate) from_device: DeviceId,
    pub(crate) msg: ClientMsgId,
    pub(crate) ts: u64,
    pub(crate) expires_ms: u64,
    pub(crate) payload: Option<Vec<u8>>,
    pub(crate) group: Option<GroupId>,
    pub(crate) ref_msg: Option<ClientMsgId>,
}

/// What one transaction leaves for after its commit.
#[derive(Default)]
pub(crate) struct Batch {
    pending: Vec<NewEnvelope>,
    pub(crate) revoked: Vec<DeviceId>,
}

impl Batch {
    pub(crate) fn enqueue(&mut self, e: NewEnvelope) {
        self.pending.push(e);
    }
}

/// Inserts the buffered envelopes: locks the recipient devices in id order,
/// numbers the envelopes from each device's counter, and inserts them in
/// one statement. Envelopes for devices revoked meanwhile are dropped.
async fn flush(tx: &Tx<'_>, batch: &mut Batch) -> PgResult<Vec<Arc<StoredEnvelope>>> {
    if batch.pending.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = batch
        .pending
        .iter()
        .map(|e| to_i64(e.device.0))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let rows = query(
        tx,
        "SELECT id, next_seq FROM devices WHERE id = ANY($1) AND revoked_ms IS NULL
         ORDER BY id FOR UPDATE",
        &[&ids],
    )
    .await?;
    let mut next: HashMap<DeviceId, i64> = rows
        .iter()
        .map(|r| (DeviceId(to_u64(r.get(0))), r.get::<_, i64>(1)))
        .collect();
    let mut out = Vec::with_capacity(batch.pending.len());
    let mut expiries = Vec::with_capacity(batch.pending.len());
    for e in batch.pending.drain(..) {
        let Some(counter) = next.get_mut(&e.device) else {
            continue;
        };
        *counter += 1;
        expiries.push(to_i64(e.expires_ms));
        out.push(Arc::new(StoredEnvelope {
            seq: Seq(to_u64(*counter)),
            device: e.device,
            kind: e.kind,
            from: e.from,
            from_device: e.from_device,
            msg: e.msg,
            ts: e.ts,
            payload: e.payload,
            group: e.group,
            ref_msg: e.ref_msg,
        }));
    }
    let (ids, counters): (Vec<i64>, Vec<i64>) =
        next.into_iter().map(|(d, n)| (to_i64(d.0), n)).unzip();
    execute(
        tx,
        "UPDATE devices SET next_seq = c.n FROM unnest($1::int8[], $2::int8[]) AS c(id, n)
         WHERE devices.id = c.id",
        &[&ids, &counters],
    )
    .await?;
    insert_envelopes(tx, &out, expiries).await?;
    Ok(out)
}

async fn insert_envelopes(
    tx: &Tx<'_>,
    envs: &[Arc<StoredEnvelope>],
    expiries: Vec<i64>,
) -> PgResult<()> {
    if envs.is_empty() {
        return Ok(());
    }
    let device: Vec<i64> = envs.iter().map(|e| to_i64(e.device.0)).collect();
    let seq: Vec<i64> = envs.iter().map(|e| to_i64(e.seq.0)).collect();
    let kind: Vec<i16> = envs.iter().map(|e| kind_to_i16(e.kind)).collect();
    let from: Vec<i64> = envs.iter().map(|e| to_i64(e.from.0)).collect();
    let from_device: Vec<i64> = envs.iter().map(|e| to_i64(e.from_device.0)).collect();
    let msg: Vec<&str> = envs.iter().map(|e| e.msg.as_str()).collect();
    let ts: Vec<i64> = envs.iter().map(|e| to_i64(e.ts)).collect();
    let payload: Vec<Option<&[u8]>> = envs.iter().map(|e| e.payload.as_deref()).collect();
    let group: Vec<Option<i64>> = envs.iter().map(|e| e.group.map(|g| to_i64(g.0))).collect();
    let ref_msg: Vec<Option<&str>> = envs
        .iter()
        .map(|e| e.ref_msg.as_ref().map(|m| m.as_str()))
        .collect();
    execute(
        tx,
        "INSERT INTO queue (device_id, seq, kind, from_account, from_device, msg, ts, expires_ms,
                            payload, group_id, ref_msg)
         SELECT * FROM unnest($1::int8[], $2::int8[], $3::int2[], $4::int8[], $5::int8[],
                              $6::text[], $7::int8[], $8::int8[], $9::bytea[], $10::int8[],
                              $11::text[])",
        &[
            &device,
            &seq,
            &kind,
            &from,
            &from_device,
            &msg,
            &ts,
            &expiries,
            &payload,
            &group,
            &ref_msg,
        ],
    )
    .await?;
    Ok(())
}

/// Hands committed results to the notifier in ticket order.
struct Sequencer {
    notifier: Arc<dyn Notifier>,
    state: Mutex<SequencerState>,
}

#[derive(Default)]
struct SequencerState {
    next_ticket: u64,
    next_release: u64,
    ready: BTreeMap<u64, Option<Committed>>,
}

struct Committed {
    envelopes: Vec<Arc<StoredEnvelope>>,
    revoked: Vec<DeviceId>,
}

impl Sequencer {
    fn ticket(self: &Arc<Self>) -> Ticket {
        let mut s = self.state.lock();
        let n = s.next_ticket;
        s.next_ticket += 1;
        Ticket {
            seq: self.clone(),
            n,
            done: false,
        }
    }

    fn release(&self, n: u64, result: Option<Committed>) {
        let mut s = self.state.lock();
        s.ready.insert(n, result);
        loop {
            let head = s.next_release;
            let Some(result) = s.ready.remove(&head) else {
                break;
            };
            s.next_release += 1;
            if let Some(c) = result {
                if !c.envelopes.is_empty() {
                    self.notifier.envelopes(&c.envelopes);
                }
                for d in &c.revoked {
                    self.notifier.device_revoked(*d);
                }
            }
        }
    }
}

/// A place in the notification order; released empty if dropped unused.
struct Ticket {
    seq: Arc<Sequencer>,
    n: u64,
    done: bool,
}

impl Ticket {
    fn complete(mut self, result: Option<Committed>) {
        self.done = true;
        self.seq.release(self.n, result);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done {
            self.seq.release(self.n, None);
        }
    }
}

/// The PostgreSQL implementation of [`Store`].
pub struct PostgresStore {
    pool: Pool,
    sequencer: Arc<Sequencer>,
    schema: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// Most attempts of a transaction that hits a deadlock or a serialization
/// failure.
const MAX_ATTEMPTS: u32 = 5;

impl PostgresStore {
    /// Connects, creates the schema and migrates it if needed.
    pub async fn open(
        config: PostgresConfig,
        notifier: Arc<dyn Notifier>,
    ) -> Result<Self, StoreError> {
        if !valid_schema(&config.schema) {
            return Err(StoreError::Database(format!(
                "invalid schema name {:?}",
                config.schema
            )));
        }
        let mut pg: tokio_postgres::Config = config
            .url
            .parse()
            .map_err(|e| StoreError::Database(format!("the PostgreSQL URL does not parse: {e}")))?;
        let options = match pg.get_options() {
            Some(o) => format!("{o} -c search_path={}", config.schema),
            None => format!("-c search_path={}", config.schema),
        };
        pg.options(&options);
        if pg.get_application_name().is_none() {
            pg.application_name("palaver");
        }
        let manager = deadpool_postgres::Manager::from_config(
            pg,
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            // A dead or saturated database answers with an error, not a hang.
            .wait_timeout(Some(std::time::Duration::from_secs(30)))
            .create_timeout(Some(std::time::Duration::from_secs(10)))
            .build()
            .map_err(|e| StoreError::Database(format!("cannot build the pool: {e}")))?;
        let store = PostgresStore {
            pool,
            sequencer: Arc::new(Sequencer {
                notifier,
                state: Mutex::new(SequencerState::default()),
            }),
            schema: config.schema,
        };
        migrations::run(&store.pool, &store.schema).await?;
        Ok(store)
    }

    /// Runs `f` in a transaction (retried on deadlock), inserts the
    /// envelopes it queued, commits, and notifies in commit order.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'a> Fn(&'a Tx<'a>, &'a mut Batch) -> BoxFut<'a, T> + Send + Sync + 'static,
    {
        let pool = self.pool.clone();
        let sequencer = self.sequencer.clone();
        tokio::spawn(async move { run_write(&pool, &sequencer, &f).await })
            .await
            .map_err(|e| StoreError::Database(format!("store task failed: {e}")))?
    }

    /// Runs `f` in a read-only transaction.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a Tx<'a>) -> BoxFut<'a, T> + Send + 'static,
    {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .map_err(PgError::from)?;
        let value = f(&tx).await?;
        tx.commit().await.map_err(PgError::from)?;
        Ok(value)
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Database(format!("no database connection: {e}"))
}

async fn run_write<T, F>(pool: &Pool, sequencer: &Arc<Sequencer>, f: &F) -> Result<T, StoreError>
where
    F: for<'a> Fn(&'a Tx<'a>, &'a mut Batch) -> BoxFut<'a, T>,
{
    let mut attempt = 1;
    loop {
        let mut client = pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(PgError::from)?;
        let mut batch = Batch::default();
        let result = match f(&tx, &mut batch).await {
            Ok(v) => flush(&tx, &mut batch).await.map(|envs| (v, envs)),
            Err(e) => Err(e),
        };
        let (value, envelopes) = match result {
            Ok(r) => r,
            Err(e) if e.retryable() && attempt < MAX_ATTEMPTS => {
                drop(tx);
                attempt += 1;
                tracing::debug!(attempt, "transaction conflict; retrying");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let revoked = std::mem::take(&mut batch.revoked);
        let ticket = (!envelopes.is_empty() || !revoked.is_empty()).then(|| sequencer.ticket());
        tx.commit().await.map_err(PgError::from)?;
        if let Some(t) = ticket {
            t.complete(Some(Committed { envelopes, revoked }));
        }
        return Ok(value);
    }
}
