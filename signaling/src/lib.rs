//! Palaver's signaling gateway: the `/v1/ws` WebSocket protocol, device
//! authentication, registration, presence, typing, and the in-process
//! routing of envelopes from the store to connected devices.
//!
//! Layout:
//! - [`Gateway`] holds what every connection shares: the [`Store`], the
//!   [`router::Router`] (who is connected where), the verifier, the rate
//!   limiters, the metrics and the configuration.
//! - `conn` runs one connection: a single task that reads frames, answers
//!   them one at a time (so a device's sends are stored in the order it sent
//!   them) and pushes envelopes from its queue.
//! - [`router::Router`] is the in-process bus. It is the store's
//!   [`Notifier`]: after a commit, new envelopes are handed to the
//!   connection of their device, if any, without touching the database
//!   again. A connection that falls behind re-reads its queue instead.
//!
//! [`Store`]: palaver_messaging::Store
//! [`Notifier`]: palaver_messaging::Notifier

pub mod calls;
mod chats;
pub mod cluster;
pub mod config;
mod conn;
pub mod group_calls;
mod groups;
mod handlers;
pub mod http;
mod keys;
pub mod metrics;
pub mod push;
pub mod ratelimit;
pub mod router;
mod sfu_failover;
pub mod sfu_nodes;
pub mod sfu_registry;
pub mod verifier;

pub use config::GatewayConfig;
pub use conn::serve_socket;
pub use metrics::Metrics;
pub use verifier::{DevVerifier, Verifier, VerifierError};

use palaver_messaging::Store;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// State shared by every connection of one gateway.
pub struct Gateway {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) router: Arc<router::Router>,
    pub(crate) verifier: Arc<dyn Verifier>,
    pub(crate) config: GatewayConfig,
    pub(crate) limits: ratelimit::Limits,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: tokio_util::task::TaskTracker,
    pub(crate) calls: calls::CallHub,
    pub(crate) group_calls: parking_lot::Mutex<group_calls::Rooms>,
    /// Routing to other nodes; `None` on a single node.
    pub(crate) cluster: Option<Arc<cluster::Cluster>>,
    /// Push for offline devices, once [`Gateway::start_push`] ran.
    pub(crate) push: std::sync::OnceLock<Arc<push::Pusher>>,
    /// TURN region hints of the devices connected here.
    pub(crate) region_hints: calls::regions::Hints,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway over `store`, whose notifier must be `router` (or, with
    /// `cluster`, the cluster's notifier over `router`).
    pub fn new(
        config: GatewayConfig,
        store: Arc<dyn Store>,
        router: Arc<router::Router>,
        cluster: Option<Arc<cluster::Cluster>>,
        verifier: Arc<dyn Verifier>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Gateway {
            limits: ratelimit::Limits::new(&config.rate_limits),
            calls: calls::CallHub::new(calls::Calls::new(config.calls)),
            group_calls: Default::default(),
            region_hints: Default::default(),
            store,
            router,
            verifier,
            config,
            metrics,
            shutdown: CancellationToken::new(),
            tasks: tokio_util::task::TaskTracker::new(),
            cluster,
            push: std::sync::OnceLock::new(),
        })
    }

    /// Closes every connection (after the frame it is handling) and waits
    /// until all of them are gone, so that no acknowledged write is cut off.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// True once `shutdown` has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Remembers a device's TURN region hint, given on connection `conn`.
    pub(crate) fn set_region_hint(
        &self,
        device: palaver_proto::DeviceId,
        conn: u64,
        hint: Option<String>,
    ) {
        self.region_hints.set(device, conn, hint);
    }

    /// Connection `conn` of `device` closed.
    pub(crate) fn clear_region_hint(&self, device: palaver_proto::DeviceId, conn: u64) {
        self.region_hints.clear(device, conn);
    }

    /// ICE servers (with fresh TURN credentials) for a device: its
    /// client's region first if it asked for one, else this node's.
    pub(crate) fn ice_servers(
        &self,
        device: palaver_proto::DeviceId,
    ) -> Vec<palaver_proto::frames::IceServer> {
        let hint = self.region_hints.get(device);
        self.config
            .ice
            .servers_with_hint(device, now_ms() / 1000, hint.as_deref())
    }

    /// Runs the call timers (ring timeout, reconnect grace) until shutdown.
    pub async fn run_call_timers(self: Arc<Self>) {
        // The requests of other nodes, when this node leads the calls.
        let remote = tokio::spawn(self.clone().run_remote_calls());
        // Accounts of nodes that died, to announce offline.
        let reaped = tokio::spawn(self.clone().run_reaped());
        calls::CallHub::run_timers(self).await;
        remote.abort();
        reaped.abort();
    }

    /// The SFU node registry, when nodes share Redis (`None`: the one
    /// configured SFU takes every group call).
    pub(crate) fn sfu_registry(&self) -> Option<sfu_registry::SfuRegistry> {
        self.cluster.as_ref().map(|c| c.sfu_registry())
    }

    /// Runs periodic maintenance (queue expiry, rate-limiter cleanup) until
    /// shutdown.
    pub async fn run_maintenance(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.expiry_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.expire_once().await;
            self.limits.cleanup();
        }
    }
}

