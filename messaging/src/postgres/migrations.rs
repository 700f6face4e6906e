//! The PostgreSQL schema, one numbered migration at a time. Nodes starting
//! together take an advisory lock, so exactly one of them migrates.

use super::{PgError, PgResult};
use crate::store::StoreError;
use deadpool_postgres::Pool;

/// Applied in order; `schema_version` holds how many ran.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE accounts (
    id BIGSERIAL PRIMARY KEY,
    phone TEXT NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL,
    last_seen_privacy SMALLINT NOT NULL DEFAULT 0,
    last_seen_ms BIGINT
);
CREATE TABLE devices (
    id BIGSERIAL PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL,
    credential_hash BYTEA NOT NULL,
    created_ms BIGINT NOT NULL,
    revoked_ms BIGINT,
    -- The last sequence number handed out in this device's queue.
    next_seq BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX devices_by_account ON devices(account_id, id);
CREATE TABLE codes (
    phone TEXT PRIMARY KEY,
    hash BYTEA NOT NULL,
    expires_ms BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    used BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE queue (
    device_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    kind SMALLINT NOT NULL,
    from_account BIGINT NOT NULL,
    from_device BIGINT NOT NULL,
    msg TEXT NOT NULL,
    ts BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    payload BYTEA,
    group_id BIGINT,
    ref_msg TEXT,
    PRIMARY KEY (device_id, seq)
);
CREATE INDEX queue_by_expiry ON queue(expires_ms);
CREATE TABLE sent (
    device_id BIGINT NOT NULL,
    msg TEXT NOT NULL,
    ts BIGINT NOT NULL,
    to_account BIGINT,
    group_id BIGINT,
    revoked BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (device_id, msg)
);
CREATE INDEX sent_by_ts ON sent(ts);
CREATE TABLE calls (
    id BIGINT PRIMARY KEY,
    caller BIGINT NOT NULL,
    caller_device BIGINT NOT NULL,
    callee BIGINT NOT NULL,
    answered_by BIGINT,
    media TEXT NOT NULL,
    reason TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    answered_ms BIGINT,
    ended_ms BIGINT NOT NULL
);
CREATE INDEX calls_by_caller ON calls(caller, started_ms);
CREATE INDEX calls_by_callee ON calls(callee, started_ms);
CREATE TABLE blocks (
    account BIGINT NOT NULL,
    blocked BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (account, blocked)
);
CREATE TABLE chat_groups (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    picture TEXT,
    announce_only BOOLEAN NOT NULL DEFAULT FALSE,
    invite_code TEXT UNIQUE,
    event_seq BIGINT NOT NULL DEFAULT 0,
    created_ms BIGINT NOT NULL,
    timer_s BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE group_members (
    group_id BIGINT NOT NULL,
    account BIGINT NOT NULL,
    role SMALLINT NOT NULL,
    pos BIGINT NOT NULL,
    PRIMARY KEY (group_id, account)
);
CREATE INDEX group_members_by_account ON group_members(account, group_id);
CREATE TABLE device_keys (
    device_id BIGINT PRIMARY KEY,
    identity_key BYTEA NOT NULL,
    signing_key BYTEA NOT NULL,
    spk_id BIGINT NOT NULL,
    spk_public BYTEA NOT NULL,
    spk_signature BYTEA NOT NULL,
    lr_id BIGINT,
    lr_public BYTEA,
    lr_signature BYTEA
);
CREATE TABLE one_time_keys (
    device_id BIGINT NOT NULL,
    key_id BIGINT NOT NULL,
    public BYTEA NOT NULL,
    PRIMARY KEY (device_id, key_id)
);
CREATE TABLE chat_timers (
    a BIGINT NOT NULL,
    b BIGINT NOT NULL,
    seconds BIGINT NOT NULL,
    PRIMARY KEY (a, b)
);
CREATE TABLE settings (
    account BIGINT PRIMARY KEY,
    version BIGINT NOT NULL,
    blob BYTEA NOT NULL
);
CREATE TABLE link_codes (
    hash BYTEA PRIMARY KEY,
    account BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
"#,
    r#"
ALTER TABLE sent ADD COLUMN is_status BOOLEAN NOT NULL DEFAULT FALSE;
CREATE TABLE statuses (
    author BIGINT NOT NULL,
    msg TEXT NOT NULL,
    posted_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (author, msg)
);
CREATE INDEX statuses_by_expiry ON statuses(expires_ms);
CREATE TABLE status_audience (
    author BIGINT NOT NULL,
    msg TEXT NOT NULL,
    viewer BIGINT NOT NULL,
    PRIMARY KEY (author, msg, viewer)
);
CREATE TABLE business (
    account BIGINT PRIMARY KEY,
    profile TEXT,
    auto TEXT
);
CREATE TABLE business_contacts (
    business BIGINT NOT NULL,
    customer BIGINT NOT NULL,
    last_in_ms BIGINT,
    last_away_ms BIGINT,
    PRIMARY KEY (business, customer)
);
CREATE TABLE reports (
    id BIGSERIAL PRIMARY KEY,
    reporter BIGINT NOT NULL,
    reported BIGINT NOT NULL,
    reason TEXT NOT NULL,
    msgs TEXT NOT NULL,
    evidence BYTEA,
    created_ms BIGINT NOT NULL
);
CREATE INDEX reports_by_time ON reports(created_ms);
"#,
    super::push::MIGRATION,
];

/// Creates the schema if needed and applies the missing migrations.
pub(super) async fn run(pool: &Pool, schema: &str) -> Result<(), StoreError> {
    let mut client = pool
        .get()
        .await
        .map_err(|e| StoreError::Database(format!("cannot connect to PostgreSQL: {e}")))?;
    let tx = client.transaction().await.map_err(PgError::from)?;
    migrate(&tx, schema).await?;
    tx.commit().await.map_err(PgError::from)?;
    Ok(())
}

async fn migrate(tx: &super::Tx<'_>, schema: &str) -> PgResult<()> {
    // One key for every Palaver schema: migrations are rare and short.
    tx.execute("SELECT pg_advisory_xact_lock(7263554231)", &[])
        .await?;
    // `schema` is checked by `valid_schema`: safe to splice.
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.schema_version (version BIGINT NOT NULL);"
    ))
    .await?;
    let row = tx
        .query_opt(&format!("SELECT version FROM {schema}.schema_version"), &[])
        .await?;
    let done = match row {
        Some(r) => usize::try_from(r.get::<_, i64>(0)).unwrap_or(0),
        None => {
            tx.execute(
                &format!("INSERT INTO {schema}.schema_version VALUES (0)"),
                &[],
            )
            .await?;
            0
        }
    };
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        tx.batch_execute(&format!("SET LOCAL search_path = {schema}; {sql}"))
            .await?;
        tx.execute(
            &format!("UPDATE {schema}.schema_version SET version = $1"),
            &[&((i + 1) as i64)],
        )
        .await?;
        tracing::info!(version = i + 1, "migrated the PostgreSQL schema");
    }
    Ok(())
}
