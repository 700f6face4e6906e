//! The driver of message and call pushes.
//!
//! The store's notifier is wrapped ([`wrap_notifier`]): after handing new
//! envelopes to the inner notifier, it counts the pushable ones (messages
//! and automatic messages) per device and passes the counts to the trigger
//! task without blocking (a full channel drops them, counted). In a
//! cluster each node wraps its own store's notifier, so the node that
//! stored an envelope is the node that pushes for it. The task asks
//! whether each device is connected (here, or on a live node per the Redis
//! registry), runs the [`Coalescer`] and hands pushes to the sink.

use super::coalesce::{Coalescer, Decision};
use super::metrics::kind;
use super::{PushConfig, PushJob, PushMetrics, PushSink, Pusher};
use crate::Gateway;
use crate::calls::PushEvent;
use palaver_messaging::{Notifier, StoredEnvelope};
use palaver_proto::frames::EnvelopeKind;
use palaver_proto::push::PushPayload;
use palaver_proto::{AccountId, DeviceId};
use palaver_push::request::Urgency;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// What the trigger task hears about.
#[derive(Debug)]
pub(crate) enum Event {
    /// Pushable envelopes just queued, per device.
    Queued(Vec<(DeviceId, u32)>),
    /// A device connected to this node.
    Connected(DeviceId),
}

/// The receiving end of a wrapped notifier, for [`Gateway::start_push`].
#[derive(Debug)]
pub struct PushEvents {
    tx: mpsc::Sender<Event>,
    rx: mpsc::Receiver<Event>,
    dropped: Arc<PushMetrics>,
}

impl PushEvents {
    /// The counters shared with the sender.
    pub fn metrics(&self) -> Arc<PushMetrics> {
        self.dropped.clone()
    }
}

struct PushNotifier {
    inner: Arc<dyn Notifier>,
    tx: mpsc::Sender<Event>,
    metrics: Arc<PushMetrics>,
}

/// Wraps the store's notifier so that queued envelopes reach the push
/// trigger; `queue` bounds the events waiting for it.
pub fn wrap_notifier(
    inner: Arc<dyn Notifier>,
    queue: usize,
    metrics: Arc<PushMetrics>,
) -> (Arc<dyn Notifier>, PushEvents) {
    let (tx, rx) = mpsc::channel(queue.max(1));
    let events = PushEvents {
        tx: tx.clone(),
        rx,
        dropped: metrics.clone(),
    };
    let notifier = Arc::new(PushNotifier { inner, tx, metrics });
    (notifier, events)
}

/// Per device, how many envelopes deserve a push.
fn pushable(envelopes: &[Arc<StoredEnvelope>]) -> Vec<(DeviceId, u32)> {
    let mut counts: BTreeMap<DeviceId, u32> = BTreeMap::new();
    for e in envelopes {
        if matches!(e.kind, EnvelopeKind::Message | EnvelopeKind::Auto) {
            *counts.entry(e.device).or_default() += 1;
        }
    }
    counts.into_iter().collect()
}

impl Notifier for PushNotifier {
    fn envelopes(&self, envelopes: &[Arc<StoredEnvelope>]) {
        self.inner.envelopes(envelopes);
        let counts = pushable(envelopes);
        if counts.is_empty() {
            return;
        }
        let n: u32 = counts.iter().map(|(_, c)| c).sum();
        if self.tx.try_send(Event::Queued(counts)).is_err() {
            self.metrics
                .dropped
                .get_or_create(&kind("message"))
                .inc_by(u64::from(n));
        }
    }

    fn device_revoked(&self, device: DeviceId) {
        self.inner.device_revoked(device);
    }
}

impl Gateway {
    /// Starts sending pushes through `sink`; the task stops at shutdown.
    pub fn start_push(
        self: &Arc<Self>,
        config: PushConfig,
        sink: Arc<dyn PushSink>,
        events: PushEvents,
    ) -> tokio::task::JoinHandle<()> {
        let pusher = Pusher {
            config,
            sink,
            metrics: events.dropped,
            events: events.tx,
        };
        if self.push.set(Arc::new(pusher)).is_err() {
            tracing::warn!("push started twice; ignoring the second start");
        }
        tokio::spawn(self.clone().run_push(events.rx))
    }

