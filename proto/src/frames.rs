//! The frames of protocol version 1. Every frame is one WebSocket text
//! message holding a JSON object whose `type` field names the frame.

use crate::business::{AutoMessages, BusinessProfile};
use crate::error::ErrorCode;
use crate::groups::{GroupEdit, GroupEvent, GroupInfo};
use crate::ids::{AccountId, CallId, ClientMsgId, DeviceId, GroupId, RequestId, Seq};
use crate::keys::{KeyBundle, KeyUpload};
use serde::{Deserialize, Serialize};

/// Opaque payload bytes; base64 (standard alphabet, padded) in JSON.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Payload(pub Vec<u8>);

mod payload_serde {
    use super::Payload;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    impl Serialize for Payload {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&STANDARD.encode(&self.0))
        }
    }

    impl<'de> Deserialize<'de> for Payload {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            STANDARD
                .decode(s.as_bytes())
                .map(Payload)
                .map_err(|_| serde::de::Error::custom("payload is not valid base64"))
        }
    }
}

/// Audio only, or audio and video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Media {
    Audio,
    Video,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// A callee device declined.
    Rejected,
    /// The callee was already in a call.
    Busy,
    /// The caller hung up before anyone answered.
    Cancelled,
    /// Nobody answered within the ring timeout.
    NoAnswer,
    /// A party hung up an answered call.
    HungUp,
    /// A party's device dropped and did not come back in time.
    ConnectionLost,
    /// No device of the callee could ring.
    Unavailable,
}

impl EndReason {
    /// Whether the callee should see this call as missed.
    pub fn is_missed(self) -> bool {
        matches!(
            self,
            EndReason::Busy | EndReason::Cancelled | EndReason::NoAnswer | EndReason::Unavailable
        )
    }
}

/// Kind of a session description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SdpKind {
    Offer,
    Answer,
}

/// One envelope of a send: the payload for one recipient device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutEnvelope {
    /// The device this copy is for.
    pub device: DeviceId,
    /// The bytes the device receives, end-to-end encrypted by the client.
    pub payload: Payload,
}

/// Who may see when an account was last online.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LastSeenPrivacy {
    /// Everyone who asks sees online status and last seen.
    #[default]
    Everyone,
    /// Nobody sees online status or last seen.
    Nobody,
}

/// What an envelope in a device queue carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvelopeKind {
    /// A message from another device: `payload` is set.
    Message,
    /// A device of `from` has received message `msg`.
    Delivered,
    /// `from` has read message `msg`.
    Read,
    /// A change to a group: `event` is set, `from` is who made it.
    GroupEvent,
    /// `from` deleted message `msg` for everyone.
    Revoke,
    /// `from` set the chat's disappearing-message timer to `timer` seconds.
    Timer,
    /// A status post of `from` (`payload`); it disappears with the status.
    Status,
    /// `from` viewed your status `msg`.
    StatusView,
    /// An automatic message (greeting or away) of the business `from` in its
    /// chat with `to`; `payload` is its text (UTF-8, not end-to-end
    /// encrypted: the business published it to the server).
    Auto,
}

