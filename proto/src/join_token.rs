//! Join tokens for group calls: signed (HMAC-SHA256), short-lived grants
//! that signaling issues and the SFU checks, so the SFU needs no database.
//!
//! A token is `<claims>.<signature>`: the claims are JSON in unpadded
//! base64url, the signature is HMAC-SHA256 over the encoded claims with the
//! secret shared by signaling and the SFU, also unpadded base64url. The
//! format is documented in `docs/sfu.md`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::{AccountId, DeviceId};

/// The longest room name accepted, in bytes.
pub const ROOM_NAME_MAX: usize = 64;

/// The longest token accepted, in bytes (claims are small).
pub const TOKEN_MAX: usize = 1024;

/// What a token grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinClaims {
    /// The room (group call) the holder may join.
    pub room: String,
    /// Who joins.
    pub account: AccountId,
    /// From which device.
    pub device: DeviceId,
    /// May send audio and video.
    pub publish: bool,
    /// May receive the others' audio and video.
    pub subscribe: bool,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
    /// The call's admin (its starter): may kick others and ask them to
    /// mute. Absent means false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the join token is malformed")]
    Malformed,
    #[error("the join token's signature is wrong")]
    BadSignature,
    #[error("the join token expired")]
    Expired,
    #[error("the room name is not valid")]
    BadRoom,
}

/// True for 1 to 64 characters from `A-Z a-z 0-9 - _ .`.
pub fn valid_room_name(room: &str) -> bool {
    !room.is_empty()
        && room.len() <= ROOM_NAME_MAX
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length")
}

/// Signs `claims` with `secret`.
pub fn sign(secret: &[u8], claims: &JoinClaims) -> Result<String, TokenError> {
    if !valid_room_name(&claims.room) {
        return Err(TokenError::BadRoom);
    }
    let json = serde_json::to_vec(claims).map_err(|_| TokenError::Malformed)?;
    let body = URL_SAFE_NO_PAD.encode(json);
    let mut m = mac(secret);
    m.update(body.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    Ok(format!("{body}.{sig}"))
}

/// Checks the signature (in constant time) and the expiry against `now_unix`
/// (seconds since the Unix epoch), and returns the claims.
pub fn verify(secret: &[u8], token: &str, now_unix: u64) -> Result<JoinClaims, TokenError> {
    if token.len() > TOKEN_MAX {
        return Err(TokenError::Malformed);
    }
    let (body, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed)?;
    let mut m = mac(secret);
    m.update(body.as_bytes());
    m.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
    let json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TokenError::Malformed)?;
    let claims: JoinClaims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    if !valid_room_name(&claims.room) {
        return Err(TokenError::BadRoom);
    }
    if claims.exp <= now_unix {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> JoinClaims {
        JoinClaims {
            room: "team-42".into(),
            account: AccountId(7),
            device: DeviceId(9),
            publish: true,
            subscribe: true,
            exp,
            admin: false,
        }
    }

    #[test]
    fn round_trip() {
        let t = sign(b"secret", &claims(100)).unwrap();
        assert_eq!(verify(b"secret", &t, 99).unwrap(), claims(100));
    }

    #[test]
    fn expired_at_exp() {
        let t = sign(b"secret", &claims(100)).unwrap();
        assert_eq!(verify(b"secret", &t, 100), Err(TokenError::Expired));
    }

    #[test]
    fn other_secret_is_refused() {
        let t = sign(b"secret", &claims(100)).unwrap();
        assert_eq!(verify(b"other", &t, 1), Err(TokenError::BadSignature));
    }

    #[test]
    fn edited_claims_are_refused() {
        let t = sign(b"secret", &claims(100)).unwrap();
        let (_, sig) = t.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(10_000)).unwrap());
        let forged = format!("{forged}.{sig}");
        assert_eq!(verify(b"secret", &forged, 1), Err(TokenError::BadSignature));
    }

    #[test]
    fn garbage_is_malformed() {
        for t in ["", ".", "abc", "a.b", "!!.??", &"x".repeat(5000)] {
            assert!(verify(b"secret", t, 1).is_err(), "{t}");
        }
    }

    #[test]
    fn room_names() {
        assert!(valid_room_name("a-b_c.9"));
        assert!(!valid_room_name(""));
        assert!(!valid_room_name("a/b"));
        assert!(!valid_room_name(&"a".repeat(65)));
        let mut c = claims(100);
        c.room = "bad room".into();
        assert_eq!(sign(b"s", &c), Err(TokenError::BadRoom));
    }
}
