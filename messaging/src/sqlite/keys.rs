//! The end-to-end key directory in SQLite. Claims run on the writer, so
//! two claimants can never be handed the same one-time key.

use super::{Batch, to_i64};
use crate::keys::{CheckedUpload, KeyError, MAX_ONE_TIME_STOCK};
use crate::store::KeyClaim;
use palaver_proto::frames::Payload;
use palaver_proto::keys::{KeyBundle, OneTimeKey, SignedKey};
use palaver_proto::{AccountId, DeviceId};
use rusqlite::{Connection, OptionalExtension, params};

pub(super) const MIGRATION: &str = r#"
CREATE TABLE device_keys (
    device_id INTEGER PRIMARY KEY,
    identity_key BLOB NOT NULL,
    signing_key BLOB NOT NULL,
    spk_id INTEGER NOT NULL,
    spk_public BLOB NOT NULL,
    spk_signature BLOB NOT NULL,
    lr_id INTEGER,
    lr_public BLOB,
    lr_signature BLOB
);
CREATE TABLE one_time_keys (
    device_id INTEGER NOT NULL,
    key_id INTEGER NOT NULL,
    public BLOB NOT NULL,
    PRIMARY KEY (device_id, key_id)
) WITHOUT ROWID;
"#;

/// Forgets every key of a device (it was unlinked).
pub(super) fn forget(conn: &Connection, device: DeviceId) -> rusqlite::Result<()> {
    let d = to_i64(device.0);
    conn.prepare_cached("DELETE FROM device_keys WHERE device_id = ?1")?
        .execute([d])?;
    conn.prepare_cached("DELETE FROM one_time_keys WHERE device_id = ?1")?
        .execute([d])?;
    Ok(())
}

/// The stock of a device that published keys; `None` if it did not.
pub(super) fn published_stock(
    conn: &Connection,
    device: DeviceId,
) -> rusqlite::Result<Option<u32>> {
    let has = conn
        .prepare_cached("SELECT 1 FROM device_keys WHERE device_id = ?1")?
        .exists([to_i64(device.0)])?;
    if has {
        stock(conn, device).map(Some)
    } else {
        Ok(None)
    }
}

pub(super) fn stock(conn: &Connection, device: DeviceId) -> rusqlite::Result<u32> {
    conn.prepare_cached("SELECT COUNT(*) FROM one_time_keys WHERE device_id = ?1")?
        .query_row([to_i64(device.0)], |r| r.get::<_, i64>(0))
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
}

