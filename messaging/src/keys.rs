//! Pure rules of the end-to-end key directory: sizes, limits and the
//! signature check on signed keys. No I/O.

use ed25519_dalek::{Signature, VerifyingKey};
use palaver_proto::keys::{KeyUpload, SignedKey, SignedKeyKind, prekey_signature_message};

/// Length of a public key, in bytes.
pub const KEY_LEN: usize = 32;
/// Length of an Ed25519 signature, in bytes.
pub const SIGNATURE_LEN: usize = 64;
/// Most one-time keys in one upload.
pub const MAX_ONE_TIME_PER_UPLOAD: usize = 100;
/// Most one-time keys a device keeps in the directory.
pub const MAX_ONE_TIME_STOCK: u32 = 200;
/// Below this many one-time keys a device is told to upload more.
pub const LOW_STOCK: u32 = 10;

/// Why an upload is refused. Nothing is stored when it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{0} must be {KEY_LEN} bytes")]
    KeyLength(&'static str),
    #[error("{0}: signatures are {SIGNATURE_LEN} bytes")]
    SignatureLength(&'static str),
    #[error("the signing key is not a valid Ed25519 public key")]
    BadSigningKey,
    #[error("{0}: the signature does not verify with the device's signing key")]
    BadSignature(&'static str),
    #[error("the identity keys of a device never change; link a new device instead")]
    IdentityChanged,
    #[error("the first upload must include a signed prekey")]
    NoSignedPrekey,
    #[error("at most {MAX_ONE_TIME_PER_UPLOAD} one-time keys per upload")]
    TooManyInUpload,
    #[error("at most {MAX_ONE_TIME_STOCK} one-time keys in stock")]
    StockFull,
    #[error("one-time key id {0} is used twice")]
    DuplicateKeyId(u32),
}

/// A signed key whose signature has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedSignedKey {
    pub key_id: u32,
    pub public: [u8; KEY_LEN],
    pub signature: [u8; SIGNATURE_LEN],
}

/// An upload whose sizes and signatures have been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedUpload {
    pub identity_key: [u8; KEY_LEN],
    pub signing_key: [u8; KEY_LEN],
    pub signed_prekey: Option<CheckedSignedKey>,
    pub one_time_keys: Vec<(u32, [u8; KEY_LEN])>,
    pub last_resort: Option<CheckedSignedKey>,
}

fn key(bytes: &[u8], what: &'static str) -> Result<[u8; KEY_LEN], KeyError> {
    bytes.try_into().map_err(|_| KeyError::KeyLength(what))
}

fn signed(
    k: &SignedKey,
    kind: SignedKeyKind,
    verifier: &VerifyingKey,
    what: &'static str,
) -> Result<CheckedSignedKey, KeyError> {
    let public = key(&k.public.0, what)?;
    let signature: [u8; SIGNATURE_LEN] = k
        .signature
        .0
        .as_slice()
        .try_into()
        .map_err(|_| KeyError::SignatureLength(what))?;
    let message = prekey_signature_message(kind, k.key_id, &public);
    verifier
        .verify_strict(message.as_bytes(), &Signature::from_bytes(&signature))
        .map_err(|_| KeyError::BadSignature(what))?;
    Ok(CheckedSignedKey {
        key_id: k.key_id,
        public,
        signature,
    })
}

