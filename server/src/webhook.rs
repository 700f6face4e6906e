//! A verifier that hands codes to an SMS gateway over HTTP.
//!
//! Each code is POSTed as JSON `{"phone": "+…", "code": "123456"}` with
//! `X-Palaver-Timestamp` (Unix seconds) and `X-Palaver-Signature:
//! sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`, so the gateway
//! can reject forged and replayed requests. Failures are retried twice with
//! backoff; a 4xx answer is not retried.

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use palaver_messaging::policy::Phone;
use palaver_signaling::{Verifier, VerifierError};
use sha2::Sha256;
use std::time::Duration;

pub struct WebhookVerifier {
    client: reqwest::Client,
    url: String,
    secret: crate::config::Secret,
}

impl std::fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookVerifier").finish_non_exhaustive()
    }
}

impl WebhookVerifier {
    pub fn new(
        url: String,
        secret: crate::config::Secret,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(WebhookVerifier {
            client,
            url,
            secret,
        })
    }

    fn sign(&self, timestamp: u64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.expose().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

#[async_trait]
impl Verifier for WebhookVerifier {
    async fn send_code(&self, phone: &Phone, code: &str) -> Result<(), VerifierError> {
        let body =
            serde_json::to_vec(&serde_json::json!({ "phone": phone.as_str(), "code": code }))
                .map_err(|e| VerifierError(e.to_string()))?;
        let mut last = String::new();
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * 4u64.pow(attempt - 1))).await;
            }
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let sent = self
                .client
                .post(&self.url)
                .header("content-type", "application/json")
                .header("x-palaver-timestamp", ts.to_string())
                .header("x-palaver-signature", self.sign(ts, &body))
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) if r.status().is_client_error() => {
                    return Err(VerifierError(format!(
                        "gateway refused the code: {}",
                        r.status()
                    )));
                }
                Ok(r) => last = format!("gateway answered {}", r.status()),
                Err(e) => last = format!("gateway unreachable: {}", e.without_url()),
            }
        }
        Err(VerifierError(last))
    }
}
