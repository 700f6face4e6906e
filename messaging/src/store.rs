//! The storage trait: every durable read and write of the messaging core.

use crate::chats::{AmendError, Chat};
use crate::groups::{GroupError, GroupOp};
use crate::keys::{CheckedUpload, KeyError};
use crate::policy::{CodeDecision, DeviceMismatch, Phone};
use async_trait::async_trait;
use palaver_proto::business::{AutoMessages, BusinessProfile};
use palaver_proto::frames::{CallLogEntry, EnvelopeKind, LastSeenPrivacy};
use palaver_proto::groups::GroupInfo;
use palaver_proto::keys::KeyBundle;
use palaver_proto::push::PushTarget;
use palaver_proto::{AccountId, ClientMsgId, DeviceId, GroupId, Seq};
use std::sync::Arc;

/// Most envelopes one [`Store::expire`] call deletes.
pub const EXPIRY_CHUNK: u64 = 10_000;

/// A failure of the storage backend itself (not a rule violation).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    #[error("the store is shut down")]
    Closed,
}

/// An envelope as it sits in a device queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEnvelope {
    pub seq: Seq,
    /// The device whose queue holds it.
    pub device: DeviceId,
    pub kind: EnvelopeKind,
    pub from: AccountId,
    pub from_device: DeviceId,
    pub msg: ClientMsgId,
    /// Unix milliseconds when the original message was stored.
    pub ts: u64,
    /// For `group_event` envelopes, the event as JSON.
    pub payload: Option<Vec<u8>>,
    /// The group of a group message or group event.
    pub group: Option<GroupId>,
    /// For edits: the message this one replaces.
    pub ref_msg: Option<ClientMsgId>,
}

/// Receives what a store has just committed. Called on the store's own
/// thread, after commit, in commit order: implementations must not block.
pub trait Notifier: Send + Sync + 'static {
    /// New envelopes, in increasing `seq` order per device.
    fn envelopes(&self, envelopes: &[Arc<StoredEnvelope>]);
    /// A device was revoked: drop its live connections.
    fn device_revoked(&self, device: DeviceId);
}

/// A device to link after a verification code is checked.
#[derive(Debug, Clone)]
pub struct NewDevice {
    pub phone: Phone,
    pub code_hash: [u8; 32],
    pub name: String,
    pub credential_hash: [u8; 32],
}

/// The result of `verify_and_link`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyOutcome {
    Linked {
        account: AccountId,
        device: DeviceId,
        new_account: bool,
    },
    /// The code was not accepted; the decision says why.
    Rejected(CodeDecision),
    /// The code was right but the account has no room for another device.
    DeviceLimit,
}

/// A message to store for every recipient device.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub from: AccountId,
    pub from_device: DeviceId,
    pub msg: ClientMsgId,
    pub to: AccountId,
    pub envelopes: Vec<(DeviceId, Vec<u8>)>,
    pub now_ms: u64,
    /// Queue expiry; a chat timer may cut it short.
    pub expires_at_ms: u64,
    /// The earlier message of the sender this one replaces.
    pub edit_of: Option<ClientMsgId>,
    pub edit_window_ms: u64,
}

/// The result of `send`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// Stored now, at this time.
    Stored { ts: u64 },
    /// Already stored by an earlier send with the same id, at this time.
    Duplicate { ts: u64 },
    /// The envelopes do not match the current devices; nothing stored.
    Mismatch(DeviceMismatch),
    /// The recipient account does not exist; nothing stored.
    UnknownRecipient,
    /// The sender blocks the recipient; nothing stored.
    Blocked,
    /// The edit is refused; nothing stored.
    Amend(AmendError),
}

/// A new group.
#[derive(Debug, Clone)]
pub struct NewGroup {
    pub creator: AccountId,
    pub name: String,
    /// Initial members besides the creator, checked by
    /// [`crate::groups::check_new`].
    pub members: Vec<AccountId>,
    pub now_ms: u64,
    /// Expiry of the event envelopes.
    pub expires_at_ms: u64,
    pub limit: usize,
}

/// Which group a change is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupTarget {
    Id(GroupId),
    /// The group whose invite code this is (for [`GroupOp::Join`]).
    InviteCode(String),
}

/// A change to a group.
#[derive(Debug, Clone)]
pub struct GroupChangeRequest {
    pub actor: AccountId,
    pub target: GroupTarget,
    pub op: GroupOp,
    /// The new invite code, for [`GroupOp::ResetInvite`].
    pub new_code: Option<String>,
    pub now_ms: u64,
    pub expires_at_ms: u64,
    pub limit: usize,
}

