//! The end-to-end key directory: what devices publish so that others can
//! open encrypted sessions with them, and what a claim returns.
//!
//! Keys are 32-byte Curve25519 or Ed25519 public keys; signatures are
//! 64-byte Ed25519 signatures by the device's signing key over
//! [`prekey_signature_message`]. All are base64 in JSON.

use crate::frames::Payload;
use crate::ids::DeviceId;
use serde::{Deserialize, Serialize};

/// Which signed key a signature covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignedKeyKind {
    /// The medium-term signed prekey.
    SignedPrekey,
    /// The last-resort key handed out when the one-time stock is empty.
    LastResort,
}

/// The text a device signs (with its Ed25519 signing key) to vouch for a
/// signed prekey or last-resort key.
pub fn prekey_signature_message(kind: SignedKeyKind, key_id: u32, public: &[u8]) -> String {
    use base64::Engine;
    let kind = match kind {
        SignedKeyKind::SignedPrekey => "signed-prekey",
        SignedKeyKind::LastResort => "last-resort",
    };
    let key = base64::engine::general_purpose::STANDARD.encode(public);
    format!("palaver-prekey-v1:{kind}:{key_id}:{key}")
}

/// A Curve25519 public key with its Ed25519 signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedKey {
    pub key_id: u32,
    pub public: Payload,
    pub signature: Payload,
}

/// A one-time prekey: handed out once, then deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneTimeKey {
    pub key_id: u32,
    pub public: Payload,
}

/// What a device publishes. The identity keys are fixed for the life of the
/// device: the first upload sets them, later uploads must repeat them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyUpload {
    /// Curve25519 identity key.
    pub identity_key: Payload,
    /// Ed25519 signing key.
    pub signing_key: Payload,
    /// Replaces the signed prekey (required on the first upload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_prekey: Option<SignedKey>,
    /// Added to the stock.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub one_time_keys: Vec<OneTimeKey>,
    /// Replaces the last-resort key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_resort: Option<SignedKey>,
}

/// Everything needed to open a session with one device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBundle {
    pub device: DeviceId,
    pub identity_key: Payload,
    pub signing_key: Payload,
    pub signed_prekey: SignedKey,
    /// One of the device's one-time keys, now deleted from the directory;
    /// `None` when the stock is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_key: Option<OneTimeKey>,
    /// Present when `one_time_key` is not and the device published one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_resort: Option<SignedKey>,
}
