//! Typed configuration of the TURN server, with documented defaults.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;

/// Configuration of the STUN/TURN server.
///
/// Every field has a default (see [`Config::default`]); a TOML or JSON file only
/// names what it changes. Unknown keys are refused.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// UDP listen address for STUN/TURN clients. Default `127.0.0.1:3478`.
    pub listen_udp: SocketAddr,
    /// TCP listen address for STUN/TURN clients (RFC 8656 over TCP), `None`
    /// to disable. Default `Some(127.0.0.1:3478)`.
    pub listen_tcp: Option<SocketAddr>,
    /// TLS listener (`turns:`, RFC 8656 over TLS 1.2/1.3), `None` to disable.
    /// Default `None`.
    pub tls: Option<TlsConfig>,
    /// Realm sent in 401/438 answers and used in long-term keys. Default `palaver`.
    pub realm: String,
    /// SOFTWARE attribute value. Default `palaver-turn`.
    pub software: String,
    /// Local address that IPv4 relay sockets bind to; `None` refuses IPv4
    /// allocations (440). Default `Some(127.0.0.1)`.
    pub relay_ipv4: Option<Ipv4Addr>,
    /// Local address that IPv6 relay sockets bind to (RFC 6156); `None`
    /// refuses IPv6 allocations (440). Default `None`.
    pub relay_ipv6: Option<Ipv6Addr>,
    /// Public IPv4 address announced in XOR-RELAYED-ADDRESS when relay
    /// sockets bind to a private address behind 1:1 NAT (cloud instances);
    /// `None` announces `relay_ipv4`. Default `None`.
    pub external_ipv4: Option<Ipv4Addr>,
    /// Public IPv6 address announced instead of `relay_ipv6`. Default `None`.
    pub external_ipv6: Option<Ipv6Addr>,
    /// Lowest relay port (inclusive). Default 49152.
    pub relay_port_min: u16,
    /// Highest relay port (inclusive). Default 65535.
    pub relay_port_max: u16,
    /// Largest allocation lifetime granted, in seconds; requests are clamped
    /// to `[600, max_lifetime_secs]` (or to this value if it is below 600).
    /// Default 3600.
    pub max_lifetime_secs: u32,
    /// How long a NONCE stays valid before the answer is 438 Stale Nonce.
    /// Default 600 s.
    pub nonce_lifetime_secs: u32,
    /// Allocations in total; beyond, Allocate gets 508. Default 10,000.
    pub max_allocations: usize,
    /// Allocations per username; beyond, Allocate gets 486. Default 10.
    pub max_allocations_per_user: usize,
    /// Relayed bytes per second per allocation and direction (token bucket
    /// with one second of burst); 0 means unlimited. Default 625,000 (5 Mbit/s).
    pub max_bandwidth_bytes_per_sec: u64,
    /// Peer addresses allowed although the default policy denies them
    /// (loopback for tests, a lab network). CIDR strings such as
    /// `"127.0.0.0/8"` or `"::1/128"`. Default empty.
    pub peer_allow: Vec<Cidr>,
    /// Accept channel numbers 0x5000-0x7FFF as RFC 5766 did (coturn's
    /// `turnutils_uclient` picks them). RFC 8656 allows only 0x4000-0x4FFF and
    /// answers 400 outside it, which is the default (`false`).
    pub accept_rfc5766_channels: bool,
    /// Open TCP and TLS client connections in total; more are closed at once.
    /// Default 10,000.
    pub max_tcp_connections: usize,
    /// A TCP or TLS connection without an allocation that sends nothing for
    /// this many seconds is closed (at least 1). Default 60.
    pub tcp_idle_timeout_secs: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen_udp: SocketAddr::from(([127, 0, 0, 1], 3478)),
            listen_tcp: Some(SocketAddr::from(([127, 0, 0, 1], 3478))),
            tls: None,
            realm: "palaver".to_owned(),
            software: "palaver-turn".to_owned(),
            relay_ipv4: Some(Ipv4Addr::LOCALHOST),
            relay_ipv6: None,
            external_ipv4: None,
            external_ipv6: None,
            relay_port_min: 49152,
            relay_port_max: 65535,
            max_lifetime_secs: 3600,
            nonce_lifetime_secs: 600,
            max_allocations: 10_000,
            max_allocations_per_user: 10,
            max_bandwidth_bytes_per_sec: 625_000,
            peer_allow: Vec::new(),
            accept_rfc5766_channels: false,
            max_tcp_connections: 10_000,
            tcp_idle_timeout_secs: 60,
        }
    }
}