/// A message to every member of a group.
#[derive(Debug, Clone)]
pub struct GroupSendRequest {
    pub from: AccountId,
    pub from_device: DeviceId,
    pub group: GroupId,
    pub msg: ClientMsgId,
    pub payload: Vec<u8>,
    pub now_ms: u64,
    pub expires_at_ms: u64,
    pub edit_of: Option<ClientMsgId>,
    pub edit_window_ms: u64,
}

/// The result of `group_send`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupSendOutcome {
    Stored { ts: u64 },
    Duplicate { ts: u64 },
    Refused(GroupError),
    Amend(AmendError),
}

/// Delete a message for everyone.
#[derive(Debug, Clone)]
pub struct RevokeRequest {
    pub account: AccountId,
    /// The device asking (it gets no `revoke` envelope).
    pub device: DeviceId,
    pub msg: ClientMsgId,
    pub now_ms: u64,
    pub window_ms: u64,
    pub expires_at_ms: u64,
}

/// Set a chat's disappearing-message timer.
#[derive(Debug, Clone)]
pub struct TimerRequest {
    pub actor: AccountId,
    pub chat: Chat,
    /// One of [`crate::chats::TIMER_CHOICES`].
    pub seconds: u64,
    pub now_ms: u64,
    pub expires_at_ms: u64,
}

/// Why a timer change is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerError {
    Group(GroupError),
    UnknownAccount,
    Blocked,
}

/// A report of an account, for the operators.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReportRecord {
    pub reporter: AccountId,
    pub reported: AccountId,
    pub reason: String,
    pub msgs: Vec<ClientMsgId>,
    /// What the reporter chose to disclose, base64 in JSON.
    #[serde(serialize_with = "as_base64")]
    pub evidence: Option<Vec<u8>>,
    pub created_ms: u64,
}

fn as_base64<S: serde::Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    use base64::Engine;
    match v {
        Some(b) => s.serialize_some(&base64::engine::general_purpose::STANDARD.encode(b)),
        None => s.serialize_none(),
    }
}

/// A status post.
#[derive(Debug, Clone)]
pub struct StatusRequest {
    pub author: AccountId,
    pub device: DeviceId,
    pub msg: ClientMsgId,
    pub payload: Vec<u8>,
    /// The accounts that may see it (distinct).
    pub audience: Vec<AccountId>,
    pub now_ms: u64,
    /// When the status disappears (24 h after posting by default).
    pub expires_at_ms: u64,
}

/// The result of `post_status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusOutcome {
    /// Stored; `reached` audience accounts (blocked ones are skipped).
    Stored {
        ts: u64,
        reached: usize,
    },
    Duplicate {
        ts: u64,
    },
    UnknownAccount(AccountId),
}

/// The result of linking a device with a code from another device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOutcome {
    Linked {
        account: AccountId,
        device: DeviceId,
    },
    /// Unknown, used or expired code.
    Invalid,
    DeviceLimit,
}

/// The result of `claim_keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyClaim {
    pub bundles: Vec<KeyBundle>,
    pub without_keys: Vec<DeviceId>,
    /// One-time keys left, per device in `bundles`.
    pub stock: Vec<(DeviceId, u32)>,
}

/// What a connection needs to know about a device when it authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub device: DeviceId,
    pub account: AccountId,
    pub credential_hash: [u8; 32],
    pub revoked: bool,
}

/// Presence settings and history of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceRecord {
    pub privacy: LastSeenPrivacy,
    pub last_seen_ms: Option<u64>,
}

/// How to wake a device that has no connection (docs/push.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSettings {
    /// The account of the device.
    pub account: AccountId,
    /// Where pushes go; `None`: the device did not subscribe.
    pub target: Option<PushTarget>,
    /// No message pushes before this time (Unix ms).
    pub quiet_until_ms: Option<u64>,
}

