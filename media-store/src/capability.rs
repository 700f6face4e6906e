//! Capability URLs: `/v1/media/{id}?exp=UNIX&sig=B64[&dl=NAME]`.
//!
//! `sig` is base64url (no padding) of HMAC-SHA256 over
//! `palaver-media-cap-v1 \0 id \0 exp \0 dl` under the capability secret, so
//! a URL is bound to one object, one expiry and one download name; changing
//! any of them breaks the signature. Anyone holding the URL (a cache, a CDN)
//! can fetch the object until `exp`; nothing else is needed.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::id::ObjectId;

/// Longest download name accepted in `dl`.
pub const MAX_NAME: usize = 128;

/// Why a capability was refused. All map to 403 on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    #[error("no capability in the query")]
    Missing,
    #[error("malformed capability query")]
    Malformed,
    #[error("the link has expired")]
    Expired,
    #[error("bad signature")]
    BadSignature,
}

/// A verified capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub expires: u64,
    /// Download name for `Content-Disposition: attachment`.
    pub download_name: Option<String>,
}

/// The key that signs capability URLs (at least 32 bytes). Holds the HMAC
/// state with the key already absorbed, cloned for each signature.
#[derive(Clone)]
pub struct CapabilityKey(Hmac<Sha256>);

impl std::fmt::Debug for CapabilityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CapabilityKey([redacted])")
    }
}

/// A download name outside `[A-Za-z0-9._-]{1,128}` (or starting with a dot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "download names are 1 to 128 characters from A-Z a-z 0-9 . _ - and do not start with a dot"
)]
pub struct BadName;

/// Checks a download name. Restricting the alphabet keeps
/// `Content-Disposition` free of quoting and encoding problems.
pub fn check_name(name: &str) -> Result<(), BadName> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok { Ok(()) } else { Err(BadName) }
}

impl CapabilityKey {
    pub fn new(secret: &[u8]) -> CapabilityKey {
        CapabilityKey(Hmac::<Sha256>::new_from_slice(secret).expect("any key length"))
    }

    fn mac(&self, id: &ObjectId, expires: u64, name: Option<&str>) -> Hmac<Sha256> {
        let mut m = self.0.clone();
        m.update(b"palaver-media-cap-v1\0");
        m.update(id.to_string().as_bytes());
        m.update(b"\0");
        m.update(expires.to_string().as_bytes());
        m.update(b"\0");
        m.update(name.unwrap_or("").as_bytes());
        m
    }

    /// The query string (without `?`) granting `id` until `expires`.
    pub fn sign(&self, id: &ObjectId, expires: u64, name: Option<&str>) -> Result<String, BadName> {
        if let Some(n) = name {
            check_name(n)?;
        }
        let sig = URL_SAFE_NO_PAD.encode(self.mac(id, expires, name).finalize().into_bytes());
        Ok(match name {
            Some(n) => format!("exp={expires}&sig={sig}&dl={n}"),
            None => format!("exp={expires}&sig={sig}"),
        })
    }

    /// Verifies a query string for `id` at time `now` (Unix seconds).
    pub fn verify(
        &self,
        id: &ObjectId,
        query: Option<&[u8]>,
        now: u64,
    ) -> Result<Granted, CapError> {
        let q = parse_query(query.ok_or(CapError::Missing)?)?;
        let (exp, sig) = match (q.exp, q.sig) {
            (Some(e), Some(s)) => (e, s),
            (None, None) => return Err(CapError::Missing),
            _ => return Err(CapError::Malformed),
        };
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| CapError::Malformed)?;
        self.mac(id, exp, q.dl)
            .verify_slice(&sig)
            .map_err(|_| CapError::BadSignature)?;
        if now >= exp {
            return Err(CapError::Expired);
        }
        Ok(Granted {
            expires: exp,
            download_name: q.dl.map(str::to_owned),
        })
    }
}

#[derive(Default)]
struct Query<'a> {
    exp: Option<u64>,
    sig: Option<&'a str>,
    dl: Option<&'a str>,
}

