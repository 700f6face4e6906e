//! Counters of the engine, as a plain snapshot.

/// A snapshot of the server's counters (see [`crate::Engine::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Allocations alive now (including those waiting for a relay socket).
    pub allocations: u64,
    /// Permissions installed now.
    pub permissions: u64,
    /// Channel bindings now.
    pub channels: u64,
    /// Allocations created since start.
    pub allocations_created: u64,
    /// Allocations deleted or expired since start.
    pub allocations_deleted: u64,
    /// Binding requests answered.
    pub binding_requests: u64,
    /// Packets relayed client to peer.
    pub packets_to_peer: u64,
    /// Payload bytes relayed client to peer.
    pub bytes_to_peer: u64,
    /// Packets relayed peer to client.
    pub packets_to_client: u64,
    /// Payload bytes relayed peer to client.
    pub bytes_to_client: u64,
    /// Requests without MESSAGE-INTEGRITY, answered 401 with a nonce (normal first step).
    pub auth_challenges: u64,
    /// Requests with a wrong key or realm (401).
    pub auth_bad_credentials: u64,
    /// Requests with a username nobody knows (401).
    pub auth_unknown_user: u64,
    /// REST usernames past their expiry (401).
    pub auth_expired: u64,
    /// Stale or forged nonces (438).
    pub auth_stale_nonce: u64,
    /// Requests on an allocation by another username (441).
    pub auth_wrong_user: u64,
    /// Permissions or channels refused by the peer policy (403).
    pub peer_denied: u64,
    /// Allocations refused by a quota or for lack of ports (486/508).
    pub quota_rejections: u64,
    /// Requests answered 400.
    pub bad_requests: u64,
    /// ChannelBinds refused for their channel number or a conflicting binding.
    pub bad_channel: u64,
    /// Requests answered 420.
    pub unknown_attributes: u64,
    /// Datagrams that were neither STUN nor ChannelData, or did not parse.
    pub dropped_malformed: u64,
    /// Data for a 5-tuple or relay with no allocation.
    pub dropped_no_allocation: u64,
    /// Data without a permission or channel.
    pub dropped_no_permission: u64,
    /// Data over the allocation's bandwidth limit.
    pub dropped_bandwidth: u64,
}

impl Stats {
    /// The counters in Prometheus text exposition format.
    pub fn to_prometheus(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let gauges = [
            ("palaver_turn_allocations", self.allocations),
            ("palaver_turn_permissions", self.permissions),
            ("palaver_turn_channels", self.channels),
        ];
        for (name, v) in gauges {
            let _ = writeln!(s, "# TYPE {name} gauge\n{name} {v}");
        }
        let counters = [
            (
                "palaver_turn_allocations_created_total",
                self.allocations_created,
            ),
            ("palaver_turn_binding_requests_total", self.binding_requests),
            ("palaver_turn_peer_denied_total", self.peer_denied),
            ("palaver_turn_quota_rejections_total", self.quota_rejections),
        ];
        for (name, v) in counters {
            let _ = writeln!(s, "# TYPE {name} counter\n{name} {v}");
        }
        let _ = writeln!(s, "# TYPE palaver_turn_relayed_packets_total counter");
        let _ = writeln!(
            s,
            "palaver_turn_relayed_packets_total{{direction=\"to_peer\"}} {}",
            self.packets_to_peer
        );
        let _ = writeln!(
            s,
            "palaver_turn_relayed_packets_total{{direction=\"to_client\"}} {}",
            self.packets_to_client
        );
        let _ = writeln!(s, "# TYPE palaver_turn_relayed_bytes_total counter");
        let _ = writeln!(
            s,
            "palaver_turn_relayed_bytes_total{{direction=\"to_peer\"}} {}",
            self.bytes_to_peer
        );
        let _ = writeln!(
            s,
            "palaver_turn_relayed_bytes_total{{direction=\"to_client\"}} {}",
            self.bytes_to_client
        );
        let _ = writeln!(s, "# TYPE palaver_turn_auth_failures_total counter");
        let reasons = [
            ("bad_credentials", self.auth_bad_credentials),
            ("unknown_user", self.auth_unknown_user),
            ("expired", self.auth_expired),
            ("stale_nonce", self.auth_stale_nonce),
            ("wrong_user", self.auth_wrong_user),
        ];
        for (reason, v) in reasons {
            let _ = writeln!(
                s,
                "palaver_turn_auth_failures_total{{reason=\"{reason}\"}} {v}"
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text() {
        let s = Stats {
            allocations: 3,
            packets_to_peer: 7,
            auth_stale_nonce: 2,
            ..Stats::default()
        };
        let text = s.to_prometheus();
        assert!(
            text.contains("# TYPE palaver_turn_allocations gauge\npalaver_turn_allocations 3\n")
        );
        assert!(text.contains("palaver_turn_relayed_packets_total{direction=\"to_peer\"} 7\n"));
        assert!(text.contains("palaver_turn_auth_failures_total{reason=\"stale_nonce\"} 2\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<u64>().is_ok(), "{line}");
        }
    }
}
