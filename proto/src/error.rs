//! Error codes carried by `error` frames. They are part of the protocol:
//! clients may match on them, so a code never changes meaning.

use serde::{Deserialize, Serialize};

/// Why a frame or request failed. Serialized in `snake_case`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON, or a field has the wrong type or value.
    MalformedFrame,
    /// The frame's `type` is not one this protocol version knows.
    UnknownFrameType,
    /// The frame is larger than the server's limit. The connection closes.
    FrameTooLarge,
    /// Binary frames are not part of protocol version 1.
    UnsupportedFrame,
    /// The request needs an authenticated connection.
    Unauthenticated,
    /// `auth` on a connection that is already authenticated.
    AlreadyAuthenticated,
    /// The connection did not authenticate in time. The connection closes.
    AuthTimeout,
    /// The device id and credential do not match an active device.
    BadCredential,
    /// The phone number is not a valid E.164 number.
    InvalidPhone,
    /// The verification code is wrong.
    CodeInvalid,
    /// The verification code has expired, or none was requested.
    CodeExpired,
    /// The verification code was already used.
    CodeUsed,
    /// Too many wrong codes: request a new one.
    TooManyAttempts,
    /// The account already has the maximum number of devices.
    DeviceLimit,
    /// Too many requests: wait `retry_after_ms` before trying again.
    RateLimited,
    /// The account or device does not exist.
    NotFound,
    /// A send does not cover exactly the current devices of the recipient
    /// and of the sender's other devices; `missing` and `extra` say why.
    MismatchedDevices,
    /// A field is well-formed but not acceptable (empty lists, duplicates, ...).
    InvalidArgument,
    /// You block this account: unblock it first.
    Blocked,
    /// A signed key's signature does not verify.
    BadSignature,
    /// The edit or delete-for-everyone window of the message has passed.
    WindowClosed,
    /// The settings changed since the version the update was based on;
    /// fetch, merge and retry.
    StaleVersion,
    /// The account may not do this (for example, not a group admin).
    Forbidden,
    /// The group has reached its size limit.
    GroupFull,
    /// The call does not exist or this device is not part of it.
    NotInCall,
    /// This device is already in a call.
    AlreadyInCall,
    /// Another device answered first.
    AlreadyAnswered,
    /// The callee is calling you at the same time: answer that call.
    Glare,
    /// The call is not in a state that allows this (for example an ICE
    /// candidate from a device that has not answered yet).
    CallState,
    /// The server is shutting down; reconnect to another node or later.
    ShuttingDown,
    /// Something failed inside the server; the request can be retried.
    Internal,
    /// The request is well-formed JSON but cannot be accepted as given (a
    /// push subscription with a plain-http endpoint, bad keys, an unknown
    /// relay, ...); `message` says which part.
    BadRequest,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            MalformedFrame => "malformed_frame",
            UnknownFrameType => "unknown_frame_type",
            FrameTooLarge => "frame_too_large",
            UnsupportedFrame => "unsupported_frame",
            Unauthenticated => "unauthenticated",
            AlreadyAuthenticated => "already_authenticated",
            AuthTimeout => "auth_timeout",
            BadCredential => "bad_credential",
            InvalidPhone => "invalid_phone",
            CodeInvalid => "code_invalid",
            CodeExpired => "code_expired",
            CodeUsed => "code_used",
            TooManyAttempts => "too_many_attempts",
            DeviceLimit => "device_limit",
            RateLimited => "rate_limited",
            NotFound => "not_found",
            MismatchedDevices => "mismatched_devices",
            InvalidArgument => "invalid_argument",
            Blocked => "blocked",
            BadSignature => "bad_signature",
            Forbidden => "forbidden",
            WindowClosed => "window_closed",
            StaleVersion => "stale_version",
            GroupFull => "group_full",
            NotInCall => "not_in_call",
            AlreadyInCall => "already_in_call",
            AlreadyAnswered => "already_answered",
            Glare => "glare",
            CallState => "call_state",
            ShuttingDown => "shutting_down",
            Internal => "internal",
            BadRequest => "bad_request",
        }
    }

    /// Whether the server closes the connection after sending this error.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            ErrorCode::FrameTooLarge | ErrorCode::AuthTimeout | ErrorCode::ShuttingDown
        )
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn as_str_matches_serde() {
        use ErrorCode::*;
        for code in [
            MalformedFrame,
            UnknownFrameType,
            FrameTooLarge,
            UnsupportedFrame,
            Unauthenticated,
            AlreadyAuthenticated,
            AuthTimeout,
            BadCredential,
            InvalidPhone,
            CodeInvalid,
            CodeExpired,
            CodeUsed,
            TooManyAttempts,
            DeviceLimit,
            RateLimited,
            NotFound,
            MismatchedDevices,
            InvalidArgument,
            Blocked,
            BadSignature,
            Forbidden,
            WindowClosed,
            StaleVersion,
            GroupFull,
            ShuttingDown,
            Internal,
            BadRequest,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
