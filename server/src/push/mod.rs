//! Push for offline devices, the server's part (docs/push.md): this
//! deployment's VAPID key and `GET /v1/push/vapid-key`, the `[push]`
//! section, and the sender the gateway hands its pushes to.
//!
//! - `vapid_key`: the key file and its route.
//! - `config`: `[push]` and `[[push.relays]]`.
//! - `sender`: bounded queue, concurrency limit, retries with backoff.
//! - `webpush` / `relay`: one attempt of a Web Push or relay request.
//! - `ssrf`: where a Web Push endpoint may lead.

mod config;
mod relay;
mod sender;
mod ssrf;
mod vapid_key;
mod webpush;

pub use config::{PushSection, Relay};
pub use vapid_key::{load_or_create, routes};

use palaver_messaging::{Notifier, Store};
use palaver_signaling::Gateway;
use palaver_signaling::push::{PushConfig, PushEvents, PushMetrics, wrap_notifier};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Wraps the store's notifier when push is on (before the store opens).
pub fn wrap(
    section: &PushSection,
    notifier: Arc<dyn Notifier>,
    metrics: &Arc<PushMetrics>,
) -> (Arc<dyn Notifier>, Option<PushEvents>) {
    if !section.enabled {
        return (notifier, None);
    }
    let (n, events) = wrap_notifier(notifier, section.queue, metrics.clone());
    (n, Some(events))
}

/// Starts the sender and the gateway's trigger.
pub fn start(
    section: &PushSection,
    relays: &[Relay],
    vapid: palaver_push::vapid::VapidKey,
    store: Arc<dyn Store>,
    gw: &Arc<Gateway>,
    events: PushEvents,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = events.metrics();
    let sender = sender::Sender::start(section, relays, vapid, store, metrics, stop)?;
    let config = PushConfig {
        allow_http: section.allow_http,
        relays: relays.iter().map(|r| r.name.clone()).collect(),
        window: section.window,
        message_ttl: section.message_ttl,
        call_ttl: section.call_ttl,
    };
    gw.start_push(config, sender, events);
    tracing::info!(relays = relays.len(), "push started");
    Ok(())
}
