//! Encryption at rest for processed objects.
//!
//! Each object has its own random 256-bit data key. The plaintext is cut
//! into segments of [`SEGMENT`] bytes (the last one shorter, possibly empty
//! for an empty object); each segment is sealed with AES-256-GCM under the
//! data key, nonce = segment index (64-bit big-endian, then 4 zero bytes),
//! associated data = object id and a "last segment" flag, and stored as
//! ciphertext followed by its 16-byte tag. A Range request decrypts only the
//! segments it touches; reordering, truncating or splicing segments from
//! another object fails authentication.
//!
//! The data key is stored wrapped (AES-256-GCM, random nonce, associated
//! data = key id and object id) under a master key named by a key id. Old
//! master keys stay configured for unwrapping; rotation re-wraps the small
//! wrapped keys in the metadata database and never touches the objects.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use std::collections::HashMap;

use crate::id::ObjectId;

/// Plaintext bytes per segment.
pub const SEGMENT: u64 = 64 * 1024;
/// Authentication tag appended to each segment.
pub const TAG: u64 = 16;

/// Authentication failed: the stored bytes were altered or the key is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed")]
pub struct AuthError;

/// A configuration problem with master keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no master key configured")]
    Empty,
    #[error(
        "master key `{0}`: expected KID:HEX with 64 hex digits and a key id of 1 to 32 characters [A-Za-z0-9_-]"
    )]
    Malformed(String),
    #[error("master key id `{0}` appears twice")]
    Duplicate(String),
    #[error("wrapped key names master key `{0}`, which is not configured")]
    Unknown(String),
}

/// A per-object data key. Segments use ring's AES-256-GCM (assembly with
/// AES-NI/VAES and CLMUL), several times faster than the portable crate
/// that wraps the small data keys.
pub struct DataKey(ring::aead::LessSafeKey);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

/// Number of segments for `len` plaintext bytes (at least one).
pub fn segments(len: u64) -> u64 {
    len.div_ceil(SEGMENT).max(1)
}

/// Stored size for `len` plaintext bytes.
pub fn stored_len(len: u64) -> u64 {
    len + segments(len) * TAG
}

fn nonce(index: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&index.to_be_bytes());
    n
}

fn aad(id: &ObjectId, last: bool) -> Vec<u8> {
    let mut a = id.as_bytes().to_vec();
    a.push(u8::from(last));
    a
}

impl DataKey {
    pub fn random() -> (DataKey, [u8; 32]) {
        let raw: [u8; 32] = rand::random();
        (DataKey::from_raw(&raw), raw)
    }

    fn from_raw(raw: &[u8; 32]) -> DataKey {
        let key = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, raw)
            .expect("32 bytes is an AES-256 key");
        DataKey(ring::aead::LessSafeKey::new(key))
    }

    /// Encrypts one segment in place and appends its tag.
    pub fn seal(&self, id: &ObjectId, index: u64, last: bool, buf: &mut Vec<u8>) {
        let tag = self
            .0
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce(index)),
                ring::aead::Aad::from(aad(id, last)),
                buf,
            )
            .expect("segment sizes are far below the GCM limit");
        buf.extend_from_slice(tag.as_ref());
    }

    /// Checks and decrypts one stored segment (ciphertext + tag) in place,
    /// leaving the plaintext in `buf`.
    pub fn open(
        &self,
        id: &ObjectId,
        index: u64,
        last: bool,
        buf: &mut Vec<u8>,
    ) -> Result<(), AuthError> {
        let n = self.open_slice(id, index, last, buf)?;
        buf.truncate(n);
        Ok(())
    }

    /// Like [`DataKey::open`] on a slice: the plaintext is left at the start
    /// of `buf` and its length returned.
    pub fn open_slice(
        &self,
        id: &ObjectId,
        index: u64,
        last: bool,
        buf: &mut [u8],
    ) -> Result<usize, AuthError> {
        let n = buf.len().checked_sub(TAG as usize).ok_or(AuthError)?;
        self.0
            .open_in_place(
                ring::aead::Nonce::assume_unique_for_key(nonce(index)),
                ring::aead::Aad::from(aad(id, last)),
                buf,
            )
            .map_err(|_| AuthError)?;
        Ok(n)
    }
}

/// The key of an upload being staged (processed objects only): AES-256-CTR
/// with the keystream position equal to the byte offset, so chunks of any
/// size at any offset can be encrypted as they arrive and the whole file
/// read back. CTR is not authenticated; the staged bytes are checked
/// against the upload's SHA-256 (when given) and then sealed in GCM
/// segments when the upload completes. The key is wrapped by the master key
/// in the upload's row, so an upload survives a restart.
pub struct StagingKey([u8; 32]);

