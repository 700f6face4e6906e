//! Long-term credentials, TURN REST credentials and stateless nonces.

use std::collections::HashMap;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use stun_types::message::LongTermKeyCredentials;

use crate::config::Secrets;

type HmacSha1 = Hmac<Sha1>;

/// Mints TURN REST credentials for `user` valid until `expiry_unix` (seconds
/// since the Unix epoch): username `"{expiry}:{user}"`, password
/// `base64(HMAC-SHA1(secret, username))`. Signaling hands these to clients.
pub fn rest_credentials(secret: &str, user: &str, expiry_unix: u64) -> (String, String) {
    let username = format!("{expiry_unix}:{user}");
    let password = rest_password(secret, &username);
    (username, password)
}

fn rest_password(secret: &str, username: &str) -> String {
    let mut mac = HmacSha1::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Why a username has no usable password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LookupError {
    /// Neither a static user nor a REST username.
    UnknownUser,
    /// A REST username whose expiry has passed.
    Expired,
}

/// The credential store of a server (never logged).
pub(crate) struct Credentials {
    realm: String,
    rest_secret: Option<String>,
    static_users: HashMap<String, String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("realm", &self.realm)
            .field("static_users", &self.static_users.len())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub(crate) fn new(realm: &str, secrets: &Secrets) -> Self {
        Credentials {
            realm: realm.to_owned(),
            rest_secret: secrets.rest_secret.clone(),
            static_users: secrets.static_users.iter().cloned().collect(),
        }
    }

    /// The long-term key material for `username` at wall-clock `unix_now`.
    pub(crate) fn lookup(
        &self,
        username: &str,
        unix_now: u64,
    ) -> Result<LongTermKeyCredentials, LookupError> {
        if let Some(password) = self.static_users.get(username) {
            return Ok(self.key(username, password.clone()));
        }
        let secret = self
            .rest_secret
            .as_deref()
            .ok_or(LookupError::UnknownUser)?;
        let expiry: u64 = username
            .split_once(':')
            .map(|(e, _)| e)
            .unwrap_or(username)
            .parse()
            .map_err(|_| LookupError::UnknownUser)?;
        if expiry < unix_now {
            return Err(LookupError::Expired);
        }
        Ok(self.key(username, rest_password(secret, username)))
    }

    fn key(&self, username: &str, password: String) -> LongTermKeyCredentials {
        LongTermKeyCredentials::new(username.to_owned(), password, self.realm.clone())
    }
}

/// Stateless nonces: `hex(issued_secs) || hex(HMAC-SHA1(key, issued_secs)[..8])`.
pub(crate) struct Nonces {
    key: [u8; 32],
    lifetime_secs: u64,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces")
            .field("lifetime_secs", &self.lifetime_secs)
            .finish_non_exhaustive()
    }
}

impl Nonces {
    pub(crate) fn new(key: [u8; 32], lifetime_secs: u64) -> Self {
        Nonces { key, lifetime_secs }
    }

    fn tag(&self, issued: u64) -> u64 {
        let mut mac = HmacSha1::new_from_slice(&self.key).expect("any key length");
        mac.update(&issued.to_be_bytes());
        let out = mac.finalize().into_bytes();
        u64::from_be_bytes(out[..8].try_into().expect("20-byte digest"))
    }

    /// A fresh nonce issued at `secs` (seconds since the server started).
    pub(crate) fn issue(&self, secs: u64) -> String {
        format!("{secs:016x}{:016x}", self.tag(secs))
    }

    /// Whether `nonce` was issued by this server less than the lifetime ago.
    pub(crate) fn is_valid(&self, nonce: &str, secs: u64) -> bool {
        if nonce.len() != 32 || !nonce.is_ascii() {
            return false;
        }
        let (Ok(issued), Ok(tag)) = (
            u64::from_str_radix(&nonce[..16], 16),
            u64::from_str_radix(&nonce[16..], 16),
        ) else {
            return false;
        };
        tag == self.tag(issued) && issued <= secs && secs - issued < self.lifetime_secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_credentials_match_coturn_scheme() {
        let (u, p) = rest_credentials("secret", "alice", 1_700_000_000);
        assert_eq!(u, "1700000000:alice");
        // python3: base64(hmac.new(b"secret", b"1700000000:alice", sha1).digest())
        assert_eq!(p, "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
    }

    #[test]
    fn lookup_rest_and_static() {
        let creds = Credentials::new(
            "r",
            &Secrets {
                rest_secret: Some("s".into()),
                static_users: vec![("bob".into(), "pw".into())],
            },
        );
        assert_eq!(creds.lookup("bob", 0).unwrap().password(), "pw");
        let (u, p) = rest_credentials("s", "alice", 100);
        assert_eq!(creds.lookup(&u, 100).unwrap().password(), p);
        assert_eq!(creds.lookup(&u, 101).unwrap_err(), LookupError::Expired);
        assert_eq!(
            creds.lookup("carol", 0).unwrap_err(),
            LookupError::UnknownUser
        );
        let no_rest = Credentials::new("r", &Secrets::default());
        assert_eq!(no_rest.lookup(&u, 0).unwrap_err(), LookupError::UnknownUser);
    }

    #[test]
    fn nonce_lifecycle() {
        let n = Nonces::new([7; 32], 600);
        let nonce = n.issue(10);
        assert!(n.is_valid(&nonce, 10));
        assert!(n.is_valid(&nonce, 609));
        assert!(!n.is_valid(&nonce, 610));
        assert!(!n.is_valid(&nonce, 9));
        let other = Nonces::new([8; 32], 600);
        assert!(!other.is_valid(&nonce, 10));
        assert!(!n.is_valid("zz", 10));
        assert!(!n.is_valid("ééééééééééééééééééééééééééééééé", 10));
    }
}
