//! [`Store`] for [`PostgresStore`]: each method is one transaction.

use super::{
    PostgresStore, account, business, chats, execute, groups, keys, messages, privacy_to_i16, push,
    query, query_opt, status, to_i64, to_u64,
};
use crate::chats::AmendError;
use crate::groups::GroupError;
use crate::keys::{CheckedUpload, KeyError};
use crate::policy::Phone;
use crate::store::*;
use async_trait::async_trait;
use palaver_proto::business::{AutoMessages, BusinessProfile};
use palaver_proto::frames::{CallLogEntry, LastSeenPrivacy};
use palaver_proto::groups::GroupInfo;
use palaver_proto::push::PushTarget;
use palaver_proto::{AccountId, ClientMsgId, DeviceId, GroupId, Seq};

/// A unit enum's wire name, for text columns.
fn enum_text<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

fn text_enum<T: serde::de::DeserializeOwned>(s: String) -> Result<T, super::PgError> {
    serde_json::from_value(serde_json::Value::String(s))
        .map_err(|e| super::PgError::Data(e.to_string()))
}

fn call_from_row(r: &tokio_postgres::Row) -> Result<CallLogEntry, super::PgError> {
    Ok(CallLogEntry {
        call: palaver_proto::CallId(to_u64(r.get(0))),
        caller: AccountId(to_u64(r.get(1))),
        caller_device: DeviceId(to_u64(r.get(2))),
        callee: AccountId(to_u64(r.get(3))),
        answered_by: r.get::<_, Option<i64>>(4).map(|d| DeviceId(to_u64(d))),
        media: text_enum(r.get(5))?,
        reason: text_enum(r.get(6))?,
        started_at: to_u64(r.get(7)),
        answered_at: r.get::<_, Option<i64>>(8).map(to_u64),
        ended_at: to_u64(r.get(9)),
    })
}

