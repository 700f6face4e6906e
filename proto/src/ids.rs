//! Identifier newtypes. They serialize as plain JSON numbers or strings.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

macro_rules! numeric_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

numeric_id!(
    /// An account: one phone number, one person.
    AccountId
);
numeric_id!(
    /// A device linked to an account. Device ids are unique across the
    /// whole server, not only within an account.
    DeviceId
);
numeric_id!(
    /// Position of an envelope in the server's queues. Strictly increasing
    /// per recipient device, in the order the envelopes were stored.
    Seq
);
numeric_id!(
    /// A 1:1 call, chosen by the server at random.
    CallId
);
numeric_id!(
    /// A group chat.
    GroupId
);
numeric_id!(
    /// A request id chosen by the client; the server echoes it in the reply.
    RequestId
);

/// The longest client message id accepted, in bytes.
pub const CLIENT_MSG_ID_MAX: usize = 64;

/// A message id chosen by the sending client (its idempotency key): 1 to 64
/// characters from `A-Z a-z 0-9 - _ . :`. A resend with the same id from the
/// same device is recognised and not stored twice.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ClientMsgId(String);

/// A string that is not a valid [`ClientMsgId`].
#[derive(Debug, thiserror::Error)]
#[error("a message id must be 1 to 64 characters from A-Z a-z 0-9 - _ . :")]
pub struct InvalidClientMsgId;

impl ClientMsgId {
    /// Checks and wraps a client message id.
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidClientMsgId> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= CLIENT_MSG_ID_MAX
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if ok {
            Ok(Self(s))
        } else {
            Err(InvalidClientMsgId)
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientMsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ClientMsgId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ClientMsgId::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_msg_id_rules() {
        assert!(ClientMsgId::new("a").is_ok());
        assert!(ClientMsgId::new("01HX-abc_def.9:1").is_ok());
        assert!(ClientMsgId::new("x".repeat(64)).is_ok());
        assert!(ClientMsgId::new("x".repeat(65)).is_err());
        assert!(ClientMsgId::new("").is_err());
        assert!(ClientMsgId::new("a b").is_err());
        assert!(ClientMsgId::new("é").is_err());
        assert!(serde_json::from_str::<ClientMsgId>("\"bad id\"").is_err());
    }
}