/// Checks sizes, duplicate ids and signatures of an upload.
pub fn check_upload(u: &KeyUpload) -> Result<CheckedUpload, KeyError> {
    let identity_key = key(&u.identity_key.0, "identity_key")?;
    let signing_key = key(&u.signing_key.0, "signing_key")?;
    let verifier = VerifyingKey::from_bytes(&signing_key).map_err(|_| KeyError::BadSigningKey)?;
    if u.one_time_keys.len() > MAX_ONE_TIME_PER_UPLOAD {
        return Err(KeyError::TooManyInUpload);
    }
    let mut one_time_keys = Vec::with_capacity(u.one_time_keys.len());
    for k in &u.one_time_keys {
        if one_time_keys.iter().any(|(id, _)| *id == k.key_id) {
            return Err(KeyError::DuplicateKeyId(k.key_id));
        }
        one_time_keys.push((k.key_id, key(&k.public.0, "one_time_keys")?));
    }
    let signed_prekey = u
        .signed_prekey
        .as_ref()
        .map(|k| signed(k, SignedKeyKind::SignedPrekey, &verifier, "signed_prekey"))
        .transpose()?;
    let last_resort = u
        .last_resort
        .as_ref()
        .map(|k| signed(k, SignedKeyKind::LastResort, &verifier, "last_resort"))
        .transpose()?;
    Ok(CheckedUpload {
        identity_key,
        signing_key,
        signed_prekey,
        one_time_keys,
        last_resort,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};
    use palaver_proto::frames::Payload;
    use palaver_proto::keys::OneTimeKey;

    fn signing() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    fn signed_key(sk: &SigningKey, kind: SignedKeyKind, id: u32, public: [u8; 32]) -> SignedKey {
        let sig = sk.sign(prekey_signature_message(kind, id, &public).as_bytes());
        SignedKey {
            key_id: id,
            public: Payload(public.to_vec()),
            signature: Payload(sig.to_bytes().to_vec()),
        }
    }

    fn upload() -> KeyUpload {
        let sk = signing();
        KeyUpload {
            identity_key: Payload(vec![1; 32]),
            signing_key: Payload(sk.verifying_key().to_bytes().to_vec()),
            signed_prekey: Some(signed_key(&sk, SignedKeyKind::SignedPrekey, 1, [2; 32])),
            one_time_keys: (0..5)
                .map(|i| OneTimeKey {
                    key_id: i,
                    public: Payload(vec![i as u8; 32]),
                })
                .collect(),
            last_resort: Some(signed_key(&sk, SignedKeyKind::LastResort, 9, [3; 32])),
        }
    }

    #[test]
    fn a_well_signed_upload_passes() {
        let c = check_upload(&upload()).unwrap();
        assert_eq!(c.one_time_keys.len(), 5);
        assert_eq!(c.signed_prekey.unwrap().key_id, 1);
    }

    #[test]
    fn signatures_bind_key_kind_id_and_bytes() {
        let mut u = upload();
        u.signed_prekey.as_mut().unwrap().public.0[0] ^= 1;
        assert_eq!(
            check_upload(&u),
            Err(KeyError::BadSignature("signed_prekey"))
        );
        let mut u = upload();
        u.signed_prekey.as_mut().unwrap().key_id = 2;
        assert_eq!(
            check_upload(&u),
            Err(KeyError::BadSignature("signed_prekey"))
        );
        // A signed prekey's signature does not pass as a last-resort key's.
        let mut u = upload();
        u.last_resort = u.signed_prekey.clone();
        assert_eq!(check_upload(&u), Err(KeyError::BadSignature("last_resort")));
        // Signed by another key.
        let other = SigningKey::from_bytes(&[8; 32]);
        let mut u = upload();
        u.signed_prekey = Some(signed_key(&other, SignedKeyKind::SignedPrekey, 1, [2; 32]));
        assert_eq!(
            check_upload(&u),
            Err(KeyError::BadSignature("signed_prekey"))
        );
    }

    #[test]
    fn sizes_and_ids_are_checked() {
        let mut u = upload();
        u.identity_key.0.pop();
        assert_eq!(check_upload(&u), Err(KeyError::KeyLength("identity_key")));
        let mut u = upload();
        u.one_time_keys[1].key_id = 0;
        assert_eq!(check_upload(&u), Err(KeyError::DuplicateKeyId(0)));
        let mut u = upload();
        u.signed_prekey.as_mut().unwrap().signature.0.truncate(10);
        assert_eq!(
            check_upload(&u),
            Err(KeyError::SignatureLength("signed_prekey"))
        );
        let mut u = upload();
        u.one_time_keys = (0..101)
            .map(|i| OneTimeKey {
                key_id: i,
                public: Payload(vec![0; 32]),
            })
            .collect();
        assert_eq!(check_upload(&u), Err(KeyError::TooManyInUpload));
    }
}
