//! Per-account state in SQLite: the synced settings blob and device-link
//! codes.

use super::{Batch, current_devices, to_i64, to_u64};
use crate::store::{LinkOutcome, ReportRecord};
use palaver_proto::{AccountId, ClientMsgId, DeviceId};
use rusqlite::{Connection, OptionalExtension, params};

pub(super) fn settings(conn: &Connection, account: AccountId) -> rusqlite::Result<(u64, Vec<u8>)> {
    Ok(conn
        .prepare_cached("SELECT version, blob FROM settings WHERE account = ?1")?
        .query_row([to_i64(account.0)], |r| Ok((to_u64(r.get(0)?), r.get(1)?)))
        .optional()?
        .unwrap_or((0, Vec::new())))
}

pub(super) fn put_settings(
    conn: &Connection,
    account: AccountId,
    base: u64,
    blob: Vec<u8>,
) -> rusqlite::Result<Result<u64, u64>> {
    let (current, _) = settings(conn, account)?;
    if current != base {
        return Ok(Err(current));
    }
    let version = current + 1;
    conn.prepare_cached(
        "INSERT INTO settings (account, version, blob) VALUES (?1, ?2, ?3)
         ON CONFLICT (account) DO UPDATE SET version = excluded.version, blob = excluded.blob",
    )?
    .execute(params![to_i64(account.0), to_i64(version), blob])?;
    Ok(Ok(version))
}

pub(super) fn create_link_code(
    conn: &Connection,
    account: AccountId,
    hash: [u8; 32],
    expires_ms: u64,
) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO link_codes (hash, account, expires_ms) VALUES (?1, ?2, ?3)")?
        .execute(params![&hash[..], to_i64(account.0), to_i64(expires_ms)])?;
    Ok(())
}

pub(super) fn link_with_code(
    conn: &Connection,
    batch: &mut Batch,
    hash: [u8; 32],
    name: String,
    credential_hash: [u8; 32],
    now_ms: u64,
    max_devices: u32,
) -> rusqlite::Result<LinkOutcome> {
    conn.prepare_cached("DELETE FROM link_codes WHERE expires_ms < ?1")?
        .execute([to_i64(now_ms)])?;
    let account: Option<i64> = conn
        .prepare_cached("SELECT account FROM link_codes WHERE hash = ?1")?
        .query_row([&hash[..]], |r| r.get(0))
        .optional()?;
    let Some(account) = account.map(|a| AccountId(to_u64(a))) else {
        return Ok(LinkOutcome::Invalid);
    };
    if current_devices(conn, account)?.len() >= max_devices as usize {
        return Ok(LinkOutcome::DeviceLimit);
    }
    conn.prepare_cached("DELETE FROM link_codes WHERE hash = ?1")?
        .execute([&hash[..]])?;
    let device: i64 = conn
        .prepare_cached(
            "INSERT INTO devices (account_id, name, credential_hash, created_ms)
             VALUES (?1, ?2, ?3, ?4) RETURNING id",
        )?
        .query_row(
            params![
                to_i64(account.0),
                name,
                &credential_hash[..],
                to_i64(now_ms)
            ],
            |r| r.get(0),
        )?;
    batch.invalidate(account);
    Ok(LinkOutcome::Linked {
        account,
        device: DeviceId(to_u64(device)),
    })
}

pub(super) const MIGRATION: &str = r#"
CREATE TABLE reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reporter INTEGER NOT NULL,
    reported INTEGER NOT NULL,
    reason TEXT NOT NULL,
    msgs TEXT NOT NULL,
    evidence BLOB,
    created_ms INTEGER NOT NULL
);
CREATE INDEX reports_by_time ON reports(created_ms);
"#;

pub(super) fn report(conn: &Connection, r: ReportRecord) -> rusqlite::Result<bool> {
    if !super::account_exists(conn, r.reported)? {
        return Ok(false);
    }
    let msgs: Vec<&str> = r.msgs.iter().map(|m| m.as_str()).collect();
    conn.prepare_cached(
        "INSERT INTO reports (reporter, reported, reason, msgs, evidence, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        to_i64(r.reporter.0),
        to_i64(r.reported.0),
        r.reason,
        msgs.join(" "),
        r.evidence,
        to_i64(r.created_ms)
    ])?;
    Ok(true)
}

pub(super) fn reports(
    conn: &Connection,
    before_ms: u64,
    limit: u32,
) -> rusqlite::Result<Vec<ReportRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT reporter, reported, reason, msgs, evidence, created_ms FROM reports
         WHERE created_ms < ?1 ORDER BY created_ms DESC, id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![to_i64(before_ms), i64::from(limit)], |r| {
        let msgs: String = r.get(3)?;
        Ok(ReportRecord {
            reporter: AccountId(to_u64(r.get(0)?)),
            reported: AccountId(to_u64(r.get(1)?)),
            reason: r.get(2)?,
            msgs: msgs
                .split(' ')
                .filter_map(|m| ClientMsgId::new(m).ok())
                .collect(),
            evidence: r.get(4)?,
            created_ms: to_u64(r.get(5)?),
        })
    })?;
    rows.collect()
}
