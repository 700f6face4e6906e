//! What each client frame does.

mod group_calls;

pub(crate) use group_calls::sign_ticket;

use crate::calls::{CallError, CallInput};
use crate::conn::{Conn, Identity};
use crate::now_ms;
use crate::router::Transition;
use palaver_messaging::policy::{
    CODE_DIGITS, CodeDecision, Phone, hash_code, hash_credential, hashes_equal, new_code,
    new_credential,
};
use palaver_messaging::{NewDevice, SendOutcome, SendRequest, StoreError, VerifyOutcome};
use palaver_proto::codec::decode_client;
use palaver_proto::frames::{
    ClientFrame, LastSeenPrivacy, Media, OutEnvelope, PresenceInfo, ServerFrame,
};
use palaver_proto::{AccountId, CallId, ClientMsgId, DeviceId, ErrorCode, RequestId, Seq};
use std::time::{Duration, Instant};

/// Most sequence numbers in one `ack`, and message ids in one `read`.
const MAX_IDS_PER_FRAME: usize = 1024;
/// Longest ICE candidate, in bytes.
const MAX_CANDIDATE: usize = 2048;
/// Longest device name, in bytes.
const MAX_DEVICE_NAME: usize = 64;

/// A failed request, before it becomes an `error` frame.
#[derive(Debug)]
pub(crate) struct ReqError {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
    pub(crate) retry_after_ms: Option<u64>,
    pub(crate) missing: Vec<DeviceId>,
    pub(crate) extra: Vec<DeviceId>,
}

impl ReqError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ReqError {
            code,
            message: message.into(),
            retry_after_ms: None,
            missing: Vec::new(),
            extra: Vec::new(),
        }
    }

    pub(crate) fn rate_limited(wait: Duration) -> Self {
        ReqError {
            retry_after_ms: Some(wait.as_millis().max(1) as u64),
            ..ReqError::new(ErrorCode::RateLimited, "too many requests; retry later")
        }
    }
}

impl From<StoreError> for ReqError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        ReqError::new(ErrorCode::Internal, "internal error; retry later")
    }
}

fn invalid_phone() -> ReqError {
    ReqError::new(
        ErrorCode::InvalidPhone,
        "phone numbers are E.164: + and the digits of a number in service, no spaces",
    )
}

type Reply = Result<(), ReqError>;

impl Conn {
    pub(crate) async fn handle_text(&mut self, text: &str) {
        self.gw.metrics.frames_in.inc();
        let frame = match decode_client(text) {
            Ok(frame) => frame,
            Err(e) => return self.error(e.id, e.code, e.message),
        };
        let id = frame.request_id();
        if let Err(err) = self.dispatch(frame).await {
            self.reply_error(id, err);
        }
    }

    pub(crate) fn me(&self) -> Result<Identity, ReqError> {
        self.me.ok_or_else(|| {
            ReqError::new(
                ErrorCode::Unauthenticated,
                "authenticate first with an auth frame",
            )
        })
    }

