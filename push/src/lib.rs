//! Web Push building blocks, sans-IO: what a push sender computes before
//! it makes an HTTP request, and how it reads the answer.
//!
//! - [`ece`]: payload encryption for a browser subscription (RFC 8291,
//!   `aes128gcm` of RFC 8188, one record).
//! - [`vapid`]: the application server's key and the `Authorization:
//!   vapid` header (RFC 8292, ES256 JWT).
//! - [`request`]: the headers and body of one push (RFC 8030: `TTL`,
//!   `Urgency`, `Topic`) and what the push service's status code means.
//!
//! No sockets, no clock: callers pass the current Unix time. The sender
//! (HTTP client, SSRF policy on resolved addresses, coalescing, retries)
//! is not part of this crate; see docs/push.md for what exists.

pub mod ece;
pub mod request;
pub mod vapid;

use base64::Engine;

/// base64url without padding, as Web Push uses everywhere.
pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url with or without padding.
pub(crate) fn unb64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}
