//! Business profiles and automatic messages in SQLite.

use super::{Batch, NewEnvelope, enqueue, to_i64, to_u64};
use crate::business::{ContactState, triggered};
use crate::chats::AutoNote;
use palaver_proto::business::{AutoMessages, BusinessProfile};
use palaver_proto::frames::EnvelopeKind;
use palaver_proto::{AccountId, ClientMsgId, DeviceId};
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::Arc;

pub(super) const MIGRATION: &str = r#"
CREATE TABLE business (
    account INTEGER PRIMARY KEY,
    profile TEXT,
    auto TEXT
);
CREATE TABLE business_contacts (
    business INTEGER NOT NULL,
    customer INTEGER NOT NULL,
    last_in_ms INTEGER,
    last_away_ms INTEGER,
    PRIMARY KEY (business, customer)
) WITHOUT ROWID;
"#;

/// A business's profile and automatic messages, as the writer caches them.
#[derive(Debug, Clone, Default)]
pub(super) struct Business {
    profile: Option<BusinessProfile>,
    auto: Option<AutoMessages>,
}

fn parse<T: serde::de::DeserializeOwned>(s: Option<String>) -> Option<T> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

pub(super) fn load(conn: &Connection, account: AccountId) -> rusqlite::Result<Option<Business>> {
    conn.prepare_cached("SELECT profile, auto FROM business WHERE account = ?1")?
        .query_row([to_i64(account.0)], |r| {
            Ok(Business {
                profile: parse(r.get(0)?),
                auto: parse(r.get(1)?),
            })
        })
        .optional()
}

pub(super) fn profile(
    conn: &Connection,
    account: AccountId,
) -> rusqlite::Result<Option<BusinessProfile>> {
    Ok(load(conn, account)?.and_then(|b| b.profile))
}

pub(super) fn set(
    conn: &Connection,
    batch: &mut Batch,
    account: AccountId,
    profile: Option<&BusinessProfile>,
    auto: Option<&AutoMessages>,
) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT OR IGNORE INTO business (account) VALUES (?1)")?
        .execute([to_i64(account.0)])?;
    if let Some(p) = profile {
        let text = serde_json::to_string(p).ok();
        conn.prepare_cached("UPDATE business SET profile = ?2 WHERE account = ?1")?
            .execute(params![to_i64(account.0), text])?;
    }
    if let Some(a) = auto {
        let text = serde_json::to_string(a).ok();
        conn.prepare_cached("UPDATE business SET auto = ?2 WHERE account = ?1")?
            .execute(params![to_i64(account.0), text])?;
    }
    batch.business.remove(&account);
    Ok(())
}

fn cached(
    conn: &Connection,
    batch: &mut Batch,
    account: AccountId,
) -> rusqlite::Result<Option<Arc<Business>>> {
    if let Some(b) = batch.business.get(&account) {
        return Ok(b.clone());
    }
    let b = load(conn, account)?
        .filter(|b| b.auto.is_some())
        .map(Arc::new);
    if batch.business.len() >= 100_000 {
        batch.business.clear();
    }
    batch.business.insert(account, b.clone());
    Ok(b)
}

/// After a customer's message to a business: queues the greeting and away
/// messages it triggers, to the customer's devices and the business's own.
pub(super) fn after_customer_message(
    conn: &Connection,
    batch: &mut Batch,
    business: AccountId,
    customer: AccountId,
    now_ms: u64,
    expires_ms: u64,
) -> rusqlite::Result<()> {
    let Some(b) = cached(conn, batch, business)? else {
        return Ok(());
    };
    let Some(auto) = &b.auto else { return Ok(()) };
    let key = params![to_i64(business.0), to_i64(customer.0)];
    let contact = conn
        .prepare_cached(
            "SELECT last_in_ms, last_away_ms FROM business_contacts
             WHERE business = ?1 AND customer = ?2",
        )?
        .query_row(key, |r| {
            Ok(ContactState {
                last_in_ms: r.get::<_, Option<i64>>(0)?.map(to_u64),
                last_away_ms: r.get::<_, Option<i64>>(1)?.map(to_u64),
            })
        })
        .optional()?
        .unwrap_or_default();
    let profile = b.profile.clone().unwrap_or_default();
    let texts = triggered(auto, &profile, contact, now_ms);
    let away_sent = auto.away.as_deref().is_some_and(|a| texts.contains(&a));
    conn.prepare_cached(
        "INSERT INTO business_contacts (business, customer, last_in_ms, last_away_ms)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (business, customer) DO UPDATE SET last_in_ms = excluded.last_in_ms,
             last_away_ms = COALESCE(excluded.last_away_ms, last_away_ms)",
    )?
    .execute(params![
        to_i64(business.0),
        to_i64(customer.0),
        to_i64(now_ms),
        away_sent.then(|| to_i64(now_ms))
    ])?;
    let mut devices = batch.devices_of(conn, customer)?;
    devices.extend(batch.devices_of(conn, business)?);
    for (i, text) in texts.iter().enumerate() {
        let msg = ClientMsgId::new(format!("auto.{now_ms}.{i}")).expect("a valid message id");
        let note = serde_json::to_vec(&AutoNote {
            text: (*text).to_owned(),
            to: customer,
        })
        .expect("plain data serializes");
        for device in &devices {
            enqueue(
                conn,
                batch,
                NewEnvelope {
                    device: *device,
                    kind: EnvelopeKind::Auto,
                    from: business,
                    from_device: DeviceId(0),
                    msg: &msg,
                    ts: now_ms,
                    expires_ms,
                    payload: Some(note.clone()),
                    group: None,
                    ref_msg: None,
                },
            )?;
        }
    }
    Ok(())
}
