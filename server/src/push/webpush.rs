//! One Web Push attempt: encrypt and sign with `palaver-push`, check the
//! endpoint against the address policy, POST.

use super::sender::Attempt;
use super::ssrf::{self, CheckedResolver};
use palaver_push::ece::SubscriptionKeys;
use palaver_push::request::{self, PushOptions};
use palaver_push::vapid::VapidKey;
use palaver_signaling::push::PushJob;
use palaver_turn::policy::PeerPolicy;
use std::sync::Arc;
use std::time::Duration;

/// What Web Push requests need.
pub(crate) struct WebPush {
    client: reqwest::Client,
    policy: Arc<PeerPolicy>,
    vapid: VapidKey,
    subject: String,
}

impl WebPush {
    pub(crate) fn new(
        section: &super::PushSection,
        vapid: VapidKey,
    ) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(PeerPolicy::new(section.allow.clone()));
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(CheckedResolver {
                policy: policy.clone(),
            }))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(section.timeout)
            .timeout(section.timeout)
            .build()?;
        Ok(WebPush {
            client,
            policy,
            vapid,
            subject: section.subject.clone(),
        })
    }

    pub(crate) async fn attempt(
        &self,
        job: &PushJob,
        endpoint: &str,
        keys: (&str, &str),
    ) -> Attempt {
        let Ok(keys) = SubscriptionKeys::parse(keys.0, keys.1) else {
            return Attempt::Refused;
        };
        let Ok(url) = reqwest::Url::parse(endpoint) else {
            return Attempt::Refused;
        };
        if ssrf::check_literal(&url, &self.policy).is_err() {
            return Attempt::Blocked;
        }
        let payload = serde_json::to_vec(&job.payload).unwrap_or_default();
        let opts = PushOptions {
            ttl: u32::try_from(job.ttl.as_secs()).unwrap_or(u32::MAX),
            urgency: job.urgency,
            topic: job.topic.as_deref(),
            subject: &self.subject,
            now: unix_now(),
        };
        let req = match request::build(endpoint, &keys, &self.vapid, &payload, &opts) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot build a Web Push request");
                return Attempt::Refused;
            }
        };
        let mut rb = self.client.post(url).body(req.body);
        for (name, value) in req.headers {
            rb = rb.header(name, value);
        }
        send(rb).await
    }
}

/// Sends a request and reads what the answer means.
pub(crate) async fn send(rb: reqwest::RequestBuilder) -> Attempt {
    match rb.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after(v, std::time::SystemTime::now()));
            Attempt::from_status(status, after)
        }
        Err(e) if ssrf::is_refusal(&e) => Attempt::Blocked,
        Err(e) => {
            tracing::debug!(error = %e.without_url(), "push request failed");
            Attempt::Retry(None)
        }
    }
}

/// A `Retry-After` value (RFC 9110 section 10.2.3): delay seconds, or an
/// HTTP date (a date already past means now). Anything else is ignored.
fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        // Sun, 06 Nov 1994 08:49:37 GMT is 784111777.
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(Duration::ZERO),
            "a date already past means now"
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
    }
}