/// Strict: only `exp`, `sig`, `dl`, each at most once, no percent escapes.
fn parse_query(q: &[u8]) -> Result<Query<'_>, CapError> {
    let q = std::str::from_utf8(q).map_err(|_| CapError::Malformed)?;
    let mut out = Query::default();
    for pair in q.split('&') {
        let (k, v) = pair.split_once('=').ok_or(CapError::Malformed)?;
        let slot_taken = match k {
            "exp" => {
                let ok = !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit());
                let n = ok.then(|| v.parse::<u64>().ok()).flatten();
                out.exp.replace(n.ok_or(CapError::Malformed)?).is_some()
            }
            "sig" => out.sig.replace(v).is_some(),
            "dl" => {
                check_name(v).map_err(|_| CapError::Malformed)?;
                out.dl.replace(v).is_some()
            }
            _ => return Err(CapError::Malformed),
        };
        if slot_taken {
            return Err(CapError::Malformed);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> CapabilityKey {
        CapabilityKey::new(b"0123456789abcdef0123456789abcdef")
    }

    fn id(n: u8) -> ObjectId {
        ObjectId::Processed([n; 16])
    }

    #[test]
    fn round_trip_and_binding() {
        let k = key();
        let q = k.sign(&id(1), 1000, None).unwrap();
        assert_eq!(
            k.verify(&id(1), Some(q.as_bytes()), 999),
            Ok(Granted {
                expires: 1000,
                download_name: None
            })
        );
        assert_eq!(
            k.verify(&id(1), Some(q.as_bytes()), 1000),
            Err(CapError::Expired)
        );
        assert_eq!(
            k.verify(&id(2), Some(q.as_bytes()), 1),
            Err(CapError::BadSignature),
            "bound to the object"
        );
        let later = q.replace("exp=1000", "exp=9999");
        assert_eq!(
            k.verify(&id(1), Some(later.as_bytes()), 1),
            Err(CapError::BadSignature)
        );
        let other = CapabilityKey::new(b"another secret of sufficient len");
        assert_eq!(
            other.verify(&id(1), Some(q.as_bytes()), 1),
            Err(CapError::BadSignature)
        );
    }

    #[test]
    fn download_name_is_signed() {
        let k = key();
        let q = k.sign(&id(1), 1000, Some("photo.jpg")).unwrap();
        let g = k.verify(&id(1), Some(q.as_bytes()), 1).unwrap();
        assert_eq!(g.download_name.as_deref(), Some("photo.jpg"));
        let swapped = q.replace("photo.jpg", "evil.html");
        assert_eq!(
            k.verify(&id(1), Some(swapped.as_bytes()), 1),
            Err(CapError::BadSignature)
        );
        let stripped = q.replace("&dl=photo.jpg", "");
        assert_eq!(
            k.verify(&id(1), Some(stripped.as_bytes()), 1),
            Err(CapError::BadSignature)
        );
        assert_eq!(k.sign(&id(1), 1, Some("../x")), Err(BadName));
        assert_eq!(k.sign(&id(1), 1, Some("a\"b")), Err(BadName));
        assert_eq!(k.sign(&id(1), 1, Some(".hidden")), Err(BadName));
    }

    #[test]
    fn malformed_queries() {
        let k = key();
        assert_eq!(k.verify(&id(1), None, 1), Err(CapError::Missing));
        for q in [
            "exp=1",
            "sig=abc",
            "exp=1&sig=a&exp=2",
            "exp=x&sig=a",
            "foo=1",
            "exp",
            "exp=1&sig=!!",
        ] {
            assert_eq!(
                k.verify(&id(1), Some(q.as_bytes()), 0),
                Err(CapError::Malformed),
                "{q}"
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_queries_never_verify(q in proptest::collection::vec(any::<u8>(), 0..120)) {
            prop_assert!(key().verify(&id(1), Some(&q), 0).is_err());
        }
    }
}
