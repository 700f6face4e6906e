//! Push for offline devices: where a device wants to be woken
//! ([`PushTarget`], sent in `push_subscribe`) and what the push says
//! ([`PushPayload`], the JSON a device receives). docs/push.md.

use crate::{AccountId, CallId};
use serde::{Deserialize, Serialize};

/// Longest Web Push endpoint URL accepted, in bytes.
pub const MAX_ENDPOINT: usize = 1024;
/// Longest relay name and relay token accepted, in bytes.
pub const MAX_RELAY_NAME: usize = 64;
pub const MAX_RELAY_TOKEN: usize = 4096;

/// Where to send a device's pushes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PushTarget {
    /// A browser's `PushSubscription.toJSON()`: the push service URL and
    /// the `keys` (base64url) for RFC 8291 encryption.
    WebPush {
        endpoint: String,
        p256dh: String,
        auth: String,
    },
    /// An APNs/FCM relay configured on the server (`[[push.relays]]`), with
    /// the device's opaque token for it.
    Relay { relay: String, token: String },
}

/// What a device receives (after decryption, for Web Push). It never
/// carries a sender or content of a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PushPayload {
    /// `count` envelopes were queued for the device since this burst of
    /// pushes began.
    Message { count: u32 },
    /// An incoming 1:1 call rings. Ids are decimal strings here (a push
    /// handler may not parse 64-bit numbers exactly).
    Call {
        #[serde(with = "decimal")]
        call: CallId,
        #[serde(with = "decimal")]
        from: AccountId,
        video: bool,
    },
    /// The call stopped ringing (answered elsewhere, rejected, cancelled,
    /// timed out).
    CallCancel {
        #[serde(with = "decimal")]
        call: CallId,
    },
}

/// A numeric id as a decimal string.
mod decimal {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<T: Copy + Into<u64>, S: Serializer>(
        v: &T,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&(*v).into().to_string())
    }

    pub(super) fn deserialize<'de, T: From<u64>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<T, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<u64>()
            .map(T::from)
            .map_err(serde::de::Error::custom)
    }
}

impl From<u64> for CallId {
    fn from(v: u64) -> Self {
        CallId(v)
    }
}

impl From<CallId> for u64 {
    fn from(v: CallId) -> Self {
        v.0
    }
}

impl From<u64> for AccountId {
    fn from(v: u64) -> Self {
        AccountId(v)
    }
}

impl From<AccountId> for u64 {
    fn from(v: AccountId) -> Self {
        v.0
    }
}

impl PushPayload {
    /// The label of the payload's kind (for metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            PushPayload::Message { .. } => "message",
            PushPayload::Call { .. } => "call",
            PushPayload::CallCancel { .. } => "call_cancel",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientFrame;

    #[test]
    fn frames_and_payloads_on_the_wire() {
        let f: ClientFrame = serde_json::from_str(
            r#"{"type":"push_subscribe","id":1,"target":{"kind":"web_push",
            "endpoint":"https://p.example/x","p256dh":"AA","auth":"BB"}}"#,
        )
        .unwrap();
        assert!(matches!(
            f,
            ClientFrame::PushSubscribe {
                target: PushTarget::WebPush { .. },
                ..
            }
        ));
        let f: ClientFrame =
            serde_json::from_str(r#"{"type":"push_quiet","id":2,"until_ms":null}"#).unwrap();
        assert_eq!(
            f,
            ClientFrame::PushQuiet {
                id: crate::RequestId(2),
                until_ms: None
            }
        );
        let p = PushPayload::Call {
            call: CallId(7),
            from: AccountId(3),
            video: true,
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"kind":"call","call":"7","from":"3","video":true}"#
        );
        assert_eq!(
            serde_json::from_str::<PushPayload>(&serde_json::to_string(&p).unwrap()).unwrap(),
            p
        );
        assert_eq!(
            serde_json::to_string(&PushPayload::Message { count: 4 }).unwrap(),
            r#"{"kind":"message","count":4}"#
        );
    }
}
