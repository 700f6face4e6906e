//! Per-device push settings in SQLite: the target (as its JSON) and the
//! quiet time, forgotten when the device is revoked.

use super::{to_i64, to_u64};
use crate::store::PushSettings;
use palaver_proto::push::PushTarget;
use palaver_proto::{AccountId, DeviceId};
use rusqlite::{Connection, OptionalExtension, params};

pub(super) const MIGRATION: &str = r#"
CREATE TABLE push (
    device_id INTEGER PRIMARY KEY,
    target TEXT,
    quiet_until_ms INTEGER
);
"#;

fn target_json(t: &PushTarget) -> String {
    serde_json::to_string(t).unwrap_or_default()
}

fn current(conn: &Connection, device: DeviceId) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM devices WHERE id = ?1 AND revoked_ms IS NULL")?
        .exists([to_i64(device.0)])
}

pub(super) fn set_target(
    conn: &Connection,
    device: DeviceId,
    target: Option<PushTarget>,
) -> rusqlite::Result<bool> {
    if !current(conn, device)? {
        return Ok(false);
    }
    conn.prepare_cached(
        "INSERT INTO push (device_id, target) VALUES (?1, ?2)
         ON CONFLICT (device_id) DO UPDATE SET target = excluded.target",
    )?
    .execute(params![to_i64(device.0), target.as_ref().map(target_json)])?;
    Ok(true)
}

pub(super) fn drop_target(
    conn: &Connection,
    device: DeviceId,
    target: &PushTarget,
) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached("UPDATE push SET target = NULL WHERE device_id = ?1 AND target = ?2")?
        .execute(params![to_i64(device.0), target_json(target)])?;
    Ok(n > 0)
}

pub(super) fn set_quiet(
    conn: &Connection,
    device: DeviceId,
    until_ms: Option<u64>,
) -> rusqlite::Result<bool> {
    if !current(conn, device)? {
        return Ok(false);
    }
    conn.prepare_cached(
        "INSERT INTO push (device_id, quiet_until_ms) VALUES (?1, ?2)
         ON CONFLICT (device_id) DO UPDATE SET quiet_until_ms = excluded.quiet_until_ms",
    )?
    .execute(params![to_i64(device.0), until_ms.map(to_i64)])?;
    Ok(true)
}

pub(super) fn settings(
    conn: &Connection,
    device: DeviceId,
) -> rusqlite::Result<Option<PushSettings>> {
    conn.prepare_cached(
        "SELECT d.account_id, p.target, p.quiet_until_ms FROM devices d
         LEFT JOIN push p ON p.device_id = d.id
         WHERE d.id = ?1 AND d.revoked_ms IS NULL",
    )?
    .query_row([to_i64(device.0)], |r| {
        let target: Option<String> = r.get(1)?;
        Ok(PushSettings {
            account: AccountId(to_u64(r.get(0)?)),
            target: target.and_then(|t| serde_json::from_str(&t).ok()),
            quiet_until_ms: r.get::<_, Option<i64>>(2)?.map(to_u64),
        })
    })
    .optional()
}

/// Forgets a revoked device's settings.
pub(super) fn forget(conn: &Connection, device: DeviceId) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM push WHERE device_id = ?1")?
        .execute([to_i64(device.0)])?;
    Ok(())
}
