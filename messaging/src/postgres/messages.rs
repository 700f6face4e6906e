//! Accounts, devices and 1:1 messages in PostgreSQL: the same rules as the
//! SQLite store, with row locks where SQLite relies on its single writer.

use super::chats::{direct_timer, find_sent, record_sent};
use super::{
    Batch, NewEnvelope, PgResult, Tx, execute, kind_from_i16, msg_id, query, query_opt, to_i64,
    to_u64,
};
use crate::chats::{Chat, check_amend, message_expiry};
use crate::policy::{CodeDecision, CodeRecord, check_coverage, decide_code};
use crate::store::{NewDevice, SendOutcome, SendRequest, StoredEnvelope, VerifyOutcome};
use palaver_proto::frames::EnvelopeKind;
use palaver_proto::{AccountId, DeviceId, GroupId, Seq};
use tokio_postgres::Row;

/// Whether `a` blocks `b`, and whether `b` blocks `a`.
pub(super) async fn blocks_between(
    tx: &Tx<'_>,
    a: AccountId,
    b: AccountId,
) -> PgResult<(bool, bool)> {
    let rows = query(
        tx,
        "SELECT account FROM blocks
         WHERE (account = $1 AND blocked = $2) OR (account = $2 AND blocked = $1)",
        &[&to_i64(a.0), &to_i64(b.0)],
    )
    .await?;
    let by = |x: AccountId| rows.iter().any(|r| r.get::<_, i64>(0) == to_i64(x.0));
    Ok((by(a), by(b)))
}

/// Current devices of an account, in id order.
pub(super) async fn current_devices(tx: &Tx<'_>, account: AccountId) -> PgResult<Vec<DeviceId>> {
    let rows = query(
        tx,
        "SELECT id FROM devices WHERE account_id = $1 AND revoked_ms IS NULL ORDER BY id",
        &[&to_i64(account.0)],
    )
    .await?;
    Ok(rows.iter().map(|r| DeviceId(to_u64(r.get(0)))).collect())
}

pub(super) async fn account_exists(tx: &Tx<'_>, account: AccountId) -> PgResult<bool> {
    Ok(query_opt(
        tx,
        "SELECT 1 FROM accounts WHERE id = $1",
        &[&to_i64(account.0)],
    )
    .await?
    .is_some())
}

/// The timestamp of an earlier message with this id from this device.
pub(super) async fn duplicate(
    tx: &Tx<'_>,
    device: DeviceId,
    msg: &palaver_proto::ClientMsgId,
) -> PgResult<Option<u64>> {
    Ok(query_opt(
        tx,
        "SELECT ts FROM sent WHERE device_id = $1 AND msg = $2",
        &[&to_i64(device.0), &msg.as_str()],
    )
    .await?
    .map(|r| to_u64(r.get(0))))
}

pub(super) async fn send(
    tx: &Tx<'_>,
    batch: &mut Batch,
    mut req: SendRequest,
) -> PgResult<SendOutcome> {
    if let Some(ts) = duplicate(tx, req.from_device, &req.msg).await? {
        return Ok(SendOutcome::Duplicate { ts });
    }
    let mut required: Vec<DeviceId> = current_devices(tx, req.from)
        .await?
        .into_iter()
        .filter(|d| *d != req.from_device)
        .collect();
    let mut theirs = Vec::new();
    if req.to != req.from {
        theirs = current_devices(tx, req.to).await?;
        if theirs.is_empty() {
            return Ok(SendOutcome::UnknownRecipient);
        }
        required.extend(theirs.iter().copied());
    }
    let given: Vec<DeviceId> = req.envelopes.iter().map(|(d, _)| *d).collect();
    if let Err(mismatch) = check_coverage(&required, &given) {
        return Ok(SendOutcome::Mismatch(mismatch));
    }
    let (i_block, they_block) = blocks_between(tx, req.from, req.to).await?;
    if i_block {
        return Ok(SendOutcome::Blocked);
    }
    if they_block {
        req.envelopes.retain(|(d, _)| !theirs.contains(d));
    }
    let chat = Chat::Direct(req.to);
    if let Some(orig) = &req.edit_of {
        let found = find_sent(tx, req.from, orig).await?;
        if let Err(e) = check_amend(found, Some(chat), req.now_ms, req.edit_window_ms) {
            return Ok(SendOutcome::Amend(e));
        }
    }
    if let Some(ts) = record_sent(tx, req.from_device, &req.msg, req.now_ms, chat).await? {
        // A concurrent send with the same id committed first.
        return Ok(SendOutcome::Duplicate { ts });
    }
    let timer = direct_timer(tx, req.from, req.to).await?;
    let expires_ms = message_expiry(req.now_ms, req.expires_at_ms, timer);
    for (device, payload) in req.envelopes {
        batch.enqueue(NewEnvelope {
            device,
            kind: EnvelopeKind::Message,
            from: req.from,
            from_device: req.from_device,
            msg: req.msg.clone(),
            ts: req.now_ms,
            expires_ms,
            payload: Some(payload),
            group: None,
            ref_msg: req.edit_of.clone(),
        });
    }
    if req.to != req.from && !they_block {
        super::business::after_customer_message(
            tx, batch, req.to, req.from, req.now_ms, expires_ms,
        )
        .await?;
    }
    Ok(SendOutcome::Stored { ts: req.now_ms })
}

