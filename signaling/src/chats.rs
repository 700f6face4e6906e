//! Delete for everyone, disappearing timers, synced settings and linking a
//! device with a code from another device.

use crate::conn::Conn;
use crate::groups::group_error;
use crate::handlers::ReqError;
use crate::now_ms;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use palaver_messaging::chats::{AmendError, Chat, valid_timer};
use palaver_messaging::policy::{hash_credential, link_code_hash, new_credential};
use palaver_messaging::{
    LinkOutcome, RevokeRequest, StatusOutcome, StatusRequest, TimerError, TimerRequest,
};
use palaver_proto::frames::{ClientFrame, Payload, ServerFrame};
use palaver_proto::{AccountId, ClientMsgId, ErrorCode, GroupId, RequestId};
use rand::RngCore;
use std::sync::Arc;
use std::time::Instant;

type Reply = Result<(), ReqError>;

/// Longest device name, in bytes.
const MAX_DEVICE_NAME: usize = 64;
/// Longest link code accepted, in bytes.
const MAX_LINK_CODE: usize = 64;

pub(crate) fn amend_error(e: AmendError) -> ReqError {
    let code = match e {
        AmendError::NotFound => ErrorCode::NotFound,
        AmendError::WindowClosed => ErrorCode::WindowClosed,
    };
    ReqError::new(code, e.to_string())
}

impl Conn {
    /// Handles `revoke`, `set_timer`, `settings_*`, `link_code_create`, `link`.
    pub(crate) async fn chats_frame(&mut self, frame: ClientFrame) -> Reply {
        use ClientFrame as F;
        match frame {
            F::Revoke { id, msg } => self.revoke(id, msg).await,
            F::SetTimer {
                id,
                to,
                group,
                seconds,
            } => self.set_timer(id, to, group, seconds).await,
            F::SettingsGet { id } => {
                let me = self.me()?;
                let (version, blob) = self.gw.store.settings(me.account).await?;
                self.reply(ServerFrame::Settings {
                    id,
                    version,
                    blob: Payload(blob),
                });
                Ok(())
            }
            F::SettingsPut { id, version, blob } => self.settings_put(id, version, blob).await,
            F::LinkCodeCreate { id } => self.link_code_create(id).await,
            F::StatusPost {
                id,
                msg,
                audience,
                payload,
            } => self.status_post(id, msg, audience, payload.0).await,
            F::BusinessSet { id, profile, auto } => {
                let me = self.me()?;
                let bad = |e: palaver_messaging::business::BusinessError| {
                    ReqError::new(ErrorCode::InvalidArgument, e.to_string())
                };
                if let Some(p) = &profile {
                    palaver_messaging::business::check_profile(p).map_err(bad)?;
                }
                if let Some(a) = &auto {
                    palaver_messaging::business::check_auto(a).map_err(bad)?;
                }
                self.gw
                    .store
                    .set_business(me.account, profile, auto)
                    .await?;
                self.reply(ServerFrame::Done { id });
                Ok(())
            }
            F::Report {
                id,
                account,
                reason,
                msgs,
                evidence,
                block,
            } => {
                self.report(id, account, reason, msgs, evidence, block)
                    .await
            }
            F::BusinessGet { id, account } => {
                self.me()?;
                let profile = self.gw.store.business_profile(account).await?;
                self.reply(ServerFrame::Business {
                    id,
                    account,
                    profile,
                });
                Ok(())
            }
            F::StatusView { id, author, msg } => {
                let me = self.me()?;
                let seen = self
                    .gw
                    .store
                    .view_status((me.account, me.device), author, msg, now_ms())
                    .await?;
                if !seen {
                    return Err(ReqError::new(
                        ErrorCode::NotFound,
                        "no such status, or it is not for you",
                    ));
                }
                self.reply(ServerFrame::Done { id });
                Ok(())
            }
            F::Link {
                id,
                code,
                device_name,
            } => self.link(id, code, device_name).await,
            _ => Err(ReqError::new(ErrorCode::Internal, "not a chat frame")),
        }
    }

