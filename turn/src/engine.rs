//! The sans-IO TURN engine: datagrams and `now` in, datagrams, relay-socket
//! requests and the next timeout out. See the crate docs for the poll order.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stun_types::AddressFamily;
use stun_types::attribute::{
    ErrorCode, MessageIntegrity, MessageIntegritySha256, Nonce, Realm, Software, UnknownAttributes,
    Username, XorMappedAddress,
};
use stun_types::message::{
    BINDING, IntegrityAlgorithm, Message, MessageClass, MessageIntegrityCredentials, MessageType,
    MessageWriteMutSlice, MessageWriteVec, TransactionId,
};
use stun_types::prelude::*;
use turn_types::attribute::{
    AdditionalAddressFamily, AddressErrorCode, ChannelNumber, Data, EvenPort, Lifetime,
    RequestedAddressFamily, RequestedTransport, ReservationToken, XorPeerAddress,
    XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND};

use crate::auth::{Credentials, LookupError, Nonces};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(addr: &SocketAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: u64,
    last: Instant,
}

impl Bucket {
    fn new(now: Instant, rate: u64) -> Self {
        Bucket {
            tokens: rate,
            last: now,
        }
    }

    /// Takes `n` bytes worth of tokens; `false` when over the rate.
    fn take(&mut self, now: Instant, rate: u64, n: usize) -> bool {
        if rate == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last);
        if elapsed >= Duration::from_millis(1) {
            let add = rate.saturating_mul(elapsed.as_micros() as u64) / 1_000_000;
            self.tokens = (self.tokens + add).min(rate);
            self.last = now;
        }
        let n = n as u64;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Channel {
    number: u16,
    peer: SocketAddr,
    expires: Instant,
}

/// Authentication result of a request: the key that signs the answer.
struct Auth {
    creds: MessageIntegrityCredentials,
    algo: IntegrityAlgorithm,
    username: String,
}

struct Allocation {
    client: ClientAddr,
    username: String,
    creds: MessageIntegrityCredentials,
    algo: IntegrityAlgorithm,
    family: Family,
    /// The relay address being bound (pending) or bound.
    relay: SocketAddr,
    bound: bool,
    bind_request: BindRequest,
    bind_attempts: u8,
    expires: Instant,
    lifetime: u32,
    txid: TransactionId,
    /// The Allocate success answer, kept for retransmitted Allocates.
    success: Vec<u8>,
    reserve_next: bool,
    /// Whether an ADDITIONAL-ADDRESS-FAMILY (IPv6) was asked and is refused.
    refuse_additional: bool,
    perms: Vec<(IpAddr, Instant)>,
    channels: Vec<Channel>,
    up: Bucket,
    down: Bucket,
}

impl Allocation {
    fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.perms.iter().any(|(p, exp)| *p == ip && *exp > now)
    }

    fn permit(&mut self, ip: IpAddr, now: Instant) {
        let expires = now + PERMISSION_LIFETIME;
        match self.perms.iter_mut().find(|(p, _)| *p == ip) {
            Some(entry) => entry.1 = expires,
            None => self.perms.push((ip, expires)),
        }
    }

    /// The next instant something of this allocation changes (all after `now`
    /// once expired entries are pruned).
    fn next_deadline(&self, now: Instant) -> Instant {
        let perms = self.perms.iter().map(|p| p.1);
        let chans = self.channels.iter().map(|c| {
            if c.expires > now {
                c.expires
            } else {
                c.expires + CHANNEL_QUARANTINE
            }
        });
        perms.chain(chans).fold(self.expires, Instant::min)
    }
}

struct Reservation {
    relay: SocketAddr,
    expires: Instant,
}