async fn code_record(tx: &Tx<'_>, phone: &str) -> PgResult<Option<CodeRecord>> {
    let row = query_opt(
        tx,
        "SELECT hash, expires_ms, attempts, used FROM codes WHERE phone = $1 FOR UPDATE",
        &[&phone],
    )
    .await?;
    Ok(row.map(|r| CodeRecord {
        hash: r.get::<_, Vec<u8>>(0).try_into().unwrap_or([0; 32]),
        expires_at_ms: to_u64(r.get(1)),
        attempts: u32::try_from(r.get::<_, i32>(2)).unwrap_or(0),
        used: r.get(3),
    }))
}

/// Inserts a device row and returns its id.
pub(super) async fn insert_device(
    tx: &Tx<'_>,
    account: AccountId,
    name: &str,
    credential_hash: &[u8; 32],
    now_ms: u64,
) -> PgResult<DeviceId> {
    let row = query(
        tx,
        "INSERT INTO devices (account_id, name, credential_hash, created_ms)
         VALUES ($1, $2, $3, $4) RETURNING id",
        &[
            &to_i64(account.0),
            &name,
            &&credential_hash[..],
            &to_i64(now_ms),
        ],
    )
    .await?;
    Ok(DeviceId(to_u64(row[0].get(0))))
}

/// Locks an account row, so that device counts checked under the lock
/// stay true until commit.
pub(super) async fn lock_account(tx: &Tx<'_>, account: AccountId) -> PgResult<()> {
    execute(
        tx,
        "SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE",
        &[&to_i64(account.0)],
    )
    .await?;
    Ok(())
}

pub(super) async fn verify(
    tx: &Tx<'_>,
    new: &NewDevice,
    now_ms: u64,
    max_attempts: u32,
    max_devices: u32,
) -> PgResult<VerifyOutcome> {
    let phone = new.phone.as_str();
    let record = code_record(tx, phone).await?;
    match decide_code(record.as_ref(), &new.code_hash, now_ms, max_attempts) {
        CodeDecision::Accept => {}
        CodeDecision::Wrong => {
            execute(
                tx,
                "UPDATE codes SET attempts = attempts + 1 WHERE phone = $1",
                &[&phone],
            )
            .await?;
            return Ok(VerifyOutcome::Rejected(CodeDecision::Wrong));
        }
        other => return Ok(VerifyOutcome::Rejected(other)),
    }
    // The code row is locked: one verification of this phone at a time.
    let existing = query_opt(tx, "SELECT id FROM accounts WHERE phone = $1", &[&phone]).await?;
    let (account, new_account) = match existing {
        Some(r) => {
            let account = AccountId(to_u64(r.get(0)));
            lock_account(tx, account).await?;
            if current_devices(tx, account).await?.len() >= max_devices as usize {
                return Ok(VerifyOutcome::DeviceLimit);
            }
            (account, false)
        }
        None => {
            let r = query(
                tx,
                "INSERT INTO accounts (phone, created_ms) VALUES ($1, $2) RETURNING id",
                &[&phone, &to_i64(now_ms)],
            )
            .await?;
            (AccountId(to_u64(r[0].get(0))), true)
        }
    };
    let device = insert_device(tx, account, &new.name, &new.credential_hash, now_ms).await?;
    execute(
        tx,
        "UPDATE codes SET used = TRUE WHERE phone = $1",
        &[&phone],
    )
    .await?;
    Ok(VerifyOutcome::Linked {
        account,
        device,
        new_account,
    })
}

