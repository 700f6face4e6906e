//! Object ids and their one textual form. Paths are matched against this
//! form byte for byte and never percent-decoded, so traversal (`..`,
//! `%2e%2e`, `%2f`), NUL bytes and over-long ids cannot name a file.

use std::fmt;

/// An object in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectId {
    /// Client-encrypted bytes, named by the SHA-256 of the ciphertext
    /// (64 lowercase hex digits). A forward re-uses the same blob.
    Sealed([u8; 32]),
    /// Encrypted at rest by the server, named by 128 random bits (32
    /// lowercase hex digits).
    Processed([u8; 16]),
}

/// A path segment that is not an object id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an object id: 32 or 64 lowercase hex digits expected")]
pub struct BadId;

impl ObjectId {
    /// Parses exactly 32 or 64 lowercase hex digits.
    pub fn parse(s: &[u8]) -> Result<ObjectId, BadId> {
        if !s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(BadId);
        }
        match s.len() {
            64 => {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(|_| BadId)?;
                Ok(ObjectId::Sealed(out))
            }
            32 => {
                let mut out = [0u8; 16];
                hex::decode_to_slice(s, &mut out).map_err(|_| BadId)?;
                Ok(ObjectId::Processed(out))
            }
            _ => Err(BadId),
        }
    }

    /// A fresh random processed id.
    pub fn new_processed() -> ObjectId {
        ObjectId::Processed(rand::random())
    }

    pub fn is_sealed(&self) -> bool {
        matches!(self, ObjectId::Sealed(_))
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            ObjectId::Sealed(b) => b,
            ObjectId::Processed(b) => b,
        }
    }

    /// The blob's relative path inside a store: `s/ab/<id>` or `p/ab/<id>`.
    pub fn blob_path(&self) -> String {
        let hex = self.to_string();
        let kind = if self.is_sealed() { "s" } else { "p" };
        format!("{kind}/{}/{hex}", &hex[..2])
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.as_bytes()))
    }
}

/// An upload session id: 32 lowercase hex digits, random.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UploadId(pub [u8; 16]);

impl UploadId {
    pub fn new() -> UploadId {
        UploadId(rand::random())
    }

    pub fn parse(s: &[u8]) -> Result<UploadId, BadId> {
        match ObjectId::parse(s)? {
            ObjectId::Processed(b) => Ok(UploadId(b)),
            ObjectId::Sealed(_) => Err(BadId),
        }
    }
}

impl Default for UploadId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn refuses_everything_but_hex_ids() {
        let sealed = "a".repeat(64);
        assert!(ObjectId::parse(sealed.as_bytes()).unwrap().is_sealed());
        let p = ObjectId::parse(b"0123456789abcdef0123456789abcdef").unwrap();
        assert!(!p.is_sealed());
        assert_eq!(p.to_string(), "0123456789abcdef0123456789abcdef");
        assert_eq!(p.blob_path(), "p/01/0123456789abcdef0123456789abcdef");
        for bad in [
            "..".to_string(),
            "%2e%2e".into(),
            "../../etc/passwd".into(),
            "A".repeat(64),
            "a".repeat(65),
            "a".repeat(4096),
            format!("{}\0", "a".repeat(63)),
            format!("{}/", "a".repeat(63)),
            String::new(),
            "a".repeat(31),
        ] {
            assert_eq!(ObjectId::parse(bad.as_bytes()), Err(BadId), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn parse_is_total_and_round_trips(s in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(id) = ObjectId::parse(&s) {
                prop_assert_eq!(id.to_string().into_bytes(), s.clone());
                prop_assert!(!id.blob_path().contains(".."));
            }
        }
    }
}
