//! VAPID (RFC 8292): the application server's P-256 key pair, and the
//! `Authorization: vapid t=<JWT>, k=<public key>` header signed with it.

use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};

/// How long a VAPID token is valid (RFC 8292 allows up to 24 hours).
pub const TOKEN_LIFETIME_SECS: u64 = 12 * 3600;

/// Why a key or an endpoint is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VapidError {
    #[error("not a 32-byte P-256 private key")]
    BadKey,
    #[error("endpoint is not an absolute https:// or http:// URL")]
    BadEndpoint,
}

/// The application server's key. `Debug` shows only the public key.
#[derive(Clone)]
pub struct VapidKey {
    signing: SigningKey,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey")
            .field("public", &self.public_key())
            .finish_non_exhaustive()
    }
}

impl VapidKey {
    /// A new random key (keep it: subscriptions are bound to it).
    pub fn generate() -> VapidKey {
        VapidKey {
            signing: SigningKey::from(crate::ece::random_secret()),
        }
    }

    /// The key from its 32-byte private scalar.
    pub fn from_bytes(bytes: &[u8]) -> Result<VapidKey, VapidError> {
        let signing = SigningKey::from_slice(bytes).map_err(|_| VapidError::BadKey)?;
        Ok(VapidKey { signing })
    }

    /// The 32-byte private scalar, to store.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.signing.to_bytes().into()
    }

    /// The public key as browsers take it (`applicationServerKey`):
    /// base64url of the uncompressed point.
    pub fn public_key(&self) -> String {
        let point = self.signing.verifying_key().to_encoded_point(false);
        crate::b64(point.as_bytes())
    }

    /// The `Authorization` header for a push to `endpoint` at Unix time
    /// `now`, naming the operator's contact `subject` (`mailto:` or
    /// `https:` URL).
    pub fn authorization(
        &self,
        endpoint: &str,
        now: u64,
        subject: &str,
    ) -> Result<String, VapidError> {
        let claims = serde_json::json!({
            "aud": audience(endpoint)?,
            "exp": now + TOKEN_LIFETIME_SECS,
            "sub": subject,
        });
        let header = crate::b64(br#"{"typ":"JWT","alg":"ES256"}"#);
        let input = format!("{header}.{}", crate::b64(claims.to_string().as_bytes()));
        let signature: Signature = self.signing.sign(input.as_bytes());
        let jwt = format!("{input}.{}", crate::b64(&signature.to_bytes()));
        Ok(format!("vapid t={jwt}, k={}", self.public_key()))
    }
}

/// The origin of a push endpoint (`https://host[:port]`), the JWT's `aud`.
pub fn audience(endpoint: &str) -> Result<String, VapidError> {
    let (scheme, rest) = endpoint.split_once("://").ok_or(VapidError::BadEndpoint)?;
    if !matches!(scheme, "https" | "http") {
        return Err(VapidError::BadEndpoint);
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err(VapidError::BadEndpoint);
    }
    Ok(format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audience_is_the_origin() {
        assert_eq!(
            audience("https://push.example:8443/wpush/v2/abc?x").unwrap(),
            "https://push.example:8443"
        );
        assert_eq!(audience("ftp://x/y"), Err(VapidError::BadEndpoint));
        assert_eq!(audience("https://u@x/y"), Err(VapidError::BadEndpoint));
        assert_eq!(audience("https:///y"), Err(VapidError::BadEndpoint));
    }

    #[test]
    fn key_round_trips_and_debug_hides_the_secret() {
        let k = VapidKey::generate();
        let again = VapidKey::from_bytes(&k.to_bytes()).unwrap();
        assert_eq!(k.public_key(), again.public_key());
        assert_eq!(crate::unb64(&k.public_key()).unwrap().len(), 65);
        let secret = crate::b64(&k.to_bytes());
        assert!(!format!("{k:?}").contains(&secret));
        assert_eq!(
            VapidKey::from_bytes(&[0u8; 32]).unwrap_err(),
            VapidError::BadKey
        );
    }
}
