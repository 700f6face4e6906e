//! Counters of push, by payload kind (`message`, `call`, `call_cancel`).

use crate::metrics::KindLabel;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Shared by the gateway (coalesced, quiet, dropped) and the sender (sent,
/// failed, dropped, gone, retries).
#[derive(Debug, Default)]
pub struct PushMetrics {
    /// Accepted by the push service or relay.
    pub sent: Family<KindLabel, Counter>,
    /// Refused, unreachable or out of retries.
    pub failed: Family<KindLabel, Counter>,
    /// Not attempted: queue full, endpoint refused by the address policy.
    pub dropped: Family<KindLabel, Counter>,
    /// Envelopes counted into a later push instead of pushed.
    pub coalesced: Family<KindLabel, Counter>,
    /// Not sent because the device is in its quiet time.
    pub quiet: Family<KindLabel, Counter>,
    /// Retries after 429/5xx or a network error.
    pub retries: Family<KindLabel, Counter>,
    /// Subscriptions dropped because the push service said 404/410.
    pub gone: Counter,
}

pub(crate) fn kind(k: &'static str) -> KindLabel {
    KindLabel { kind: k }
}

impl PushMetrics {
    /// Registers every metric under the `palaver_push` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("palaver_push");
        let families = [
            (
                "sent",
                "Pushes accepted by the push service or relay, by kind",
                &self.sent,
            ),
            (
                "failed",
                "Pushes refused or out of retries, by kind",
                &self.failed,
            ),
            (
                "dropped",
                "Pushes not attempted (queue full, address refused), by kind",
                &self.dropped,
            ),
            (
                "coalesced",
                "Envelopes folded into a later push, by kind",
                &self.coalesced,
            ),
            (
                "quiet",
                "Pushes not sent during a device's quiet time, by kind",
                &self.quiet,
            ),
            (
                "retries",
                "Push attempts repeated after 429, 5xx or a network error, by kind",
                &self.retries,
            ),
        ];
        for (name, help, family) in families {
            r.register(name, help, family.clone());
        }
        r.register(
            "subscriptions_gone",
            "Subscriptions dropped after the push service answered 404 or 410",
            self.gone.clone(),
        );
    }
}
