//! The sans-IO TURN engine: datagrams and `now` in, datagrams, relay-socket
//! requests and the next timeout out. See the crate docs for the poll order.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stun_types::attribute::{MessageIntegrity, MessageIntegritySha256, Nonce, Realm, Username};
use stun_types::message::{
    Message, MessageClass, MessageType, MessageWriteMutSlice, TransactionId,
};
use stun_types::prelude::*;
use turn_types::attribute::{
    ChannelNumber, Data, EvenPort, Lifetime, RequestedAddressFamily, RequestedTransport,
    ReservationToken, XorPeerAddress,
};
use turn_types::message::{DATA, SEND};

use crate::auth::{Credentials, Nonces};
use crate::config::{Config, ConfigError, Secrets};
use crate::policy::PeerPolicy;
use crate::ports::PortPool;
use crate::stats::Stats;

/// Bytes a caller leaves free in front of a peer datagram given to
/// [`Engine::handle_peer`], so a ChannelData header is written in place.
pub const PEER_HEADROOM: usize = 4;

/// Default allocation lifetime (RFC 8656 section 3.2).
const DEFAULT_LIFETIME: u32 = 600;
/// Permission lifetime (RFC 8656 section 9).
const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Channel binding lifetime (RFC 8656 section 12).
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// How long an expired channel's number and peer stay reserved to each other
/// (RFC 8656 section 12).
const CHANNEL_QUARANTINE: Duration = Duration::from_secs(300);
/// How long a RESERVATION-TOKEN holds the odd port (RFC 8656 section 7.2: about 30 s).
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);
/// Shortest time between two expiry sweeps.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Relay ports tried before Allocate is answered 508.
const BIND_ATTEMPTS: u8 = 8;
/// Largest relayed payload (fits a DATA attribute and a UDP datagram).
const MAX_PAYLOAD: usize = 65_000;

/// Client transport between a client and this server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP (STUN and ChannelData framed on a stream, RFC 8656 section 11.5).
    Tcp,
    /// TLS over TCP, framed as TCP.
    Tls,
}

/// The client side of an allocation's 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr {
    /// Client transport.
    pub transport: Transport,
    /// The server's own listening address the client talks to.
    pub local: SocketAddr,
    /// The client's address as seen by the server.
    pub remote: SocketAddr,
}

/// Identifies one request for a relay socket (see [`Output::BindRelay`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BindRequest(u64);

/// A control-plane datagram for a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: ClientAddr,
    /// A complete STUN message.
    pub data: Vec<u8>,
}

/// Work for the driver, drained with [`Engine::poll_output`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a STUN message to a client.
    Transmit(Transmit),
    /// Bind a UDP relay socket to exactly `addr`, then call
    /// [`Engine::relay_bound`] with the outcome.
    BindRelay {
        /// Passed back to [`Engine::relay_bound`].
        request: BindRequest,
        /// Local address (relay IP and the port the engine chose).
        addr: SocketAddr,
    },
    /// Close the relay socket bound to `addr`: its allocation is gone.
    ReleaseRelay {
        /// The relay socket's address.
        addr: SocketAddr,
    },
}

/// Data a client relays to a peer: send `data` from relay socket `relay` to `peer`.
#[derive(Debug, PartialEq, Eq)]
pub struct PeerSend<'a> {
    /// The relay socket to send from.
    pub relay: SocketAddr,
    /// The peer to send to.
    pub peer: SocketAddr,
    /// The payload.
    pub data: &'a [u8],
}

/// Data from a peer for a client (ChannelData or a Data indication).
#[derive(Debug, PartialEq, Eq)]
pub struct ClientSend<'a> {
    /// The client to send to.
    pub client: ClientAddr,
    /// Complete message. Over TCP, ChannelData must be padded to a multiple of
    /// four bytes by the caller (RFC 8656 section 12.5).
    pub data: &'a [u8],
}

/// Settings the engine reads on every request, copied from [`Config`].
#[derive(Debug)]
struct Settings {
    realm: String,
    software: String,
    relay_ipv4: Option<IpAddr>,
    relay_ipv6: Option<IpAddr>,
    max_lifetime: u32,
    max_allocations: usize,
    max_per_user: usize,
    rate: u64,
    max_channel: u16,
    external_ipv4: Option<IpAddr>,
    external_ipv6: Option<IpAddr>,
}