pub(super) fn upload(
    conn: &Connection,
    device: DeviceId,
    keys: CheckedUpload,
) -> rusqlite::Result<Result<u32, KeyError>> {
    let d = to_i64(device.0);
    let existing: Option<(Vec<u8>, Vec<u8>)> = conn
        .prepare_cached("SELECT identity_key, signing_key FROM device_keys WHERE device_id = ?1")?
        .query_row([d], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match &existing {
        Some((i, s)) if *i != keys.identity_key || *s != keys.signing_key => {
            return Ok(Err(KeyError::IdentityChanged));
        }
        None if keys.signed_prekey.is_none() => return Ok(Err(KeyError::NoSignedPrekey)),
        _ => {}
    }
    let mut fresh = Vec::new();
    for (id, public) in &keys.one_time_keys {
        let known: Option<Vec<u8>> = conn
            .prepare_cached(
                "SELECT public FROM one_time_keys WHERE device_id = ?1 AND key_id = ?2",
            )?
            .query_row(params![d, i64::from(*id)], |r| r.get(0))
            .optional()?;
        match known {
            Some(p) if p == public => {}
            Some(_) => return Ok(Err(KeyError::DuplicateKeyId(*id))),
            None => fresh.push((*id, *public)),
        }
    }
    let have = stock(conn, device)?;
    if have as usize + fresh.len() > MAX_ONE_TIME_STOCK as usize {
        return Ok(Err(KeyError::StockFull));
    }
    if existing.is_none() {
        conn.prepare_cached(
            "INSERT INTO device_keys (device_id, identity_key, signing_key, spk_id, spk_public, spk_signature)
             VALUES (?1, ?2, ?3, 0, x'', x'')",
        )?
        .execute(params![d, &keys.identity_key[..], &keys.signing_key[..]])?;
    }
    if let Some(k) = &keys.signed_prekey {
        conn.prepare_cached(
            "UPDATE device_keys SET spk_id = ?2, spk_public = ?3, spk_signature = ?4
             WHERE device_id = ?1",
        )?
        .execute(params![
            d,
            i64::from(k.key_id),
            &k.public[..],
            &k.signature[..]
        ])?;
    }
    if let Some(k) = &keys.last_resort {
        conn.prepare_cached(
            "UPDATE device_keys SET lr_id = ?2, lr_public = ?3, lr_signature = ?4
             WHERE device_id = ?1",
        )?
        .execute(params![
            d,
            i64::from(k.key_id),
            &k.public[..],
            &k.signature[..]
        ])?;
    }
    for (id, public) in &fresh {
        conn.prepare_cached(
            "INSERT INTO one_time_keys (device_id, key_id, public) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![d, i64::from(*id), &public[..]])?;
    }
    Ok(Ok(have + fresh.len() as u32))
}

fn signed_key(id: i64, public: Vec<u8>, signature: Vec<u8>) -> SignedKey {
    SignedKey {
        key_id: u32::try_from(id).unwrap_or(0),
        public: Payload(public),
        signature: Payload(signature),
    }
}

/// The published keys of a device, without a one-time key.
fn published(conn: &Connection, device: DeviceId) -> rusqlite::Result<Option<KeyBundle>> {
    conn.prepare_cached(
        "SELECT identity_key, signing_key, spk_id, spk_public, spk_signature,
                lr_id, lr_public, lr_signature
         FROM device_keys WHERE device_id = ?1",
    )?
    .query_row([to_i64(device.0)], |r| {
        let last_resort = match (r.get::<_, Option<i64>>(5)?, r.get(6)?, r.get(7)?) {
            (Some(id), Some(p), Some(s)) => Some(signed_key(id, p, s)),
            _ => None,
        };
        Ok(KeyBundle {
            device,
            identity_key: Payload(r.get(0)?),
            signing_key: Payload(r.get(1)?),
            signed_prekey: signed_key(r.get(2)?, r.get(3)?, r.get(4)?),
            one_time_key: None,
            last_resort,
        })
    })
    .optional()
}

fn take_one_time(conn: &Connection, device: DeviceId) -> rusqlite::Result<Option<OneTimeKey>> {
    conn.prepare_cached(
        "DELETE FROM one_time_keys WHERE device_id = ?1 AND key_id =
            (SELECT key_id FROM one_time_keys WHERE device_id = ?1 ORDER BY key_id LIMIT 1)
         RETURNING key_id, public",
    )?
    .query_row([to_i64(device.0)], |r| {
        Ok(OneTimeKey {
            key_id: u32::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
            public: Payload(r.get(1)?),
        })
    })
    .optional()
}

pub(super) fn claim(
    conn: &Connection,
    batch: &mut Batch,
    account: AccountId,
    only: Option<DeviceId>,
) -> rusqlite::Result<Option<KeyClaim>> {
    let mut devices = batch.devices_of(conn, account)?;
    if devices.is_empty() {
        return Ok(None);
    }
    if let Some(only) = only {
        devices.retain(|d| *d == only);
        if devices.is_empty() {
            return Ok(None);
        }
    }
    let mut out = KeyClaim {
        bundles: Vec::new(),
        without_keys: Vec::new(),
        stock: Vec::new(),
    };
    for device in devices {
        let Some(mut bundle) = published(conn, device)? else {
            out.without_keys.push(device);
            continue;
        };
        bundle.one_time_key = take_one_time(conn, device)?;
        if bundle.one_time_key.is_some() {
            bundle.last_resort = None;
        }
        out.stock.push((device, stock(conn, device)?));
        out.bundles.push(bundle);
    }
    Ok(Some(out))
}
