//! Per-device push settings in PostgreSQL: the target (as its JSON) and
//! the quiet time, forgotten when the device is revoked.

use super::{PgResult, Tx, execute, query_opt, to_i64, to_u64};
use crate::store::PushSettings;
use palaver_proto::push::PushTarget;
use palaver_proto::{AccountId, DeviceId};

pub(super) const MIGRATION: &str = r#"
CREATE TABLE push (
    device_id BIGINT PRIMARY KEY,
    target TEXT,
    quiet_until_ms BIGINT
);
"#;

fn target_json(t: &PushTarget) -> String {
    serde_json::to_string(t).unwrap_or_default()
}

/// Locks the device row if it is current (a revocation waits for us, or
/// we see it).
async fn current(tx: &Tx<'_>, device: DeviceId) -> PgResult<bool> {
    Ok(query_opt(
        tx,
        "SELECT 1 FROM devices WHERE id = $1 AND revoked_ms IS NULL FOR UPDATE",
        &[&to_i64(device.0)],
    )
    .await?
    .is_some())
}

pub(super) async fn set_target(
    tx: &Tx<'_>,
    device: DeviceId,
    target: Option<&PushTarget>,
) -> PgResult<bool> {
    if !current(tx, device).await? {
        return Ok(false);
    }
    execute(
        tx,
        "INSERT INTO push (device_id, target) VALUES ($1, $2)
         ON CONFLICT (device_id) DO UPDATE SET target = excluded.target",
        &[&to_i64(device.0), &target.map(target_json)],
    )
    .await?;
    Ok(true)
}

pub(super) async fn drop_target(
    tx: &Tx<'_>,
    device: DeviceId,
    target: &PushTarget,
) -> PgResult<bool> {
    let n = execute(
        tx,
        "UPDATE push SET target = NULL WHERE device_id = $1 AND target = $2",
        &[&to_i64(device.0), &target_json(target)],
    )
    .await?;
    Ok(n > 0)
}

pub(super) async fn set_quiet(
    tx: &Tx<'_>,
    device: DeviceId,
    until_ms: Option<u64>,
) -> PgResult<bool> {
    if !current(tx, device).await? {
        return Ok(false);
    }
    execute(
        tx,
        "INSERT INTO push (device_id, quiet_until_ms) VALUES ($1, $2)
         ON CONFLICT (device_id) DO UPDATE SET quiet_until_ms = excluded.quiet_until_ms",
        &[&to_i64(device.0), &until_ms.map(to_i64)],
    )
    .await?;
    Ok(true)
}

pub(super) async fn settings(tx: &Tx<'_>, device: DeviceId) -> PgResult<Option<PushSettings>> {
    let row = query_opt(
        tx,
        "SELECT d.account_id, p.target, p.quiet_until_ms FROM devices d
         LEFT JOIN push p ON p.device_id = d.id
         WHERE d.id = $1 AND d.revoked_ms IS NULL",
        &[&to_i64(device.0)],
    )
    .await?;
    Ok(row.map(|r| {
        let target: Option<String> = r.get(1);
        PushSettings {
            account: AccountId(to_u64(r.get(0))),
            target: target.and_then(|t| serde_json::from_str(&t).ok()),
            quiet_until_ms: r.get::<_, Option<i64>>(2).map(to_u64),
        }
    }))
}

/// Forgets a revoked device's settings.
pub(super) async fn forget(tx: &Tx<'_>, device: DeviceId) -> PgResult<()> {
    execute(
        tx,
        "DELETE FROM push WHERE device_id = $1",
        &[&to_i64(device.0)],
    )
    .await?;
    Ok(())
}
