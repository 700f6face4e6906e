//! Business profiles and automatic messages in PostgreSQL.

use super::messages::current_devices;
use super::{Batch, NewEnvelope, PgResult, Tx, execute, query_opt, to_i64, to_u64};
use crate::business::{ContactState, triggered};
use crate::chats::AutoNote;
use palaver_proto::business::{AutoMessages, BusinessProfile};
use palaver_proto::frames::EnvelopeKind;
use palaver_proto::{AccountId, ClientMsgId, DeviceId};

fn parse<T: serde::de::DeserializeOwned>(s: Option<String>) -> Option<T> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

async fn load(
    tx: &Tx<'_>,
    account: AccountId,
) -> PgResult<Option<(Option<BusinessProfile>, Option<AutoMessages>)>> {
    Ok(query_opt(
        tx,
        "SELECT profile, auto FROM business WHERE account = $1",
        &[&to_i64(account.0)],
    )
    .await?
    .map(|r| (parse(r.get(0)), parse(r.get(1)))))
}

pub(super) async fn profile(tx: &Tx<'_>, account: AccountId) -> PgResult<Option<BusinessProfile>> {
    Ok(load(tx, account).await?.and_then(|(p, _)| p))
}

pub(super) async fn set(
    tx: &Tx<'_>,
    account: AccountId,
    profile: Option<&BusinessProfile>,
    auto: Option<&AutoMessages>,
) -> PgResult<()> {
    let a = to_i64(account.0);
    execute(
        tx,
        "INSERT INTO business (account) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&a],
    )
    .await?;
    if let Some(p) = profile {
        let text = serde_json::to_string(p).ok();
        execute(
            tx,
            "UPDATE business SET profile = $2 WHERE account = $1",
            &[&a, &text],
        )
        .await?;
    }
    if let Some(x) = auto {
        let text = serde_json::to_string(x).ok();
        execute(
            tx,
            "UPDATE business SET auto = $2 WHERE account = $1",
            &[&a, &text],
        )
        .await?;
    }
    Ok(())
}

/// After a customer's message to a business: queues the greeting and away
/// messages it triggers, to the customer's devices and the business's own.
pub(super) async fn after_customer_message(
    tx: &Tx<'_>,
    batch: &mut Batch,
    business: AccountId,
    customer: AccountId,
    now_ms: u64,
    expires_ms: u64,
) -> PgResult<()> {
    let Some((profile, Some(auto))) = load(tx, business).await? else {
        return Ok(());
    };
    let (b, c) = (to_i64(business.0), to_i64(customer.0));
    // The contact row is the lock: two messages of one customer at once
    // trigger the greeting once.
    execute(
        tx,
        "INSERT INTO business_contacts (business, customer) VALUES ($1, $2)
         ON CONFLICT DO NOTHING",
        &[&b, &c],
    )
    .await?;
    let contact = query_opt(
        tx,
        "SELECT last_in_ms, last_away_ms FROM business_contacts
         WHERE business = $1 AND customer = $2 FOR UPDATE",
        &[&b, &c],
    )
    .await?
    .map(|r| ContactState {
        last_in_ms: r.get::<_, Option<i64>>(0).map(to_u64),
        last_away_ms: r.get::<_, Option<i64>>(1).map(to_u64),
    })
    .unwrap_or_default();
    let profile = profile.unwrap_or_default();
    let texts = triggered(&auto, &profile, contact, now_ms);
    let away_sent = auto.away.as_deref().is_some_and(|a| texts.contains(&a));
    execute(
        tx,
        "UPDATE business_contacts SET last_in_ms = $3,
             last_away_ms = COALESCE($4, last_away_ms)
         WHERE business = $1 AND customer = $2",
        &[&b, &c, &to_i64(now_ms), &away_sent.then(|| to_i64(now_ms))],
    )
    .await?;
    let mut devices = current_devices(tx, customer).await?;
    devices.extend(current_devices(tx, business).await?);
    for (i, text) in texts.iter().enumerate() {
        let msg = ClientMsgId::new(format!("auto.{now_ms}.{i}")).expect("a valid message id");
        let note = serde_json::to_vec(&AutoNote {
            text: (*text).to_owned(),
            to: customer,
        })
        .expect("plain data serializes");
        for device in &devices {
            batch.enqueue(NewEnvelope {
                device: *device,
                kind: EnvelopeKind::Auto,
                from: business,
                from_device: DeviceId(0),
                msg: msg.clone(),
                ts: now_ms,
                expires_ms,
                payload: Some(note.clone()),
                group: None,
                ref_msg: None,
            });
        }
    }
    Ok(())
}