/// Durable state of the messaging core. Every method is atomic.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a fresh verification code for a phone, replacing any earlier one.
    async fn put_code(
        &self,
        phone: &Phone,
        hash: [u8; 32],
        expires_at_ms: u64,
    ) -> Result<(), StoreError>;

    /// Checks a code and, if it is right, consumes it and links a device,
    /// creating the account on first use.
    async fn verify_and_link(
        &self,
        new: NewDevice,
        now_ms: u64,
        max_attempts: u32,
        max_devices: u32,
    ) -> Result<VerifyOutcome, StoreError>;

    /// The device with this id, revoked or not.
    async fn device(&self, device: DeviceId) -> Result<Option<DeviceRecord>, StoreError>;

    /// The account of a phone number.
    async fn account_by_phone(&self, phone: &Phone) -> Result<Option<AccountId>, StoreError>;

    /// Current (not revoked) devices of an account, in id order; `None` if
    /// the account does not exist.
    async fn devices(&self, account: AccountId) -> Result<Option<Vec<DeviceId>>, StoreError>;

    /// Revokes a device of `account` and drops its queue. False if the
    /// device is not a current device of that account.
    async fn revoke_device(
        &self,
        account: AccountId,
        device: DeviceId,
        now_ms: u64,
    ) -> Result<bool, StoreError>;

    /// Stores one envelope per recipient device, unless this device already
    /// sent a message with this id. When the recipient blocks the sender,
    /// the send succeeds but only the sender's own devices get a copy.
    async fn send(&self, req: SendRequest) -> Result<SendOutcome, StoreError>;

    /// Up to `limit` envelopes of a device's queue after `after`, in order.
    async fn fetch(
        &self,
        device: DeviceId,
        after: Seq,
        limit: u32,
    ) -> Result<Vec<StoredEnvelope>, StoreError>;

    /// Deletes acknowledged envelopes of a device and queues a `delivered`
    /// receipt to the sender's devices for each acknowledged message.
    /// Unknown or foreign sequence numbers are ignored.
    async fn ack(
        &self,
        device: DeviceId,
        seqs: Vec<Seq>,
        now_ms: u64,
        receipt_expires_at_ms: u64,
    ) -> Result<(), StoreError>;

    /// Queues a `read` receipt for each message to every device of `to`.
    /// False if `to` does not exist.
    async fn read_receipts(
        &self,
        from: AccountId,
        from_device: DeviceId,
        to: AccountId,
        msgs: Vec<ClientMsgId>,
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<bool, StoreError>;

    /// Presence settings of an account; `None` if it does not exist.
    async fn presence(&self, account: AccountId) -> Result<Option<PresenceRecord>, StoreError>;

    /// Sets who may see the account's last seen.
    async fn set_privacy(
        &self,
        account: AccountId,
        privacy: LastSeenPrivacy,
    ) -> Result<(), StoreError>;

    /// Records when the account was last online.
    async fn set_last_seen(&self, account: AccountId, at_ms: u64) -> Result<(), StoreError>;

    /// `account` blocks (or unblocks) `other`. False if `other` does not exist.
    async fn set_block(
        &self,
        account: AccountId,
        other: AccountId,
        blocked: bool,
        now_ms: u64,
    ) -> Result<bool, StoreError>;

    /// Whether `a` blocks `b`, and whether `b` blocks `a`.
    async fn blocks(&self, a: AccountId, b: AccountId) -> Result<(bool, bool), StoreError>;

    /// The accounts `account` blocks, oldest first.
    async fn blocked_accounts(&self, account: AccountId) -> Result<Vec<AccountId>, StoreError>;

    /// Adds a finished call to the history of its caller and callee.
    async fn record_call(&self, entry: CallLogEntry) -> Result<(), StoreError>;

    /// Calls of `account` (made or received) that started before
    /// `before_ms`, newest first.
    async fn call_history(
        &self,
        account: AccountId,
        before_ms: u64,
        limit: u32,
    ) -> Result<Vec<CallLogEntry>, StoreError>;

    /// Creates a group; every member device gets a `created` event.
    async fn create_group(
        &self,
        new: NewGroup,
    ) -> Result<Result<GroupInfo, GroupError>, StoreError>;

    /// Applies a change by a member (or joins with an invite code) and
    /// delivers its events to every member device, and to removed members.
    async fn change_group(
        &self,
        req: GroupChangeRequest,
    ) -> Result<Result<GroupInfo, GroupError>, StoreError>;

    /// The invite code of a group (admins only), set to `fresh` if the group
    /// has none yet.
    async fn group_invite_code(
        &self,
        actor: AccountId,
        group: GroupId,
        fresh: String,
    ) -> Result<Result<String, GroupError>, StoreError>;

    /// A group as `viewer` sees it; `None` if it does not exist or `viewer`
    /// is not a member.
    async fn group(
        &self,
        viewer: AccountId,
        group: GroupId,
    ) -> Result<Option<GroupInfo>, StoreError>;

    /// Every group `account` belongs to, oldest first.
    async fn groups_of(&self, account: AccountId) -> Result<Vec<GroupInfo>, StoreError>;

    /// Stores one envelope with the same payload for every device of every
    /// member but the sending device.
    async fn group_send(&self, req: GroupSendRequest) -> Result<GroupSendOutcome, StoreError>;

    /// Publishes a device's keys: checks that the identity keys did not
    /// change, replaces the signed prekey and last-resort key when given and
    /// adds the one-time keys to the stock. Returns the stock.
    async fn upload_keys(
        &self,
        device: DeviceId,
        keys: CheckedUpload,
    ) -> Result<Result<u32, KeyError>, StoreError>;

    /// Claims a bundle for each current device of `account` (or only
    /// `device`, if it is one), taking one one-time key from each, atomically.
    /// Returns the bundles, the devices without published keys, and the
    /// stock left per device; `None` if the account does not exist.
    async fn claim_keys(
        &self,
        account: AccountId,
        device: Option<DeviceId>,
    ) -> Result<Option<KeyClaim>, StoreError>;

    /// One-time keys left for a device; `None` if it published no keys.
    async fn key_stock(&self, device: DeviceId) -> Result<Option<u32>, StoreError>;

    /// Deletes one of `account`'s messages for everyone: drops still-queued
    /// copies (and queued edits of it) and queues a `revoke` envelope to
    /// every other device of the chat that already received it.
    async fn revoke(&self, req: RevokeRequest) -> Result<Result<(), AmendError>, StoreError>;

    /// Sets a chat's timer and tells every device of the chat.
    async fn set_timer(&self, req: TimerRequest) -> Result<Result<(), TimerError>, StoreError>;

    /// The account's settings blob and its version (0 and empty if never set).
    async fn settings(&self, account: AccountId) -> Result<(u64, Vec<u8>), StoreError>;

    /// Stores a new settings blob if `base_version` is the current version;
    /// returns the new version, or `Err(current)` when it is stale.
    async fn put_settings(
        &self,
        account: AccountId,
        base_version: u64,
        blob: Vec<u8>,
    ) -> Result<Result<u64, u64>, StoreError>;

    /// Stores a device-link code (its hash) for `account`.
    async fn create_link_code(
        &self,
        account: AccountId,
        code_hash: [u8; 32],
        expires_at_ms: u64,
    ) -> Result<(), StoreError>;

    /// Consumes a link code and links a new device to its account.
    async fn link_with_code(
        &self,
        code_hash: [u8; 32],
        name: String,
        credential_hash: [u8; 32],
        now_ms: u64,
        max_devices: u32,
    ) -> Result<LinkOutcome, StoreError>;

    /// Posts a status: one envelope per device of the audience (and the
    /// author's other devices), all expiring with the status. Deleting it
    /// early is a `revoke` of its message id.
    async fn post_status(&self, req: StatusRequest) -> Result<StatusOutcome, StoreError>;

    /// Queues a `status_view` receipt to the author's devices. False if the
    /// status is gone or `viewer` is not in its audience.
    async fn view_status(
        &self,
        viewer: (AccountId, DeviceId),
        author: AccountId,
        msg: ClientMsgId,
        now_ms: u64,
    ) -> Result<bool, StoreError>;

    /// Sets a business's public profile and/or automatic messages (`None`
    /// leaves that part unchanged).
    async fn set_business(
        &self,
        account: AccountId,
        profile: Option<BusinessProfile>,
        auto: Option<AutoMessages>,
    ) -> Result<(), StoreError>;

    /// The business profile of an account, if it published one.
    async fn business_profile(
        &self,
        account: AccountId,
    ) -> Result<Option<BusinessProfile>, StoreError>;

    /// Stores a report. False if the reported account does not exist.
    async fn report(&self, report: ReportRecord) -> Result<bool, StoreError>;

    /// Reports filed before `before_ms`, newest first.
    async fn reports(&self, before_ms: u64, limit: u32) -> Result<Vec<ReportRecord>, StoreError>;

    /// Sets (or, with `None`, removes) a current device's push target. False
    /// if the device is unknown or revoked.
    async fn set_push_target(
        &self,
        device: DeviceId,
        target: Option<PushTarget>,
    ) -> Result<bool, StoreError>;

    /// Removes a device's push target if it is still `target` (a push
    /// service said it is gone). True if it was removed.
    async fn drop_push_target(
        &self,
        device: DeviceId,
        target: PushTarget,
    ) -> Result<bool, StoreError>;

    /// Silences message pushes to a current device until `until_ms` (`None`:
    /// not silenced). False if the device is unknown or revoked.
    async fn set_push_quiet(
        &self,
        device: DeviceId,
        until_ms: Option<u64>,
    ) -> Result<bool, StoreError>;

    /// A current device's push settings; `None` if it is unknown or revoked.
    /// Revoking a device forgets them.
    async fn push_settings(&self, device: DeviceId) -> Result<Option<PushSettings>, StoreError>;

    /// Checks that the store can read and commit. Because writes commit in
    /// submission order, a successful check also means every write
    /// submitted before it has committed.
    async fn health(&self) -> Result<(), StoreError>;

    /// Deletes envelopes past their expiry (a bounded chunk per call) and
    /// forgets message ids older than `dedup_before_ms`. Returns how many
    /// envelopes were deleted; call again while that is a full chunk.
    async fn expire(&self, now_ms: u64, dedup_before_ms: u64) -> Result<u64, StoreError>;

    /// True if each device's sequence numbers are consecutive (1, 2, 3...),
    /// so that a gap tells a connection that it missed a notification (one
    /// from another node, say) and must re-read its queue. SQLite numbers
    /// all queues from one counter: gaps there mean nothing.
    fn dense_seqs(&self) -> bool {
        false
    }
}