    async fn run_push(self: Arc<Self>, mut rx: mpsc::Receiver<Event>) {
        let Some(p) = self.push.get() else { return };
        let mut co = Coalescer::new(p.config.window);
        loop {
            let next = co.poll_timeout();
            let sleep = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                ev = rx.recv() => match ev {
                    None => return,
                    Some(Event::Queued(list)) => self.queued(&mut co, list).await,
                    Some(Event::Connected(d)) => co.connected(d),
                },
                _ = sleep => self.windows_closed(&mut co).await,
            }
        }
    }

    async fn queued(&self, co: &mut Coalescer, list: Vec<(DeviceId, u32)>) {
        let devices: Vec<DeviceId> = list.iter().map(|(d, _)| *d).collect();
        let online = self.online_devices(&devices).await;
        let now = Instant::now();
        for (device, n) in list {
            if online.contains(&device) {
                co.connected(device);
                continue;
            }
            match co.queued(device, n, now) {
                Decision::Push(count) => self.message_push(device, count).await,
                Decision::Coalesced => self.push_metrics(|m| {
                    m.coalesced
                        .get_or_create(&kind("message"))
                        .inc_by(u64::from(n));
                }),
            }
        }
    }

    async fn windows_closed(&self, co: &mut Coalescer) {
        let due = co.handle_timeout(Instant::now());
        if due.is_empty() {
            return;
        }
        let devices: Vec<DeviceId> = due.iter().map(|(d, _)| *d).collect();
        let online = self.online_devices(&devices).await;
        for (device, count) in due {
            if online.contains(&device) {
                co.connected(device);
            } else {
                self.message_push(device, count).await;
            }
        }
    }

    fn push_metrics(&self, f: impl FnOnce(&PushMetrics)) {
        if let Some(p) = self.push.get() {
            f(&p.metrics);
        }
    }

    /// The devices of `devices` connected here or on another live node.
    async fn online_devices(&self, devices: &[DeviceId]) -> HashSet<DeviceId> {
        let mut online: HashSet<DeviceId> = devices
            .iter()
            .copied()
            .filter(|d| self.router.has_device(*d))
            .collect();
        if let Some(c) = &self.cluster {
            online.extend(c.connected_elsewhere(devices).await);
        }
        online
    }

    async fn message_push(&self, device: DeviceId, count: u32) {
        let Some(p) = self.push.get() else { return };
        let push = Push {
            payload: PushPayload::Message { count },
            urgency: Urgency::Normal,
            ttl: p.config.message_ttl,
            topic: Some("messages".to_owned()),
            respect_quiet: true,
        };
        p.submit(self.store.as_ref(), device, push).await;
    }
}

/// One push before the subscription is looked up.
struct Push {
    payload: PushPayload,
    urgency: Urgency,
    ttl: std::time::Duration,
    topic: Option<String>,
    /// Message pushes wait for the quiet time to end; call pushes were
    /// only decided for devices outside it.
    respect_quiet: bool,
}

impl Pusher {
    /// Looks up the device's subscription and hands the push to the sink.
    async fn submit(&self, store: &dyn palaver_messaging::Store, device: DeviceId, push: Push) {
        let Push {
            payload,
            urgency,
            ttl,
            topic,
            respect_quiet,
        } = push;
        let p = self;
        let k = kind(payload.kind());
        let settings = match store.push_settings(device).await {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read push settings");
                p.metrics.failed.get_or_create(&k).inc();
                return;
            }
        };
        let Some(target) = settings.target else {
            return;
        };
        if respect_quiet && settings.quiet_until_ms.is_some_and(|u| crate::now_ms() < u) {
            p.metrics.quiet.get_or_create(&k).inc();
            return;
        }
        let job = PushJob {
            device,
            account: settings.account,
            target,
            payload,
            urgency,
            ttl,
            topic,
        };
        if !p.sink.submit(job) {
            p.metrics.dropped.get_or_create(&k).inc();
        }
    }
}

impl Gateway {
    /// Tells the trigger that `device` connected here.
    pub(crate) fn push_connected(&self, device: DeviceId) {
        if let Some(p) = self.push.get() {
            let _ = p.events.try_send(Event::Connected(device));
        }
    }

    /// The offline devices of `account` (not in `connected`) that a call
    /// push can wake: subscribed and not in their quiet time.
    pub(crate) async fn pushable_devices(
        &self,
        account: AccountId,
        connected: &[DeviceId],
    ) -> Vec<DeviceId> {
        if self.push.get().is_none() {
            return Vec::new();
        }
        let Ok(Some(devices)) = self.store.devices(account).await else {
            return Vec::new();
        };
        let now = crate::now_ms();
        let mut out = Vec::new();
        for d in devices.into_iter().filter(|d| !connected.contains(d)) {
            if let Ok(Some(s)) = self.store.push_settings(d).await
                && s.target.is_some()
                && s.quiet_until_ms.is_none_or(|u| now >= u)
            {
                out.push(d);
            }
        }
        out
    }

    /// Sends a push the call state machine asked for.
    pub(crate) fn call_push(&self, to: DeviceId, event: PushEvent) {
        let Some(p) = self.push.get().cloned() else {
            return;
        };
        let (payload, call) = match event {
            PushEvent::Ring { call, from, video } => {
                (PushPayload::Call { call, from, video }, call)
            }
            PushEvent::Cancel { call } => (PushPayload::CallCancel { call }, call),
        };
        let push = Push {
            payload,
            urgency: Urgency::High,
            ttl: p.config.call_ttl,
            topic: Some(format!("call-{}", call.0)),
            respect_quiet: false,
        };
        let store = self.store.clone();
        tokio::spawn(async move { p.submit(store.as_ref(), to, push).await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palaver_proto::{ClientMsgId, Seq};

    fn env(device: u64, kind: EnvelopeKind) -> Arc<StoredEnvelope> {
        Arc::new(StoredEnvelope {
            seq: Seq(1),
            device: DeviceId(device),
            kind,
            from: AccountId(9),
            from_device: DeviceId(90),
            msg: ClientMsgId::new("m").unwrap(),
            ts: 0,
            payload: None,
            group: None,
            ref_msg: None,
        })
    }

    #[test]
    fn only_messages_wake_a_device() {
        let envs = [
            env(1, EnvelopeKind::Message),
            env(1, EnvelopeKind::Delivered),
            env(2, EnvelopeKind::Read),
            env(1, EnvelopeKind::Message),
            env(3, EnvelopeKind::Auto),
        ];
        assert_eq!(pushable(&envs), vec![(DeviceId(1), 2), (DeviceId(3), 1)]);
    }
}
