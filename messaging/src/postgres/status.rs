//! Status posts in PostgreSQL: one payload fanned out to an audience, view
//! receipts from that audience only, gone after their lifetime.

use super::chats::record_sent;
use super::messages::{account_exists, blocks_between, current_devices, duplicate};
use super::{Batch, NewEnvelope, PgResult, Tx, execute, query, query_opt, to_i64, to_u64};
use crate::chats::Chat;
use crate::store::{StatusOutcome, StatusRequest};
use palaver_proto::frames::EnvelopeKind;
use palaver_proto::{AccountId, ClientMsgId, DeviceId};

/// The audience of a status that has not been forgotten.
pub(super) async fn audience(
    tx: &Tx<'_>,
    author: AccountId,
    msg: &ClientMsgId,
) -> PgResult<Vec<AccountId>> {
    let rows = query(
        tx,
        "SELECT viewer FROM status_audience WHERE author = $1 AND msg = $2",
        &[&to_i64(author.0), &msg.as_str()],
    )
    .await?;
    Ok(rows.iter().map(|r| AccountId(to_u64(r.get(0)))).collect())
}

pub(super) async fn post(
    tx: &Tx<'_>,
    batch: &mut Batch,
    req: &StatusRequest,
) -> PgResult<StatusOutcome> {
    if let Some(ts) = duplicate(tx, req.device, &req.msg).await? {
        return Ok(StatusOutcome::Duplicate { ts });
    }
    for a in &req.audience {
        if !account_exists(tx, *a).await? {
            return Ok(StatusOutcome::UnknownAccount(*a));
        }
    }
    if let Some(ts) = record_sent(tx, req.device, &req.msg, req.now_ms, Chat::Status).await? {
        return Ok(StatusOutcome::Duplicate { ts });
    }
    let (author, msg) = (to_i64(req.author.0), req.msg.as_str());
    execute(
        tx,
        "INSERT INTO statuses (author, msg, posted_ms, expires_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
        &[
            &author,
            &msg,
            &to_i64(req.now_ms),
            &to_i64(req.expires_at_ms),
        ],
    )
    .await?;
    let mut targets: Vec<DeviceId> = current_devices(tx, req.author)
        .await?
        .into_iter()
        .filter(|d| *d != req.device)
        .collect();
    let mut reached = 0;
    for viewer in &req.audience {
        let (a, b) = blocks_between(tx, req.author, *viewer).await?;
        if a || b || *viewer == req.author {
            continue;
        }
        execute(
            tx,
            "INSERT INTO status_audience (author, msg, viewer) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&author, &msg, &to_i64(viewer.0)],
        )
        .await?;
        targets.extend(current_devices(tx, *viewer).await?);
        reached += 1;
    }
    for device in targets {
        batch.enqueue(NewEnvelope {
            device,
            kind: EnvelopeKind::Status,
            from: req.author,
            from_device: req.device,
            msg: req.msg.clone(),
            ts: req.now_ms,
            expires_ms: req.expires_at_ms,
            payload: Some(req.payload.clone()),
            group: None,
            ref_msg: None,
        });
    }
    Ok(StatusOutcome::Stored {
        ts: req.now_ms,
        reached,
    })
}

/// Queues a view receipt to the author's devices, if `viewer` is in the
/// audience of a live status.
pub(super) async fn view(
    tx: &Tx<'_>,
    batch: &mut Batch,
    viewer: (AccountId, DeviceId),
    author: AccountId,
    msg: &ClientMsgId,
    now_ms: u64,
) -> PgResult<bool> {
    let expires = query_opt(
        tx,
        "SELECT expires_ms FROM statuses WHERE author = $1 AND msg = $2",
        &[&to_i64(author.0), &msg.as_str()],
    )
    .await?
    .map(|r| to_u64(r.get(0)));
    let Some(expires) = expires.filter(|e| *e > now_ms) else {
        return Ok(false);
    };
    if !audience(tx, author, msg).await?.contains(&viewer.0) {
        return Ok(false);
    }
    for device in current_devices(tx, author).await? {
        batch.enqueue(NewEnvelope {
            device,
            kind: EnvelopeKind::StatusView,
            from: viewer.0,
            from_device: viewer.1,
            msg: msg.clone(),
            ts: now_ms,
            expires_ms: expires,
            payload: None,
            group: None,
            ref_msg: None,
        });
    }
    Ok(true)
}

/// Forgets statuses past their lifetime (their queued copies expire with
/// them: their envelopes carry the same expiry).
pub(super) async fn expire(tx: &Tx<'_>, now_ms: u64) -> PgResult<()> {
    let now = to_i64(now_ms);
    execute(
        tx,
        "DELETE FROM status_audience a USING statuses s
         WHERE a.author = s.author AND a.msg = s.msg AND s.expires_ms <= $1",
        &[&now],
    )
    .await?;
    execute(tx, "DELETE FROM statuses WHERE expires_ms <= $1", &[&now]).await?;
    Ok(())
}
