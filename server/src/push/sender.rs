//! The sender: a bounded queue of pushes, at most `push.concurrency` in
//! flight, each retried with exponential backoff (honouring `Retry-After`)
//! after 429, 5xx or a network error, up to `push.max_attempts`. A 404 or
//! 410 drops the subscription (if it is still the one pushed to).

use super::webpush::WebPush;
use super::{PushSection, Relay};
use palaver_messaging::Store;
use palaver_proto::push::PushTarget;
use palaver_signaling::metrics::KindLabel;
use palaver_signaling::push::{PushJob, PushMetrics, PushSink};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// What one attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    Accepted,
    /// 404/410: the subscription is gone.
    Gone,
    /// Another 4xx, or a request that cannot be made.
    Refused,
    /// The endpoint leads to an address the policy refuses.
    Blocked,
    /// 429, 5xx or a network error; wait at least this long if given.
    Retry(Option<Duration>),
}

impl Attempt {
    pub(crate) fn from_status(status: u16, after: Option<Duration>) -> Self {
        use palaver_push::request::{Outcome, outcome};
        match outcome(status) {
            Outcome::Accepted => Attempt::Accepted,
            Outcome::Gone => Attempt::Gone,
            Outcome::Retry => Attempt::Retry(after),
            Outcome::Refused => Attempt::Refused,
        }
    }
}

/// Backoff before attempt `n + 1` (n >= 1): base * 2^(n-1), plus up to a
/// quarter of jitter, at least `after`, at most `max` for `after`.
pub(crate) fn backoff(base: Duration, n: u32, after: Option<Duration>, max: Duration) -> Duration {
    let exp = base.saturating_mul(1 << (n - 1).min(16));
    let jitter = exp.mul_f64(rand::random::<f64>() / 4.0);
    (exp + jitter).max(after.map_or(Duration::ZERO, |a| a.min(max)))
}

struct Ctx {
    web: WebPush,
    relays: Vec<Relay>,
    relay_client: reqwest::Client,
    store: Arc<dyn Store>,
    metrics: Arc<PushMetrics>,
    max_attempts: u32,
    retry_base: Duration,
    max_retry_after: Duration,
    stop: CancellationToken,
}

/// The [`PushSink`] of the server.
pub(crate) struct Sender {
    tx: mpsc::Sender<PushJob>,
}

impl PushSink for Sender {
    fn submit(&self, job: PushJob) -> bool {
        self.tx.try_send(job).is_ok()
    }
}

impl Sender {
    pub(crate) fn start(
        s: &PushSection,
        relays: &[Relay],
        vapid: palaver_push::vapid::VapidKey,
        store: Arc<dyn Store>,
        metrics: Arc<PushMetrics>,
        stop: CancellationToken,
    ) -> anyhow::Result<Arc<Sender>> {
        let relay_client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(s.timeout)
            .timeout(s.timeout)
            .build()?;
        let ctx = Arc::new(Ctx {
            web: WebPush::new(s, vapid)?,
            relays: relays.to_vec(),
            relay_client,
            store,
            metrics,
            max_attempts: s.max_attempts,
            retry_base: s.retry_base,
            max_retry_after: s.max_retry_after,
            stop,
        });
        let (tx, rx) = mpsc::channel(s.queue);
        tokio::spawn(dispatch(ctx, rx, Arc::new(Semaphore::new(s.concurrency))));
        Ok(Arc::new(Sender { tx }))
    }
}

async fn dispatch(ctx: Arc<Ctx>, mut rx: mpsc::Receiver<PushJob>, slots: Arc<Semaphore>) {
    loop {
        let job = tokio::select! {
            _ = ctx.stop.cancelled() => return,
            j = rx.recv() => j,
        };
        let Some(job) = job else { return };
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            ctx.deliver(job).await;
            drop(permit);
        });
    }
}

impl Ctx {
    async fn attempt(&self, job: &PushJob) -> Attempt {
        match &job.target {
            PushTarget::WebPush {
                endpoint,
                p256dh,
                auth,
            } => self.web.attempt(job, endpoint, (p256dh, auth)).await,
            PushTarget::Relay { relay, token } => {
                match self.relays.iter().find(|r| r.name == *relay) {
                    Some(r) => super::relay::attempt(&self.relay_client, r, job, token).await,
                    // The relay was removed from the configuration.
                    None => Attempt::Refused,
                }
            }
        }
    }

    async fn deliver(&self, job: PushJob) {
        let k = KindLabel {
            kind: job.payload.kind(),
        };
        let m = &self.metrics;
        for n in 1..=self.max_attempts {
            let counter = match self.attempt(&job).await {
                Attempt::Retry(after) => {
                    if n == self.max_attempts {
                        break;
                    }
                    m.retries.get_or_create(&k).inc();
                    let wait = backoff(self.retry_base, n, after, self.max_retry_after);
                    tokio::select! {
                        _ = self.stop.cancelled() => break,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
                Attempt::Accepted => &m.sent,
                Attempt::Gone => return self.gone(&job, &k).await,
                Attempt::Refused => &m.failed,
                Attempt::Blocked => {
                    tracing::warn!(
                        device = job.device.0,
                        "push endpoint refused by the push.allow policy"
                    );
                    &m.dropped
                }
            };
            counter.get_or_create(&k).inc();
            return;
        }
        m.failed.get_or_create(&k).inc();
    }
    async fn gone(&self, job: &PushJob, k: &KindLabel) {
        self.metrics.failed.get_or_create(k).inc();
        match self
            .store
            .drop_push_target(job.device, job.target.clone())
            .await
        {
            Ok(true) => {
                self.metrics.gone.inc();
                tracing::info!(device = job.device.0, "push subscription gone; dropped");
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot drop a gone push subscription"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_honours_retry_after_up_to_the_cap() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        for n in 1..5u32 {
            let b = backoff(base, n, None, max);
            let exp = base * 2u32.pow(n - 1);
            assert!(b >= exp && b <= exp.mul_f64(1.25), "{n}: {b:?}");
        }
        assert!(backoff(base, 1, Some(Duration::from_secs(30)), max) >= Duration::from_secs(30));
        assert!(backoff(base, 1, Some(Duration::from_secs(3600)), max) < Duration::from_secs(61));
        assert_eq!(Attempt::from_status(410, None), Attempt::Gone);
        assert_eq!(Attempt::from_status(503, None), Attempt::Retry(None));
        assert_eq!(Attempt::from_status(201, None), Attempt::Accepted);
        assert_eq!(Attempt::from_status(400, None), Attempt::Refused);
    }
}