#[async_trait]
impl Store for PostgresStore {
    async fn put_code(
        &self,
        phone: &Phone,
        hash: [u8; 32],
        expires_at_ms: u64,
    ) -> Result<(), StoreError> {
        let phone = phone.as_str().to_owned();
        self.write(move |tx, _| {
            let phone = phone.clone();
            Box::pin(async move {
                execute(
                    tx,
                    "INSERT INTO codes (phone, hash, expires_ms, attempts, used)
                     VALUES ($1, $2, $3, 0, FALSE)
                     ON CONFLICT (phone) DO UPDATE SET hash = excluded.hash,
                     expires_ms = excluded.expires_ms, attempts = 0, used = FALSE",
                    &[&phone, &&hash[..], &to_i64(expires_at_ms)],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn verify_and_link(
        &self,
        new: NewDevice,
        now_ms: u64,
        max_attempts: u32,
        max_devices: u32,
    ) -> Result<VerifyOutcome, StoreError> {
        self.write(move |tx, _| {
            let new = new.clone();
            Box::pin(
                async move { messages::verify(tx, &new, now_ms, max_attempts, max_devices).await },
            )
        })
        .await
    }

    async fn device(&self, device: DeviceId) -> Result<Option<DeviceRecord>, StoreError> {
        self.read(move |tx| {
            Box::pin(async move {
                let row = query_opt(
                    tx,
                    "SELECT account_id, credential_hash, revoked_ms IS NOT NULL
                     FROM devices WHERE id = $1",
                    &[&to_i64(device.0)],
                )
                .await?;
                Ok(row.map(|r| DeviceRecord {
                    device,
                    account: AccountId(to_u64(r.get(0))),
                    credential_hash: r.get::<_, Vec<u8>>(1).try_into().unwrap_or([0; 32]),
                    revoked: r.get(2),
                }))
            })
        })
        .await
    }

    async fn account_by_phone(&self, phone: &Phone) -> Result<Option<AccountId>, StoreError> {
        let phone = phone.as_str().to_owned();
        self.read(move |tx| {
            Box::pin(async move {
                let row =
                    query_opt(tx, "SELECT id FROM accounts WHERE phone = $1", &[&phone]).await?;
                Ok(row.map(|r| AccountId(to_u64(r.get(0)))))
            })
        })
        .await
    }

    async fn devices(&self, account: AccountId) -> Result<Option<Vec<DeviceId>>, StoreError> {
        self.read(move |tx| {
            Box::pin(async move {
                if !messages::account_exists(tx, account).await? {
                    return Ok(None);
                }
                messages::current_devices(tx, account).await.map(Some)
            })
        })
        .await
    }

    async fn revoke_device(
        &self,
        account: AccountId,
        device: DeviceId,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.write(move |tx, batch| {
            Box::pin(async move {
                let changed = execute(
                    tx,
                    "UPDATE devices SET revoked_ms = $3
                     WHERE id = $1 AND account_id = $2 AND revoked_ms IS NULL",
                    &[&to_i64(device.0), &to_i64(account.0), &to_i64(now_ms)],
                )
                .await?;
                if changed == 0 {
                    return Ok(false);
                }
                execute(
                    tx,
                    "DELETE FROM queue WHERE device_id = $1",
                    &[&to_i64(device.0)],
                )
                .await?;
                keys::forget(tx, device).await?;
                push::forget(tx, device).await?;
                batch.revoked.push(device);
                Ok(true)
            })
        })
        .await
    }

    async fn send(&self, req: SendRequest) -> Result<SendOutcome, StoreError> {
        self.write(move |tx, batch| {
            let req = req.clone();
            Box::pin(async move { messages::send(tx, batch, req).await })
        })
        .await
    }

    async fn fetch(
        &self,
        device: DeviceId,
        after: Seq,
        limit: u32,
    ) -> Result<Vec<StoredEnvelope>, StoreError> {
        self.read(move |tx| {
            Box::pin(async move { messages::fetch(tx, device, after, limit).await })
        })
        .await
    }

    async fn ack(
        &self,
        device: DeviceId,
        seqs: Vec<Seq>,
        now_ms: u64,
        receipt_expires_at_ms: u64,
    ) -> Result<(), StoreError> {
        self.write(move |tx, batch| {
            let seqs = seqs.clone();
            Box::pin(async move {
                messages::ack(tx, batch, device, &seqs, now_ms, receipt_expires_at_ms).await
            })
        })
        .await
    }

    async fn read_receipts(
        &self,
        from: AccountId,
        from_device: DeviceId,
        to: AccountId,
        msgs: Vec<ClientMsgId>,
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<bool, StoreError> {
        self.write(move |tx, batch| {
            let msgs = msgs.clone();
            Box::pin(async move {
                messages::read_receipts(
                    tx,
                    batch,
                    from,
                    from_device,
                    to,
                    &msgs,
                    now_ms,
                    expires_at_ms,
                )
                .await
            })
        })
        .await
    }

    async fn presence(&self, account: AccountId) -> Result<Option<PresenceRecord>, StoreError> {
        self.read(move |tx| {
            Box::pin(async move {
                let row = query_opt(
                    tx,
                    "SELECT last_seen_privacy, last_seen_ms FROM accounts WHERE id = $1",
                    &[&to_i64(account.0)],
                )
                .await?;
                Ok(row.map(|r| PresenceRecord {
                    privacy: if r.get::<_, i16>(0) == 1 {
                        LastSeenPrivacy::Nobody
                    } else {
                        LastSeenPrivacy::Everyone
                    },
                    last_seen_ms: r.get::<_, Option<i64>>(1).map(to_u64),
                }))
            })
        })
        .await
    }

    async fn set_privacy(
        &self,
        account: AccountId,
        privacy: LastSeenPrivacy,
    ) -> Result<(), StoreError> {
        self.write(move |tx, _| {
            Box::pin(async move {
                execute(
                    tx,
                    "UPDATE accounts SET last_seen_privacy = $2 WHERE id = $1",
                    &[&to_i64(account.0), &privacy_to_i16(privacy)],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn set_last_seen(&self, account: AccountId, at_ms: u64) -> Result<(), StoreError> {
        self.write(move |tx, _| {
            Box::pin(async move {
                execute(
                    tx,
                    "UPDATE accounts SET last_seen_ms = $2 WHERE id = $1",
                    &[&to_i64(account.0), &to_i64(at_ms)],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn set_block(
        &self,
        account: AccountId,
        other: AccountId,
        blocked: bool,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.write(move |tx, _| {
            Box::pin(async move {
                if !messages::account_exists(tx, other).await? {
                    return Ok(false);
                }
                let (a, o) = (to_i64(account.0), to_i64(other.0));
                if blocked {
                    execute(
                        tx,
                        "INSERT INTO blocks (account, blocked, created_ms) VALUES ($1, $2, $3)
                         ON CONFLICT DO NOTHING",
                        &[&a, &o, &to_i64(now_ms)],
                    )
                    .await?;
                } else {
                    execute(
                        tx,
                        "DELETE FROM blocks WHERE account = $1 AND blocked = $2",
                        &[&a, &o],
                    )
                    .await?;
                }
                Ok(true)
            })
        })
        .await
    }

    async fn blocks(&self, a: AccountId, b: AccountId) -> Result<(bool, bool), StoreError> {
        self.read(move |tx| Box::pin(async move { messages::blocks_between(tx, a, b).await }))
            .await
    }

    async fn blocked_accounts(&self, account: AccountId) -> Result<Vec<AccountId>, StoreError> {
        self.read(move |tx| {
            Box::pin(async move {
                let rows = query(
                    tx,
                    "SELECT blocked FROM blocks WHERE account = $1 ORDER BY created_ms, blocked",
                    &[&to_i64(account.0)],
                )
                .await?;
                Ok(rows.iter().map(|r| AccountId(to_u64(r.get(0)))).collect())
            })
        })
        .await
    }

    async fn record_call(&self, e: CallLogEntry) -> Result<(), StoreError> {
        self.write(move |tx, _| {
            let e = e.clone();
            Box::pin(async move {
                execute(
                    tx,
                    "INSERT INTO calls (id, caller, caller_device, callee, answered_by, media,
                     reason, started_ms, answered_ms, ended_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
                    &[
                        &to_i64(e.call.0),
                        &to_i64(e.caller.0),
                        &to_i64(e.caller_device.0),
                        &to_i64(e.callee.0),
                        &e.answered_by.map(|d| to_i64(d.0)),
                        &enum_text(&e.media),
                        &enum_text(&e.reason),
                        &to_i64(e.started_at),
                        &e.answered_at.map(to_i64),
                        &to_i64(e.ended_at),
                    ],
                )
                .await?;
                Ok(())
            })
        })
        .await
    }

    async fn call_history(
        &self,
        account: AccountId,
        before_ms: u64,
        limit: u32,
    ) -> Result<Vec<CallLogEntry>, StoreError> {
        self.read(move |tx| {
            Box::pin(async move {
                let rows = query(
                    tx,
                    "SELECT id, caller, caller_device, callee, answered_by, media, reason,
                            started_ms, answered_ms, ended_ms FROM calls
                     WHERE (caller = $1 OR callee = $1) AND started_ms < $2
                     ORDER BY started_ms DESC, id DESC LIMIT $3",
                    &[&to_i64(account.0), &to_i64(before_ms), &i64::from(limit)],
                )
                .await?;
                rows.iter().map(call_from_row).collect()
            })
        })
        .await
    }

    async fn create_group(
        &self,
        new: NewGroup,
    ) -> Result<Result<GroupInfo, GroupError>, StoreError> {
        self.write(move |tx, batch| {
            let new = new.clone();
            Box::pin(async move { groups::create(tx, batch, &new).await })
        })
        .await
    }

    async fn change_group(
        &self,
        req: GroupChangeRequest,
    ) -> Result<Result<GroupInfo, GroupError>, StoreError> {
        self.write(move |tx, batch| {
            let req = req.clone();
            Box::pin(async move { groups::change(tx, batch, &req).await })
        })
        .await
    }

    async fn group_invite_code(
        &self,
        actor: AccountId,
        group: GroupId,
        fresh: String,
    ) -> Result<Result<String, GroupError>, StoreError> {
        self.write(move |tx, _| {
            let fresh = fresh.clone();
            Box::pin(async move { groups::invite_code(tx, actor, group, &fresh).await })
        })
        .await
    }

    async fn group(
        &self,
        viewer: AccountId,
        group: GroupId,
    ) -> Result<Option<GroupInfo>, StoreError> {
        self.read(move |tx| Box::pin(async move { groups::visible(tx, viewer, group).await }))
            .await
    }

    async fn groups_of(&self, account: AccountId) -> Result<Vec<GroupInfo>, StoreError> {
        self.read(move |tx| Box::pin(async move { groups::of_account(tx, account).await }))
            .await
    }

    async fn group_send(&self, req: GroupSendRequest) -> Result<GroupSendOutcome, StoreError> {
        self.write(move |tx, batch| {
            let req = req.clone();
            Box::pin(async move { groups::send(tx, batch, &req).await })
        })
        .await
    }

    async fn upload_keys(
        &self,
        device: DeviceId,
        upload: CheckedUpload,
    ) -> Result<Result<u32, KeyError>, StoreError> {
        self.write(move |tx, _| {
            let upload = upload.clone();
            Box::pin(async move { keys::upload(tx, device, &upload).await })
        })
        .await
    }

    async fn claim_keys(
        &self,
        account: AccountId,
        device: Option<DeviceId>,
    ) -> Result<Option<KeyClaim>, StoreError> {
        self.write(move |tx, _| Box::pin(async move { keys::claim(tx, account, device).await }))
            .await
    }

    async fn key_stock(&self, device: DeviceId) -> Result<Option<u32>, StoreError> {
        self.read(move |tx| Box::pin(async move { keys::published_stock(tx, device).await }))
            .await
    }

    async fn revoke(&self, req: RevokeRequest) -> Result<Result<(), AmendError>, StoreError> {
        self.write(move |tx, batch| {
            let req = req.clone();
            Box::pin(async move { chats::revoke(tx, batch, &req).await })
        })
        .await
    }

    async fn set_timer(&self, req: TimerRequest) -> Result<Result<(), TimerError>, StoreError> {
        self.write(move |tx, batch| {
            let req = req.clone();
            Box::pin(async move { chats::set_timer(tx, batch, &req).await })
        })
        .await
    }

    async fn settings(&self, account: AccountId) -> Result<(u64, Vec<u8>), StoreError> {
        self.read(move |tx| Box::pin(async move { account::settings(tx, account).await }))
            .await
    }

    async fn put_settings(
        &self,
        account: AccountId,
        base_version: u64,
        blob: Vec<u8>,
    ) -> Result<Result<u64, u64>, StoreError> {
        self.write(move |tx, _| {
            let blob = blob.clone();
            Box::pin(async move { account::put_settings(tx, account, base_version, &blob).await })
        })
        .await
    }

    async fn create_link_code(
        &self,
        account: AccountId,
        code_hash: [u8; 32],
        expires_at_ms: u64,
    ) -> Result<(), StoreError> {
        self.write(move |tx, _| {
            Box::pin(async move {
                account::create_link_code(tx, account, &code_hash, expires_at_ms).await
            })
        })
        .await
    }

    async fn link_with_code(
        &self,
        code_hash: [u8; 32],
        name: String,
        credential_hash: [u8; 32],
        now_ms: u64,
        max_devices: u32,
    ) -> Result<LinkOutcome, StoreError> {
        self.write(move |tx, _| {
            let name = name.clone();
            Box::pin(async move {
                account::link_with_code(
                    tx,
                    &code_hash,
                    &name,
                    &credential_hash,
                    now_ms,
                    max_devices,
                )
                .await
            })
        })
        .await
    }

    async fn post_status(&self, req: StatusRequest) -> Result<StatusOutcome, StoreError> {
        self.write(move |tx, batch| {
            let req = req.clone();
            Box::pin(async move { status::post(tx, batch, &req).await })
        })
        .await
    }

    async fn view_status(
        &self,
        viewer: (AccountId, DeviceId),
        author: AccountId,
        msg: ClientMsgId,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.write(move |tx, batch| {
            let msg = msg.clone();
            Box::pin(async move { status::view(tx, batch, viewer, author, &msg, now_ms).await })
        })
        .await
    }

    async fn set_business(
        &self,
        account: AccountId,
        profile: Option<BusinessProfile>,
        auto: Option<AutoMessages>,
    ) -> Result<(), StoreError> {
        self.write(move |tx, _| {
            let (profile, auto) = (profile.clone(), auto.clone());
            Box::pin(
                async move { business::set(tx, account, profile.as_ref(), auto.as_ref()).await },
            )
        })
        .await
    }

    async fn business_profile(
        &self,
        account: AccountId,
    ) -> Result<Option<BusinessProfile>, StoreError> {
        self.read(move |tx| Box::pin(async move { business::profile(tx, account).await }))
            .await
    }

    async fn report(&self, report: ReportRecord) -> Result<bool, StoreError> {
        self.write(move |tx, _| {
            let report = report.clone();
            Box::pin(async move { account::report(tx, &report).await })
        })
        .await
    }

    async fn reports(&self, before_ms: u64, limit: u32) -> Result<Vec<ReportRecord>, StoreError> {
        self.read(move |tx| Box::pin(async move { account::reports(tx, before_ms, limit).await }))
            .await
    }

    async fn set_push_target(
        &self,
        device: DeviceId,
        target: Option<PushTarget>,
    ) -> Result<bool, StoreError> {
        self.write(move |tx, _| {
            let target = target.clone();
            Box::pin(async move { push::set_target(tx, device, target.as_ref()).await })
        })
        .await
    }

    async fn drop_push_target(
        &self,
        device: DeviceId,
        target: PushTarget,
    ) -> Result<bool, StoreError> {
        self.write(move |tx, _| {
            let target = target.clone();
            Box::pin(async move { push::drop_target(tx, device, &target).await })
        })
        .await
    }

    async fn set_push_quiet(
        &self,
        device: DeviceId,
        until_ms: Option<u64>,
    ) -> Result<bool, StoreError> {
        self.write(move |tx, _| {
            Box::pin(async move { push::set_quiet(tx, device, until_ms).await })
        })
        .await
    }

    async fn push_settings(&self, device: DeviceId) -> Result<Option<PushSettings>, StoreError> {
        self.read(move |tx| Box::pin(async move { push::settings(tx, device).await }))
            .await
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.read(|tx| Box::pin(async move { query(tx, "SELECT 1", &[]).await.map(|_| ()) }))
            .await
    }

    async fn expire(&self, now_ms: u64, dedup_before_ms: u64) -> Result<u64, StoreError> {
        self.write(move |tx, _| {
            Box::pin(async move {
                // Bounded, like SQLite's: the caller runs again while a full
                // chunk was deleted.
                let n = execute(
                    tx,
                    "DELETE FROM queue WHERE ctid = ANY(ARRAY(
                         SELECT ctid FROM queue WHERE expires_ms <= $1 LIMIT $2))",
                    &[&to_i64(now_ms), &(EXPIRY_CHUNK as i64)],
                )
                .await?;
                execute(
                    tx,
                    "DELETE FROM sent WHERE ts < $1",
                    &[&to_i64(dedup_before_ms)],
                )
                .await?;
                execute(
                    tx,
                    "DELETE FROM codes WHERE expires_ms < $1",
                    &[&to_i64(now_ms.saturating_sub(86_400_000))],
                )
                .await?;
                status::expire(tx, now_ms).await?;
                Ok(n)
            })
        })
        .await
    }

    fn dense_seqs(&self) -> bool {
        true
    }
}