/// A frame sent by a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Ask for a verification code for a phone number.
    RequestCode { id: RequestId, phone: String },
    /// Prove the phone number with the code; creates the account if needed
    /// and links a new device to it.
    Verify {
        id: RequestId,
        phone: String,
        code: String,
        device_name: String,
    },
    /// Authenticate this connection as a device.
    Auth {
        id: RequestId,
        device: DeviceId,
        credential: String,
    },
    /// Find the account of a phone number.
    Lookup { id: RequestId, phone: String },
    /// List the current devices of an account.
    Devices { id: RequestId, account: AccountId },
    /// Send a message: one envelope for every current device of `to` and
    /// for every other device of the sender's own account.
    Send {
        id: RequestId,
        msg: ClientMsgId,
        to: AccountId,
        envelopes: Vec<OutEnvelope>,
        /// This message replaces an earlier one of yours in the same chat.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        edit_of: Option<ClientMsgId>,
    },
    /// Acknowledge envelopes; the server deletes them. No reply.
    Ack { seqs: Vec<Seq> },
    /// Tell the sender of `msgs` that they were read.
    Read {
        id: RequestId,
        to: AccountId,
        msgs: Vec<ClientMsgId>,
    },
    /// Typing indicator for `to`'s online devices. No reply, not stored.
    Typing { to: AccountId, typing: bool },
    /// Follow the presence of these accounts on this connection.
    PresenceSubscribe {
        id: RequestId,
        accounts: Vec<AccountId>,
    },
    /// Set who may see this account's online status and last seen.
    SetPrivacy {
        id: RequestId,
        last_seen: LastSeenPrivacy,
    },
    /// Unlink one of this account's devices (this one included).
    RevokeDevice { id: RequestId, device: DeviceId },
    /// Heartbeat; answered by `pong`.
    Ping { id: RequestId },
    /// Stop receiving messages, calls, receipts, typing and presence from
    /// an account.
    Block { id: RequestId, account: AccountId },
    /// Undo `block`.
    Unblock { id: RequestId, account: AccountId },
    /// The accounts this account blocks.
    BlockedList { id: RequestId },
    /// Call `to`: rings every connected device of that account.
    CallOffer {
        id: RequestId,
        to: AccountId,
        media: Media,
        sdp: String,
    },
    /// Answer a ringing call on this device.
    CallAccept {
        id: RequestId,
        call: CallId,
        sdp: String,
    },
    /// Decline a ringing call (for every device of this account).
    CallReject { id: RequestId, call: CallId },
    /// Cancel a call you are making, or hang up an answered one.
    CallHangup { id: RequestId, call: CallId },
    /// A new session description for the other party (renegotiation,
    /// ICE restart).
    CallSdp {
        id: RequestId,
        call: CallId,
        kind: SdpKind,
        sdp: String,
    },
    /// A trickled ICE candidate for the other party (JSON of an
    /// `RTCIceCandidateInit`, opaque to the server).
    CallIce {
        id: RequestId,
        call: CallId,
        candidate: String,
    },
    /// This account's call history, newest first.
    CallHistory {
        id: RequestId,
        /// Only calls that started before this time (Unix ms).
        #[serde(default)]
        before: Option<u64>,
        #[serde(default)]
        limit: Option<u32>,
    },
    /// Create a group with these members (besides the creator).
    GroupCreate {
        id: RequestId,
        name: String,
        #[serde(default)]
        members: Vec<AccountId>,
    },
    /// A group this account belongs to.
    GroupGet { id: RequestId, group: GroupId },
    /// Every group this account belongs to.
    GroupList { id: RequestId },
    /// Change the name, description, picture or announcement-only mode
    /// (admins).
    GroupUpdate {
        id: RequestId,
        group: GroupId,
        #[serde(flatten)]
        edit: GroupEdit,
    },
    /// Add accounts to a group (admins).
    GroupAdd {
        id: RequestId,
        group: GroupId,
        accounts: Vec<AccountId>,
    },
    /// Remove members (admins; the creator cannot be removed).
    GroupRemove {
        id: RequestId,
        group: GroupId,
        accounts: Vec<AccountId>,
    },
    /// Make members admins (admins).
    GroupPromote {
        id: RequestId,
        group: GroupId,
        accounts: Vec<AccountId>,
    },
    /// Make admins plain members (admins; not the creator).
    GroupDemote {
        id: RequestId,
        group: GroupId,
        accounts: Vec<AccountId>,
    },
    /// Leave a group.
    GroupLeave { id: RequestId, group: GroupId },
    /// The group's invite code, created on first use; `reset` replaces it
    /// (admins).
    GroupInvite {
        id: RequestId,
        group: GroupId,
        #[serde(default)]
        reset: bool,
    },
    /// Join a group with its invite code.
    GroupJoin { id: RequestId, code: String },
    /// Send one message (a sender-key ciphertext) to every device of every
    /// member, and to the sender's own other devices.
    GroupSend {
        id: RequestId,
        group: GroupId,
        msg: ClientMsgId,
        payload: Payload,
        /// This message replaces an earlier one of yours in the group.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        edit_of: Option<ClientMsgId>,
    },
    /// Publish (or replace) this account's business profile and/or its
    /// automatic messages.
    BusinessSet {
        id: RequestId,
        #[serde(default)]
        profile: Option<BusinessProfile>,
        #[serde(default)]
        auto: Option<AutoMessages>,
    },
    /// The business profile of an account.
    BusinessGet { id: RequestId, account: AccountId },
    /// Report an account to the operators, optionally with messages the
    /// reporter chooses to disclose (decrypted by the reporter's client)
    /// and blocking it at the same time.
    Report {
        id: RequestId,
        account: AccountId,
        reason: String,
        #[serde(default)]
        msgs: Vec<ClientMsgId>,
        #[serde(default)]
        evidence: Option<Payload>,
        #[serde(default)]
        block: bool,
    },
    /// Post a status (a payload encrypted for the audience) that disappears
    /// after `signaling.status_ttl` (24 h). Delete it early with `revoke`.
    StatusPost {
        id: RequestId,
        msg: ClientMsgId,
        audience: Vec<AccountId>,
        payload: Payload,
    },
    /// Tell the author you viewed their status `msg`.
    StatusView {
        id: RequestId,
        author: AccountId,
        msg: ClientMsgId,
    },
    /// Delete one of your messages for everyone: queued copies are dropped,
    /// devices that already got it receive a `revoke` envelope.
    Revoke { id: RequestId, msg: ClientMsgId },
    /// Set the disappearing-message timer of a 1:1 chat (`to`) or a group
    /// (`group`, admins): 0 (off), 86400, 604800 or 7776000 seconds.
    SetTimer {
        id: RequestId,
        #[serde(default)]
        to: Option<AccountId>,
        #[serde(default)]
        group: Option<GroupId>,
        seconds: u64,
    },
    /// This account's settings blob (encrypted by the clients).
    SettingsGet { id: RequestId },
    /// Replace the settings blob; `version` is the version it was based on.
    SettingsPut {
        id: RequestId,
        version: u64,
        blob: Payload,
    },
    /// A one-time code that links a new device to this account (shown as a
    /// QR code by this device).
    LinkCodeCreate { id: RequestId },
    /// Link this (unauthenticated) connection's new device with a code from
    /// `link_code_create`.
    Link {
        id: RequestId,
        code: String,
        device_name: String,
    },
    /// Publish this device's keys (see `docs/protocol.md`, "Keys").
    KeysUpload {
        id: RequestId,
        #[serde(flatten)]
        keys: KeyUpload,
    },
    /// Claim a key bundle for every current device of `account` (or only
    /// `device`). Each bundle consumes one one-time key.
    KeysClaim {
        id: RequestId,
        account: AccountId,
        #[serde(default)]
        device: Option<DeviceId>,
    },
    /// How many one-time keys this device has left.
    KeysCount { id: RequestId },
    /// Start an ad-hoc group call and ring `invite`; answered by
    /// `group_call_ticket` (this device joins the SFU with it).
    GroupCallStart {
        id: RequestId,
        #[serde(default)]
        invite: Vec<AccountId>,
        media: Media,
        /// Ring every member of this group (you must be one), besides
        /// `invite`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<GroupId>,
    },
    /// Join a group call this account started or was invited to; answered
    /// by `group_call_ticket`.
    GroupCallJoin { id: RequestId, room: String },
    /// Wake this device with pushes while it has no connection
    /// (docs/push.md); replaces the device's earlier subscription.
    PushSubscribe {
        id: RequestId,
        target: crate::push::PushTarget,
    },
    /// Stop pushes to this device.
    PushUnsubscribe { id: RequestId },
    /// No message pushes to this device until `until_ms` (Unix ms); `null`
    /// ends the quiet time.
    PushQuiet {
        id: RequestId,
        #[serde(default)]
        until_ms: Option<u64>,
    },
}