    async fn dispatch(&mut self, frame: ClientFrame) -> Reply {
        use ClientFrame as F;
        match frame {
            F::Ping { id } => {
                self.reply(ServerFrame::Pong { id });
                Ok(())
            }
            F::RequestCode { id, phone } => self.request_code(id, &phone).await,
            F::Verify {
                id,
                phone,
                code,
                device_name,
            } => self.verify(id, &phone, &code, device_name).await,
            F::Auth {
                id,
                device,
                credential,
            } => self.auth(id, device, &credential).await,
            F::Lookup { id, phone } => self.lookup(id, &phone).await,
            F::Devices { id, account } => {
                self.me()?;
                let devices = self
                    .gw
                    .store
                    .devices(account)
                    .await?
                    .ok_or_else(not_found)?;
                self.reply(ServerFrame::DeviceList {
                    id,
                    account,
                    devices,
                });
                Ok(())
            }
            F::Send {
                id,
                msg,
                to,
                envelopes,
                edit_of,
            } => self.send(id, msg, to, envelopes, edit_of).await,
            F::Ack { seqs } => self.ack(seqs).await,
            F::Read { id, to, msgs } => self.read(id, to, msgs).await,
            F::Typing { to, typing } => {
                let me = self.me()?;
                // Only online targets can be told; check blocks only for them.
                if self.typing.check(&self.gw.limits.typing, Instant::now())
                    && self.gw.is_online(to).await
                {
                    let (a, b) = self.gw.store.blocks(me.account, to).await?;
                    if !a && !b {
                        self.gw.typing(me.account, me.device, to, typing);
                    }
                }
                Ok(())
            }
            F::PresenceSubscribe { id, accounts } => self.presence_subscribe(id, accounts).await,
            F::SetPrivacy { id, last_seen } => {
                let me = self.me()?;
                self.gw.store.set_privacy(me.account, last_seen).await?;
                self.gw.router.set_privacy(me.account, last_seen);
                self.reply(ServerFrame::Done { id });
                Ok(())
            }
            F::Block { id, account } => self.set_block(id, account, true).await,
            F::Unblock { id, account } => self.set_block(id, account, false).await,
            F::BlockedList { id } => {
                let me = self.me()?;
                let accounts = self.gw.store.blocked_accounts(me.account).await?;
                self.reply(ServerFrame::BlockedList { id, accounts });
                Ok(())
            }
            F::CallOffer { id, to, media, sdp } => self.call_offer(id, to, media, sdp).await,
            F::CallAccept { id, call, sdp } => {
                self.call_op(id, |device| CallInput::Accept { device, call, sdp })
                    .await
            }
            F::CallReject { id, call } => {
                self.call_op(id, |device| CallInput::Reject { device, call })
                    .await
            }
            F::CallHangup { id, call } => {
                self.call_op(id, |device| CallInput::Hangup { device, call })
                    .await
            }
            F::CallSdp {
                id,
                call,
                kind,
                sdp,
            } => {
                self.call_op(id, |device| CallInput::Sdp {
                    device,
                    call,
                    kind,
                    sdp,
                })
                .await
            }
            F::CallIce {
                id,
                call,
                candidate,
            } => {
                if candidate.len() > MAX_CANDIDATE {
                    return Err(ReqError::new(
                        ErrorCode::InvalidArgument,
                        "ICE candidate too long",
                    ));
                }
                self.call_op(id, |device| CallInput::Ice {
                    device,
                    call,
                    candidate,
                })
                .await
            }
            F::GroupCallStart {
                id,
                invite,
                media,
                group,
            } => self.group_call_start(id, invite, media, group).await,
            F::GroupCallJoin { id, room } => self.group_call_join(id, room).await,
            F::CallHistory { id, before, limit } => {
                let me = self.me()?;
                let limit = limit.unwrap_or(50).clamp(1, 500);
                let calls = self
                    .gw
                    .store
                    .call_history(me.account, before.unwrap_or(u64::MAX), limit)
                    .await?;
                self.reply(ServerFrame::CallLog { id, calls });
                Ok(())
            }
            f @ (F::GroupCreate { .. }
            | F::GroupGet { .. }
            | F::GroupList { .. }
            | F::GroupUpdate { .. }
            | F::GroupAdd { .. }
            | F::GroupRemove { .. }
            | F::GroupPromote { .. }
            | F::GroupDemote { .. }
            | F::GroupLeave { .. }
            | F::GroupInvite { .. }
            | F::GroupJoin { .. }
            | F::GroupSend { .. }) => self.group_frame(f).await,
            f @ (F::KeysUpload { .. } | F::KeysClaim { .. } | F::KeysCount { .. }) => {
                self.keys_frame(f).await
            }
            f @ (F::Revoke { .. }
            | F::StatusPost { .. }
            | F::StatusView { .. }
            | F::BusinessSet { .. }
            | F::BusinessGet { .. }
            | F::Report { .. }
            | F::SetTimer { .. }
            | F::SettingsGet { .. }
            | F::SettingsPut { .. }
            | F::LinkCodeCreate { .. }
            | F::Link { .. }) => self.chats_frame(f).await,
            f @ (F::PushSubscribe { .. } | F::PushUnsubscribe { .. } | F::PushQuiet { .. }) => {
                self.push_frame(f).await
            }
            F::RevokeDevice { id, device } => {
                let me = self.me()?;
                if !self
                    .gw
                    .store
                    .revoke_device(me.account, device, now_ms())
                    .await?
                {
                    return Err(not_found());
                }
                tracing::info!(revoked = device.0, "device unlinked");
                self.reply(ServerFrame::Done { id });
                Ok(())
            }
        }
    }