/// The TLS listener: address and PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Listen address, conventionally port 5349.
    pub listen: SocketAddr,
    /// PEM certificate chain, leaf first.
    pub cert_path: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
}

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// `relay_port_min` is above `relay_port_max` or below 1024.
    #[error("relay_port_min..relay_port_max ({0}..{1}) is empty or below 1024")]
    PortRange(u16, u16),
    /// Neither `relay_ipv4` nor `relay_ipv6` is set.
    #[error("neither relay_ipv4 nor relay_ipv6 is set")]
    NoRelayAddress,
    /// The realm is empty or too long for the REALM attribute.
    #[error("realm must be 1 to 127 characters")]
    Realm,
    /// The software name is too long for the SOFTWARE attribute.
    #[error("software must be at most 127 characters")]
    Software,
    /// A lifetime is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
}

impl Config {
    /// Checks values that deserialize fine but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.relay_port_min > self.relay_port_max || self.relay_port_min < 1024 {
            return Err(ConfigError::PortRange(
                self.relay_port_min,
                self.relay_port_max,
            ));
        }
        if self.relay_ipv4.is_none() && self.relay_ipv6.is_none() {
            return Err(ConfigError::NoRelayAddress);
        }
        if self.realm.is_empty() || self.realm.chars().count() > 127 {
            return Err(ConfigError::Realm);
        }
        if self.software.chars().count() > 127 {
            return Err(ConfigError::Software);
        }
        if self.max_lifetime_secs == 0 {
            return Err(ConfigError::Zero("max_lifetime_secs"));
        }
        if self.tcp_idle_timeout_secs == 0 {
            return Err(ConfigError::Zero("tcp_idle_timeout_secs"));
        }
        if self.nonce_lifetime_secs == 0 {
            return Err(ConfigError::Zero("nonce_lifetime_secs"));
        }
        Ok(())
    }
}

/// Credentials the server accepts. Never logged: `Debug` prints no secret.
#[derive(Clone, Default)]
pub struct Secrets {
    /// Shared secret of the TURN REST scheme: username `expiry:user`,
    /// password `base64(HMAC-SHA1(secret, username))`.
    pub rest_secret: Option<String>,
    /// Static long-term credentials `(username, password)`.
    pub static_users: Vec<(String, String)>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field(
                "rest_secret",
                &self.rest_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("static_users", &self.static_users.len())
            .finish()
    }
}

/// An IP network in CIDR notation, such as `10.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A string that is not `ADDRESS/PREFIX`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid CIDR {0:?}: expected ADDRESS/PREFIX such as 127.0.0.0/8")]
pub struct CidrError(String);

impl Cidr {
    /// A network from an address and a prefix length (checked against the family).
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    /// Whether `ip` is inside this network (same family only).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(net.to_bits()) << 96,
                u128::from(ip.to_bits()) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(net.to_bits(), ip.to_bits(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(prefix));
    a & mask == b & mask
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        let prefix = match prefix {
            Some(p) => p.parse().map_err(|_| err())?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        Cidr::new(addr, prefix).ok_or_else(err)
    }
}

impl TryFrom<String> for Cidr {
    type Error = CidrError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn cidr_parse_and_contains() {
        let c: Cidr = "127.0.0.0/8".parse().unwrap();
        assert!(c.contains("127.255.0.1".parse().unwrap()));
        assert!(!c.contains("128.0.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let c: Cidr = "::1".parse().unwrap();
        assert!(c.contains("::1".parse().unwrap()));
        assert!(!c.contains("::2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }

    #[test]
    fn secrets_debug_hides_values() {
        let s = Secrets {
            rest_secret: Some("hunter2".into()),
            static_users: vec![("alice".into(), "pw-alice".into())],
        };
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("pw-alice") && !dbg.contains("alice"));
    }
}
