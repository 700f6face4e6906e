//! Settings of the gateway, with their defaults.

use serde::Deserialize;
use std::time::Duration;

/// A token bucket: `burst` requests at once, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub burst: u32,
    pub per_minute: f64,
}

impl Rate {
    const fn new(burst: u32, per_minute: f64) -> Self {
        Rate { burst, per_minute }
    }
}

/// Rate limits on what strangers and devices may call.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// `request_code` per phone number.
    pub code_requests_per_phone: Rate,
    /// `request_code` per client IP address.
    pub code_requests_per_ip: Rate,
    /// `verify` attempts per client IP address.
    pub verify_per_ip: Rate,
    /// Failed `auth` attempts per client IP address.
    pub auth_failures_per_ip: Rate,
    /// `lookup` per device (limits contact enumeration).
    pub lookups_per_device: Rate,
    /// `send` and `read` per device.
    pub sends_per_device: Rate,
    /// `typing` per connection; excess indicators are dropped.
    pub typing_per_connection: Rate,
    /// `call_offer` per device.
    pub call_offers_per_device: Rate,
    /// `keys_claim` per device (each claim consumes others' one-time keys).
    pub key_claims_per_device: Rate,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            code_requests_per_phone: Rate::new(3, 0.2),
            code_requests_per_ip: Rate::new(20, 2.0),
            verify_per_ip: Rate::new(30, 6.0),
            auth_failures_per_ip: Rate::new(20, 10.0),
            lookups_per_device: Rate::new(100, 60.0),
            sends_per_device: Rate::new(1000, 30_000.0),
            typing_per_connection: Rate::new(10, 120.0),
            call_offers_per_device: Rate::new(10, 20.0),
            key_claims_per_device: Rate::new(100, 300.0),
        }
    }
}

/// Gateway settings. The server's config file maps onto this.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    /// Largest WebSocket message accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Read buffer per connection. Small buffers keep idle connections cheap.
    pub read_buffer_bytes: usize,
    /// Close connections that send nothing (not even `ping`) for this long.
    pub idle_timeout: Duration,
    /// Close connections that do not authenticate within this time.
    pub auth_timeout: Duration,
    /// Devices one account may link.
    pub max_devices: u32,
    /// Lifetime of a verification code.
    pub code_ttl: Duration,
    /// Wrong guesses allowed per verification code.
    pub code_max_attempts: u32,
    /// Queued envelopes older than this are deleted undelivered.
    pub envelope_ttl: Duration,
    /// How long a message id is remembered to drop resends.
    pub dedup_window: Duration,
    /// How often expired envelopes are removed.
    pub expiry_interval: Duration,
    /// Envelopes pushed to a device and not yet acknowledged, at most.
    pub inflight_window: usize,
    /// Envelopes per send, at most.
    pub max_envelopes_per_send: usize,
    /// Accounts one connection may follow for presence.
    pub max_presence_subscriptions: usize,
    /// Most members of a group, the creator included.
    pub max_group_members: usize,
    /// How long after sending a message may be deleted for everyone.
    pub revoke_window: Duration,
    /// How long after sending a message may be edited.
    pub edit_window: Duration,
    /// How long a device-link code is valid.
    pub link_code_ttl: Duration,
    /// Largest settings blob, in bytes.
    pub max_settings_bytes: usize,
    /// How long a status post stays visible.
    pub status_ttl: Duration,
    /// Most accounts in a status audience.
    pub max_status_audience: usize,
    pub rate_limits: RateLimits,
    /// Call timers.
    pub calls: crate::calls::CallConfig,
    /// STUN/TURN servers handed to call participants.
    pub ice: crate::calls::IceConfig,
    /// Group calls on an SFU; `None` refuses the `group_call_*` frames.
    pub group_calls: Option<crate::group_calls::GroupCallConfig>,
    /// With several nodes: how often each connection re-reads its queue in
    /// case a notification from another node was lost. `None`: one node,
    /// where notifications cannot be lost.
    pub catch_up_interval: Option<Duration>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_frame_bytes: 256 * 1024,
            read_buffer_bytes: 512,
            idle_timeout: Duration::from_secs(120),
            auth_timeout: Duration::from_secs(20),
            max_devices: 5,
            code_ttl: Duration::from_secs(600),
            code_max_attempts: 5,
            envelope_ttl: Duration::from_secs(30 * 86_400),
            dedup_window: Duration::from_secs(7 * 86_400),
            expiry_interval: Duration::from_secs(60),
            inflight_window: 512,
            max_envelopes_per_send: 256,
            max_presence_subscriptions: 1024,
            max_group_members: 1024,
            revoke_window: Duration::from_secs(48 * 3600),
            edit_window: Duration::from_secs(15 * 60),
            link_code_ttl: Duration::from_secs(300),
            max_settings_bytes: 64 * 1024,
            status_ttl: Duration::from_secs(24 * 3600),
            max_status_audience: 5000,
            rate_limits: RateLimits::default(),
            calls: crate::calls::CallConfig::default(),
            ice: crate::calls::IceConfig {
                credential_ttl: Duration::from_secs(12 * 3600),
                ..Default::default()
            },
            group_calls: None,
            catch_up_interval: None,
        }
    }
}
