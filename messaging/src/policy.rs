//! Pure rules of the messaging core. Nothing here touches the network, the
//! disk or the clock.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use palaver_proto::DeviceId;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// A phone number that is not a valid E.164 number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid E.164 phone number (expected + and 8 to 15 digits of a number in service)")]
pub struct InvalidPhone;

/// A phone number in canonical E.164 form (`+` and digits), checked against
/// the numbering plans of libphonenumber's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Phone(String);

impl Phone {
    /// Parses a phone number. Only the canonical form is accepted, so that
    /// one number has exactly one spelling in the database.
    pub fn parse(s: &str) -> Result<Phone, InvalidPhone> {
        let digits = s.strip_prefix('+').ok_or(InvalidPhone)?;
        if !(8..=15).contains(&digits.len())
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.starts_with('0')
        {
            return Err(InvalidPhone);
        }
        let parsed = phonenumber::parse(None, s).map_err(|_| InvalidPhone)?;
        if !phonenumber::is_valid(&parsed) {
            return Err(InvalidPhone);
        }
        let canonical = parsed.format().mode(phonenumber::Mode::E164).to_string();
        if canonical != s {
            return Err(InvalidPhone);
        }
        Ok(Phone(canonical))
    }

    /// The number as stored, `+` and digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A form safe for logs: country code and last two digits only.
    pub fn redacted(&self) -> String {
        let s = &self.0;
        let tail = &s[s.len() - 2..];
        format!("{}…{}", &s[..3.min(s.len())], tail)
    }
}

/// Number of digits in a verification code.
pub const CODE_DIGITS: usize = 6;

/// A fresh random verification code.
pub fn new_code() -> String {
    let n = rand::rng().next_u32() % 1_000_000;
    format!("{n:06}")
}

/// The stored form of a verification code, bound to its phone number.
pub fn hash_code(phone: &Phone, code: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"palaver-code\0");
    h.update(phone.as_str().as_bytes());
    h.update([0]);
    h.update(code.as_bytes());
    h.finalize().into()
}

/// A fresh device credential: 32 random bytes, base64url without padding.
pub fn new_credential() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of a device credential. Credentials are 256-bit random
/// secrets, so a fast hash is enough: there is nothing to brute-force.
pub fn hash_credential(credential: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"palaver-device-credential\0");
    h.update(credential.as_bytes());
    h.finalize().into()
}

/// The stored form of a device-link code (128 random bits, so a fast hash
/// is enough).
pub fn link_code_hash(code: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"palaver-link-code\0");
    h.update(code.as_bytes());
    h.finalize().into()
}

/// Constant-time comparison of two stored hashes.
pub fn hashes_equal(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A send whose envelopes do not match the devices it must reach.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceMismatch {
    /// Current devices without an envelope.
    pub missing: Vec<DeviceId>,
    /// Envelopes for devices that are not current (or the sending device).
    pub extra: Vec<DeviceId>,
    /// Devices given more than one envelope.
    pub duplicated: Vec<DeviceId>,
}

/// Checks that `given` names every device in `required` exactly once and
/// nothing else.
pub fn check_coverage(required: &[DeviceId], given: &[DeviceId]) -> Result<(), DeviceMismatch> {
    let required: BTreeSet<DeviceId> = required.iter().copied().collect();
    let mut seen = BTreeSet::new();
    let mut mismatch = DeviceMismatch::default();
    for d in given {
        if !seen.insert(*d) {
            mismatch.duplicated.push(*d);
        } else if !required.contains(d) {
            mismatch.extra.push(*d);
        }
    }
    mismatch.missing = required.difference(&seen).copied().collect();
    if mismatch == DeviceMismatch::default() {
        Ok(())
    } else {
        Err(mismatch)
    }
}

/// State of a stored verification code, as the store read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRecord {
    pub hash: [u8; 32],
    pub expires_at_ms: u64,
    pub attempts: u32,
    pub used: bool,
}

/// What to do with a verification attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeDecision {
    /// Correct: consume the code.
    Accept,
    /// Wrong: count the attempt.
    Wrong,
    /// No code, or it expired.
    Expired,
    /// The code was already used once.
    Used,
    /// Too many wrong attempts for this code.
    Exhausted,
}