/// A STUN or TURN server, as `RTCIceServer` wants it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// One call of the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallLogEntry {
    pub call: CallId,
    pub caller: AccountId,
    pub caller_device: DeviceId,
    pub callee: AccountId,
    /// The callee device that answered.
    pub answered_by: Option<DeviceId>,
    pub media: Media,
    pub reason: EndReason,
    /// Unix milliseconds.
    pub started_at: u64,
    pub answered_at: Option<u64>,
    pub ended_at: u64,
}

/// Presence of one account as this viewer may see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceInfo {
    pub account: AccountId,
    /// `None` when the account hides its presence.
    pub online: Option<bool>,
    /// Unix milliseconds of the last disconnect; `None` when hidden or never seen.
    pub last_seen: Option<u64>,
}

/// A frame sent by the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerFrame {
    /// First frame on every connection.
    Hello {
        protocol: u32,
        /// Largest frame the server accepts, in bytes.
        max_frame_bytes: u32,
        /// The server closes connections silent for this long.
        idle_timeout_ms: u64,
    },
    /// A code was sent to the phone (reply to `request_code`).
    CodeSent { id: RequestId, expires_in_ms: u64 },
    /// A device was linked (reply to `verify`). Keep the credential secret:
    /// it is shown once and stored only as a hash.
    Registered {
        id: RequestId,
        account: AccountId,
        device: DeviceId,
        credential: String,
        new_account: bool,
    },
    /// The connection is authenticated (reply to `auth`).
    Authed {
        id: RequestId,
        account: AccountId,
        device: DeviceId,
    },
    /// The account of a phone number (reply to `lookup`).
    Account { id: RequestId, account: AccountId },
    /// The current devices of an account (reply to `devices`).
    DeviceList {
        id: RequestId,
        account: AccountId,
        devices: Vec<DeviceId>,
    },
    /// The message is stored for every recipient device (reply to `send`).
    Sent {
        id: RequestId,
        msg: ClientMsgId,
        /// Server time of the first accepted send, Unix milliseconds.
        ts: u64,
        /// True when this was a resend of an already stored message.
        duplicate: bool,
    },
    /// The request succeeded and has nothing more to say.
    Done { id: RequestId },
    /// Current presence (reply to `presence_subscribe`).
    PresenceList {
        id: RequestId,
        presence: Vec<PresenceInfo>,
    },
    /// Reply to `ping`.
    Pong { id: RequestId },
    /// A queued envelope. The client must `ack` its `seq`; until then it is
    /// redelivered on every new connection of this device.
    Envelope {
        seq: Seq,
        kind: EnvelopeKind,
        from: AccountId,
        from_device: DeviceId,
        msg: ClientMsgId,
        /// Unix milliseconds when the server stored the original message.
        ts: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<Payload>,
        /// The group of a group message or group event.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<GroupId>,
        /// What changed, for `group_event` envelopes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event: Option<Box<GroupEvent>>,
        /// For edits: the message this one replaces.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        edit_of: Option<ClientMsgId>,
        /// For `timer` envelopes: the new timer in seconds (0: off).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timer: Option<u64>,
        /// For `timer` envelopes: the account `from` set the timer with
        /// (the chat is between `from` and `to`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<AccountId>,
    },
    /// Someone is typing to this account. Not stored, not acked.
    Typing {
        from: AccountId,
        from_device: DeviceId,
        typing: bool,
    },
    /// Presence of a followed account changed. Not acked.
    Presence(PresenceInfo),
    /// A call was placed (reply to `call_offer`); what happens next arrives
    /// as `call_*` pushes.
    CallStarted {
        id: RequestId,
        call: CallId,
        ice_servers: Vec<IceServer>,
    },
    /// A call rings on this device.
    CallIncoming {
        call: CallId,
        from: AccountId,
        from_device: DeviceId,
        media: Media,
        sdp: String,
        ice_servers: Vec<IceServer>,
    },
    /// The callee's devices are ringing.
    CallRinging { call: CallId },
    /// The callee answered on `device`.
    CallAccepted {
        call: CallId,
        device: DeviceId,
        sdp: String,
    },
    /// Another device of this account answered: stop ringing.
    CallAnsweredElsewhere { call: CallId },
    /// The call is over.
    CallEnded { call: CallId, reason: EndReason },
    /// The other party's new session description.
    CallSdp {
        call: CallId,
        from_device: DeviceId,
        kind: SdpKind,
        sdp: String,
    },
    /// The other party's ICE candidate.
    CallIce {
        call: CallId,
        from_device: DeviceId,
        candidate: String,
    },
    /// Someone called while you were in a call; they heard "busy".
    CallWaiting { call: CallId, from: AccountId },
    /// The other party's device dropped or came back.
    CallPeer { call: CallId, connected: bool },
    /// The accounts this account blocks (reply to `blocked_list`).
    BlockedList {
        id: RequestId,
        accounts: Vec<AccountId>,
    },
    /// Call history (reply to `call_history`).
    CallLog {
        id: RequestId,
        calls: Vec<CallLogEntry>,
    },
    /// A group (reply to `group_create`, `group_get`, `group_update`,
    /// `group_add`, `group_remove`, `group_promote`, `group_demote`,
    /// `group_join`).
    Group { id: RequestId, group: GroupInfo },
    /// The groups of this account (reply to `group_list`).
    GroupList {
        id: RequestId,
        groups: Vec<GroupInfo>,
    },
    /// A group's invite code (reply to `group_invite`).
    GroupInvite {
        id: RequestId,
        group: GroupId,
        code: String,
    },
    /// One-time keys left for this device (reply to `keys_upload` and
    /// `keys_count`).
    KeysStock { id: RequestId, one_time_keys: u32 },
    /// Key bundles (reply to `keys_claim`). Devices that published no keys
    /// are listed in `without_keys`.
    KeyBundles {
        id: RequestId,
        account: AccountId,
        bundles: Vec<KeyBundle>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        without_keys: Vec<DeviceId>,
    },
    /// This device's one-time keys are running low: upload more.
    KeysLow { one_time_keys: u32 },
    /// The settings blob (reply to `settings_get` and `settings_put`);
    /// version 0 and an empty blob when never set.
    Settings {
        id: RequestId,
        version: u64,
        blob: Payload,
    },
    /// A business profile (reply to `business_get`); `None` if the account
    /// published none.
    Business {
        id: RequestId,
        account: AccountId,
        profile: Option<BusinessProfile>,
    },
    /// Another device of this account stored settings `version`.
    SettingsChanged { version: u64 },
    /// A device-link code (reply to `link_code_create`).
    LinkCode {
        id: RequestId,
        code: String,
        expires_in_ms: u64,
    },
    /// What a device needs to join a group call on the SFU (reply to
    /// `group_call_start` and `group_call_join`): POST an SDP offer to
    /// `{sfu_url}/v1/rooms/{room}/join` with `Authorization: Bearer {token}`
    /// before `expires_at` (Unix seconds). See docs/sfu.md.
    GroupCallTicket {
        id: RequestId,
        room: String,
        sfu_url: String,
        token: String,
        expires_at: u64,
        ice_servers: Vec<IceServer>,
    },
    /// Someone invited this account to a group call; join it with
    /// `group_call_join`.
    GroupCallIncoming {
        room: String,
        from: AccountId,
        from_device: DeviceId,
        media: Media,
    },
    /// The SFU node hosting `room` died or is draining: the room now lives
    /// on another node. Pushed to every device that took a ticket for the
    /// room; a device in the call joins again with this fresh ticket (same
    /// fields as `group_call_ticket`), others ignore it. See docs/sfu.md.
    GroupCallMoved {
        room: String,
        sfu_url: String,
        token: String,
        expires_at: u64,
        ice_servers: Vec<IceServer>,
    },
    /// A request or frame failed.
    Error(ErrorFrame),
}

