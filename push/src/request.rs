//! One Web Push request (RFC 8030 section 5) and the meaning of the push
//! service's answer.

use crate::ece::{self, EceError, SubscriptionKeys};
use crate::vapid::{VapidError, VapidKey};

/// RFC 8030 section 5.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    VeryLow,
    Low,
    Normal,
    /// Incoming calls: delivered even to a device saving power.
    High,
}

impl Urgency {
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::VeryLow => "very-low",
            Urgency::Low => "low",
            Urgency::Normal => "normal",
            Urgency::High => "high",
        }
    }
}

/// What one push says besides its payload.
#[derive(Debug, Clone)]
pub struct PushOptions<'a> {
    /// Seconds the push service keeps the message for an offline device.
    pub ttl: u32,
    pub urgency: Urgency,
    /// A later push with the same topic replaces an undelivered earlier
    /// one (at most 32 base64url characters).
    pub topic: Option<&'a str>,
    /// The operator's contact in the VAPID token.
    pub subject: &'a str,
    /// Unix time now, for the VAPID token's expiry.
    pub now: u64,
}

/// A request ready to POST to the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRequest {
    pub endpoint: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error(transparent)]
    Encryption(#[from] EceError),
    #[error(transparent)]
    Vapid(#[from] VapidError),
    #[error("topic must be 1 to 32 base64url characters")]
    BadTopic,
}

/// Encrypts `payload` for the subscription and signs the request.
pub fn build(
    endpoint: &str,
    keys: &SubscriptionKeys,
    vapid: &VapidKey,
    payload: &[u8],
    opts: &PushOptions<'_>,
) -> Result<PushRequest, RequestError> {
    let mut headers = vec![
        ("TTL", opts.ttl.to_string()),
        ("Urgency", opts.urgency.as_str().to_owned()),
        ("Content-Encoding", "aes128gcm".to_owned()),
        ("Content-Type", "application/octet-stream".to_owned()),
        (
            "Authorization",
            vapid.authorization(endpoint, opts.now, opts.subject)?,
        ),
    ];
    if let Some(topic) = opts.topic {
        let ok = (1..=32).contains(&topic.len())
            && topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(RequestError::BadTopic);
        }
        headers.push(("Topic", topic.to_owned()));
    }
    Ok(PushRequest {
        endpoint: endpoint.to_owned(),
        headers,
        body: ece::encrypt(payload, keys)?,
    })
}

/// What the push service's status code means for the subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: accepted.
    Accepted,
    /// 404 or 410: the subscription is gone; forget it.
    Gone,
    /// 429 or 5xx: try again later (honour `Retry-After`).
    Retry,
    /// Any other answer: this request is wrong; do not repeat it.
    Refused,
}

pub fn outcome(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Accepted,
        404 | 410 => Outcome::Gone,
        429 | 500..=599 => Outcome::Retry,
        _ => Outcome::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_of_a_call_push() {
        let keys = SubscriptionKeys::parse(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
            "BTBZMqHH6r4Tts7J_aSIgg",
        )
        .unwrap();
        let opts = PushOptions {
            ttl: 30,
            urgency: Urgency::High,
            topic: Some("call"),
            subject: "mailto:ops@example.com",
            now: 1_700_000_000,
        };
        let vapid = VapidKey::generate();
        let r = build("https://push.example/x", &keys, &vapid, b"{}", &opts).unwrap();
        let get = |k: &str| {
            r.headers
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("Urgency"), Some("high"));
        assert_eq!(get("TTL"), Some("30"));
        assert_eq!(get("Topic"), Some("call"));
        assert!(get("Authorization").unwrap().starts_with("vapid t="));
        let bad = PushOptions {
            topic: Some("no spaces"),
            ..opts
        };
        let e = build("https://push.example/x", &keys, &vapid, b"{}", &bad).unwrap_err();
        assert_eq!(e, RequestError::BadTopic);
    }

    #[test]
    fn gone_means_drop() {
        assert_eq!(outcome(201), Outcome::Accepted);
        assert_eq!(outcome(404), Outcome::Gone);
        assert_eq!(outcome(410), Outcome::Gone);
        assert_eq!(outcome(429), Outcome::Retry);
        assert_eq!(outcome(503), Outcome::Retry);
        assert_eq!(outcome(400), Outcome::Refused);
    }
}