/// Decides a verification attempt against the stored code.
pub fn decide_code(
    record: Option<&CodeRecord>,
    given_hash: &[u8; 32],
    now_ms: u64,
    max_attempts: u32,
) -> CodeDecision {
    let Some(r) = record else {
        return CodeDecision::Expired;
    };
    if r.used {
        // Checked first: a replayed code must say "used" even once expired.
        return if hashes_equal(&r.hash, given_hash) {
            CodeDecision::Used
        } else {
            CodeDecision::Expired
        };
    }
    if now_ms >= r.expires_at_ms {
        return CodeDecision::Expired;
    }
    if r.attempts >= max_attempts {
        return CodeDecision::Exhausted;
    }
    if hashes_equal(&r.hash, given_hash) {
        CodeDecision::Accept
    } else {
        CodeDecision::Wrong
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers() {
        assert!(Phone::parse("+14155552671").is_ok());
        assert!(Phone::parse("+4915112345678").is_ok());
        assert!(Phone::parse("+447911123456").is_ok());
        for bad in [
            "14155552671",
            "+1 415 555 2671",
            "+1-415-555-2671",
            "+0123456789",
            "+1234",
            "+1234567890123456",
            "+99912345678",
            "",
            "+",
            "+1415555267a",
        ] {
            assert_eq!(Phone::parse(bad), Err(InvalidPhone), "{bad}");
        }
        assert_eq!(Phone::parse("+14155552671").unwrap().redacted(), "+14…71");
    }

    #[test]
    fn codes_and_credentials() {
        let c = new_code();
        assert_eq!(c.len(), CODE_DIGITS);
        assert!(c.bytes().all(|b| b.is_ascii_digit()));
        let p = Phone::parse("+14155552671").unwrap();
        let q = Phone::parse("+14155552672").unwrap();
        assert_ne!(hash_code(&p, "123456"), hash_code(&q, "123456"));
        let cred = new_credential();
        assert_eq!(cred.len(), 43);
        assert_ne!(cred, new_credential());
        assert!(hashes_equal(
            &hash_credential(&cred),
            &hash_credential(&cred)
        ));
        assert!(!hashes_equal(
            &hash_credential(&cred),
            &hash_credential("x")
        ));
    }

    #[test]
    fn coverage() {
        let d = |n| DeviceId(n);
        assert_eq!(check_coverage(&[d(1), d(2)], &[d(2), d(1)]), Ok(()));
        let m = check_coverage(&[d(1), d(2)], &[d(1), d(3), d(1)]).unwrap_err();
        assert_eq!(m.missing, vec![d(2)]);
        assert_eq!(m.extra, vec![d(3)]);
        assert_eq!(m.duplicated, vec![d(1)]);
        assert!(check_coverage(&[], &[]).is_ok());
    }

    #[test]
    fn code_decisions() {
        let p = Phone::parse("+14155552671").unwrap();
        let good = hash_code(&p, "111111");
        let bad = hash_code(&p, "222222");
        let rec = CodeRecord {
            hash: good,
            expires_at_ms: 1000,
            attempts: 0,
            used: false,
        };
        assert_eq!(decide_code(None, &good, 0, 5), CodeDecision::Expired);
        assert_eq!(decide_code(Some(&rec), &good, 999, 5), CodeDecision::Accept);
        assert_eq!(decide_code(Some(&rec), &bad, 999, 5), CodeDecision::Wrong);
        assert_eq!(
            decide_code(Some(&rec), &good, 1000, 5),
            CodeDecision::Expired
        );
        let tired = CodeRecord {
            attempts: 5,
            ..rec.clone()
        };
        assert_eq!(
            decide_code(Some(&tired), &good, 0, 5),
            CodeDecision::Exhausted
        );
        let used = CodeRecord { used: true, ..rec };
        assert_eq!(decide_code(Some(&used), &good, 0, 5), CodeDecision::Used);
        assert_eq!(decide_code(Some(&used), &good, 5000, 5), CodeDecision::Used);
        assert_eq!(decide_code(Some(&used), &bad, 0, 5), CodeDecision::Expired);
    }
}
