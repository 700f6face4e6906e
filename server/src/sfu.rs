//! The `[sfu]` config section and starting the SFU (`palaver sfu`, and
//! inside `palaver serve`).

use crate::config::{ConfigError, Secret};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SfuSection {
    /// HTTP join endpoint of `palaver sfu`; `palaver serve` puts the
    /// endpoint on the main listener instead.
    pub listen: SocketAddr,
    /// The SFU's base URL handed to clients by signaling; unset in
    /// `palaver serve` means the main listener's address.
    pub public_url: Option<String>,
    /// Address the media UDP sockets bind to.
    pub udp_ip: IpAddr,
    /// First media UDP port; worker i binds udp_port + i; 0 picks free ports.
    pub udp_port: u16,
    /// Address announced in ICE candidates (public IP behind 1:1 NAT).
    pub public_ip: Option<IpAddr>,
    /// Worker threads, each with one UDP socket.
    pub workers: usize,
    /// Most participants in one room.
    pub room_limit: usize,
    /// A participant that has not completed ICE by then is dropped.
    #[serde(with = "humantime_serde")]
    pub ice_timeout: Duration,
    /// Lifetime of the join tokens signaling issues.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// HMAC key shared by signaling (which signs join tokens) and the SFU.
    pub token_secret: Option<Secret>,
    pub token_secret_file: Option<PathBuf>,
    /// Participants this node takes before placement counts it as full
    /// (SFU node registry, with `cluster.redis_url`).
    pub capacity: u32,
    /// How often a `palaver sfu` node renews its registry entry, and how
    /// often signaling looks for dead or draining nodes.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// A node whose entry was not renewed for this long is dead: its rooms
    /// move to other nodes.
    #[serde(with = "humantime_serde")]
    pub node_ttl: Duration,
    /// On SIGTERM a registered node drains (its rooms move elsewhere); it
    /// exits once empty or after this long.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for SfuSection {
    fn default() -> Self {
        let d = palaver_sfu::Config::default();
        SfuSection {
            listen: d.listen,
            public_url: None,
            udp_ip: d.udp_ip,
            udp_port: d.udp_port,
            public_ip: d.public_ip,
            workers: d.workers,
            room_limit: d.room_limit,
            ice_timeout: d.ice_timeout,
            token_ttl: Duration::from_secs(300),
            token_secret: None,
            token_secret_file: None,
            capacity: 500,
            heartbeat: Duration::from_millis(500),
            node_ttl: Duration::from_secs(2),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl SfuSection {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key: &str, m: &str| ConfigError::Key {
            key: key.into(),
            message: m.into(),
        };
        if !(1..=64).contains(&self.workers) {
            return Err(err("sfu.workers", "must be 1 to 64"));
        }
        if !(2..=1000).contains(&self.room_limit) {
            return Err(err("sfu.room_limit", "must be 2 to 1000"));
        }
        if self.ice_timeout.is_zero() || self.token_ttl.is_zero() {
            return Err(err(
                "sfu.ice_timeout",
                "ice_timeout and token_ttl must be longer than zero",
            ));
        }
        if self.udp_ip.is_unspecified() && self.public_ip.is_none() {
            return Err(err(
                "sfu.public_ip",
                "required when sfu.udp_ip is unspecified (0.0.0.0 or ::)",
            ));
        }
        if self.capacity == 0 {
            return Err(err("sfu.capacity", "must be at least 1"));
        }
        if self.heartbeat.is_zero() || self.node_ttl <= self.heartbeat {
            return Err(err(
                "sfu.node_ttl",
                "must be longer than sfu.heartbeat, which must be longer than zero",
            ));
        }
        if let Some(u) = &self.public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(err("sfu.public_url", "must be an http(s) URL"));
        }
        Ok(())
    }

    pub fn driver_config(&self) -> palaver_sfu::Config {
        palaver_sfu::Config {
            listen: self.listen,
            udp_ip: self.udp_ip,
            udp_port: self.udp_port,
            public_ip: self.public_ip,
            workers: self.workers,
            room_limit: self.room_limit,
            ice_timeout: self.ice_timeout,
        }
    }
}

/// The join-token secret of `palaver serve` when none is configured:
/// made once and kept in `<data_dir>/sfu.secret` (mode 0600).
pub fn local_secret(data_dir: &Path) -> anyhow::Result<String> {
    crate::run::local_secret_file(data_dir, "sfu.secret", "sfu.token_secret_file")
}
