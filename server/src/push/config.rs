//! `[push]`: push for offline devices (docs/push.md).

use crate::config::{ConfigError, Secret};
use palaver_turn::Cidr;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PushSection {
    /// Send pushes (and accept `push_*` frames) in `serve` and `signaling`.
    pub enabled: bool,
    /// The VAPID key file (made on first start if missing); default
    /// `<data_dir>/push/vapid.key`. Every signaling node must use the same
    /// key: point them at one file.
    pub vapid_key_file: Option<PathBuf>,
    /// The operator's contact in VAPID tokens (`mailto:` or `https:`).
    pub subject: String,
    /// Coalescing window of message pushes per device.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How long a push service keeps a message push for an offline device.
    #[serde(with = "humantime_serde")]
    pub message_ttl: Duration,
    /// How long it keeps a call push (about `calls.ring_timeout`).
    #[serde(with = "humantime_serde")]
    pub call_ttl: Duration,
    /// Accept `http://` Web Push endpoints (tests, a push service on a
    /// private network).
    pub allow_http: bool,
    /// Networks a Web Push endpoint may resolve to although they are not
    /// public (loopback, private, link-local, metadata are refused).
    pub allow: Vec<Cidr>,
    /// Pushes waiting for a sender; more are dropped (counted).
    pub queue: usize,
    /// Pushes in flight at once.
    pub concurrency: usize,
    /// Whole-request timeout of one attempt (connect included).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per push, the first included (429, 5xx, network errors).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubled each time.
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    /// Longest wait honoured from a `Retry-After` header.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// APNs/FCM relays (`[[push.relays]]`).
    pub relays: Vec<RelaySection>,
}

/// One relay: pushes for `relay` subscriptions are POSTed to `url`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RelaySection {
    pub name: String,
    pub url: String,
    /// HMAC-SHA256 key of the `X-Palaver-Signature` header.
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
}

impl Default for PushSection {
    fn default() -> Self {
        PushSection {
            enabled: true,
            vapid_key_file: None,
            subject: "mailto:postmaster@localhost".into(),
            window: Duration::from_secs(60),
            message_ttl: Duration::from_secs(24 * 3600),
            call_ttl: Duration::from_secs(30),
            allow_http: false,
            allow: Vec::new(),
            queue: 4096,
            concurrency: 32,
            timeout: Duration::from_secs(10),
            max_attempts: 4,
            retry_base: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(60),
            relays: Vec::new(),
        }
    }
}

/// A relay with its secret read.
#[derive(Debug, Clone)]
pub struct Relay {
    pub name: String,
    pub url: String,
    pub secret: Secret,
}

fn bad(key: &str, msg: impl Into<String>) -> ConfigError {
    crate::config::key_err(key, msg)
}

impl PushSection {
    /// Checks the section and reads the relays' secrets.
    pub fn validate(&self) -> Result<Vec<Relay>, ConfigError> {
        let subject_ok =
            self.subject.starts_with("mailto:") || self.subject.starts_with("https://");
        if !subject_ok {
            return Err(bad("push.subject", "must start with mailto: or https://"));
        }
        if self.queue == 0 || self.concurrency == 0 || self.max_attempts == 0 {
            return Err(bad(
                "push.queue",
                "push.queue, push.concurrency and push.max_attempts must be at least 1",
            ));
        }
        for (key, d) in [("push.window", self.window), ("push.timeout", self.timeout)] {
            if d.is_zero() {
                return Err(bad(key, "must be more than 0"));
            }
        }
        for (key, ttl) in [
            ("push.message_ttl", self.message_ttl),
            ("push.call_ttl", self.call_ttl),
        ] {
            if ttl.as_secs() == 0 || ttl.as_secs() > u64::from(u32::MAX) {
                return Err(bad(key, "must be 1 s to 136 years"));
            }
        }
        let mut out: Vec<Relay> = Vec::new();
        for (i, r) in self.relays.iter().enumerate() {
            out.push(relay(i, r, &out)?);
        }
        Ok(out)
    }
}

fn relay(i: usize, r: &RelaySection, seen: &[Relay]) -> Result<Relay, ConfigError> {
    let key = format!("push.relays[{i}]");
    let name_ok = (1..=palaver_proto::push::MAX_RELAY_NAME).contains(&r.name.len());
    if !name_ok || seen.iter().any(|s| s.name == r.name) {
        return Err(bad(&key, "name must be 1 to 64 bytes and unique"));
    }
    if !(r.url.starts_with("https://") || r.url.starts_with("http://")) {
        return Err(bad(&key, "url must be an http(s):// URL"));
    }
    let secret = match (&r.secret, &r.secret_file) {
        (Some(_), Some(_)) => return Err(bad(&key, "set either secret or secret_file")),
        (Some(s), None) => s.clone(),
        (None, Some(p)) => crate::config::read_secret_file(&format!("{key}.secret_file"), p)?,
        (None, None) => return Err(bad(&key, "needs secret or secret_file")),
    };
    Ok(Relay {
        name: r.name.clone(),
        url: r.url.clone(),
        secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_relays_need_a_secret() {
        let mut s = PushSection::default();
        assert!(s.validate().unwrap().is_empty());
        s.relays.push(RelaySection {
            name: "apns".into(),
            url: "https://relay.example/push".into(),
            secret: None,
            secret_file: None,
        });
        assert!(s.validate().is_err());
        s.relays[0].secret = Some(serde_json::from_str("\"k\"").unwrap());
        assert_eq!(s.validate().unwrap()[0].name, "apns");
        s.relays.push(s.relays[0].clone());
        assert!(s.validate().is_err(), "duplicate names");
        s.relays.pop();
        s.subject = "ops@example.com".into();
        assert!(s.validate().is_err());
    }
}