/// The body of an `error` frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorFrame {
    /// The request this answers, when the frame had a readable id.
    pub id: Option<RequestId>,
    pub code: ErrorCode,
    /// Human-readable detail; never parse it.
    pub message: String,
    /// True when the server closes the connection after this frame.
    pub fatal: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// For `mismatched_devices`: current devices the send did not cover.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<DeviceId>,
    /// For `mismatched_devices`: devices in the send that are not current.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<DeviceId>,
}

impl ErrorFrame {
    /// An error frame with no extra details.
    pub fn new(id: Option<RequestId>, code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorFrame {
            id,
            code,
            message: message.into(),
            fatal: code.is_fatal(),
            retry_after_ms: None,
            missing: Vec::new(),
            extra: Vec::new(),
        }
    }
}

impl ClientFrame {
    /// The request id, for frames that get a reply.
    pub fn request_id(&self) -> Option<RequestId> {
        use ClientFrame::*;
        match self {
            RequestCode { id, .. }
            | Verify { id, .. }
            | Auth { id, .. }
            | Lookup { id, .. }
            | Devices { id, .. }
            | Send { id, .. }
            | Read { id, .. }
            | PresenceSubscribe { id, .. }
            | SetPrivacy { id, .. }
            | RevokeDevice { id, .. }
            | Ping { id }
            | Block { id, .. }
            | Unblock { id, .. }
            | BlockedList { id }
            | CallOffer { id, .. }
            | CallAccept { id, .. }
            | CallReject { id, .. }
            | CallHangup { id, .. }
            | CallSdp { id, .. }
            | CallIce { id, .. }
            | CallHistory { id, .. }
            | GroupCreate { id, .. }
            | GroupGet { id, .. }
            | GroupList { id }
            | GroupUpdate { id, .. }
            | GroupAdd { id, .. }
            | GroupRemove { id, .. }
            | GroupPromote { id, .. }
            | GroupDemote { id, .. }
            | GroupLeave { id, .. }
            | GroupInvite { id, .. }
            | GroupJoin { id, .. }
            | GroupSend { id, .. }
            | KeysUpload { id, .. }
            | KeysClaim { id, .. }
            | KeysCount { id }
            | Revoke { id, .. }
            | StatusPost { id, .. }
            | BusinessSet { id, .. }
            | BusinessGet { id, .. }
            | Report { id, .. }
            | StatusView { id, .. }
            | SetTimer { id, .. }
            | SettingsGet { id }
            | SettingsPut { id, .. }
            | LinkCodeCreate { id }
            | Link { id, .. }
            | GroupCallStart { id, .. }
            | GroupCallJoin { id, .. }
            | PushSubscribe { id, .. }
            | PushUnsubscribe { id }
            | PushQuiet { id, .. } => Some(*id),
            Ack { .. } | Typing { .. } => None,
        }
    }
}
