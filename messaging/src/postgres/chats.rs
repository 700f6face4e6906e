//! Edits, delete for everyone and disappearing timers in PostgreSQL.

use super::messages::{account_exists, blocks_between, current_devices};
use super::{Batch, NewEnvelope, PgResult, Tx, execute, query_opt, to_i64, to_u64};
use crate::chats::{AmendError, Chat, SentRecord, TimerNote, check_amend};
use crate::groups::GroupOp;
use crate::store::{GroupChangeRequest, GroupTarget, RevokeRequest, TimerError, TimerRequest};
use palaver_proto::frames::EnvelopeKind;
use palaver_proto::{AccountId, ClientMsgId, DeviceId, GroupId};

/// Remembers a stored message (the dedup key, and what edits and revokes
/// need). Returns the time of the earlier message if a concurrent send with
/// the same id got there first.
pub(super) async fn record_sent(
    tx: &Tx<'_>,
    device: DeviceId,
    msg: &ClientMsgId,
    ts: u64,
    chat: Chat,
) -> PgResult<Option<u64>> {
    let (to, group, status) = match chat {
        Chat::Direct(a) => (Some(to_i64(a.0)), None, false),
        Chat::Group(g) => (None, Some(to_i64(g.0)), false),
        Chat::Status => (None, None, true),
    };
    let inserted = execute(
        tx,
        "INSERT INTO sent (device_id, msg, ts, to_account, group_id, is_status)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (device_id, msg) DO NOTHING",
        &[
            &to_i64(device.0),
            &msg.as_str(),
            &to_i64(ts),
            &to,
            &group,
            &status,
        ],
    )
    .await?;
    if inserted == 1 {
        return Ok(None);
    }
    Ok(Some(
        super::messages::duplicate(tx, device, msg)
            .await?
            .unwrap_or(ts),
    ))
}

/// The latest message `msg` sent by any device of `account`.
pub(super) async fn find_sent(
    tx: &Tx<'_>,
    account: AccountId,
    msg: &ClientMsgId,
) -> PgResult<Option<SentRecord>> {
    let row = query_opt(
        tx,
        "SELECT s.ts, s.to_account, s.group_id, s.revoked, s.is_status
         FROM devices d JOIN sent s ON s.device_id = d.id AND s.msg = $2
         WHERE d.account_id = $1 ORDER BY s.ts DESC LIMIT 1",
        &[&to_i64(account.0), &msg.as_str()],
    )
    .await?;
    Ok(row.and_then(|r| {
        let to = r.get::<_, Option<i64>>(1);
        let chat = match (to, r.get::<_, Option<i64>>(2), r.get::<_, bool>(4)) {
            (Some(a), _, _) => Chat::Direct(AccountId(to_u64(a))),
            (None, Some(g), _) => Chat::Group(GroupId(to_u64(g))),
            (None, None, true) => Chat::Status,
            (None, None, false) => return None,
        };
        Some(SentRecord {
            chat,
            ts_ms: to_u64(r.get(0)),
            revoked: r.get(3),
        })
    }))
}

fn ordered(a: AccountId, b: AccountId) -> (i64, i64) {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    (to_i64(lo.0), to_i64(hi.0))
}

/// The timer of the 1:1 chat between `a` and `b`, in seconds.
pub(super) async fn direct_timer(tx: &Tx<'_>, a: AccountId, b: AccountId) -> PgResult<u64> {
    let (lo, hi) = ordered(a, b);
    Ok(query_opt(
        tx,
        "SELECT seconds FROM chat_timers WHERE a = $1 AND b = $2",
        &[&lo, &hi],
    )
    .await?
    .map(|r| to_u64(r.get(0)))
    .unwrap_or(0))
}

/// Every device of a chat as `account` sees it: the other party's (unless
/// they block `account`) or the group members', and `account`'s own.
async fn chat_devices(
    tx: &Tx<'_>,
    account: AccountId,
    chat: Chat,
    msg: &ClientMsgId,
) -> PgResult<Vec<DeviceId>> {
    let mut accounts = vec![account];
    match chat {
        Chat::Direct(to) if to != account => {
            if !blocks_between(tx, account, to).await?.1 {
                accounts.push(to);
            }
        }
        Chat::Direct(_) => {}
        Chat::Group(g) => {
            let members = super::groups::members(tx, g).await?.unwrap_or_default();
            accounts.extend(members.into_iter().filter(|m| *m != account));
        }
        Chat::Status => accounts.extend(super::status::audience(tx, account, msg).await?),
    }
    let mut devices = Vec::new();
    for a in accounts {
        devices.extend(current_devices(tx, a).await?);
    }
    Ok(devices)
}

