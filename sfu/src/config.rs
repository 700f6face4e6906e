//! Settings of the SFU (config section `[sfu]`, see docs/configuration.md).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// What the driver needs to start; the token secret is passed apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// HTTP join endpoint of `palaver sfu` (inside `palaver serve` the
    /// endpoint is on the main listener instead).
    pub listen: SocketAddr,
    /// Address the media UDP sockets bind to.
    pub udp_ip: IpAddr,
    /// First media UDP port: worker `i` binds `udp_port + i`; 0 picks free
    /// ports.
    pub udp_port: u16,
    /// Address announced in ICE candidates (the public IP behind a 1:1
    /// NAT); `None` announces `udp_ip`.
    pub public_ip: Option<IpAddr>,
    /// Worker threads, each with its own UDP socket; a room lives on one.
    pub workers: usize,
    /// Most participants in one room.
    pub room_limit: usize,
    /// A participant that has not completed ICE by then is dropped.
    pub ice_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8082),
            udp_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            udp_port: 3479,
            public_ip: None,
            workers: 1,
            room_limit: 32,
            ice_timeout: Duration::from_secs(15),
        }
    }
}
