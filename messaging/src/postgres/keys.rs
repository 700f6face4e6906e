//! The end-to-end key directory in PostgreSQL. A claim takes a one-time key
//! with a single `DELETE ... RETURNING` over a `FOR UPDATE SKIP LOCKED`
//! pick: two claimants running at once take different keys, and a key is
//! handed out only by the transaction that deleted it.

use super::messages::current_devices;
use super::{PgResult, Tx, execute, query, query_opt, to_i64};
use crate::keys::{CheckedUpload, KeyError, MAX_ONE_TIME_STOCK};
use crate::store::KeyClaim;
use palaver_proto::frames::Payload;
use palaver_proto::keys::{KeyBundle, OneTimeKey, SignedKey};
use palaver_proto::{AccountId, DeviceId};

/// Forgets every key of a device (it was unlinked).
pub(super) async fn forget(tx: &Tx<'_>, device: DeviceId) -> PgResult<()> {
    let d = to_i64(device.0);
    execute(tx, "DELETE FROM device_keys WHERE device_id = $1", &[&d]).await?;
    execute(tx, "DELETE FROM one_time_keys WHERE device_id = $1", &[&d]).await?;
    Ok(())
}

/// The stock of a device that published keys; `None` if it did not.
pub(super) async fn published_stock(tx: &Tx<'_>, device: DeviceId) -> PgResult<Option<u32>> {
    let has = query_opt(
        tx,
        "SELECT 1 FROM device_keys WHERE device_id = $1",
        &[&to_i64(device.0)],
    )
    .await?;
    match has {
        Some(_) => stock(tx, device).await.map(Some),
        None => Ok(None),
    }
}

async fn stock(tx: &Tx<'_>, device: DeviceId) -> PgResult<u32> {
    let r = query(
        tx,
        "SELECT COUNT(*) FROM one_time_keys WHERE device_id = $1",
        &[&to_i64(device.0)],
    )
    .await?;
    Ok(u32::try_from(r[0].get::<_, i64>(0)).unwrap_or(u32::MAX))
}

pub(super) async fn upload(
    tx: &Tx<'_>,
    device: DeviceId,
    keys: &CheckedUpload,
) -> PgResult<Result<u32, KeyError>> {
    let d = to_i64(device.0);
    // Uploads of one device run one at a time: the device row is the lock
    // (the key row may not exist yet).
    execute(tx, "SELECT 1 FROM devices WHERE id = $1 FOR UPDATE", &[&d]).await?;
    let existing = query_opt(
        tx,
        "SELECT identity_key, signing_key FROM device_keys WHERE device_id = $1",
        &[&d],
    )
    .await?
    .map(|r| (r.get::<_, Vec<u8>>(0), r.get::<_, Vec<u8>>(1)));
    match &existing {
        Some((i, s)) if *i != keys.identity_key || *s != keys.signing_key => {
            return Ok(Err(KeyError::IdentityChanged));
        }
        None if keys.signed_prekey.is_none() => return Ok(Err(KeyError::NoSignedPrekey)),
        _ => {}
    }
    let mut fresh = Vec::new();
    for (id, public) in &keys.one_time_keys {
        let known = query_opt(
            tx,
            "SELECT public FROM one_time_keys WHERE device_id = $1 AND key_id = $2",
            &[&d, &i64::from(*id)],
        )
        .await?
        .map(|r| r.get::<_, Vec<u8>>(0));
        match known {
            Some(p) if p == public => {}
            Some(_) => return Ok(Err(KeyError::DuplicateKeyId(*id))),
            None => fresh.push((*id, *public)),
        }
    }
    let have = stock(tx, device).await?;
    if have as usize + fresh.len() > MAX_ONE_TIME_STOCK as usize {
        return Ok(Err(KeyError::StockFull));
    }
    if existing.is_none() {
        execute(
            tx,
            "INSERT INTO device_keys (device_id, identity_key, signing_key, spk_id, spk_public,
                                      spk_signature)
             VALUES ($1, $2, $3, 0, '', '')",
            &[&d, &&keys.identity_key[..], &&keys.signing_key[..]],
        )
        .await?;
    }
    if let Some(k) = &keys.signed_prekey {
        execute(
            tx,
            "UPDATE device_keys SET spk_id = $2, spk_public = $3, spk_signature = $4
             WHERE device_id = $1",
            &[&d, &i64::from(k.key_id), &&k.public[..], &&k.signature[..]],
        )
        .await?;
    }
    if let Some(k) = &keys.last_resort {
        execute(
            tx,
            "UPDATE device_keys SET lr_id = $2, lr_public = $3, lr_signature = $4
             WHERE device_id = $1",
            &[&d, &i64::from(k.key_id), &&k.public[..], &&k.signature[..]],
        )
        .await?;
    }
    for (id, public) in &fresh {
        execute(
            tx,
            "INSERT INTO one_time_keys (device_id, key_id, public) VALUES ($1, $2, $3)",
            &[&d, &i64::from(*id), &&public[..]],
        )
        .await?;
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
async fn published(tx: &Tx<'_>, device: DeviceId) -> PgResult<Option<KeyBundle>> {
    let row = query_opt(
        tx,
        "SELECT identity_key, signing_key, spk_id, spk_public, spk_signature,
                lr_id, lr_public, lr_signature
         FROM device_keys WHERE device_id = $1",
        &[&to_i64(device.0)],
    )
    .await?;
    Ok(row.map(|r| {
        let last_resort = match (
            r.get::<_, Option<i64>>(5),
            r.get::<_, Option<Vec<u8>>>(6),
            r.get::<_, Option<Vec<u8>>>(7),
        ) {
            (Some(id), Some(p), Some(s)) => Some(signed_key(id, p, s)),
            _ => None,
        };
        KeyBundle {
            device,
            identity_key: Payload(r.get(0)),
            signing_key: Payload(r.get(1)),
            signed_prekey: signed_key(r.get(2), r.get(3), r.get(4)),
            one_time_key: None,
            last_resort,
        }
    }))
}

async fn take_one_time(tx: &Tx<'_>, device: DeviceId) -> PgResult<Option<OneTimeKey>> {
    let row = query_opt(
        tx,
        "DELETE FROM one_time_keys WHERE device_id = $1 AND key_id = (
             SELECT key_id FROM one_time_keys WHERE device_id = $1
             ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING key_id, public",
        &[&to_i64(device.0)],
    )
    .await?;
    Ok(row.map(|r| OneTimeKey {
        key_id: u32::try_from(r.get::<_, i64>(0)).unwrap_or(0),
        public: Payload(r.get(1)),
    }))
}

pub(super) async fn claim(
    tx: &Tx<'_>,
    account: AccountId,
    only: Option<DeviceId>,
) -> PgResult<Option<KeyClaim>> {
    let mut devices = current_devices(tx, account).await?;
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
        let Some(mut bundle) = published(tx, device).await? else {
            out.without_keys.push(device);
            continue;
        };
        bundle.one_time_key = take_one_time(tx, device).await?;
        if bundle.one_time_key.is_some() {
            bundle.last_resort = None;
        }
        out.stock.push((device, stock(tx, device).await?));
        out.bundles.push(bundle);
    }
    Ok(Some(out))
}