/// Routing that spans the nodes: here first, then through the cluster.
impl Gateway {
    /// Announces offline the accounts whose node died (see
    /// `cluster::reap`), with their last-seen time recorded, until shutdown.
    async fn run_reaped(self: Arc<Self>) {
        let Some(mut reaped) = self.cluster.as_ref().and_then(|c| c.take_reaped()) else {
            return;
        };
        loop {
            let accounts = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                a = reaped.recv() => a,
            };
            let Some(accounts) = accounts else { return };
            let now = now_ms();
            for account in accounts {
                self.announce_offline(account, now).await;
            }
        }
    }

    /// Records `account`'s last-seen time and tells its watchers, on every
    /// node, that it went offline.
    pub(crate) async fn announce_offline(&self, account: palaver_proto::AccountId, now: u64) {
        let privacy = match self.store.presence(account).await {
            Ok(Some(p)) => p.privacy,
            _ => palaver_proto::frames::LastSeenPrivacy::Nobody,
        };
        if let Err(e) = self.store.set_last_seen(account, now).await {
            tracing::warn!(error = %e, "cannot record last seen");
        }
        self.announce(account, false, Some(now), privacy);
    }

    /// Whether any device of `account` is connected, here or elsewhere.
    pub(crate) async fn is_online(&self, account: palaver_proto::AccountId) -> bool {
        if self.router.is_online(account) {
            return true;
        }
        match &self.cluster {
            Some(c) => !c.devices_elsewhere(account).await.is_empty(),
            None => false,
        }
    }

    /// The connected devices of `account`, on every node.
    pub(crate) async fn connected_devices(
        &self,
        account: palaver_proto::AccountId,
    ) -> Vec<palaver_proto::DeviceId> {
        let mut devices = self.router.connected_devices(account);
        if let Some(c) = &self.cluster {
            devices.extend(c.devices_elsewhere(account).await);
            devices.sort_unstable();
            devices.dedup();
        }
        devices
    }

    pub(crate) fn typing(
        &self,
        from: palaver_proto::AccountId,
        from_device: palaver_proto::DeviceId,
        to: palaver_proto::AccountId,
        typing: bool,
    ) {
        self.router.typing(from, from_device, to, typing);
        if let Some(c) = &self.cluster {
            c.typing(from, from_device, to, typing);
        }
    }

    pub(crate) fn announce(
        &self,
        account: palaver_proto::AccountId,
        online: bool,
        last_seen: Option<u64>,
        privacy: palaver_proto::frames::LastSeenPrivacy,
    ) {
        self.router.announce(account, online, last_seen, privacy);
        if let Some(c) = &self.cluster {
            c.announce(account, online, last_seen, privacy);
        }
    }

    /// Hands a frame to `device`'s connection, wherever it is.
    pub(crate) fn deliver_frame(
        &self,
        device: palaver_proto::DeviceId,
        frame: Arc<palaver_proto::frames::ServerFrame>,
    ) {
        if !self
            .router
            .deliver(device, router::Push::Frame(frame.clone()))
            && let Some(c) = &self.cluster
        {
            c.deliver_frame(device, frame);
        }
    }
}

impl Gateway {
    /// Deletes expired envelopes, a chunk at a time so that sends are not
    /// held up behind one long transaction.
    async fn expire_once(&self) {
        let now = now_ms();
        let dedup_before = now.saturating_sub(self.config.dedup_window.as_millis() as u64);
        let mut total = 0;
        loop {
            match self.store.expire(now, dedup_before).await {
                Ok(n) => {
                    total += n;
                    self.metrics.envelopes_expired.inc_by(n);
                    if n < palaver_messaging::store::EXPIRY_CHUNK || self.is_shutting_down() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "queue expiry failed");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(expired = total, "expired queued envelopes");
        }
    }
}

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
