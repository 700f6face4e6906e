//! Edits, delete for everyone and disappearing timers in SQLite.

use super::{Batch, NewEnvelope, account_exists, blocks_between, enqueue, to_i64, to_u64};
use crate::chats::{AmendError, Chat, SentRecord, TimerNote, check_amend};
use crate::groups::GroupOp;
use crate::store::{GroupChangeRequest, GroupTarget, RevokeRequest, TimerError, TimerRequest};
use palaver_proto::frames::EnvelopeKind;
use palaver_proto::{AccountId, ClientMsgId, DeviceId, GroupId};
use rusqlite::{Connection, OptionalExtension, params};

pub(super) const MIGRATION: &str = r#"
ALTER TABLE sent ADD COLUMN to_account INTEGER;
ALTER TABLE sent ADD COLUMN group_id INTEGER;
ALTER TABLE sent ADD COLUMN revoked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queue ADD COLUMN ref_msg TEXT;
ALTER TABLE groups ADD COLUMN timer_s INTEGER NOT NULL DEFAULT 0;
CREATE TABLE chat_timers (
    a INTEGER NOT NULL,
    b INTEGER NOT NULL,
    seconds INTEGER NOT NULL,
    PRIMARY KEY (a, b)
) WITHOUT ROWID;
CREATE TABLE settings (
    account INTEGER PRIMARY KEY,
    version INTEGER NOT NULL,
    blob BLOB NOT NULL
);
CREATE TABLE link_codes (
    hash BLOB PRIMARY KEY,
    account INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
"#;

/// When `device` stored message `msg`, if it did (the dedup check of every
/// kind of send).
pub(super) fn sent_ts(
    conn: &Connection,
    device: DeviceId,
    msg: &ClientMsgId,
) -> rusqlite::Result<Option<u64>> {
    Ok(conn
        .prepare_cached("SELECT ts FROM sent WHERE device_id = ?1 AND msg = ?2")?
        .query_row(params![to_i64(device.0), msg.as_str()], |r| {
            r.get::<_, i64>(0)
        })
        .optional()?
        .map(to_u64))
}

/// Remembers a stored message: the dedup key, and what edits and revokes
/// need to know.
pub(super) fn record_sent(
    conn: &Connection,
    device: DeviceId,
    msg: &ClientMsgId,
    ts: u64,
    chat: Chat,
) -> rusqlite::Result<()> {
    let (to, group, status) = match chat {
        Chat::Direct(a) => (Some(to_i64(a.0)), None, 0),
        Chat::Group(g) => (None, Some(to_i64(g.0)), 0),
        Chat::Status => (None, None, 1),
    };
    conn.prepare_cached(
        "INSERT INTO sent (device_id, msg, ts, to_account, group_id, is_status)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        to_i64(device.0),
        msg.as_str(),
        to_i64(ts),
        to,
        group,
        status
    ])?;
    Ok(())
}

