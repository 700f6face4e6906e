//! Prometheus metrics of the gateway.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label of per-kind counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// Counters and gauges of the gateway. Cheap to update (atomics).
#[derive(Debug, Default)]
pub struct Metrics {
    pub connections: Gauge,
    pub authenticated: Gauge,
    pub connections_total: Counter,
    pub frames_in: Counter,
    pub frame_errors: Family<KindLabel, Counter>,
    pub messages_stored: Counter,
    pub messages_duplicate: Counter,
    pub envelopes_pushed: Counter,
    pub envelopes_acked: Counter,
    pub envelopes_expired: Counter,
    pub queue_refetches: Counter,
    pub registrations: Family<KindLabel, Counter>,
    pub auth_failures: Counter,
    pub rate_limited: Family<KindLabel, Counter>,
}

impl Metrics {
    /// Registers every metric under the `palaver_signaling` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("palaver_signaling");
        r.register(
            "connections",
            "Open WebSocket connections",
            self.connections.clone(),
        );
        r.register(
            "authenticated_connections",
            "Authenticated WebSocket connections",
            self.authenticated.clone(),
        );
        r.register(
            "connections_accepted",
            "WebSocket connections accepted",
            self.connections_total.clone(),
        );
        r.register(
            "frames_received",
            "Frames received from clients",
            self.frames_in.clone(),
        );
        r.register(
            "frame_errors",
            "Error frames sent, by error code",
            self.frame_errors.clone(),
        );
        r.register(
            "messages_stored",
            "Messages stored for their recipients",
            self.messages_stored.clone(),
        );
        r.register(
            "messages_duplicate",
            "Resends recognised and not stored again",
            self.messages_duplicate.clone(),
        );
        r.register(
            "envelopes_pushed",
            "Envelopes pushed to devices",
            self.envelopes_pushed.clone(),
        );
        r.register(
            "envelopes_acked",
            "Envelope acknowledgements received",
            self.envelopes_acked.clone(),
        );
        r.register(
            "envelopes_expired",
            "Envelopes deleted undelivered at expiry",
            self.envelopes_expired.clone(),
        );
        r.register(
            "queue_refetches",
            "Times a connection re-read its queue after falling behind",
            self.queue_refetches.clone(),
        );
        r.register(
            "registrations",
            "Device registrations by outcome",
            self.registrations.clone(),
        );
        r.register(
            "auth_failures",
            "Failed device authentications",
            self.auth_failures.clone(),
        );
        r.register(
            "rate_limited",
            "Requests refused by a rate limit, by limit",
            self.rate_limited.clone(),
        );
    }
}