pub(super) async fn revoke(
    tx: &Tx<'_>,
    batch: &mut Batch,
    req: &RevokeRequest,
) -> PgResult<Result<(), AmendError>> {
    let found = find_sent(tx, req.account, &req.msg).await?;
    let sent = match check_amend(found, None, req.now_ms, req.window_ms) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    if sent.revoked {
        return Ok(Ok(()));
    }
    // The update locks the sent rows: a second revoke of the same message
    // waits here, then sees `revoked` and does nothing.
    let changed = execute(
        tx,
        "UPDATE sent SET revoked = TRUE
         WHERE msg = $2 AND NOT revoked
           AND device_id IN (SELECT id FROM devices WHERE account_id = $1)",
        &[&to_i64(req.account.0), &req.msg.as_str()],
    )
    .await?;
    if changed == 0 {
        return Ok(Ok(()));
    }
    let group = match sent.chat {
        Chat::Group(g) => Some(g),
        Chat::Direct(_) | Chat::Status => None,
    };
    let (from, msg) = (to_i64(req.account.0), req.msg.as_str());
    for device in chat_devices(tx, req.account, sent.chat, &req.msg).await? {
        let d = to_i64(device.0);
        execute(
            tx,
            "DELETE FROM queue WHERE device_id = $1 AND from_account = $2
             AND ((msg = $3 AND kind IN (0, 6)) OR ref_msg = $3)",
            &[&d, &from, &msg],
        )
        .await?;
        // Even a copy still in the queue may already be on the device
        // (pushed, not yet acknowledged): every device hears of it.
        if device == req.device {
            continue;
        }
        batch.enqueue(NewEnvelope {
            device,
            kind: EnvelopeKind::Revoke,
            from: req.account,
            from_device: req.device,
            msg: req.msg.clone(),
            ts: req.now_ms,
            expires_ms: req.expires_at_ms,
            payload: None,
            group,
            ref_msg: None,
        });
    }
    Ok(Ok(()))
}

pub(super) async fn set_timer(
    tx: &Tx<'_>,
    batch: &mut Batch,
    req: &TimerRequest,
) -> PgResult<Result<(), TimerError>> {
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
            return Ok(super::groups::change(tx, batch, &change)
                .await?
                .map(|_| ())
                .map_err(TimerError::Group));
        }
        Chat::Direct(to) => to,
        Chat::Status => return Ok(Err(TimerError::UnknownAccount)),
    };
    if !account_exists(tx, to).await? {
        return Ok(Err(TimerError::UnknownAccount));
    }
    if blocks_between(tx, req.actor, to).await?.0 {
        return Ok(Err(TimerError::Blocked));
    }
    let (lo, hi) = ordered(req.actor, to);
    execute(
        tx,
        "INSERT INTO chat_timers (a, b, seconds) VALUES ($1, $2, $3)
         ON CONFLICT (a, b) DO UPDATE SET seconds = excluded.seconds",
        &[&lo, &hi, &to_i64(req.seconds)],
    )
    .await?;
    let msg = ClientMsgId::new(format!("timer.{}", req.now_ms)).expect("a valid message id");
    let payload = serde_json::to_vec(&TimerNote {
        seconds: req.seconds,
        to,
    })
    .expect("plain data serializes");
    for device in chat_devices(tx, req.actor, req.chat, &msg).await? {
        batch.enqueue(NewEnvelope {
            device,
            kind: EnvelopeKind::Timer,
            from: req.actor,
            from_device: DeviceId(0),
            msg: msg.clone(),
            ts: req.now_ms,
            expires_ms: req.expires_at_ms,
            payload: Some(payload.clone()),
            group: None,
            ref_msg: None,
        });
    }
    Ok(Ok(()))
}
