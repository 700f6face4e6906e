//! RFC 8291 message encryption for Web Push: ECDH with the subscription's
//! P-256 key and an ephemeral key, HKDF-SHA-256 with the subscription's
//! auth secret, one AES-128-GCM record in the `aes128gcm` format of RFC
//! 8188 (header: salt, record size, the ephemeral public key).

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use sha2::Sha256;

/// The record size written in the header.
pub const RECORD_SIZE: u32 = 4096;
/// Header bytes: salt (16), record size (4), key id length (1), key (65).
pub const HEADER_LEN: usize = 86;
/// Largest plaintext: push services must take 4096-byte bodies (RFC 8291
/// section 4), less the header, the GCM tag and the padding delimiter.
pub const MAX_PLAINTEXT: usize = 4096 - HEADER_LEN - 16 - 1;

/// What is wrong with a subscription or a payload.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EceError {
    #[error("p256dh is not a base64url P-256 public key")]
    BadP256dh,
    #[error("auth is not a base64url 16-byte secret")]
    BadAuth,
    #[error("payload of {0} bytes is over the {MAX_PLAINTEXT}-byte limit")]
    TooLong(usize),
}

/// The keys of a browser's push subscription (`keys.p256dh`, `keys.auth`
/// of `PushSubscription.toJSON()`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionKeys {
    p256dh: PublicKey,
    auth: [u8; 16],
}

impl SubscriptionKeys {
    /// Parses the two base64url strings a browser hands out.
    pub fn parse(p256dh: &str, auth: &str) -> Result<SubscriptionKeys, EceError> {
        let point = crate::unb64(p256dh).ok_or(EceError::BadP256dh)?;
        if point.len() != 65 || point[0] != 4 {
            return Err(EceError::BadP256dh);
        }
        let p256dh = PublicKey::from_sec1_bytes(&point).map_err(|_| EceError::BadP256dh)?;
        let auth = crate::unb64(auth)
            .and_then(|a| <[u8; 16]>::try_from(a).ok())
            .ok_or(EceError::BadAuth)?;
        Ok(SubscriptionKeys { p256dh, auth })
    }
}

/// Encrypts `plaintext` for `to` with a fresh ephemeral key and salt.
pub fn encrypt(plaintext: &[u8], to: &SubscriptionKeys) -> Result<Vec<u8>, EceError> {
    encrypt_with(plaintext, to, &random_secret(), &rand::random())
}

/// A random P-256 private key.
pub(crate) fn random_secret() -> SecretKey {
    loop {
        let bytes: [u8; 32] = rand::random();
        // Fails only for zero or values above the group order.
        if let Ok(key) = SecretKey::from_slice(&bytes) {
            return key;
        }
    }
}

/// Encrypts with a given ephemeral key and salt (test vectors).
pub fn encrypt_with(
    plaintext: &[u8],
    to: &SubscriptionKeys,
    ephemeral: &SecretKey,
    salt: &[u8; 16],
) -> Result<Vec<u8>, EceError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(EceError::TooLong(plaintext.len()));
    }
    let as_public = ephemeral.public_key().to_encoded_point(false);
    let (cek, nonce) = derive(to, ephemeral, as_public.as_bytes(), salt);
    let mut record = Vec::with_capacity(plaintext.len() + 1);
    record.extend_from_slice(plaintext);
    record.push(2); // last record, no padding
    let cipher = Aes128Gcm::new(&cek.into());
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), record.as_slice())
        .expect("AES-GCM takes any length under 64 GiB");
    let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
    out.extend_from_slice(salt);
    out.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    out.push(as_public.as_bytes().len() as u8);
    out.extend_from_slice(as_public.as_bytes());
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The content encryption key and nonce (RFC 8291 section 3.4).
fn derive(
    to: &SubscriptionKeys,
    ephemeral: &SecretKey,
    as_public: &[u8],
    salt: &[u8; 16],
) -> ([u8; 16], [u8; 12]) {
    let shared = p256::ecdh::diffie_hellman(ephemeral.to_nonzero_scalar(), to.p256dh.as_affine());
    let ua_public = to.p256dh.to_encoded_point(false);
    let mut key_info = b"WebPush: info\0".to_vec();
    key_info.extend_from_slice(ua_public.as_bytes());
    key_info.extend_from_slice(as_public);
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&to.auth), shared.raw_secret_bytes())
        .expand(&key_info, &mut ikm)
        .expect("32 bytes is a valid HKDF length");
    let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
    let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
    prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .expect("16 bytes is a valid HKDF length");
    prk.expand(b"Content-Encoding: nonce\0", &mut nonce)
        .expect("12 bytes is a valid HKDF length");
    (cek, nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8291, Appendix A.
    const AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    const BODY: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

    #[test]
    fn reproduces_the_rfc_8291_example() {
        let to = SubscriptionKeys::parse(UA_PUBLIC, AUTH).unwrap();
        let eph = SecretKey::from_slice(&crate::unb64(AS_PRIVATE).unwrap()).unwrap();
        let salt: [u8; 16] = crate::unb64(SALT).unwrap().try_into().unwrap();
        let body = encrypt_with(
            b"When I grow up, I want to be a watermelon",
            &to,
            &eph,
            &salt,
        )
        .unwrap();
        assert_eq!(crate::b64(&body), BODY);
    }

    #[test]
    fn bad_keys_and_long_payloads_are_refused() {
        assert_eq!(
            SubscriptionKeys::parse("AAAA", AUTH),
            Err(EceError::BadP256dh)
        );
        assert_eq!(
            SubscriptionKeys::parse("!!", AUTH),
            Err(EceError::BadP256dh)
        );
        assert_eq!(
            SubscriptionKeys::parse(UA_PUBLIC, "AAAA"),
            Err(EceError::BadAuth)
        );
        let to = SubscriptionKeys::parse(UA_PUBLIC, AUTH).unwrap();
        let long = vec![0u8; MAX_PLAINTEXT + 1];
        assert_eq!(
            encrypt(&long, &to),
            Err(EceError::TooLong(MAX_PLAINTEXT + 1))
        );
        let body = encrypt(&long[1..], &to).unwrap();
        assert_eq!(body.len(), 4096);
    }

    #[test]
    fn fresh_key_and_salt_each_time() {
        let to = SubscriptionKeys::parse(UA_PUBLIC, AUTH).unwrap();
        assert_ne!(encrypt(b"x", &to).unwrap(), encrypt(b"x", &to).unwrap());
    }
}