    async fn revoke(&mut self, id: RequestId, msg: ClientMsgId) -> Reply {
        let me = self.me()?;
        self.check_send_rate(me)?;
        let now = now_ms();
        let req = RevokeRequest {
            account: me.account,
            device: me.device,
            msg,
            now_ms: now,
            window_ms: self.gw.config.revoke_window.as_millis() as u64,
            expires_at_ms: self.expiry(now),
        };
        self.gw.store.revoke(req).await?.map_err(amend_error)?;
        self.reply(ServerFrame::Done { id });
        Ok(())
    }

    async fn report(
        &mut self,
        id: RequestId,
        account: AccountId,
        reason: String,
        msgs: Vec<ClientMsgId>,
        evidence: Option<Payload>,
        block: bool,
    ) -> Reply {
        let me = self.me()?;
        self.check_send_rate(me)?;
        let bad = |m: &str| Err(ReqError::new(ErrorCode::InvalidArgument, m));
        if reason.is_empty() || reason.chars().count() > 500 {
            return bad("reason is 1 to 500 characters");
        }
        if msgs.len() > 50 || evidence.as_ref().is_some_and(|e| e.0.len() > 64 * 1024) {
            return bad("at most 50 message ids and 64 KiB of evidence");
        }
        let record = palaver_messaging::ReportRecord {
            reporter: me.account,
            reported: account,
            reason,
            msgs,
            evidence: evidence.map(|e| e.0),
            created_ms: now_ms(),
        };
        if !self.gw.store.report(record).await? {
            return Err(ReqError::new(
                ErrorCode::NotFound,
                "no such account or device",
            ));
        }
        if block {
            self.gw
                .store
                .set_block(me.account, account, true, now_ms())
                .await?;
        }
        tracing::info!(reported = account.0, "account reported");
        self.reply(ServerFrame::Done { id });
        Ok(())
    }

    async fn status_post(
        &mut self,
        id: RequestId,
        msg: ClientMsgId,
        mut audience: Vec<AccountId>,
        payload: Vec<u8>,
    ) -> Reply {
        let me = self.me()?;
        self.check_send_rate(me)?;
        let max = self.gw.config.max_status_audience;
        audience.sort_unstable();
        audience.dedup();
        if audience.len() > max {
            return Err(ReqError::new(
                ErrorCode::InvalidArgument,
                format!("a status reaches at most {max} accounts"),
            ));
        }
        let now = now_ms();
        let req = StatusRequest {
            author: me.account,
            device: me.device,
            msg: msg.clone(),
            payload,
            audience,
            now_ms: now,
            expires_at_ms: now + self.gw.config.status_ttl.as_millis() as u64,
        };
        match self.gw.store.post_status(req).await? {
            StatusOutcome::Stored { ts, .. } => self.sent(id, msg, ts, false),
            StatusOutcome::Duplicate { ts } => self.sent(id, msg, ts, true),
            StatusOutcome::UnknownAccount(a) => {
                return Err(ReqError::new(
                    ErrorCode::NotFound,
                    format!("account {a} does not exist"),
                ));
            }
        }
        Ok(())
    }

    async fn set_timer(
        &mut self,
        id: RequestId,
        to: Option<AccountId>,
        group: Option<GroupId>,
        seconds: u64,
    ) -> Reply {
        let me = self.me()?;
        let chat = match (to, group) {
            (Some(a), None) => Chat::Direct(a),
            (None, Some(g)) => Chat::Group(g),
            _ => {
                return Err(ReqError::new(
                    ErrorCode::InvalidArgument,
                    "name exactly one of to and group",
                ));
            }
        };
        if !valid_timer(seconds) {
            return Err(ReqError::new(
                ErrorCode::InvalidArgument,
                "timers are 0, 86400, 604800 or 7776000 seconds",
            ));
        }
        self.check_send_rate(me)?;
        let now = now_ms();
        let req = TimerRequest {
            actor: me.account,
            chat,
            seconds,
            now_ms: now,
            expires_at_ms: self.expiry(now),
        };
        match self.gw.store.set_timer(req).await? {
            Ok(()) => {
                self.reply(ServerFrame::Done { id });
                Ok(())
            }
            Err(TimerError::Group(e)) => Err(group_error(e)),
            Err(TimerError::UnknownAccount) => Err(ReqError::new(
                ErrorCode::NotFound,
                "no such account or device",
            )),
            Err(TimerError::Blocked) => Err(ReqError::new(
                ErrorCode::Blocked,
                "you block this account; unblock it first",
            )),
        }
    }