/// The sans-IO STUN/TURN server.
pub struct Engine {
    settings: Settings,
    creds: Credentials,
    nonces: Nonces,
    policy: PeerPolicy,
    epoch: Instant,
    unix_at_epoch: u64,
    allocs: Vec<Option<Allocation>>,
    free: Vec<usize>,
    by_client: HashMap<ClientAddr, usize>,
    by_relay: HashMap<SocketAddr, usize>,
    pending: HashMap<BindRequest, usize>,
    per_user: HashMap<String, usize>,
    ports_v4: PortPool,
    ports_v6: PortPool,
    reservations: HashMap<u64, Reservation>,
    rng: Rng,
    out: VecDeque<Output>,
    scratch: Vec<u8>,
    next_timeout: Option<Instant>,
    /// The latest `now` seen by a control-plane input (for [`Engine::stats`]).
    last_now: Instant,
    stats: Stats,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("allocations", &self.by_client.len())
            .finish_non_exhaustive()
    }
}

/// Attributes this server understands in requests; any other
/// comprehension-required attribute is answered 420.
const KNOWN: &[stun_types::attribute::AttributeType] = &[
    Username::TYPE,
    MessageIntegrity::TYPE,
    MessageIntegritySha256::TYPE,
    Realm::TYPE,
    Nonce::TYPE,
    XorPeerAddress::TYPE,
    Data::TYPE,
    ChannelNumber::TYPE,
    Lifetime::TYPE,
    RequestedTransport::TYPE,
    EvenPort::TYPE,
    ReservationToken::TYPE,
    RequestedAddressFamily::TYPE,
];

fn redact(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.x", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::x", s[0], s[1], s[2])
        }
    }
}

/// The user part of a REST username (`expiry:user`), else the whole name.
fn user_part(username: &str) -> &str {
    match username.split_once(':') {
        Some((e, u)) if e.bytes().all(|b| b.is_ascii_digit()) => u,
        _ => username,
    }
}

impl Engine {
    /// A new engine. `now` and `unix_now` (seconds since the Unix epoch) are
    /// read once by the driver and anchor the engine's clock; `seed` makes
    /// nonces and port choices unpredictable (use random bytes).
    pub fn new(
        config: &Config,
        secrets: &Secrets,
        now: Instant,
        unix_now: u64,
        seed: [u8; 32],
    ) -> Result<Engine, ConfigError> {
        config.validate()?;
        let max_channel = if config.accept_rfc5766_channels {
            0x7FFF
        } else {
            0x4FFF
        };
        let settings = Settings {
            realm: config.realm.clone(),
            software: config.software.clone(),
            relay_ipv4: config.relay_ipv4.map(IpAddr::V4),
            relay_ipv6: config.relay_ipv6.map(IpAddr::V6),
            max_lifetime: config.max_lifetime_secs,
            max_allocations: config.max_allocations,
            max_per_user: config.max_allocations_per_user,
            rate: config.max_bandwidth_bytes_per_sec,
            max_channel,
            external_ipv4: config.external_ipv4.map(IpAddr::V4),
            external_ipv6: config.external_ipv6.map(IpAddr::V6),
        };
        let rng_seed = u64::from_le_bytes(seed[..8].try_into().unwrap_or_default());
        Ok(Engine {
            settings,
            creds: Credentials::new(&config.realm, secrets),
            nonces: Nonces::new(seed, u64::from(config.nonce_lifetime_secs)),
            policy: PeerPolicy::new(config.peer_allow.clone()),
            epoch: now,
            unix_at_epoch: unix_now,
            allocs: Vec::new(),
            free: Vec::new(),
            by_client: HashMap::new(),
            by_relay: HashMap::new(),
            pending: HashMap::new(),
            per_user: HashMap::new(),
            ports_v4: PortPool::new(config.relay_port_min, config.relay_port_max),
            ports_v6: PortPool::new(config.relay_port_min, config.relay_port_max),
            reservations: HashMap::new(),
            rng: Rng(rng_seed),
            out: VecDeque::new(),
            scratch: vec![0; MAX_PAYLOAD + 64],
            next_timeout: None,
            last_now: now,
            stats: Stats::default(),
        })
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.allocations = self.by_client.len() as u64;
        s.permissions = self.iter_allocs().map(|a| a.perms.len() as u64).sum();
        s.channels = self
            .iter_allocs()
            .map(|a| {
                a.channels
                    .iter()
                    .filter(|c| c.expires > self.last_now)
                    .count() as u64
            })
            .sum();
        s
    }

