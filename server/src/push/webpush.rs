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
            let after = retry_after(resp.headers());
            Attempt::from_status(status, after)
        }
        Err(e) if ssrf::is_refusal(&e) => Attempt::Blocked,
        Err(e) => {
            tracing::debug!(error = %e.without_url(), "push request failed");
            Attempt::Retry(None)
        }
    }
}

/// `Retry-After` in seconds (the HTTP-date form is treated as absent).
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    h.get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