    async fn request_code(&mut self, id: RequestId, phone: &str) -> Reply {
        let phone = Phone::parse(phone).map_err(|_| invalid_phone())?;
        let now = Instant::now();
        let limits = &self.gw.limits;
        if let Err(wait) = limits.code_per_ip.check(&self.ip, now) {
            self.count_limited("code_per_ip");
            return Err(ReqError::rate_limited(wait));
        }
        if let Err(wait) = limits.code_per_phone.check(&phone.as_str().to_owned(), now) {
            self.count_limited("code_per_phone");
            return Err(ReqError::rate_limited(wait));
        }
        let code = new_code();
        let ttl = self.gw.config.code_ttl;
        let expires = now_ms() + ttl.as_millis() as u64;
        self.gw
            .store
            .put_code(&phone, hash_code(&phone, &code), expires)
            .await?;
        self.gw
            .verifier
            .send_code(&phone, &code)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "verifier failed");
                ReqError::new(
                    ErrorCode::Internal,
                    "the code could not be sent; retry later",
                )
            })?;
        self.reply(ServerFrame::CodeSent {
            id,
            expires_in_ms: ttl.as_millis() as u64,
        });
        Ok(())
    }

    async fn verify(&mut self, id: RequestId, phone: &str, code: &str, name: String) -> Reply {
        if self.me.is_some() {
            return Err(ReqError::new(
                ErrorCode::AlreadyAuthenticated,
                "link new devices from an unauthenticated connection",
            ));
        }
        let phone = Phone::parse(phone).map_err(|_| invalid_phone())?;
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
        if code.len() != CODE_DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ReqError::new(
                ErrorCode::CodeInvalid,
                "the code is 6 digits",
            ));
        }
        let credential = new_credential();
        let outcome = self
            .gw
            .store
            .verify_and_link(
                NewDevice {
                    code_hash: hash_code(&phone, code),
                    phone,
                    name,
                    credential_hash: hash_credential(&credential),
                },
                now_ms(),
                self.gw.config.code_max_attempts,
                self.gw.config.max_devices,
            )
            .await?;
        let label = match &outcome {
            VerifyOutcome::Linked { .. } => "linked",
            VerifyOutcome::DeviceLimit => "device_limit",
            VerifyOutcome::Rejected(_) => "rejected",
        };
        self.gw
            .metrics
            .registrations
            .get_or_create(&crate::metrics::KindLabel { kind: label })
            .inc();
        match outcome {
            VerifyOutcome::Linked {
                account,
                device,
                new_account,
            } => {
                tracing::info!(
                    account = account.0,
                    device = device.0,
                    new_account,
                    "device linked"
                );
                self.reply(ServerFrame::Registered {
                    id,
                    account,
                    device,
                    credential,
                    new_account,
                });
                Ok(())
            }
            VerifyOutcome::DeviceLimit => Err(ReqError::new(
                ErrorCode::DeviceLimit,
                format!(
                    "an account links at most {} devices; unlink one first",
                    self.gw.config.max_devices
                ),
            )),
            VerifyOutcome::Rejected(d) => Err(match d {
                CodeDecision::Wrong => ReqError::new(ErrorCode::CodeInvalid, "wrong code"),
                CodeDecision::Used => {
                    ReqError::new(ErrorCode::CodeUsed, "this code was already used")
                }
                CodeDecision::Exhausted => ReqError::new(
                    ErrorCode::TooManyAttempts,
                    "too many wrong codes; request a new one",
                ),
                CodeDecision::Expired | CodeDecision::Accept => ReqError::new(
                    ErrorCode::CodeExpired,
                    "no valid code for this number; request a new one",
                ),
            }),
        }
    }

    async fn auth(&mut self, id: RequestId, device: DeviceId, credential: &str) -> Reply {
        if self.me.is_some() {
            return Err(ReqError::new(
                ErrorCode::AlreadyAuthenticated,
                "already authenticated",
            ));
        }
        let limiter = &self.gw.limits.auth_failures_per_ip;
        let now = Instant::now();
        if let Err(wait) = limiter.peek(&self.ip, now) {
            self.count_limited("auth_failures_per_ip");
            return Err(ReqError::rate_limited(wait));
        }
        let record = self.gw.store.device(device).await?;
        let valid = record.as_ref().is_some_and(|r| {
            !r.revoked && hashes_equal(&r.credential_hash, &hash_credential(credential))
        });
        let Some(record) = record.filter(|_| valid) else {
            self.gw.metrics.auth_failures.inc();
            let _ = limiter.check(&self.ip, now);
            return Err(ReqError::new(
                ErrorCode::BadCredential,
                "unknown device or wrong credential",
            ));
        };
        let privacy = self
            .gw
            .store
            .presence(record.account)
            .await?
            .map(|p| p.privacy)
            .unwrap_or(LastSeenPrivacy::Nobody);
        self.me = Some(Identity {
            account: record.account,
            device,
        });
        self.gw
            .set_region_hint(device, self.id, self.region.clone());
        self.gw.metrics.authenticated.inc();
        let transition = self
            .gw
            .router
            .connect(record.account, device, &self.mailbox, privacy);
        if let Some(c) = &self.gw.cluster {
            // Before the first read of the queue: an envelope committed
            // after that read finds this node in the registry.
            c.register(record.account, device).await;
        }
        if transition == Transition::Changed {
            self.gw.announce(record.account, true, None, privacy);
        }
        self.reply(ServerFrame::Authed {
            id,
            account: record.account,
            device,
        });
        self.start_delivery();
        self.gw.push_connected(device);
        self.gw.call_input(CallInput::Reconnected { device }).await;
        self.catch_up().await;
        self.check_key_stock().await;
        Ok(())
    }

    async fn lookup(&mut self, id: RequestId, phone: &str) -> Reply {
        let me = self.me()?;
        if let Err(wait) = self.gw.limits.lookups.check(&me.device.0, Instant::now()) {
            self.count_limited("lookups_per_device");
            return Err(ReqError::rate_limited(wait));
        }
        let phone = Phone::parse(phone).map_err(|_| invalid_phone())?;
        let account = self
            .gw
            .store
            .account_by_phone(&phone)
            .await?
            .ok_or_else(not_found)?;
        self.reply(ServerFrame::Account { id, account });
        Ok(())
    }

    /// Replies to a stored (or already stored) message.
    pub(crate) fn sent(&mut self, id: RequestId, msg: ClientMsgId, ts: u64, duplicate: bool) {
        if duplicate {
            self.gw.metrics.messages_duplicate.inc();
        } else {
            self.gw.metrics.messages_stored.inc();
        }
        self.reply(ServerFrame::Sent {
            id,
            msg,
            ts,
            duplicate,
        });
    }

    pub(crate) fn check_send_rate(&mut self, me: Identity) -> Reply {
        if let Err(wait) = self.gw.limits.sends.check(&me.device.0, Instant::now()) {
            self.count_limited("sends_per_device");
            return Err(ReqError::rate_limited(wait));
        }
        Ok(())
    }

    async fn send(
        &mut self,
        id: RequestId,
        msg: ClientMsgId,
        to: AccountId,
        envelopes: Vec<OutEnvelope>,
        edit_of: Option<ClientMsgId>,
    ) -> Reply {
        let me = self.me()?;
        self.check_send_rate(me)?;
        let max = self.gw.config.max_envelopes_per_send;
        if envelopes.is_empty() || envelopes.len() > max {
            return Err(ReqError::new(
                ErrorCode::InvalidArgument,
                format!("a send carries 1 to {max} envelopes"),
            ));
        }
        let now = now_ms();
        let req = SendRequest {
            from: me.account,
            from_device: me.device,
            msg: msg.clone(),
            to,
            envelopes: envelopes
                .into_iter()
                .map(|e| (e.device, e.payload.0))
                .collect(),
            now_ms: now,
            expires_at_ms: now + self.gw.config.envelope_ttl.as_millis() as u64,
            edit_of,
            edit_window_ms: self.gw.config.edit_window.as_millis() as u64,
        };
        match self.gw.store.send(req).await? {
            outcome @ (SendOutcome::Stored { ts } | SendOutcome::Duplicate { ts }) => {
                let duplicate = matches!(outcome, SendOutcome::Duplicate { .. });
                self.sent(id, msg, ts, duplicate);
                Ok(())
            }
            SendOutcome::UnknownRecipient => Err(not_found()),
            SendOutcome::Amend(e) => Err(crate::chats::amend_error(e)),
            SendOutcome::Blocked => Err(blocked()),
            SendOutcome::Mismatch(m) if !m.duplicated.is_empty() => Err(ReqError::new(
                ErrorCode::InvalidArgument,
                "a device appears more than once in envelopes",
            )),
            SendOutcome::Mismatch(m) => Err(ReqError {
                missing: m.missing,
                extra: m.extra,
                ..ReqError::new(
                    ErrorCode::MismatchedDevices,
                    "envelopes must cover exactly the recipient's devices and your other devices",
                )
            }),
        }
    }

    async fn ack(&mut self, seqs: Vec<Seq>) -> Reply {
        let me = self.me()?;
        if seqs.len() > MAX_IDS_PER_FRAME {
            return Err(ReqError::new(
                ErrorCode::InvalidArgument,
                format!("at most {MAX_IDS_PER_FRAME} sequence numbers per ack"),
            ));
        }
        if seqs.is_empty() {
            return Ok(());
        }
        for s in &seqs {
            self.unacked.remove(s);
        }
        self.gw.metrics.envelopes_acked.inc_by(seqs.len() as u64);
        let now = now_ms();
        let expires = now + self.gw.config.envelope_ttl.as_millis() as u64;
        self.gw.store.ack(me.device, seqs, now, expires).await?;
        self.catch_up().await;
        Ok(())
    }

    async fn read(&mut self, id: RequestId, to: AccountId, msgs: Vec<ClientMsgId>) -> Reply {
        let me = self.me()?;
        self.check_send_rate(me)?;
        if msgs.is_empty() || msgs.len() > MAX_IDS_PER_FRAME {
            return Err(ReqError::new(
                ErrorCode::InvalidArgument,
                format!("a read receipt names 1 to {MAX_IDS_PER_FRAME} messages"),
            ));
        }
        let now = now_ms();
        let expires = now + self.gw.config.envelope_ttl.as_millis() as u64;
        let found = self
            .gw
            .store
            .read_receipts(me.account, me.device, to, msgs, now, expires)
            .await?;
        if !found {
            return Err(not_found());
        }
        self.reply(ServerFrame::Done { id });
        Ok(())
    }

    async fn presence_subscribe(&mut self, id: RequestId, accounts: Vec<AccountId>) -> Reply {
        let me = self.me()?;
        let max = self.gw.config.max_presence_subscriptions;
        if accounts.len() + self.watching.len() > max {
            return Err(ReqError::new(
                ErrorCode::InvalidArgument,
                format!("a connection follows at most {max} accounts"),
            ));
        }
        let mut presence = Vec::with_capacity(accounts.len());
        for account in accounts {
            let Some(record) = self.gw.store.presence(account).await? else {
                return Err(not_found());
            };
            let (_, they_block) = self.gw.store.blocks(me.account, account).await?;
            if they_block {
                presence.push(PresenceInfo {
                    account,
                    online: None,
                    last_seen: None,
                });
                continue;
            }
            let visible = record.privacy == LastSeenPrivacy::Everyone;
            let online = if visible {
                Some(self.gw.is_online(account).await)
            } else {
                None
            };
            presence.push(PresenceInfo {
                account,
                online,
                last_seen: record.last_seen_ms.filter(|_| visible),
            });
            if !self.watching.contains(&account) {
                self.gw.router.watch(account, me.account, &self.mailbox);
                self.watching.push(account);
            }
        }
        self.reply(ServerFrame::PresenceList { id, presence });
        Ok(())
    }

    async fn call_offer(
        &mut self,
        id: RequestId,
        to: AccountId,
        media: Media,
        sdp: String,
    ) -> Reply {
        let me = self.me()?;
        if let Err(wait) = self
            .gw
            .limits
            .call_offers
            .check(&me.device.0, Instant::now())
        {
            self.count_limited("call_offers_per_device");
            return Err(ReqError::rate_limited(wait));
        }
        if self.gw.store.devices(to).await?.is_none() {
            return Err(not_found());
        }
        let (i_block, they_block) = self.gw.store.blocks(me.account, to).await?;
        if i_block {
            return Err(blocked());
        }
        // Blocked by the callee: no device rings, as if all were offline.
        let (callee_devices, pushed_devices) = if they_block {
            (Vec::new(), Vec::new())
        } else {
            let connected = self.gw.connected_devices(to).await;
            let pushed = self.gw.pushable_devices(to, &connected).await;
            (connected, pushed)
        };
        // Unguessable, and below 2^53 so JavaScript clients keep it exact.
        let call = CallId(rand::random::<u64>() >> 11);
        let offer = CallInput::Offer {
            call,
            caller: me.account,
            caller_device: me.device,
            callee: to,
            callee_devices,
            pushed_devices,
            media,
            sdp,
        };
        // Pushes about the call wait in the mailbox until this reply is out.
        let ice_servers = self.gw.ice_servers(me.device);
        call_verdict(self.gw.call_input(offer).await)?;
        self.reply(ServerFrame::CallStarted {
            id,
            call,
            ice_servers,
        });
        Ok(())
    }

    async fn call_op(&mut self, id: RequestId, input: impl FnOnce(DeviceId) -> CallInput) -> Reply {
        let me = self.me()?;
        call_verdict(self.gw.call_input(input(me.device)).await)?;
        self.reply(ServerFrame::Done { id });
        Ok(())
    }

    async fn set_block(&mut self, id: RequestId, account: AccountId, block: bool) -> Reply {
        let me = self.me()?;
        if account == me.account {
            return Err(ReqError::new(
                ErrorCode::InvalidArgument,
                "you cannot block yourself",
            ));
        }
        if !self
            .gw
            .store
            .set_block(me.account, account, block, now_ms())
            .await?
        {
            return Err(not_found());
        }
        if block {
            // Stop their live presence updates at once.
            self.gw.router.unwatch_by(me.account, account);
        }
        self.reply(ServerFrame::Done { id });
        Ok(())
    }

    pub(crate) fn count_limited(&self, kind: &'static str) {
        self.gw
            .metrics
            .rate_limited
            .get_or_create(&crate::metrics::KindLabel { kind })
            .inc();
    }
}

/// The leader's verdict as a reply (see `calls::remote`).
fn call_verdict(v: Option<Result<(), CallError>>) -> Result<(), ReqError> {
    match v {
        Some(r) => r.map_err(call_error),
        None => Err(ReqError::new(
            ErrorCode::Internal,
            "the call service did not answer in time; retry",
        )),
    }
}

fn call_error(e: CallError) -> ReqError {
    let code = match e {
        CallError::NotInCall => ErrorCode::NotInCall,
        CallError::AlreadyInCall => ErrorCode::AlreadyInCall,
        CallError::AlreadyAnswered => ErrorCode::AlreadyAnswered,
        CallError::Glare => ErrorCode::Glare,
        CallError::SelfCall | CallError::DuplicateId => ErrorCode::InvalidArgument,
        CallError::WrongState => ErrorCode::CallState,
    };
    ReqError::new(code, e.to_string())
}

fn blocked() -> ReqError {
    ReqError::new(
        ErrorCode::Blocked,
        "you block this account; unblock it first",
    )
}

fn not_found() -> ReqError {
    ReqError::new(ErrorCode::NotFound, "no such account or device")
}
