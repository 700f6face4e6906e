//! Status posts in SQLite: one payload fanned out to an audience, view
//! receipts from that audience only, gone after their lifetime.

use super::chats::{record_sent, sent_ts};
use super::{Batch, NewEnvelope, account_exists, blocks_between, enqueue, to_i64, to_u64};
use crate::chats::Chat;
use crate::store::{StatusOutcome, StatusRequest};
use palaver_proto::frames::EnvelopeKind;
use palaver_proto::{AccountId, ClientMsgId, DeviceId};
use rusqlite::{Connection, OptionalExtension, params};

pub(super) const MIGRATION: &str = r#"
ALTER TABLE sent ADD COLUMN is_status INTEGER NOT NULL DEFAULT 0;
CREATE TABLE statuses (
    author INTEGER NOT NULL,
    msg TEXT NOT NULL,
    posted_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (author, msg)
) WITHOUT ROWID;
CREATE INDEX statuses_by_expiry ON statuses(expires_ms);
CREATE TABLE status_audience (
    author INTEGER NOT NULL,
    msg TEXT NOT NULL,
    viewer INTEGER NOT NULL,
    PRIMARY KEY (author, msg, viewer)
) WITHOUT ROWID;
"#;

/// The audience of a status that has not expired.
pub(super) fn audience(
    conn: &Connection,
    author: AccountId,
    msg: &ClientMsgId,
) -> rusqlite::Result<Vec<AccountId>> {
    conn.prepare_cached("SELECT viewer FROM status_audience WHERE author = ?1 AND msg = ?2")?
        .query_map(params![to_i64(author.0), msg.as_str()], |r| {
            r.get::<_, i64>(0).map(|v| AccountId(to_u64(v)))
        })?
        .collect()
}

pub(super) fn post(
    conn: &Connection,
    batch: &mut Batch,
    req: StatusRequest,
) -> rusqlite::Result<StatusOutcome> {
    if let Some(ts) = sent_ts(conn, req.device, &req.msg)? {
        return Ok(StatusOutcome::Duplicate { ts });
    }
    for a in &req.audience {
        if !account_exists(conn, *a)? {
            return Ok(StatusOutcome::UnknownAccount(*a));
        }
    }
    record_sent(conn, req.device, &req.msg, req.now_ms, Chat::Status)?;
    let (author, msg) = (to_i64(req.author.0), req.msg.as_str());
    conn.prepare_cached(
        "INSERT INTO statuses (author, msg, posted_ms, expires_ms) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        author,
        msg,
        to_i64(req.now_ms),
        to_i64(req.expires_at_ms)
    ])?;
    let mut targets: Vec<DeviceId> = batch
        .devices_of(conn, req.author)?
        .into_iter()
        .filter(|d| *d != req.device)
        .collect();
    let mut reached = 0;
    for viewer in &req.audience {
        let (a, b) = blocks_between(conn, req.author, *viewer)?;
        if a || b || *viewer == req.author {
            continue;
        }
        conn.prepare_cached(
            "INSERT OR IGNORE INTO status_audience (author, msg, viewer) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![author, msg, to_i64(viewer.0)])?;
        targets.extend(batch.devices_of(conn, *viewer)?);
        reached += 1;
    }
    for device in targets {
        enqueue(
            conn,
            batch,
            NewEnvelope {
                device,
                kind: EnvelopeKind::Status,
                from: req.author,
                from_device: req.device,
                msg: &req.msg,
                ts: req.now_ms,
                expires_ms: req.expires_at_ms,
                payload: Some(req.payload.clone()),
                group: None,
                ref_msg: None,
            },
        )?;
    }
    Ok(StatusOutcome::Stored {
        ts: req.now_ms,
        reached,
    })
}

/// Queues a view receipt to the author's devices, if `viewer` is in the
/// audience of a live status.
pub(super) fn view(
    conn: &Connection,
    batch: &mut Batch,
    viewer: (AccountId, DeviceId),
    author: AccountId,
    msg: ClientMsgId,
    now_ms: u64,
) -> rusqlite::Result<bool> {
    let expires: Option<i64> = conn
        .prepare_cached("SELECT expires_ms FROM statuses WHERE author = ?1 AND msg = ?2")?
        .query_row(params![to_i64(author.0), msg.as_str()], |r| r.get(0))
        .optional()?;
    let Some(expires) = expires.map(to_u64).filter(|e| *e > now_ms) else {
        return Ok(false);
    };
    if !audience(conn, author, &msg)?.contains(&viewer.0) {
        return Ok(false);
    }
    for device in batch.devices_of(conn, author)? {
        enqueue(
            conn,
            batch,
            NewEnvelope {
                device,
                kind: EnvelopeKind::StatusView,
                from: viewer.0,
                from_device: viewer.1,
                msg: &msg,
                ts: now_ms,
                expires_ms: expires,
                payload: None,
                group: None,
                ref_msg: None,
            },
        )?;
    }
    Ok(true)
}

/// Forgets statuses past their lifetime (their queued copies expire with
/// them, as their envelopes carry the same expiry).
pub(super) fn expire(conn: &Connection, now_ms: u64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "DELETE FROM status_audience WHERE (author, msg) IN
         (SELECT author, msg FROM statuses WHERE expires_ms <= ?1)",
    )?
    .execute([to_i64(now_ms)])?;
    conn.prepare_cached("DELETE FROM statuses WHERE expires_ms <= ?1")?
        .execute([to_i64(now_ms)])?;
    Ok(())
}