impl std::fmt::Debug for StagingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StagingKey([redacted])")
    }
}

impl StagingKey {
    pub fn random() -> (StagingKey, [u8; 32]) {
        let raw: [u8; 32] = rand::random();
        (StagingKey(raw), raw)
    }

    pub fn from_raw(raw: [u8; 32]) -> StagingKey {
        StagingKey(raw)
    }

    /// Encrypts or decrypts `buf`, which sits at byte `offset` of the file.
    pub fn apply(&self, offset: u64, buf: &mut [u8]) {
        use aes::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
        let mut c = ctr::Ctr128BE::<aes::Aes256>::new(&self.0.into(), &[0u8; 16].into());
        c.seek(offset);
        c.apply_keystream(buf);
    }
}

/// A data key wrapped by a master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub kid: String,
    /// nonce (12) + encrypted key (32) + tag (16).
    pub bytes: Vec<u8>,
}

/// The configured master keys: the active one wraps new data keys, all of
/// them unwrap.
#[derive(Clone)]
pub struct MasterKeys {
    active: String,
    keys: HashMap<String, Aes256Gcm>,
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKeys")
            .field("active", &self.active)
            .field("count", &self.keys.len())
            .finish()
    }
}

fn valid_kid(k: &str) -> bool {
    (1..=32).contains(&k.len())
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl MasterKeys {
    /// Parses lines `KID:HEX64`; the first is the active key. Blank lines
    /// and lines starting with `#` are skipped.
    pub fn parse(text: &str) -> Result<MasterKeys, KeyError> {
        let mut active = None;
        let mut keys = HashMap::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (kid, hex_key) = line.split_once(':').unwrap_or(("", ""));
            let mut raw = [0u8; 32];
            if !valid_kid(kid) || hex::decode_to_slice(hex_key, &mut raw).is_err() {
                return Err(KeyError::Malformed(kid.chars().take(32).collect()));
            }
            if keys
                .insert(kid.to_owned(), Aes256Gcm::new((&raw).into()))
                .is_some()
            {
                return Err(KeyError::Duplicate(kid.to_owned()));
            }
            active.get_or_insert_with(|| kid.to_owned());
        }
        Ok(MasterKeys {
            active: active.ok_or(KeyError::Empty)?,
            keys,
        })
    }

    /// A fresh key file text with one random key.
    pub fn generate_text(kid: &str) -> String {
        let raw: [u8; 32] = rand::random();
        format!("{kid}:{}\n", hex::encode(raw))
    }

    pub fn active_kid(&self) -> &str {
        &self.active
    }

    fn wrap_aad(kid: &str, id: &ObjectId) -> Vec<u8> {
        let mut a = b"palaver-dek-v1\0".to_vec();
        a.extend_from_slice(kid.as_bytes());
        a.push(0);
        a.extend_from_slice(id.as_bytes());
        a
    }

    /// Wraps a raw data key for `id` under the active master key.
    pub fn wrap(&self, id: &ObjectId, raw: &[u8; 32]) -> WrappedKey {
        let kid = self.active.clone();
        let n: [u8; 12] = rand::random();
        let mut buf = raw.to_vec();
        let tag = self.keys[&kid]
            .encrypt_in_place_detached(Nonce::from_slice(&n), &Self::wrap_aad(&kid, id), &mut buf)
            .expect("32 bytes");
        let mut bytes = n.to_vec();
        bytes.extend_from_slice(&buf);
        bytes.extend_from_slice(&tag);
        WrappedKey { kid, bytes }
    }

    /// Unwraps a raw key (data or staging key) wrapped for `id`.
    pub fn unwrap_raw(&self, id: &ObjectId, w: &WrappedKey) -> Result<[u8; 32], KeyError> {
        let key = self
            .keys
            .get(&w.kid)
            .ok_or_else(|| KeyError::Unknown(w.kid.clone()))?;
        let bad = || KeyError::Malformed(w.kid.clone());
        if w.bytes.len() != 60 {
            return Err(bad());
        }
        let mut buf = w.bytes[12..44].to_vec();
        let tag = Tag::clone_from_slice(&w.bytes[44..]);
        key.decrypt_in_place_detached(
            Nonce::from_slice(&w.bytes[..12]),
            &Self::wrap_aad(&w.kid, id),
            &mut buf,
            &tag,
        )
        .map_err(|_| bad())?;
        let mut raw = [0u8; 32];
        raw.copy_from_slice(&buf);
        Ok(raw)
    }

    /// Unwraps a data key.
    pub fn unwrap(&self, id: &ObjectId, w: &WrappedKey) -> Result<DataKey, KeyError> {
        self.unwrap_raw(id, w).map(|raw| DataKey::from_raw(&raw))
    }

    /// Re-wraps under the active key (rotation); `None` if already active.
    pub fn rewrap(&self, id: &ObjectId, w: &WrappedKey) -> Result<Option<WrappedKey>, KeyError> {
        if w.kid == self.active {
            return Ok(None);
        }
        Ok(Some(self.wrap(id, &self.unwrap_raw(id, w)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ObjectId {
        ObjectId::Processed([7; 16])
    }

    #[test]
    fn segments_round_trip_and_are_bound() {
        let (k, _) = DataKey::random();
        let mut seg = b"hello".to_vec();
        k.seal(&id(), 3, true, &mut seg);
        assert_eq!(seg.len(), 5 + TAG as usize);
        let mut copy = seg.clone();
        k.open(&id(), 3, true, &mut copy).unwrap();
        assert_eq!(copy, b"hello");
        for (i, last, oid) in [
            (2, true, id()),
            (3, false, id()),
            (3, true, ObjectId::Processed([8; 16])),
        ] {
            let mut c = seg.clone();
            assert_eq!(k.open(&oid, i, last, &mut c), Err(AuthError));
        }
        let mut flipped = seg.clone();
        flipped[0] ^= 1;
        assert_eq!(k.open(&id(), 3, true, &mut flipped), Err(AuthError));
        assert_eq!(k.open(&id(), 3, true, &mut vec![1, 2]), Err(AuthError));
    }

    #[test]
    fn staging_cipher_works_at_any_offset() {
        let (k, _) = StagingKey::random();
        let plain: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut whole = plain.clone();
        k.apply(0, &mut whole);
        assert_ne!(whole, plain);
        let mut parts = plain.clone();
        k.apply(0, &mut parts[..7]);
        k.apply(7, &mut parts[7..500]);
        k.apply(500, &mut parts[500..]);
        assert_eq!(parts, whole, "chunking does not matter");
        k.apply(0, &mut whole);
        assert_eq!(whole, plain);
    }

    #[test]
    fn sizes() {
        assert_eq!(segments(0), 1);
        assert_eq!(segments(SEGMENT), 1);
        assert_eq!(segments(SEGMENT + 1), 2);
        assert_eq!(stored_len(0), TAG);
        assert_eq!(stored_len(SEGMENT + 1), SEGMENT + 1 + 2 * TAG);
    }

    #[test]
    fn rotation_keeps_old_keys_readable() {
        let k1 = MasterKeys::generate_text("k1");
        let old = MasterKeys::parse(&k1).unwrap();
        let (_, raw) = DataKey::random();
        let w = old.wrap(&id(), &raw);
        assert_eq!(w.kid, "k1");
        // A different key under the same id cannot unwrap.
        let impostor = MasterKeys::parse(&MasterKeys::generate_text("k1")).unwrap();
        assert!(impostor.unwrap(&id(), &w).is_err());
        let rotated = MasterKeys::parse(&format!(
            "# rotated\n{}{k1}",
            MasterKeys::generate_text("k2")
        ))
        .unwrap();
        assert_eq!(rotated.active_kid(), "k2");
        let w2 = rotated.rewrap(&id(), &w).unwrap().expect("re-wrapped");
        assert_eq!(w2.kid, "k2");
        assert_eq!(rotated.unwrap_raw(&id(), &w2).unwrap(), raw);
        assert_eq!(rotated.unwrap_raw(&id(), &w).unwrap(), raw);
        assert!(rotated.rewrap(&id(), &w2).unwrap().is_none());
        // Bound to the object.
        assert!(rotated.unwrap(&ObjectId::Processed([1; 16]), &w2).is_err());
        // Without k1, old objects are unreadable and say why.
        let only_k2 = MasterKeys::parse(&MasterKeys::generate_text("k2")).unwrap();
        assert_eq!(
            only_k2.unwrap(&id(), &w).unwrap_err(),
            KeyError::Unknown("k1".into())
        );
    }

    #[test]
    fn bad_key_files() {
        assert_eq!(MasterKeys::parse("").unwrap_err(), KeyError::Empty);
        assert!(matches!(
            MasterKeys::parse("k1:abcd").unwrap_err(),
            KeyError::Malformed(_)
        ));
        let line = MasterKeys::generate_text("k1");
        assert_eq!(
            MasterKeys::parse(&format!("{line}{line}")).unwrap_err(),
            KeyError::Duplicate("k1".into())
        );
    }
}