/// The latest message `msg` sent by any device of `account`.
pub(super) fn find_sent(
    conn: &Connection,
    account: AccountId,
    msg: &ClientMsgId,
) -> rusqlite::Result<Option<SentRecord>> {
    type Row = (i64, Option<i64>, Option<i64>, i64, i64);
    let row: Option<Row> = conn
        .prepare_cached(
            "SELECT s.ts, s.to_account, s.group_id, s.revoked, s.is_status
             FROM devices d JOIN sent s ON s.device_id = d.id AND s.msg = ?2
             WHERE d.account_id = ?1 ORDER BY s.ts DESC LIMIT 1",
        )?
        .query_row(params![to_i64(account.0), msg.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    Ok(row.and_then(|(ts, to, group, revoked, status)| {
        let chat = match (to, group, status) {
            (Some(a), _, _) => Chat::Direct(AccountId(to_u64(a))),
            (None, Some(g), _) => Chat::Group(GroupId(to_u64(g))),
            (None, None, 1) => Chat::Status,
            (None, None, _) => return None,
        };
        Some(SentRecord {
            chat,
            ts_ms: to_u64(ts),
            revoked: revoked != 0,
        })
    }))
}

/// The timer of the 1:1 chat between `a` and `b`, in seconds.
pub(super) fn direct_timer(conn: &Connection, a: AccountId, b: AccountId) -> rusqlite::Result<u64> {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    Ok(conn
        .prepare_cached("SELECT seconds FROM chat_timers WHERE a = ?1 AND b = ?2")?
        .query_row(params![to_i64(lo.0), to_i64(hi.0)], |r| r.get::<_, i64>(0))
        .optional()?
        .map(to_u64)
        .unwrap_or(0))
}

/// Every device of a chat as `account` sees it: the other party's (unless
/// they block `account`) or the group members', and `account`'s own.
fn chat_devices(
    conn: &Connection,
    batch: &mut Batch,
    account: AccountId,
    chat: Chat,
    msg: &ClientMsgId,
) -> rusqlite::Result<Vec<DeviceId>> {
    let mut accounts = vec![account];
    match chat {
        Chat::Direct(to) if to != account => {
            if !blocks_between(conn, account, to)?.1 {
                accounts.push(to);
            }
        }
        Chat::Direct(_) => {}
        Chat::Group(g) => {
            let members = super::groups::members(conn, g)?.unwrap_or_default();
            accounts.extend(members.into_iter().filter(|m| *m != account));
        }
        Chat::Status => accounts.extend(super::status::audience(conn, account, msg)?),
    }
    let mut devices = Vec::new();
    for a in accounts {
        devices.extend(batch.devices_of(conn, a)?);
    }
    Ok(devices)
}

pub(super) fn revoke(
    conn: &Connection,
    batch: &mut Batch,
    req: RevokeRequest,
) -> rusqlite::Result<Result<(), AmendError>> {
    let found = find_sent(conn, req.account, &req.msg)?;
    let sent = match check_amend(found, None, req.now_ms, req.window_ms) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    if sent.revoked {
        return Ok(Ok(()));
    }
    conn.prepare_cached(
        "UPDATE sent SET revoked = 1
         WHERE msg = ?2 AND device_id IN (SELECT id FROM devices WHERE account_id = ?1)",
    )?
    .execute(params![to_i64(req.account.0), req.msg.as_str()])?;
    let group = match sent.chat {
        Chat::Group(g) => Some(g),
        Chat::Direct(_) | Chat::Status => None,
    };
    let (from, msg) = (to_i64(req.account.0), req.msg.as_str());
    for device in chat_devices(conn, batch, req.account, sent.chat, &req.msg)? {
        let d = to_i64(device.0);
        conn.prepare_cached(
            "DELETE FROM queue WHERE device_id = ?1 AND from_account = ?2
             AND ((msg = ?3 AND kind IN (0, 6)) OR ref_msg = ?3)",
        )?
        .execute(params![d, from, msg])?;
        // Even a copy still in the queue may already be on the device (pushed,
        // not yet acknowledged), so every device hears of the deletion.
        if device == req.device {
            continue;
        }
        enqueue(
            conn,
            batch,
            NewEnvelope {
                device,
                kind: EnvelopeKind::Revoke,
                from: req.account,
                from_device: req.device,
                msg: &req.msg,
                ts: req.now_ms,
                expires_ms: req.expires_at_ms,
                payload: None,
                group,
                ref_msg: None,
            },
        )?;
    }
    Ok(Ok(()))
}

/// How a `timer` envelope keeps its details until it is pushed.
fn timer_payload(seconds: u64, to: AccountId) -> Vec<u8> {
    serde_json::to_vec(&TimerNote { seconds, to }).expect("plain data serializes")
}

pub(super) fn set_timer(
    conn: &Connection,
    batch: &mut Batch,
    req: TimerRequest,
) -> rusqlite::Result<Result<(), TimerError>> {
    let to = match req.chat {
        Chat::Group(g) => {
            let change = GroupChangeRequest {
                actor: req.actor,
                target: GroupTarget::Id(g),
                op: GroupOp::SetTimer(req.seconds),
                new_code: None,
                now_ms: req.now_ms,
                expires_at_ms: req.expires_at_ms,
                limit: usize::MAX,
            };
            return Ok(super::groups::change(conn, batch, change)?
                .map(|_| ())
                .map_err(TimerError::Group));
        }
        Chat::Direct(to) => to,
        Chat::Status => return Ok(Err(TimerError::UnknownAccount)),
    };
    if !account_exists(conn, to)? {
        return Ok(Err(TimerError::UnknownAccount));
    }
    if blocks_between(conn, req.actor, to)?.0 {
        return Ok(Err(TimerError::Blocked));
    }
    let (lo, hi) = if req.actor <= to {
        (req.actor, to)
    } else {
        (to, req.actor)
    };
    conn.prepare_cached(
        "INSERT INTO chat_timers (a, b, seconds) VALUES (?1, ?2, ?3)
         ON CONFLICT (a, b) DO UPDATE SET seconds = excluded.seconds",
    )?
    .execute(params![to_i64(lo.0), to_i64(hi.0), to_i64(req.seconds)])?;
    let msg = ClientMsgId::new(format!("timer.{}", req.now_ms)).expect("a valid message id");
    for device in chat_devices(conn, batch, req.actor, req.chat, &msg)? {
        enqueue(
            conn,
            batch,
            NewEnvelope {
                device,
                kind: EnvelopeKind::Timer,
                from: req.actor,
                from_device: DeviceId(0),
                msg: &msg,
                ts: req.now_ms,
                expires_ms: req.expires_at_ms,
                payload: Some(timer_payload(req.seconds, to)),
                group: None,
                ref_msg: None,
            },
        )?;
    }
    Ok(Ok(()))
}