    async fn settings_put(&mut self, id: RequestId, base: u64, blob: Payload) -> Reply {
        let me = self.me()?;
        let max = self.gw.config.max_settings_bytes;
        if blob.0.len() > max {
            return Err(ReqError::new(
                ErrorCode::InvalidArgument,
                format!("the settings blob is at most {max} bytes"),
            ));
        }
        let version = match self
            .gw
            .store
            .put_settings(me.account, base, blob.0.clone())
            .await?
        {
            Ok(v) => v,
            Err(current) => {
                return Err(ReqError::new(
                    ErrorCode::StaleVersion,
                    format!("the settings are at version {current}; fetch, merge and retry"),
                ));
            }
        };
        let push = Arc::new(ServerFrame::SettingsChanged { version });
        for device in self.gw.connected_devices(me.account).await {
            if device != me.device {
                self.gw.deliver_frame(device, push.clone());
            }
        }
        self.reply(ServerFrame::Settings { id, version, blob });
        Ok(())
    }

    async fn link_code_create(&mut self, id: RequestId) -> Reply {
        let me = self.me()?;
        self.check_send_rate(me)?;
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        let code = URL_SAFE_NO_PAD.encode(bytes);
        let ttl = self.gw.config.link_code_ttl;
        self.gw
            .store
            .create_link_code(
                me.account,
                link_code_hash(&code),
                now_ms() + ttl.as_millis() as u64,
            )
            .await?;
        self.reply(ServerFrame::LinkCode {
            id,
            code,
            expires_in_ms: ttl.as_millis() as u64,
        });
        Ok(())
    }

    async fn link(&mut self, id: RequestId, code: String, name: String) -> Reply {
        if self.me.is_some() {
            return Err(ReqError::new(
                ErrorCode::AlreadyAuthenticated,
                "link new devices from an unauthenticated connection",
            ));
        }
        if name.is_empty() || name.len() > MAX_DEVICE_NAME || name.chars().any(char::is_control) {
            return Err(ReqError::new(
                ErrorCode::InvalidArgument,
                "device_name must be 1 to 64 bytes without control characters",
            ));
        }
        if let Err(wait) = self.gw.limits.verify_per_ip.check(&self.ip, Instant::now()) {
            self.count_limited("verify_per_ip");
            return Err(ReqError::rate_limited(wait));
        }
        let invalid =
            || ReqError::new(ErrorCode::CodeInvalid, "unknown, used or expired link code");
        if code.is_empty() || code.len() > MAX_LINK_CODE {
            return Err(invalid());
        }
        let credential = new_credential();
        let outcome = self
            .gw
            .store
            .link_with_code(
                link_code_hash(&code),
                name,
                hash_credential(&credential),
                now_ms(),
                self.gw.config.max_devices,
            )
            .await?;
        match outcome {
            LinkOutcome::Linked { account, device } => {
                tracing::info!(
                    account = account.0,
                    device = device.0,
                    "device linked by code"
                );
                self.reply(ServerFrame::Registered {
                    id,
                    account,
                    device,
                    credential,
                    new_account: false,
                });
                Ok(())
            }
            LinkOutcome::Invalid => Err(invalid()),
            LinkOutcome::DeviceLimit => Err(ReqError::new(
                ErrorCode::DeviceLimit,
                format!(
                    "an account links at most {} devices; unlink one first",
                    self.gw.config.max_devices
                ),
            )),
        }
    }
}
