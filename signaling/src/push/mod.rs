//! Push for offline devices, the gateway's part (docs/push.md): the
//! `push_*` frames, the trigger that turns envelopes queued for devices
//! without a connection into coalesced message pushes, and the call pushes
//! of the call state machine. Sending (HTTP, SSRF policy, retries) is the
//! server's [`PushSink`].
//!
//! - [`coalesce`]: one push per device per burst, sans-IO.
//! - `trigger`: the store notifier that feeds it and its driver task.
//! - `frames`: `push_subscribe`, `push_unsubscribe`, `push_quiet`.

pub mod coalesce;
mod frames;
mod metrics;
mod trigger;

pub use metrics::PushMetrics;
pub use trigger::{PushEvents, wrap_notifier};

use palaver_proto::push::{PushPayload, PushTarget};
use palaver_proto::{AccountId, DeviceId};
use palaver_push::request::Urgency;
use std::sync::Arc;
use std::time::Duration;

/// What the gateway needs to know about push.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// Accept `http://` Web Push endpoints (tests, a push service on a
    /// private network); `https://` only otherwise.
    pub allow_http: bool,
    /// Names of the configured relays.
    pub relays: Vec<String>,
    /// Coalescing window of message pushes.
    pub window: Duration,
    /// How long a push service keeps a message push for an offline device.
    pub message_ttl: Duration,
    /// How long it keeps a call push (about the ring timeout).
    pub call_ttl: Duration,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            allow_http: false,
            relays: Vec::new(),
            window: Duration::from_secs(60),
            message_ttl: Duration::from_secs(24 * 3600),
            call_ttl: Duration::from_secs(30),
        }
    }
}

/// One push for the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushJob {
    pub device: DeviceId,
    pub account: AccountId,
    pub target: PushTarget,
    pub payload: PushPayload,
    pub urgency: Urgency,
    pub ttl: Duration,
    /// A later push with the same topic replaces an undelivered one.
    pub topic: Option<String>,
}

/// The server's sender. `submit` never waits.
pub trait PushSink: Send + Sync + 'static {
    /// Queues a job; false if the queue is full and the job was dropped.
    fn submit(&self, job: PushJob) -> bool;
}

/// The push part of a running gateway.
pub(crate) struct Pusher {
    pub(crate) config: PushConfig,
    pub(crate) sink: Arc<dyn PushSink>,
    pub(crate) metrics: Arc<PushMetrics>,
    pub(crate) events: tokio::sync::mpsc::Sender<trigger::Event>,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher").finish_non_exhaustive()
    }
}
