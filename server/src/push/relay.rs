//! One relay attempt: POST the push as JSON to the relay configured for
//! the subscription, signed like the webhook verifier:
//! `X-Palaver-Timestamp: <unix s>` and `X-Palaver-Signature:
//! sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`. Body:
//! `{"device","account","token","payload","urgency","ttl"}`.

use super::Relay;
use super::sender::Attempt;
use super::webpush::{send, unix_now};
use hmac::{Hmac, Mac};
use palaver_signaling::push::PushJob;
use sha2::Sha256;

/// The signature header's value for a body sent at `timestamp`.
pub(crate) fn sign(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The JSON body of a relay request.
pub(crate) fn body(job: &PushJob, token: &str) -> Vec<u8> {
    let v = serde_json::json!({
        "device": job.device,
        "account": job.account,
        "token": token,
        "payload": job.payload,
        "urgency": job.urgency.as_str(),
        "ttl": job.ttl.as_secs(),
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

pub(crate) async fn attempt(
    client: &reqwest::Client,
    relay: &Relay,
    job: &PushJob,
    token: &str,
) -> Attempt {
    let body = body(job, token);
    let ts = unix_now();
    let rb = client
        .post(&relay.url)
        .header("Content-Type", "application/json")
        .header("X-Palaver-Timestamp", ts.to_string())
        .header(
            "X-Palaver-Signature",
            sign(relay.secret.expose(), ts, &body),
        )
        .body(body);
    send(rb).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_an_independent_computation() {
        // printf '1700000000.{}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            sign("key", 1_700_000_000, b"{}"),
            "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }
}