    fn iter_allocs(&self) -> impl Iterator<Item = &Allocation> {
        self.allocs.iter().flatten()
    }

    /// Whether `client` has an allocation (pending or bound).
    pub fn has_allocation(&self, client: &ClientAddr) -> bool {
        self.by_client.contains_key(client)
    }

    /// Next output for the driver; call until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Engine::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_timeout
    }

    fn secs(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    fn unix(&self, now: Instant) -> u64 {
        self.unix_at_epoch + self.secs(now)
    }

    fn wake_at(&mut self, at: Instant) {
        self.next_timeout = Some(self.next_timeout.map_or(at, |t| t.min(at)));
    }

    /// A datagram (UDP) or one framed message (TCP) from a client. Returns
    /// the payload to relay to a peer, if any; control answers are queued.
    pub fn handle_client<'a>(
        &mut self,
        now: Instant,
        client: ClientAddr,
        buf: &'a [u8],
    ) -> Option<PeerSend<'a>> {
        match buf.first()? >> 6 {
            0b01 => self.handle_channel_data(now, client, buf),
            0b00 => self.handle_stun(now, client, buf),
            _ => {
                self.stats.dropped_malformed += 1;
                None
            }
        }
    }

    fn handle_channel_data<'a>(
        &mut self,
        now: Instant,
        client: ClientAddr,
        buf: &'a [u8],
    ) -> Option<PeerSend<'a>> {
        if buf.len() < 4 {
            self.stats.dropped_malformed += 1;
            return None;
        }
        let number = u16::from_be_bytes([buf[0], buf[1]]);
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        let Some(data) = buf.get(4..4 + len) else {
            self.stats.dropped_malformed += 1;
            return None;
        };
        let rate = self.settings.rate;
        let alloc = self
            .by_client
            .get(&client)
            .and_then(|&i| self.allocs[i].as_mut());
        let Some(alloc) = alloc.filter(|a| a.bound) else {
            self.stats.dropped_no_allocation += 1;
            return None;
        };
        let Some(peer) = alloc
            .channels
            .iter()
            .find(|c| c.number == number && c.expires > now)
            .map(|c| c.peer)
        else {
            self.stats.dropped_no_permission += 1;
            return None;
        };
        if !alloc.permitted(peer.ip(), now) {
            self.stats.dropped_no_permission += 1;
            return None;
        }
        if !alloc.up.take(now, rate, len) {
            self.stats.dropped_bandwidth += 1;
            return None;
        }
        self.stats.packets_to_peer += 1;
        self.stats.bytes_to_peer += len as u64;
        Some(PeerSend {
            relay: alloc.relay,
            peer,
            data,
        })
    }

    /// A datagram from `peer` on relay socket `relay`. The payload is
    /// `buf[PEER_HEADROOM..PEER_HEADROOM + len]`; the first
    /// [`PEER_HEADROOM`] bytes are scratch space for a ChannelData header.
    pub fn handle_peer<'a>(
        &'a mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        buf: &'a mut [u8],
        len: usize,
    ) -> Option<ClientSend<'a>> {
        if len > MAX_PAYLOAD || buf.len() < PEER_HEADROOM + len {
            self.stats.dropped_malformed += 1;
            return None;
        }
        let rate = self.settings.rate;
        let Some(alloc) = self
            .by_relay
            .get(&relay)
            .and_then(|&i| self.allocs[i].as_mut())
        else {
            self.stats.dropped_no_allocation += 1;
            return None;
        };
        if !alloc.permitted(peer.ip(), now) {
            self.stats.dropped_no_permission += 1;
            return None;
        }
        if !alloc.down.take(now, rate, len) {
            self.stats.dropped_bandwidth += 1;
            return None;
        }
        self.stats.packets_to_client += 1;
        self.stats.bytes_to_client += len as u64;
        let client = alloc.client;
        let channel = alloc
            .channels
            .iter()
            .find(|c| c.peer == peer && c.expires > now);
        if let Some(channel) = channel {
            buf[..2].copy_from_slice(&channel.number.to_be_bytes());
            buf[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            return Some(ClientSend {
                client,
                data: &buf[..PEER_HEADROOM + len],
            });
        }
        let txid =
            TransactionId::from(u128::from(self.rng.next()) << 32 ^ u128::from(self.rng.next()));
        let mtype = MessageType::from_class_method(MessageClass::Indication, DATA);
        let mut w = Message::builder(mtype, txid, MessageWriteMutSlice::new(&mut self.scratch));
        w.add_attribute(&XorPeerAddress::new(peer, txid)).ok()?;
        w.add_attribute(&Data::new(&buf[PEER_HEADROOM..PEER_HEADROOM + len]))
            .ok()?;
        let n = w.finish();
        Some(ClientSend {
            client,
            data: &self.scratch[..n],
        })
    }

    fn handle_stun<'a>(
        &mut self,
        now: Instant,
        client: ClientAddr,
        buf: &'a [u8],
    ) -> Option<PeerSend<'a>> {
        let msg = match Message::from_bytes(buf) {
            Ok(msg) => msg,
            Err(_) => {
                self.stats.dropped_malformed += 1;
                self.answer_unparsable(client, buf);
                return None;
            }
        };
        match msg.class() {
            MessageClass::Request => {
                self.handle_request(now, client, &msg);
                None
            }
            MessageClass::Indication if msg.has_method(SEND) => {
                self.handle_send(now, client, &msg, buf)
            }
            _ => None,
        }
    }

    fn handle_send<'a>(
        &mut self,
        now: Instant,
        client: ClientAddr,
        msg: &Message<'_>,
        buf: &'a [u8],
    ) -> Option<PeerSend<'a>> {
        let rate = self.settings.rate;
        let alloc = self
            .by_client
            .get(&client)
            .and_then(|&i| self.allocs[i].as_mut());
        let Some(alloc) = alloc.filter(|a| a.bound) else {
            self.stats.dropped_no_allocation += 1;
            return None;
        };
        let peer = msg
            .attribute::<XorPeerAddress>()
            .ok()?
            .addr(msg.transaction_id());
        let (offset, raw) = msg.raw_attribute_and_offset(Data::TYPE)?;
        let len = usize::from(raw.length());
        let data = buf.get(offset + 4..offset + 4 + len)?;
        if Family::of(&peer) != alloc.family || !alloc.permitted(peer.ip(), now) {
            self.stats.dropped_no_permission += 1;
            return None;
        }
        if !alloc.up.take(now, rate, len) {
            self.stats.dropped_bandwidth += 1;
            return None;
        }
        self.stats.packets_to_peer += 1;
        self.stats.bytes_to_peer += len as u64;
        Some(PeerSend {
            relay: alloc.relay,
            peer,
            data,
        })
    }

    /// The client's TCP connection closed: its allocation goes with it
    /// (RFC 8656 section 3.1).
    pub fn client_closed(&mut self, _now: Instant, client: ClientAddr) {
        if let Some(&idx) = self.by_client.get(&client) {
            self.delete_allocation(idx, "client connection closed");
        }
    }

    /// Expires allocations, permissions, channels and reservations due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        if self.next_timeout.is_some_and(|t| t > now) {
            return;
        }
        let mut next: Option<Instant> = None;
        for idx in 0..self.allocs.len() {
            let Some(alloc) = self.allocs[idx].as_mut() else {
                continue;
            };
            if alloc.expires <= now {
                self.delete_allocation(idx, "lifetime expired");
                continue;
            }
            alloc.perms.retain(|p| p.1 > now);
            // expired channels stay as tombstones for the quarantine period
            alloc
                .channels
                .retain(|c| c.expires + CHANNEL_QUARANTINE > now);
            let deadline = alloc.next_deadline(now);
            next = Some(next.map_or(deadline, |n| n.min(deadline)));
        }
        let expired: Vec<u64> = self
            .reservations
            .iter()
            .filter(|(_, r)| r.expires <= now)
            .map(|(t, _)| *t)
            .collect();
        for token in expired {
            if let Some(r) = self.reservations.remove(&token) {
                let family = Family::of(&r.relay);
                self.pool(family).release(r.relay.port());
            }
        }
        for r in self.reservations.values() {
            next = Some(next.map_or(r.expires, |n| n.min(r.expires)));
        }
        // Sweeps cost one pass over the allocations: at most one a second.
        // Expiry stays exact on the data path, which checks deadlines itself.
        self.next_timeout = next.map(|n| n.max(now + SWEEP_INTERVAL));
    }
}

mod requests;
mod state;

use state::{Allocation, Family, Reservation, Rng};

#[cfg(test)]
mod tests;
