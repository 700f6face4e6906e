//! Delivery of verification codes to phones.

use async_trait::async_trait;
use palaver_messaging::policy::Phone;
use parking_lot::Mutex;
use std::collections::HashMap;

/// A code could not be handed to the phone.
#[derive(Debug, thiserror::Error)]
#[error("verification code delivery failed: {0}")]
pub struct VerifierError(pub String);

/// Sends a verification code to a phone number (SMS, voice, ...).
#[async_trait]
pub trait Verifier: Send + Sync + 'static {
    async fn send_code(&self, phone: &Phone, code: &str) -> Result<(), VerifierError>;

    /// The last code sent to `phone`, for verifiers that keep it (the
    /// development verifier does; real ones never do).
    fn last_code(&self, _phone: &Phone) -> Option<String> {
        None
    }
}

/// The development verifier: logs each code and keeps the last one per
/// phone so that the admin listener can show it. Never use in production.
#[derive(Debug, Default)]
pub struct DevVerifier {
    codes: Mutex<HashMap<String, String>>,
}

#[async_trait]
impl Verifier for DevVerifier {
    async fn send_code(&self, phone: &Phone, code: &str) -> Result<(), VerifierError> {
        tracing::info!(phone = %phone.redacted(), code, "development verifier: verification code (never use this verifier in production)");
        let mut codes = self.codes.lock();
        if codes.len() > 100_000 {
            codes.clear();
        }
        codes.insert(phone.as_str().to_owned(), code.to_owned());
        Ok(())
    }

    fn last_code(&self, phone: &Phone) -> Option<String> {
        self.codes.lock().get(phone.as_str()).cloned()
    }
}