/// Small deterministic generator (SplitMix64) seeded by the driver.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
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
        let txid = TransactionId::from(u128::from(self.rng.next()) << 64 | 0x5a5a);
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

    /// A request whose header parses but whose attributes do not gets 400.
    fn answer_unparsable(&mut self, client: ClientAddr, buf: &[u8]) {
        let Ok(header) = stun_types::message::MessageHeader::from_bytes(buf) else {
            return;
        };
        let mtype = header.get_type();
        if mtype.class() != MessageClass::Request {
            return;
        }
        let err_type = MessageType::from_class_method(MessageClass::Error, mtype.method());
        let mut w = Message::builder(err_type, header.transaction_id(), MessageWriteVec::new());
        if let Ok(code) = ErrorCode::new(400, "Bad Request") {
            let _ = w.add_attribute(&code);
        }
        self.stats.bad_requests += 1;
        self.finish_reply(client, w, None);
    }

    fn finish_reply(&mut self, client: ClientAddr, mut w: MessageWriteVec, auth: Option<&Auth>) {
        if let Ok(sw) = Software::new(&self.settings.software) {
            let _ = w.add_attribute(&sw);
        }
        if let Some(auth) = auth {
            let _ = w.add_message_integrity(&auth.creds, auth.algo);
        }
        let _ = w.add_fingerprint();
        self.out.push_back(Output::Transmit(Transmit {
            to: client,
            data: w.finish(),
        }));
    }

    fn reply_error(
        &mut self,
        client: ClientAddr,
        msg: &Message<'_>,
        code: u16,
        auth: Option<&Auth>,
    ) {
        let mut w = Message::builder_error(msg, MessageWriteVec::new());
        if let Ok(attr) = ErrorCode::new(code, ErrorCode::default_reason_for_code(code)) {
            let _ = w.add_attribute(&attr);
        }
        if code == ErrorCode::BAD_REQUEST {
            self.stats.bad_requests += 1;
        }
        self.finish_reply(client, w, auth);
    }

    /// 401 or 438 with REALM and a fresh NONCE.
    fn challenge(&mut self, now: Instant, client: ClientAddr, msg: &Message<'_>, code: u16) {
        let mut w = Message::builder_error(msg, MessageWriteVec::new());
        if let Ok(attr) = ErrorCode::new(code, ErrorCode::default_reason_for_code(code)) {
            let _ = w.add_attribute(&attr);
        }
        if let Ok(realm) = Realm::new(&self.settings.realm) {
            let _ = w.add_attribute(&realm);
        }
        let nonce = self.nonces.issue(self.secs(now));
        if let Ok(nonce) = Nonce::new(&nonce) {
            let _ = w.add_attribute(&nonce);
        }
        self.finish_reply(client, w, None);
    }

    fn handle_request(&mut self, now: Instant, client: ClientAddr, msg: &Message<'_>) {
        self.last_now = self.last_now.max(now);
        if msg.has_method(BINDING) {
            return self.handle_binding(client, msg);
        }
        let known = [ALLOCATE, REFRESH, CREATE_PERMISSION, CHANNEL_BIND];
        if !known.iter().any(|m| msg.has_method(*m)) {
            return self.reply_error(client, msg, ErrorCode::BAD_REQUEST, None);
        }
        let Some(auth) = self.authenticate(now, client, msg) else {
            return;
        };
        if self.reject_unknown(client, msg, Some(&auth)) {
            return;
        }
        if msg.has_method(ALLOCATE) {
            self.handle_allocate(now, client, msg, auth);
            return;
        }
        let Some(&idx) = self.by_client.get(&client) else {
            return self.reply_error(client, msg, ErrorCode::ALLOCATION_MISMATCH, Some(&auth));
        };
        let (bound, same_user) = self.allocs[idx]
            .as_ref()
            .map_or((false, false), |a| (a.bound, a.username == auth.username));
        if !bound {
            return self.reply_error(client, msg, ErrorCode::ALLOCATION_MISMATCH, Some(&auth));
        }
        if !same_user {
            self.stats.auth_wrong_user += 1;
            return self.reply_error(client, msg, ErrorCode::WRONG_CREDENTIALS, Some(&auth));
        }
        if msg.has_method(REFRESH) {
            self.handle_refresh(now, client, msg, idx, &auth);
        } else if msg.has_method(CREATE_PERMISSION) {
            self.handle_create_permission(now, client, msg, idx, &auth);
        } else {
            self.handle_channel_bind(now, client, msg, idx, &auth);
        }
    }

    /// Answers 420 when the message carries comprehension-required
    /// attributes this server does not know. Returns whether it did.
    fn reject_unknown(
        &mut self,
        client: ClientAddr,
        msg: &Message<'_>,
        auth: Option<&Auth>,
    ) -> bool {
        let unknown: Vec<_> = msg
            .iter_attributes()
            .map(|(_, a)| a.get_type())
            .filter(|t| t.comprehension_required() && !KNOWN.contains(t))
            .collect();
        if unknown.is_empty() {
            return false;
        }
        self.stats.unknown_attributes += 1;
        let mut w = Message::builder_error(msg, MessageWriteVec::new());
        if let Ok(attr) = ErrorCode::new(420, "Unknown Attribute") {
            let _ = w.add_attribute(&attr);
        }
        let _ = w.add_attribute(&UnknownAttributes::new(&unknown));
        self.finish_reply(client, w, auth);
        true
    }

    fn handle_binding(&mut self, client: ClientAddr, msg: &Message<'_>) {
        if self.reject_unknown(client, msg, None) {
            return;
        }
        self.stats.binding_requests += 1;
        let mut w = Message::builder_success(msg, MessageWriteVec::new());
        let _ = w.add_attribute(&XorMappedAddress::new(client.remote, msg.transaction_id()));
        self.finish_reply(client, w, None);
    }

    /// Long-term credential check (RFC 8489 section 9.2.4). Answers and
    /// returns `None` when the request is not authenticated.
    fn authenticate(
        &mut self,
        now: Instant,
        client: ClientAddr,
        msg: &Message<'_>,
    ) -> Option<Auth> {
        let has_integrity = msg.has_attribute(MessageIntegrity::TYPE)
            || msg.has_attribute(MessageIntegritySha256::TYPE);
        if !has_integrity {
            self.stats.auth_challenges += 1;
            self.challenge(now, client, msg, ErrorCode::UNAUTHORIZED);
            return None;
        }
        let (Ok(username), Ok(realm), Ok(nonce)) = (
            msg.attribute::<Username>(),
            msg.attribute::<Realm>(),
            msg.attribute::<Nonce>(),
        ) else {
            self.reply_error(client, msg, ErrorCode::BAD_REQUEST, None);
            return None;
        };
        if !self.nonces.is_valid(nonce.nonce(), self.secs(now)) {
            self.stats.auth_stale_nonce += 1;
            self.challenge(now, client, msg, ErrorCode::STALE_NONCE);
            return None;
        }
        if realm.realm() != self.settings.realm {
            self.stats.auth_bad_credentials += 1;
            self.challenge(now, client, msg, ErrorCode::UNAUTHORIZED);
            return None;
        }
        let key = match self.creds.lookup(username.username(), self.unix(now)) {
            Ok(key) => key,
            Err(e) => {
                match e {
                    LookupError::UnknownUser => self.stats.auth_unknown_user += 1,
                    LookupError::Expired => self.stats.auth_expired += 1,
                }
                self.challenge(now, client, msg, ErrorCode::UNAUTHORIZED);
                return None;
            }
        };
        let creds = MessageIntegrityCredentials::from(key);
        let Ok(algo) = msg.validate_integrity(&creds) else {
            self.stats.auth_bad_credentials += 1;
            self.challenge(now, client, msg, ErrorCode::UNAUTHORIZED);
            return None;
        };
        Some(Auth {
            creds,
            algo,
            username: username.username().to_owned(),
        })
    }

    fn clamp_lifetime(&self, requested: Option<u32>) -> u32 {
        let max = self.settings.max_lifetime;
        requested
            .unwrap_or(DEFAULT_LIFETIME)
            .max(DEFAULT_LIFETIME)
            .min(max)
    }

    fn relay_ip(&self, family: Family) -> Option<IpAddr> {
        match family {
            Family::V4 => self.settings.relay_ipv4,
            Family::V6 => self.settings.relay_ipv6,
        }
    }

    fn pool(&mut self, family: Family) -> &mut PortPool {
        match family {
            Family::V4 => &mut self.ports_v4,
            Family::V6 => &mut self.ports_v6,
        }
    }

    fn handle_allocate(&mut self, now: Instant, client: ClientAddr, msg: &Message<'_>, auth: Auth) {
        if let Some(&idx) = self.by_client.get(&client) {
            let alloc = self.allocs[idx].as_ref();
            match alloc {
                Some(a) if a.txid == msg.transaction_id() => {
                    if a.bound {
                        let data = a.success.clone();
                        self.out
                            .push_back(Output::Transmit(Transmit { to: client, data }));
                    }
                }
                _ => self.reply_error(client, msg, ErrorCode::ALLOCATION_MISMATCH, Some(&auth)),
            }
            return;
        }
        match self.check_allocate(msg) {
            Ok(plan) => self.start_allocation(now, client, msg, auth, plan),
            Err(code) => self.reply_error(client, msg, code, Some(&auth)),
        }
    }

    /// Validates an Allocate's attributes (RFC 8656 section 7.2) and the quotas.
    fn check_allocate(&mut self, msg: &Message<'_>) -> Result<AllocPlan, u16> {
        let transport = msg
            .attribute::<RequestedTransport>()
            .map_err(|_| ErrorCode::BAD_REQUEST)?;
        if transport.protocol() != RequestedTransport::UDP {
            return Err(ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL);
        }
        let even = msg.attribute::<EvenPort>().ok();
        let token = msg.attribute::<ReservationToken>().ok();
        let requested = msg.attribute::<RequestedAddressFamily>().ok();
        let additional = msg.attribute::<AdditionalAddressFamily>().ok();
        if token.is_some() && (even.is_some() || requested.is_some()) {
            return Err(ErrorCode::BAD_REQUEST);
        }
        if requested.is_some() && additional.is_some() {
            return Err(ErrorCode::BAD_REQUEST);
        }
        if additional
            .as_ref()
            .is_some_and(|a| a.family() == AddressFamily::IPV4)
        {
            return Err(ErrorCode::BAD_REQUEST);
        }
        let family = match requested.map(|r| r.family()) {
            Some(AddressFamily::IPV6) => Family::V6,
            _ => Family::V4,
        };
        if self.relay_ip(family).is_none() {
            return Err(ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED);
        }
        if self.by_client.len() >= self.settings.max_allocations {
            self.stats.quota_rejections += 1;
            return Err(ErrorCode::INSUFFICIENT_CAPACITY);
        }
        let plan = AllocPlan {
            family,
            even: even.is_some(),
            reserve_next: even.is_some_and(|e| e.requested()),
            token: token.map(|t| t.token()),
            lifetime: self.clamp_lifetime(msg.attribute::<Lifetime>().ok().map(|l| l.seconds())),
            refuse_additional: additional.is_some() && self.settings.relay_ipv6.is_none(),
        };
        Ok(plan)
    }

    fn start_allocation(
        &mut self,
        now: Instant,
        client: ClientAddr,
        msg: &Message<'_>,
        auth: Auth,
        plan: AllocPlan,
    ) {
        let used = self.per_user.get(&auth.username).copied().unwrap_or(0);
        if used >= self.settings.max_per_user {
            self.stats.quota_rejections += 1;
            return self.reply_error(
                client,
                msg,
                ErrorCode::ALLOCATION_QUOTA_REACHED,
                Some(&auth),
            );
        }
        let relay = match plan.token {
            Some(token) => self.take_reservation(now, token),
            None => self.pick_port(plan.family, plan.even, plan.reserve_next),
        };
        let Some(relay) = relay else {
            self.stats.quota_rejections += 1;
            return self.reply_error(client, msg, ErrorCode::INSUFFICIENT_CAPACITY, Some(&auth));
        };
        let request = BindRequest(self.rng.next());
        let rate = self.settings.rate;
        let alloc = Allocation {
            client,
            username: auth.username.clone(),
            creds: auth.creds,
            algo: auth.algo,
            family: plan.family,
            relay,
            bound: false,
            bind_request: request,
            bind_attempts: 1,
            expires: now + Duration::from_secs(u64::from(plan.lifetime)),
            lifetime: plan.lifetime,
            txid: msg.transaction_id(),
            success: Vec::new(),
            reserve_next: plan.reserve_next,
            refuse_additional: plan.refuse_additional,
            perms: Vec::new(),
            channels: Vec::new(),
            up: Bucket::new(now, rate),
            down: Bucket::new(now, rate),
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.allocs[i] = Some(alloc);
                i
            }
            None => {
                self.allocs.push(Some(alloc));
                self.allocs.len() - 1
            }
        };
        *self.per_user.entry(auth.username).or_insert(0) += 1;
        self.by_client.insert(client, idx);
        self.pending.insert(request, idx);
        self.wake_at(now + Duration::from_secs(u64::from(plan.lifetime)));
        self.out.push_back(Output::BindRelay {
            request,
            addr: relay,
        });
    }

    fn pick_port(&mut self, family: Family, even: bool, reserve_next: bool) -> Option<SocketAddr> {
        let ip = self.relay_ip(family)?;
        let start = self.rng.next();
        let port = self.pool(family).take(start, even, reserve_next)?;
        Some(SocketAddr::new(ip, port))
    }

    fn take_reservation(&mut self, now: Instant, token: u64) -> Option<SocketAddr> {
        let r = self.reservations.remove(&token)?;
        if r.expires <= now {
            let family = Family::of(&r.relay);
            self.pool(family).release(r.relay.port());
            return None;
        }
        Some(r.relay)
    }

    /// The driver's answer to [`Output::BindRelay`]: `Ok(addr)` when the
    /// relay socket is bound to `addr`, `Err(())` when binding failed.
    pub fn relay_bound(
        &mut self,
        now: Instant,
        request: BindRequest,
        result: Result<SocketAddr, ()>,
    ) {
        let Some(idx) = self.pending.remove(&request) else {
            if let Ok(addr) = result {
                self.out.push_back(Output::ReleaseRelay { addr });
            }
            return;
        };
        match result {
            Ok(addr) => self.allocation_bound(now, idx, addr),
            Err(()) => self.retry_bind(idx),
        }
    }

    fn retry_bind(&mut self, idx: usize) {
        let Some(alloc) = self.allocs[idx].as_ref() else {
            return;
        };
        let (family, attempts, reserve) = (alloc.family, alloc.bind_attempts, alloc.reserve_next);
        // The failed port stays marked as used: something else holds it.
        let next = if attempts < BIND_ATTEMPTS {
            self.pick_port(family, reserve, reserve)
        } else {
            None
        };
        let Some(addr) = next else {
            self.stats.quota_rejections += 1;
            return self.fail_allocation(idx);
        };
        let request = BindRequest(self.rng.next());
        if let Some(alloc) = self.allocs[idx].as_mut() {
            alloc.relay = addr;
            alloc.bind_attempts += 1;
            alloc.bind_request = request;
        }
        self.pending.insert(request, idx);
        self.out.push_back(Output::BindRelay { request, addr });
    }

    /// No relay socket could be bound: answer 508 and forget the allocation.
    fn fail_allocation(&mut self, idx: usize) {
        let Some(alloc) = self.remove_allocation(idx) else {
            return;
        };
        let mtype = MessageType::from_class_method(MessageClass::Error, ALLOCATE);
        let mut w = Message::builder(mtype, alloc.txid, MessageWriteVec::new());
        if let Ok(attr) = ErrorCode::new(508, "Insufficient Capacity") {
            let _ = w.add_attribute(&attr);
        }
        let auth = Auth {
            creds: alloc.creds,
            algo: alloc.algo,
            username: alloc.username,
        };
        self.finish_reply(alloc.client, w, Some(&auth));
    }

    fn allocation_bound(&mut self, now: Instant, idx: usize, addr: SocketAddr) {
        let token = {
            let Some(alloc) = self.allocs[idx].as_ref() else {
                return;
            };
            alloc.reserve_next.then(|| self.rng.next())
        };
        if let Some(token) = token {
            let relay = SocketAddr::new(addr.ip(), addr.port() + 1);
            let expires = now + RESERVATION_LIFETIME;
            self.reservations
                .insert(token, Reservation { relay, expires });
            self.wake_at(expires);
        }
        let software = self.settings.software.clone();
        let external = match Family::of(&addr) {
            Family::V4 => self.settings.external_ipv4,
            Family::V6 => self.settings.external_ipv6,
        };
        let announced = SocketAddr::new(external.unwrap_or(addr.ip()), addr.port());
        let Some(alloc) = self.allocs[idx].as_mut() else {
            return;
        };
        alloc.bound = true;
        alloc.relay = addr;
        let mtype = MessageType::from_class_method(MessageClass::Success, ALLOCATE);
        let mut w = Message::builder(mtype, alloc.txid, MessageWriteVec::new());
        let _ = w.add_attribute(&XorRelayedAddress::new(announced, alloc.txid));
        let _ = w.add_attribute(&Lifetime::new(alloc.lifetime));
        let _ = w.add_attribute(&XorMappedAddress::new(alloc.client.remote, alloc.txid));
        if let Some(token) = token {
            let _ = w.add_attribute(&ReservationToken::new(token));
        }
        if let (true, Ok(code)) = (
            alloc.refuse_additional,
            ErrorCode::new(440, "Address Family not Supported"),
        ) {
            let _ = w.add_attribute(&AddressErrorCode::new(AddressFamily::IPV6, code));
        }
        if let Ok(sw) = Software::new(&software) {
            let _ = w.add_attribute(&sw);
        }
        let _ = w.add_message_integrity(&alloc.creds, alloc.algo);
        let _ = w.add_fingerprint();
        alloc.success = w.finish();
        let (client, data) = (alloc.client, alloc.success.clone());
        tracing::info!(
            user = user_part(&alloc.username),
            client = %redact(client.remote.ip()),
            transport = ?client.transport,
            relay_port = addr.port(),
            lifetime = alloc.lifetime,
            "allocation created"
        );
        self.by_relay.insert(addr, idx);
        self.stats.allocations_created += 1;
        self.out
            .push_back(Output::Transmit(Transmit { to: client, data }));
    }

    fn remove_allocation(&mut self, idx: usize) -> Option<Allocation> {
        let alloc = self.allocs.get_mut(idx)?.take()?;
        self.free.push(idx);
        self.by_client.remove(&alloc.client);
        if alloc.bound {
            self.by_relay.remove(&alloc.relay);
            self.out
                .push_back(Output::ReleaseRelay { addr: alloc.relay });
        } else {
            self.pending.remove(&alloc.bind_request);
        }
        self.pool(alloc.family).release(alloc.relay.port());
        if let Some(n) = self.per_user.get_mut(&alloc.username) {
            *n -= 1;
            if *n == 0 {
                self.per_user.remove(&alloc.username);
            }
        }
        Some(alloc)
    }

    fn delete_allocation(&mut self, idx: usize, why: &'static str) {
        if let Some(alloc) = self.remove_allocation(idx) {
            self.stats.allocations_deleted += 1;
            tracing::info!(
                user = user_part(&alloc.username),
                client = %redact(alloc.client.remote.ip()),
                relay_port = alloc.relay.port(),
                why,
                "allocation deleted"
            );
        }
    }

    fn handle_refresh(
        &mut self,
        now: Instant,
        client: ClientAddr,
        msg: &Message<'_>,
        idx: usize,
        auth: &Auth,
    ) {
        let requested = msg.attribute::<Lifetime>().ok().map(|l| l.seconds());
        if let Ok(family) = msg.attribute::<RequestedAddressFamily>() {
            let matches = self.allocs[idx].as_ref().is_some_and(|a| {
                (a.family == Family::V4) == (family.family() == AddressFamily::IPV4)
            });
            if !matches {
                return self.reply_error(
                    client,
                    msg,
                    ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
                    Some(auth),
                );
            }
        }
        let lifetime = if requested == Some(0) {
            self.delete_allocation(idx, "refresh with lifetime 0");
            0
        } else {
            let lifetime = self.clamp_lifetime(requested);
            let expires = now + Duration::from_secs(u64::from(lifetime));
            if let Some(a) = self.allocs[idx].as_mut() {
                a.expires = expires;
            }
            lifetime
        };
        let mut w = Message::builder_success(msg, MessageWriteVec::new());
        let _ = w.add_attribute(&Lifetime::new(lifetime));
        self.finish_reply(client, w, Some(auth));
    }

    /// Checks a peer address against the allocation's family and the policy.
    fn check_peer(&mut self, idx: usize, peer: SocketAddr) -> Result<(), u16> {
        let family = self.allocs[idx].as_ref().map(|a| a.family);
        if family != Some(Family::of(&peer)) {
            return Err(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH);
        }
        if let Err(reason) = self.policy.check(peer.ip()) {
            self.stats.peer_denied += 1;
            tracing::debug!(?reason, "peer address refused");
            return Err(ErrorCode::FORBIDDEN);
        }
        Ok(())
    }

    fn peer_addresses(msg: &Message<'_>) -> Result<Vec<SocketAddr>, u16> {
        let mut peers = Vec::new();
        for n in 0.. {
            match msg.nth_attribute::<XorPeerAddress>(n) {
                Ok(p) => peers.push(p.addr(msg.transaction_id())),
                Err(stun_types::message::StunParseError::MissingAttribute(_)) => break,
                Err(_) => return Err(ErrorCode::BAD_REQUEST),
            }
        }
        if peers.is_empty() {
            return Err(ErrorCode::BAD_REQUEST);
        }
        Ok(peers)
    }

    fn handle_create_permission(
        &mut self,
        now: Instant,
        client: ClientAddr,
        msg: &Message<'_>,
        idx: usize,
        auth: &Auth,
    ) {
        let peers = match Self::peer_addresses(msg) {
            Ok(p) => p,
            Err(code) => return self.reply_error(client, msg, code, Some(auth)),
        };
        for peer in &peers {
            if let Err(code) = self.check_peer(idx, *peer) {
                return self.reply_error(client, msg, code, Some(auth));
            }
        }
        if let Some(a) = self.allocs[idx].as_mut() {
            for peer in &peers {
                a.permit(peer.ip(), now);
            }
        }
        self.wake_at(now + PERMISSION_LIFETIME);
        let w = Message::builder_success(msg, MessageWriteVec::new());
        self.finish_reply(client, w, Some(auth));
    }

    fn handle_channel_bind(
        &mut self,
        now: Instant,
        client: ClientAddr,
        msg: &Message<'_>,
        idx: usize,
        auth: &Auth,
    ) {
        let result = self.check_channel_bind(now, msg, idx);
        match result {
            Ok(()) => {
                self.wake_at(now + PERMISSION_LIFETIME);
                let w = Message::builder_success(msg, MessageWriteVec::new());
                self.finish_reply(client, w, Some(auth));
            }
            Err(code) => self.reply_error(client, msg, code, Some(auth)),
        }
    }

    fn check_channel_bind(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        idx: usize,
    ) -> Result<(), u16> {
        let number = msg
            .attribute::<ChannelNumber>()
            .map_err(|_| ErrorCode::BAD_REQUEST)?
            .channel();
        let peer = msg
            .attribute::<XorPeerAddress>()
            .map_err(|_| ErrorCode::BAD_REQUEST)?
            .addr(msg.transaction_id());
        if !(0x4000..=self.settings.max_channel).contains(&number) {
            self.stats.bad_channel += 1;
            return Err(ErrorCode::BAD_REQUEST);
        }
        self.check_peer(idx, peer)?;
        let alloc = self.allocs[idx]
            .as_mut()
            .ok_or(ErrorCode::ALLOCATION_MISMATCH)?;
        let by_number = alloc.channels.iter().position(|c| c.number == number);
        let by_peer = alloc.channels.iter().position(|c| c.peer == peer);
        let expires = now + CHANNEL_LIFETIME;
        match (by_number, by_peer) {
            (Some(a), Some(b)) if a == b => alloc.channels[a].expires = expires,
            (None, None) => alloc.channels.push(Channel {
                number,
                peer,
                expires,
            }),
            _ => {
                self.stats.bad_channel += 1;
                return Err(ErrorCode::BAD_REQUEST);
            }
        }
        alloc.permit(peer.ip(), now);
        Ok(())
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
        self.next_timeout = next;
    }
}

/// What an Allocate asks for, once checked.
#[derive(Debug)]
struct AllocPlan {
    family: Family,
    even: bool,
    reserve_next: bool,
    token: Option<u64>,
    lifetime: u32,
    refuse_additional: bool,
}

#[cfg(test)]
mod tests;
