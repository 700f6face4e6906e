//! Palaver's wire types: identifiers, the frames of the `/v1/ws` WebSocket
//! protocol, and the error codes clients can rely on.
//!
//! Everything here is plain data with serde derives; there is no I/O. The
//! protocol is documented frame by frame in `docs/protocol.md`, and
//! [`codec`] holds the only functions that turn bytes into frames.

pub mod business;
pub mod codec;
pub mod error;
pub mod frames;
pub mod groups;
pub mod ids;
pub mod join_token;
pub mod keys;
pub mod push;

pub use error::ErrorCode;
pub use frames::{ClientFrame, ServerFrame};
pub use ids::{AccountId, CallId, ClientMsgId, DeviceId, GroupId, RequestId, Seq};

/// The protocol version spoken on `/v1/ws`.
pub const PROTOCOL_VERSION: u32 = 1;
