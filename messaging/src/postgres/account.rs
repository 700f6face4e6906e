//! Per-account state in PostgreSQL: the synced settings blob, device-link
//! codes and reports.

use super::messages::{account_exists, current_devices, insert_device, lock_account};
use super::{PgResult, Tx, execute, query, query_opt, to_i64, to_u64};
use crate::store::{LinkOutcome, ReportRecord};
use palaver_proto::{AccountId, ClientMsgId};

pub(super) async fn settings(tx: &Tx<'_>, account: AccountId) -> PgResult<(u64, Vec<u8>)> {
    Ok(query_opt(
        tx,
        "SELECT version, blob FROM settings WHERE account = $1",
        &[&to_i64(account.0)],
    )
    .await?
    .map(|r| (to_u64(r.get(0)), r.get(1)))
    .unwrap_or((0, Vec::new())))
}

pub(super) async fn put_settings(
    tx: &Tx<'_>,
    account: AccountId,
    base: u64,
    blob: &[u8],
) -> PgResult<Result<u64, u64>> {
    let a = to_i64(account.0);
    if base == 0 {
        // First version: the insert decides, a concurrent one conflicts.
        let inserted = execute(
            tx,
            "INSERT INTO settings (account, version, blob) VALUES ($1, 1, $2)
             ON CONFLICT (account) DO NOTHING",
            &[&a, &blob],
        )
        .await?;
        if inserted == 1 {
            return Ok(Ok(1));
        }
        return Ok(Err(settings(tx, account).await?.0));
    }
    // Compare and set in one statement: of two writers on the same base,
    // the second sees the first's version and is refused.
    let next = to_i64(base + 1);
    let updated = execute(
        tx,
        "UPDATE settings SET version = $3, blob = $4 WHERE account = $1 AND version = $2",
        &[&a, &to_i64(base), &next, &blob],
    )
    .await?;
    if updated == 1 {
        Ok(Ok(base + 1))
    } else {
        Ok(Err(settings(tx, account).await?.0))
    }
}

pub(super) async fn create_link_code(
    tx: &Tx<'_>,
    account: AccountId,
    hash: &[u8; 32],
    expires_ms: u64,
) -> PgResult<()> {
    execute(
        tx,
        "INSERT INTO link_codes (hash, account, expires_ms) VALUES ($1, $2, $3)",
        &[&&hash[..], &to_i64(account.0), &to_i64(expires_ms)],
    )
    .await?;
    Ok(())
}

pub(super) async fn link_with_code(
    tx: &Tx<'_>,
    hash: &[u8; 32],
    name: &str,
    credential_hash: &[u8; 32],
    now_ms: u64,
    max_devices: u32,
) -> PgResult<LinkOutcome> {
    execute(
        tx,
        "DELETE FROM link_codes WHERE expires_ms < $1",
        &[&to_i64(now_ms)],
    )
    .await?;
    // Locking the code: of two devices presenting it, one links.
    let row = query_opt(
        tx,
        "SELECT account FROM link_codes WHERE hash = $1 FOR UPDATE",
        &[&&hash[..]],
    )
    .await?;
    let Some(account) = row.map(|r| AccountId(to_u64(r.get(0)))) else {
        return Ok(LinkOutcome::Invalid);
    };
    lock_account(tx, account).await?;
    if current_devices(tx, account).await?.len() >= max_devices as usize {
        return Ok(LinkOutcome::DeviceLimit);
    }
    execute(tx, "DELETE FROM link_codes WHERE hash = $1", &[&&hash[..]]).await?;
    let device = insert_device(tx, account, name, credential_hash, now_ms).await?;
    Ok(LinkOutcome::Linked { account, device })
}

pub(super) async fn report(tx: &Tx<'_>, r: &ReportRecord) -> PgResult<bool> {
    if !account_exists(tx, r.reported).await? {
        return Ok(false);
    }
    let msgs: Vec<&str> = r.msgs.iter().map(|m| m.as_str()).collect();
    execute(
        tx,
        "INSERT INTO reports (reporter, reported, reason, msgs, evidence, created_ms)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &to_i64(r.reporter.0),
            &to_i64(r.reported.0),
            &r.reason,
            &msgs.join(" "),
            &r.evidence,
            &to_i64(r.created_ms),
        ],
    )
    .await?;
    Ok(true)
}

pub(super) async fn reports(
    tx: &Tx<'_>,
    before_ms: u64,
    limit: u32,
) -> PgResult<Vec<ReportRecord>> {
    let rows = query(
        tx,
        "SELECT reporter, reported, reason, msgs, evidence, created_ms FROM reports
         WHERE created_ms < $1 ORDER BY created_ms DESC, id DESC LIMIT $2",
        &[&to_i64(before_ms), &i64::from(limit)],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| ReportRecord {
            reporter: AccountId(to_u64(r.get(0))),
            reported: AccountId(to_u64(r.get(1))),
            reason: r.get(2),
            msgs: r
                .get::<_, String>(3)
                .split(' ')
                .filter_map(|m| ClientMsgId::new(m).ok())
                .collect(),
            evidence: r.get(4),
            created_ms: to_u64(r.get(5)),
        })
        .collect())
}