pub(super) async fn ack(
    tx: &Tx<'_>,
    batch: &mut Batch,
    device: DeviceId,
    seqs: &[Seq],
    now_ms: u64,
    expires_ms: u64,
) -> PgResult<()> {
    let own = query_opt(
        tx,
        "SELECT account_id FROM devices WHERE id = $1",
        &[&to_i64(device.0)],
    )
    .await?;
    let Some(own) = own.map(|r| AccountId(to_u64(r.get(0)))) else {
        return Ok(());
    };
    let seqs: Vec<i64> = seqs.iter().map(|s| to_i64(s.0)).collect();
    let rows = query(
        tx,
        "DELETE FROM queue WHERE device_id = $1 AND seq = ANY($2)
         RETURNING seq, kind, from_account, msg",
        &[&to_i64(device.0), &seqs],
    )
    .await?;
    let mut acked: Vec<(i64, AccountId, String)> = rows
        .iter()
        .filter(|r| r.get::<_, i16>(1) == 0)
        .map(|r| (r.get(0), AccountId(to_u64(r.get(2))), r.get(3)))
        .filter(|(_, sender, _)| *sender != own)
        .collect();
    // Receipts in the order the envelopes were queued.
    acked.sort_by_key(|(seq, _, _)| *seq);
    for (_, sender, msg) in acked {
        let Ok(msg) = palaver_proto::ClientMsgId::new(msg) else {
            continue;
        };
        for target in current_devices(tx, sender).await? {
            batch.enqueue(NewEnvelope {
                device: target,
                kind: EnvelopeKind::Delivered,
                from: own,
                from_device: device,
                msg: msg.clone(),
                ts: now_ms,
                expires_ms,
                payload: None,
                group: None,
                ref_msg: None,
            });
        }
    }
    Ok(())
}

pub(super) async fn fetch(
    tx: &Tx<'_>,
    device: DeviceId,
    after: Seq,
    limit: u32,
) -> PgResult<Vec<StoredEnvelope>> {
    let rows = query(
        tx,
        "SELECT seq, kind, from_account, from_device, msg, ts, payload, group_id, ref_msg
         FROM queue WHERE device_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        &[&to_i64(device.0), &to_i64(after.0), &i64::from(limit)],
    )
    .await?;
    rows.iter().map(|r| row_to_envelope(device, r)).collect()
}

fn row_to_envelope(device: DeviceId, r: &Row) -> PgResult<StoredEnvelope> {
    Ok(StoredEnvelope {
        seq: Seq(to_u64(r.get(0))),
        device,
        kind: kind_from_i16(r.get(1))?,
        from: AccountId(to_u64(r.get(2))),
        from_device: DeviceId(to_u64(r.get(3))),
        msg: msg_id(r.get(4))?,
        ts: to_u64(r.get(5)),
        payload: r.get(6),
        group: r.get::<_, Option<i64>>(7).map(|g| GroupId(to_u64(g))),
        ref_msg: r
            .get::<_, Option<String>>(8)
            .and_then(|m| palaver_proto::ClientMsgId::new(m).ok()),
    })
}

/// Queues a `read` receipt per message to every device of `to`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn read_receipts(
    tx: &Tx<'_>,
    batch: &mut Batch,
    from: AccountId,
    from_device: DeviceId,
    to: AccountId,
    msgs: &[palaver_proto::ClientMsgId],
    now_ms: u64,
    expires_ms: u64,
) -> PgResult<bool> {
    let targets = current_devices(tx, to).await?;
    if targets.is_empty() {
        return Ok(false);
    }
    let (a, b) = blocks_between(tx, from, to).await?;
    if a || b {
        return Ok(true);
    }
    for device in targets {
        for msg in msgs {
            batch.enqueue(NewEnvelope {
                device,
                kind: EnvelopeKind::Read,
                from,
                from_device,
                msg: msg.clone(),
                ts: now_ms,
                expires_ms,
                payload: None,
                group: None,
                ref_msg: None,
            });
        }
    }
    Ok(true)
}
