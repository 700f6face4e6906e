//! Unit tests and virtual-time simulation of the engine.
#![allow(clippy::disallowed_methods)] // tests own the clock

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stun_types::AddressFamily;
use stun_types::attribute::{
    ErrorCode, Fingerprint, MessageIntegrity, Nonce, Realm, Software, UnknownAttributes, Username,
    XorMappedAddress,
};
use stun_types::message::{
    BINDING, IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass,
    MessageIntegrityCredentials, MessageType, MessageWriteVec, Method, TransactionId,
};
use stun_types::prelude::*;
use turn_types::attribute::{
    ChannelNumber, Data, EvenPort, Lifetime, RequestedAddressFamily, RequestedTransport,
    ReservationToken, XorPeerAddress, XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND};

use super::*;
use crate::config::{Config, Secrets};

const UNIX: u64 = 1_800_000_000;

fn secrets() -> Secrets {
    Secrets {
        rest_secret: Some("rest-secret".into()),
        static_users: vec![
            ("alice".into(), "alice-pw".into()),
            ("bob".into(), "bob-pw".into()),
        ],
    }
}

fn client_addr(port: u16) -> ClientAddr {
    ClientAddr {
        transport: Transport::Udp,
        local: "127.0.0.1:3478".parse().unwrap(),
        remote: SocketAddr::from(([198, 51, 100, 7], port)),
    }
}

struct Client {
    addr: ClientAddr,
    user: String,
    pass: String,
    nonce: Option<String>,
}

impl Client {
    fn new(port: u16, user: &str, pass: &str) -> Client {
        Client {
            addr: client_addr(port),
            user: user.into(),
            pass: pass.into(),
            nonce: None,
        }
    }

    fn creds(&self) -> MessageIntegrityCredentials {
        LongTermKeyCredentials::new(self.user.clone(), self.pass.clone(), "palaver".into()).into()
    }
}

type Attrs<'a> = &'a dyn Fn(&mut MessageWriteVec);

fn no_attrs(_: &mut MessageWriteVec) {}

struct H {
    e: Engine,
    now: Instant,
    /// Payloads handed to peers: (relay, peer, data).
    to_peer: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
}

fn code(resp: &[u8]) -> u16 {
    let msg = Message::from_bytes(resp).expect("answer parses, fingerprint ok");
    match msg.attribute::<ErrorCode>() {
        Ok(e) => e.code(),
        Err(_) => {
            assert!(msg.has_class(MessageClass::Success));
            0
        }
    }
}

impl H {
    fn new(cfg: Config) -> H {
        let now = Instant::now();
        H {
            e: Engine::new(&cfg, &secrets(), now, UNIX, [1; 32]).unwrap(),
            now,
            to_peer: vec![],
        }
    }

    fn default() -> H {
        H::new(Config::default())
    }

    fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        // step through every deadline on the way, as a driver would
        while let Some(t) = self.e.poll_timeout().filter(|t| *t <= target) {
            self.now = self.now.max(t);
            self.e.handle_timeout(self.now);
            self.drain();
        }
        self.now = target;
        self.e.handle_timeout(self.now);
    }

    /// Drains outputs, binding relay sockets as asked; returns the transmits.
    fn drain(&mut self) -> Vec<Transmit> {
        let mut tx = vec![];
        while let Some(o) = self.e.poll_output() {
            match o {
                Output::Transmit(t) => tx.push(t),
                Output::BindRelay { request, addr } => {
                    self.e.relay_bound(self.now, request, Ok(addr))
                }
                Output::ReleaseRelay { .. } => {}
            }
        }
        tx
    }

    fn input(&mut self, from: ClientAddr, bytes: &[u8]) -> Vec<Transmit> {
        if let Some(p) = self.e.handle_client(self.now, from, bytes) {
            self.to_peer.push((p.relay, p.peer, p.data.to_vec()));
        }
        self.drain()
    }

    fn one(&mut self, from: ClientAddr, bytes: &[u8]) -> Vec<u8> {
        let mut tx = self.input(from, bytes);
        assert_eq!(tx.len(), 1, "expected one answer");
        let t = tx.pop().unwrap();
        assert_eq!(t.to, from);
        t.data
    }

    fn build(c: &Client, method: Method, attrs: Attrs, auth: bool) -> Vec<u8> {
        let mut w = Message::builder_request(method, MessageWriteVec::new());
        attrs(&mut w);
        if auth {
            w.add_attribute(&Username::new(&c.user).unwrap()).unwrap();
            w.add_attribute(&Realm::new("palaver").unwrap()).unwrap();
            let nonce = c.nonce.clone().unwrap_or_else(|| "0".repeat(32));
            w.add_attribute(&Nonce::new(&nonce).unwrap()).unwrap();
            w.add_message_integrity(&c.creds(), IntegrityAlgorithm::Sha1)
                .unwrap();
        }
        w.add_fingerprint().unwrap();
        w.finish()
    }

    /// An authenticated request; fetches a nonce first when needed.
    fn req(&mut self, c: &mut Client, method: Method, attrs: Attrs) -> Vec<u8> {
        if c.nonce.is_none() {
            let resp = self.one(c.addr, &Self::build(c, method, attrs, false));
            assert_eq!(code(&resp), 401);
            let msg = Message::from_bytes(&resp).unwrap();
            assert_eq!(msg.attribute::<Realm>().unwrap().realm(), "palaver");
            c.nonce = Some(msg.attribute::<Nonce>().unwrap().nonce().to_owned());
        }
        let resp = self.one(c.addr, &Self::build(c, method, attrs, true));
        if code(&resp) == 0 || code(&resp) >= 402 && code(&resp) != 438 {
            let msg = Message::from_bytes(&resp).unwrap();
            msg.validate_integrity(&c.creds())
                .expect("answer signed with the client's key");
        }
        resp
    }

    fn allocate(&mut self, c: &mut Client) -> SocketAddr {
        let resp = self.req(c, ALLOCATE, &udp);
        assert_eq!(code(&resp), 0);
        let msg = Message::from_bytes(&resp).unwrap();
        msg.attribute::<XorRelayedAddress>()
            .unwrap()
            .addr(msg.transaction_id())
    }
}

fn udp(w: &mut MessageWriteVec) {
    w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
        .unwrap();
}

fn peer_attr(peer: SocketAddr) -> impl Fn(&mut MessageWriteVec) {
    move |w: &mut MessageWriteVec| {
        let tx = w.transaction_id();
        w.add_attribute(&XorPeerAddress::new(peer, tx)).unwrap();
    }
}

fn channel_attrs(number: u16, peer: SocketAddr) -> impl Fn(&mut MessageWriteVec) {
    move |w: &mut MessageWriteVec| {
        let tx = w.transaction_id();
        w.add_attribute(&ChannelNumber::new(number)).unwrap();
        w.add_attribute(&XorPeerAddress::new(peer, tx)).unwrap();
    }
}

fn lab() -> Config {
    Config {
        peer_allow: vec!["127.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()],
        ..Config::default()
    }
}

#[test]
fn binding_answers_mapped_address_software_fingerprint() {
    let mut h = H::default();
    let c = client_addr(5000);
    let req = Message::builder_request(BINDING, MessageWriteVec::new()).finish();
    let resp = h.one(c, &req);
    let msg = Message::from_bytes(&resp).unwrap();
    assert!(msg.has_class(MessageClass::Success));
    assert_eq!(
        msg.attribute::<XorMappedAddress>()
            .unwrap()
            .addr(msg.transaction_id()),
        c.remote
    );
    assert_eq!(
        msg.attribute::<Software>().unwrap().software(),
        "palaver-turn"
    );
    assert!(msg.has_attribute(Fingerprint::TYPE));
}

#[test]
fn unknown_comprehension_required_attribute_gets_420() {
    let mut h = H::default();
    let unknown = stun_types::attribute::AttributeType::new(0x0031);
    let raw = stun_types::attribute::RawAttribute::new(unknown, &[1, 2, 3, 4]);
    let mut w = Message::builder_request(BINDING, MessageWriteVec::new());
    w.add_attribute(&raw).unwrap();
    let resp = h.one(client_addr(1), &w.finish());
    assert_eq!(code(&resp), 420);
    let msg = Message::from_bytes(&resp).unwrap();
    assert!(
        msg.attribute::<UnknownAttributes>()
            .unwrap()
            .has_attribute(unknown)
    );
    // authenticated Allocate with DONT-FRAGMENT (not supported) or an unknown attribute
    let mut c = Client::new(2, "alice", "alice-pw");
    for t in [0x001A_u16, 0x0031] {
        let attrs = move |w: &mut MessageWriteVec| {
            udp(w);
            let raw = stun_types::attribute::RawAttribute::new(t.into(), &[]);
            w.add_attribute(&raw).unwrap();
        };
        assert_eq!(code(&h.req(&mut c, ALLOCATE, &attrs)), 420, "{t:#x}");
    }
    // comprehension-optional unknown attributes are ignored
    let optional = |w: &mut MessageWriteVec| {
        udp(w);
        w.add_attribute(&stun_types::attribute::RawAttribute::new(
            0x8031.into(),
            &[0; 4],
        ))
        .unwrap();
    };
    assert_eq!(code(&h.req(&mut c, ALLOCATE, &optional)), 0);
}

#[test]
fn allocate_challenge_then_success() {
    let mut h = H::default();
    let mut c = Client::new(5000, "alice", "alice-pw");
    let relay = h.allocate(&mut c);
    assert_eq!(relay.ip(), IpAddr::from([127, 0, 0, 1]));
    assert!(relay.port() >= 49152);
    assert_eq!(h.e.stats().allocations, 1);
    assert_eq!(h.e.stats().allocations_created, 1);
}

#[test]
fn wrong_credentials_get_401() {
    let mut h = H::default();
    let mut c = Client::new(5000, "alice", "wrong");
    let resp = h.req(&mut c, ALLOCATE, &udp);
    assert_eq!(code(&resp), 401);
    let msg = Message::from_bytes(&resp).unwrap();
    assert!(msg.has_attribute(Nonce::TYPE) && msg.has_attribute(Realm::TYPE));
    assert!(!msg.has_attribute(MessageIntegrity::TYPE));
    let mut nobody = Client::new(5001, "mallory", "x");
    assert_eq!(code(&h.req(&mut nobody, ALLOCATE, &udp)), 401);
    let s = h.e.stats();
    assert_eq!((s.auth_bad_credentials, s.auth_unknown_user), (1, 1));
}

#[test]
fn rest_credentials_work_until_expiry() {
    let mut h = H::default();
    let (u, p) = crate::rest_credentials("rest-secret", "carol", UNIX + 100);
    let mut c = Client::new(5000, &u, &p);
    h.allocate(&mut c);
    let (u, p) = crate::rest_credentials("rest-secret", "dave", UNIX - 1);
    let mut old = Client::new(5001, &u, &p);
    assert_eq!(code(&h.req(&mut old, ALLOCATE, &udp)), 401);
    let (u, _) = crate::rest_credentials("rest-secret", "erin", UNIX + 100);
    let mut forged = Client::new(5002, &u, "forged");
    assert_eq!(code(&h.req(&mut forged, ALLOCATE, &udp)), 401);
    // expiry passes while the allocation lives: refresh is refused
    h.advance(Duration::from_secs(200));
    assert_eq!(code(&h.req(&mut c, REFRESH, &no_attrs)), 401);
    assert_eq!(h.e.stats().auth_expired, 2);
}

#[test]
fn stale_nonce_gets_438_then_works() {
    let mut h = H::default();
    let mut c = Client::new(5000, "alice", "alice-pw");
    h.allocate(&mut c);
    h.advance(Duration::from_secs(599));
    assert_eq!(code(&h.req(&mut c, REFRESH, &no_attrs)), 0);
    h.advance(Duration::from_secs(2));
    let resp = h.req(&mut c, REFRESH, &no_attrs);
    assert_eq!(code(&resp), 438);
    let msg = Message::from_bytes(&resp).unwrap();
    let fresh = msg.attribute::<Nonce>().unwrap().nonce().to_owned();
    assert_ne!(Some(&fresh), c.nonce.as_ref());
    c.nonce = Some(fresh);
    assert_eq!(code(&h.req(&mut c, REFRESH, &no_attrs)), 0);
    // a forged nonce is stale too
    c.nonce = Some("f".repeat(32));
    assert_eq!(code(&h.req(&mut c, REFRESH, &no_attrs)), 438);
}

#[test]
fn allocation_mismatch_437() {
    let mut h = H::default();
    let mut c = Client::new(5000, "alice", "alice-pw");
    assert_eq!(code(&h.req(&mut c, REFRESH, &no_attrs)), 437);
    assert_eq!(
        code(&h.req(
            &mut c,
            CREATE_PERMISSION,
            &peer_attr("8.8.8.8:1".parse().unwrap())
        )),
        437
    );
    h.allocate(&mut c);
    assert_eq!(code(&h.req(&mut c, ALLOCATE, &udp)), 437);
    // a retransmission of the same Allocate gets the same success
    let req = H::build(&c, ALLOCATE, &udp, true);
    let first = h.input(c.addr, &req);
    let second = h.input(c.addr, &req);
    assert_eq!(code(&first[0].data), 437);
    assert_eq!(first, second);
}

#[test]
fn allocate_retransmission_gets_same_answer() {
    let mut h = H::default();
    let mut c = Client::new(5000, "alice", "alice-pw");
    let _ = h
        .input(c.addr, &H::build(&c, ALLOCATE, &udp, false))
        .pop()
        .map(|t| {
            let m = Message::from_bytes(&t.data)
                .unwrap()
                .attribute::<Nonce>()
                .unwrap()
                .nonce()
                .to_owned();
            c.nonce = Some(m);
        });
    let req = H::build(&c, ALLOCATE, &udp, true);
    let a = h.one(c.addr, &req);
    let b = h.one(c.addr, &req);
    assert_eq!(code(&a), 0);
    assert_eq!(a, b);
    assert_eq!(h.e.stats().allocations, 1);
}

#[test]
fn wrong_user_on_allocation_gets_441() {
    let mut h = H::default();
    let mut alice = Client::new(5000, "alice", "alice-pw");
    h.allocate(&mut alice);
    let mut bob = Client::new(5000, "bob", "bob-pw");
    assert_eq!(code(&h.req(&mut bob, REFRESH, &no_attrs)), 441);
}

#[test]
fn allocate_attribute_checks() {
    let mut h = H::default();
    let mut c = Client::new(5000, "alice", "alice-pw");
    assert_eq!(
        code(&h.req(&mut c, ALLOCATE, &no_attrs)),
        400,
        "no REQUESTED-TRANSPORT"
    );
    let tcp = |w: &mut MessageWriteVec| {
        w.add_attribute(&RequestedTransport::new(RequestedTransport::TCP))
            .unwrap();
    };
    assert_eq!(code(&h.req(&mut c, ALLOCATE, &tcp)), 442);
    let v6 = |w: &mut MessageWriteVec| {
        udp(w);
        w.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV6))
            .unwrap();
    };
    assert_eq!(
        code(&h.req(&mut c, ALLOCATE, &v6)),
        440,
        "no IPv6 relay configured"
    );
    let token_and_even = |w: &mut MessageWriteVec| {
        udp(w);
        w.add_attribute(&EvenPort::new(false)).unwrap();
        w.add_attribute(&ReservationToken::new(7)).unwrap();
    };
    assert_eq!(code(&h.req(&mut c, ALLOCATE, &token_and_even)), 400);
    let unknown_token = |w: &mut MessageWriteVec| {
        udp(w);
        w.add_attribute(&ReservationToken::new(7)).unwrap();
    };
    assert_eq!(code(&h.req(&mut c, ALLOCATE, &unknown_token)), 508);
    assert_eq!(h.e.stats().allocations, 0);
}

#[test]
fn ipv6_relay_when_configured() {
    let cfg = Config {
        relay_ipv6: Some("::1".parse().unwrap()),
        ..lab()
    };
    let mut h = H::new(cfg);
    let mut c = Client::new(5000, "alice", "alice-pw");
    let v6 = |w: &mut MessageWriteVec| {
        udp(w);
        w.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV6))
            .unwrap();
    };
    let resp = h.req(&mut c, ALLOCATE, &v6);
    assert_eq!(code(&resp), 0);
    let msg = Message::from_bytes(&resp).unwrap();
    let relay = msg
        .attribute::<XorRelayedAddress>()
        .unwrap()
        .addr(msg.transaction_id());
    assert!(relay.is_ipv6());
    // an IPv4 peer on an IPv6 relay: 443
    assert_eq!(
        code(&h.req(
            &mut c,
            CREATE_PERMISSION,
            &peer_attr("127.0.0.1:9".parse().unwrap())
        )),
        443
    );
    assert_eq!(
        code(&h.req(
            &mut c,
            CREATE_PERMISSION,
            &peer_attr("[::1]:9".parse().unwrap())
        )),
        0
    );
}

#[test]
fn even_port_and_reservation_token() {
    let mut h = H::default();
    let mut a = Client::new(5000, "alice", "alice-pw");
    let even_r = |w: &mut MessageWriteVec| {
        udp(w);
        w.add_attribute(&EvenPort::new(true)).unwrap();
    };
    let resp = h.req(&mut a, ALLOCATE, &even_r);
    assert_eq!(code(&resp), 0);
    let msg = Message::from_bytes(&resp).unwrap();
    let relay = msg
        .attribute::<XorRelayedAddress>()
        .unwrap()
        .addr(msg.transaction_id());
    assert_eq!(relay.port() % 2, 0);
    let token = msg.attribute::<ReservationToken>().unwrap().token();
    let mut b = Client::new(5001, "bob", "bob-pw");
    let with_token = move |w: &mut MessageWriteVec| {
        udp(w);
        w.add_attribute(&ReservationToken::new(token)).unwrap();
    };
    let resp = h.req(&mut b, ALLOCATE, &with_token);
    assert_eq!(code(&resp), 0);
    let msg = Message::from_bytes(&resp).unwrap();
    let second = msg
        .attribute::<XorRelayedAddress>()
        .unwrap()
        .addr(msg.transaction_id());
    assert_eq!(second.port(), relay.port() + 1);
    // a token works once
    let mut c = Client::new(5002, "bob", "bob-pw");
    assert_eq!(code(&h.req(&mut c, ALLOCATE, &with_token)), 508);
    // EVEN-PORT without R: even port, no token
    let even = |w: &mut MessageWriteVec| {
        udp(w);
        w.add_attribute(&EvenPort::new(false)).unwrap();
    };
    let resp = h.req(&mut c, ALLOCATE, &even);
    let msg = Message::from_bytes(&resp).unwrap();
    assert_eq!(
        msg.attribute::<XorRelayedAddress>()
            .unwrap()
            .addr(msg.transaction_id())
            .port()
            % 2,
        0
    );
    assert!(!msg.has_attribute(ReservationToken::TYPE));
}

#[test]
fn reservation_expires_after_30s() {
    let mut h = H::default();
    let mut a = Client::new(5000, "alice", "alice-pw");
    let even_r = |w: &mut MessageWriteVec| {
        udp(w);
        w.add_attribute(&EvenPort::new(true)).unwrap();
    };
    let resp = h.req(&mut a, ALLOCATE, &even_r);
    let token = Message::from_bytes(&resp)
        .unwrap()
        .attribute::<ReservationToken>()
        .unwrap()
        .token();
    h.advance(Duration::from_secs(31));
    let mut b = Client::new(5001, "bob", "bob-pw");
    let with_token = move |w: &mut MessageWriteVec| {
        udp(w);
        w.add_attribute(&ReservationToken::new(token)).unwrap();
    };
    assert_eq!(code(&h.req(&mut b, ALLOCATE, &with_token)), 508);
}

#[test]
fn channel_number_range() {
    let mut h = H::new(lab());
    let mut c = Client::new(5000, "alice", "alice-pw");
    h.allocate(&mut c);
    for (i, n) in [0x0000_u16, 0x3FFF, 0x5000, 0x7FFF, 0x8000, 0xFFFF]
        .into_iter()
        .enumerate()
    {
        let peer = SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16));
        assert_eq!(
            code(&h.req(&mut c, CHANNEL_BIND, &channel_attrs(n, peer))),
            400,
            "{n:#x}"
        );
    }
    let p1: SocketAddr = "127.0.0.1:8001".parse().unwrap();
    let p2: SocketAddr = "127.0.0.1:8002".parse().unwrap();
    assert_eq!(
        code(&h.req(&mut c, CHANNEL_BIND, &channel_attrs(0x4000, p1))),
        0
    );
    assert_eq!(
        code(&h.req(&mut c, CHANNEL_BIND, &channel_attrs(0x4FFF, p2))),
        0
    );
    // refresh of the same binding
    assert_eq!(
        code(&h.req(&mut c, CHANNEL_BIND, &channel_attrs(0x4000, p1))),
        0
    );
    // same number to another peer, same peer to another number: 400
    assert_eq!(
        code(&h.req(&mut c, CHANNEL_BIND, &channel_attrs(0x4000, p2))),
        400
    );
    assert_eq!(
        code(&h.req(&mut c, CHANNEL_BIND, &channel_attrs(0x4001, p1))),
        400
    );
    let missing = |w: &mut MessageWriteVec| {
        w.add_attribute(&ChannelNumber::new(0x4002)).unwrap();
    };
    assert_eq!(code(&h.req(&mut c, CHANNEL_BIND, &missing)), 400);
}

#[test]
fn rfc5766_channel_range_when_enabled() {
    let cfg = Config {
        accept_rfc5766_channels: true,
        ..lab()
    };
    let mut h = H::new(cfg);
    let mut c = Client::new(5000, "alice", "alice-pw");
    h.allocate(&mut c);
    let peer: SocketAddr = "127.0.0.1:8001".parse().unwrap();
    assert_eq!(
        code(&h.req(&mut c, CHANNEL_BIND, &channel_attrs(0x7FFF, peer))),
        0
    );
    let other: SocketAddr = "127.0.0.1:8002".parse().unwrap();
    assert_eq!(
        code(&h.req(&mut c, CHANNEL_BIND, &channel_attrs(0x8000, other))),
        400
    );
}

/// Every denied range in every spelling is answered 403, for permissions and channels.
#[test]
fn denied_peers_get_403() {
    let cfg = Config {
        relay_ipv6: Some("::1".parse().unwrap()),
        ..Config::default()
    };
    let mut h = H::new(cfg);
    let mut v4 = Client::new(5000, "alice", "alice-pw");
    h.allocate(&mut v4);
    let mut v6 = Client::new(5001, "alice", "alice-pw");
    let v6_attrs = |w: &mut MessageWriteVec| {
        udp(w);
        w.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV6))
            .unwrap();
    };
    assert_eq!(code(&h.req(&mut v6, ALLOCATE, &v6_attrs)), 0);
    let denied_v4 = [
        "0.0.0.0",
        "127.0.0.1",
        "127.1.2.3",
        "10.0.0.1",
        "172.16.0.1",
        "172.31.1.1",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.1.1",
        "169.254.169.254",
        "168.63.129.16",
        "224.0.0.1",
        "239.255.255.250",
        "255.255.255.255",
        "192.0.2.1",
        "198.51.100.1",
        "203.0.113.1",
        "198.18.0.1",
        "240.0.0.1",
        "192.0.0.1",
        "192.88.99.1",
    ];
    let mut n = 0u16;
    for s in denied_v4 {
        let ip: std::net::Ipv4Addr = s.parse().unwrap();
        let x = u128::from(ip.to_bits());
        let spellings = [
            0xffff_u128 << 32 | x,
            0xffff_u128 << 48 | x,
            0x0064_ff9b_u128 << 96 | x,
            0x2002_u128 << 112 | x << 80 | 1,
            0x2001_0000_u128 << 96 | 0x0808_0808 << 64 | u128::from(!ip.to_bits()),
            x,
        ];
        let peer = SocketAddr::new(IpAddr::V4(ip), 9);
        assert_eq!(
            code(&h.req(&mut v4, CREATE_PERMISSION, &peer_attr(peer))),
            403,
            "{s}"
        );
        assert_eq!(
            code(&h.req(&mut v4, CHANNEL_BIND, &channel_attrs(0x4000, peer))),
            403,
            "{s}"
        );
        for bits in spellings {
            let peer = SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::from_bits(bits)), 9);
            assert_eq!(
                code(&h.req(&mut v6, CREATE_PERMISSION, &peer_attr(peer))),
                403,
                "{peer}"
            );
            n += 1;
        }
    }
    for s in [
        "::",
        "::1",
        "fc00::1",
        "fd00:ec2::254",
        "fe80::1",
        "ff02::1",
        "2001:db8::1",
        "2001:2::1",
        "64:ff9b:1::1",
    ] {
        let peer = SocketAddr::new(s.parse().unwrap(), 9);
        assert_eq!(
            code(&h.req(&mut v6, CREATE_PERMISSION, &peer_attr(peer))),
            403,
            "{s}"
        );
    }
    assert!(n > 100);
    // one denied address among allowed ones refuses the whole request
    let mixed = |w: &mut MessageWriteVec| {
        let tx = w.transaction_id();
        w.add_attribute(&XorPeerAddress::new("8.8.8.8:1".parse().unwrap(), tx))
            .unwrap();
        w.add_attribute(&XorPeerAddress::new("10.0.0.1:1".parse().unwrap(), tx))
            .unwrap();
    };
    assert_eq!(code(&h.req(&mut v4, CREATE_PERMISSION, &mixed)), 403);
    assert_eq!(h.e.stats().permissions, 0);
    assert_eq!(
        code(&h.req(
            &mut v4,
            CREATE_PERMISSION,
            &peer_attr("8.8.8.8:1".parse().unwrap())
        )),
        0
    );
    assert_eq!(h.e.stats().permissions, 1);
}

fn send_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mtype = MessageType::from_class_method(MessageClass::Indication, SEND);
    let mut w = Message::builder(mtype, TransactionId::generate(), MessageWriteVec::new());
    let tx = w.transaction_id();
    w.add_attribute(&XorPeerAddress::new(peer, tx)).unwrap();
    w.add_attribute(&Data::new(data)).unwrap();
    w.finish()
}

impl H {
    fn peer_sends(
        &mut self,
        relay: SocketAddr,
        peer: SocketAddr,
        payload: &[u8],
    ) -> Option<(ClientAddr, Vec<u8>)> {
        let mut buf = vec![0; PEER_HEADROOM + payload.len()];
        buf[PEER_HEADROOM..].copy_from_slice(payload);
        let out = self
            .e
            .handle_peer(self.now, relay, peer, &mut buf, payload.len());
        out.map(|c| (c.client, c.data.to_vec()))
    }
}

#[test]
fn send_and_data_indications_need_a_permission() {
    let mut h = H::new(lab());
    let mut c = Client::new(5000, "alice", "alice-pw");
    let relay = h.allocate(&mut c);
    let peer: SocketAddr = "127.0.0.1:9000".parse().unwrap();
    assert!(h.input(c.addr, &send_indication(peer, b"hello")).is_empty());
    assert!(h.to_peer.is_empty(), "no permission yet");
    assert!(h.peer_sends(relay, peer, b"x").is_none());
    assert_eq!(code(&h.req(&mut c, CREATE_PERMISSION, &peer_attr(peer))), 0);
    h.input(c.addr, &send_indication(peer, b"hello"));
    assert_eq!(h.to_peer, vec![(relay, peer, b"hello".to_vec())]);
    // any port of the permitted IP may answer
    let other_port: SocketAddr = "127.0.0.1:9001".parse().unwrap();
    let (to, data) = h.peer_sends(relay, other_port, b"world").unwrap();
    assert_eq!(to, c.addr);
    let msg = Message::from_bytes(&data).unwrap();
    assert!(msg.has_class(MessageClass::Indication) && msg.has_method(DATA));
    assert_eq!(
        msg.attribute::<XorPeerAddress>()
            .unwrap()
            .addr(msg.transaction_id()),
        other_port
    );
    assert_eq!(msg.attribute::<Data>().unwrap().data(), b"world");
    // another IP has no permission
    assert!(
        h.peer_sends(relay, "127.0.0.2:9000".parse().unwrap(), b"x")
            .is_none()
    );
    let s = h.e.stats();
    assert_eq!((s.packets_to_peer, s.packets_to_client), (1, 1));
}

#[test]
fn channel_data_both_ways() {
    let mut h = H::new(lab());
    let mut c = Client::new(5000, "alice", "alice-pw");
    let relay = h.allocate(&mut c);
    let peer: SocketAddr = "127.0.0.1:9000".parse().unwrap();
    assert_eq!(
        code(&h.req(&mut c, CHANNEL_BIND, &channel_attrs(0x4001, peer))),
        0
    );
    let mut cd = vec![0x40, 0x01, 0, 3, b'a', b'b', b'c', 0];
    h.input(c.addr, &cd);
    assert_eq!(h.to_peer, vec![(relay, peer, b"abc".to_vec())]);
    let (_, data) = h.peer_sends(relay, peer, b"xyz").unwrap();
    assert_eq!(data, [0x40, 0x01, 0, 3, b'x', b'y', b'z']);
    // unbound channel, truncated ChannelData, other client: dropped
    cd[1] = 0x02;
    h.input(c.addr, &cd);
    h.input(c.addr, &[0x40, 0x01, 0, 9, 1]);
    h.input(client_addr(1), &[0x40, 0x01, 0, 1, 1]);
    assert_eq!(h.to_peer.len(), 1);
}

#[test]
fn virtual_time_expiry_of_permissions_channels_allocations() {
    let mut h = H::new(lab());
    let mut c = Client::new(5000, "alice", "alice-pw");
    let relay = h.allocate(&mut c);
    let p1: SocketAddr = "127.0.0.1:9000".parse().unwrap();
    let p2: SocketAddr = "127.0.0.2:9000".parse().unwrap();
    assert_eq!(code(&h.req(&mut c, CREATE_PERMISSION, &peer_attr(p1))), 0);
    assert_eq!(
        code(&h.req(&mut c, CHANNEL_BIND, &channel_attrs(0x4000, p2))),
        0
    );
    assert!(h.e.poll_timeout().is_some());
    h.advance(Duration::from_secs(299));
    assert!(h.peer_sends(relay, p1, b"a").is_some());
    h.advance(Duration::from_secs(2));
    // permissions last 300 s; the channel's own permission too, unless refreshed
    assert!(
        h.peer_sends(relay, p1, b"a").is_none(),
        "permission expired"
    );
    assert!(
        h.peer_sends(relay, p2, b"a").is_none(),
        "channel permission expired"
    );
    assert_eq!(h.e.stats().permissions, 0);
    // refresh the channel binding: permission again, channel kept until 600 s after the refresh
    c.nonce = None;
    assert_eq!(
        code(&h.req(&mut c, CHANNEL_BIND, &channel_attrs(0x4000, p2))),
        0
    );
    assert_eq!(h.peer_sends(relay, p2, b"a").unwrap().1[..2], [0x40, 0x00]);
    assert_eq!(code(&h.req(&mut c, REFRESH, &no_attrs)), 0);
    h.advance(Duration::from_secs(290));
    c.nonce = None;
    assert_eq!(code(&h.req(&mut c, CREATE_PERMISSION, &peer_attr(p2))), 0);
    assert_eq!(code(&h.req(&mut c, REFRESH, &no_attrs)), 0);
    h.advance(Duration::from_secs(290));
    c.nonce = None;
    assert_eq!(code(&h.req(&mut c, CREATE_PERMISSION, &peer_attr(p2))), 0);
    h.advance(Duration::from_secs(30));
    // 610 s after the bind: channel gone, permission alive: Data indication instead
    let (_, data) = h.peer_sends(relay, p2, b"a").unwrap();
    assert!(Message::from_bytes(&data).unwrap().has_method(DATA));
    assert_eq!(h.e.stats().channels, 0);
    // allocation: refreshed at 591 s with the default 600 s lifetime: gone by 1191 s
    assert_eq!(h.e.stats().allocations, 1);
    h.advance(Duration::from_secs(300));
    assert_eq!(h.e.stats().allocations, 0);
    assert!(h.peer_sends(relay, p2, b"a").is_none());
    assert_eq!(h.e.stats().allocations_deleted, 1);
}

#[test]
fn expiry_releases_relay_socket() {
    let mut h = H::default();
    let mut c = Client::new(5000, "alice", "alice-pw");
    let relay = h.allocate(&mut c);
    let deadline = h.e.poll_timeout().unwrap();
    assert_eq!(deadline, h.now + Duration::from_secs(600));
    h.now = deadline;
    h.e.handle_timeout(h.now);
    assert_eq!(
        h.e.poll_output(),
        Some(Output::ReleaseRelay { addr: relay })
    );
    assert_eq!(h.e.poll_timeout(), None);
}

#[test]
fn refresh_clamps_lifetime_and_zero_deletes() {
    let cfg = Config {
        max_lifetime_secs: 1200,
        ..Config::default()
    };
    let mut h = H::new(cfg);
    let mut c = Client::new(5000, "alice", "alice-pw");
    h.allocate(&mut c);
    for (asked, granted) in [(100_000_u32, 1200_u32), (60, 600), (900, 900)] {
        let attrs = move |w: &mut MessageWriteVec| {
            w.add_attribute(&Lifetime::new(asked)).unwrap();
        };
        let resp = h.req(&mut c, REFRESH, &attrs);
        let msg = Message::from_bytes(&resp).unwrap();
        assert_eq!(msg.attribute::<Lifetime>().unwrap().seconds(), granted);
    }
    let zero = |w: &mut MessageWriteVec| {
        w.add_attribute(&Lifetime::new(0)).unwrap();
    };
    let resp = h.req(&mut c, REFRESH, &zero);
    assert_eq!(code(&resp), 0);
    assert_eq!(h.e.stats().allocations, 0);
    assert_eq!(code(&h.req(&mut c, REFRESH, &no_attrs)), 437);
}

#[test]
fn quotas_486_and_508() {
    let cfg = Config {
        max_allocations_per_user: 2,
        max_allocations: 3,
        ..Config::default()
    };
    let mut h = H::new(cfg);
    for port in [1, 2] {
        h.allocate(&mut Client::new(port, "alice", "alice-pw"));
    }
    assert_eq!(
        code(&h.req(&mut Client::new(3, "alice", "alice-pw"), ALLOCATE, &udp)),
        486
    );
    h.allocate(&mut Client::new(4, "bob", "bob-pw"));
    assert_eq!(
        code(&h.req(&mut Client::new(5, "bob", "bob-pw"), ALLOCATE, &udp)),
        508
    );
    let ports = Config {
        relay_port_min: 50000,
        relay_port_max: 50000,
        ..Config::default()
    };
    let mut h = H::new(ports);
    h.allocate(&mut Client::new(1, "alice", "alice-pw"));
    assert_eq!(
        code(&h.req(&mut Client::new(2, "bob", "bob-pw"), ALLOCATE, &udp)),
        508
    );
}

#[test]
fn failed_bind_tries_other_ports_then_508() {
    let cfg = Config {
        relay_port_min: 50000,
        relay_port_max: 50002,
        ..Config::default()
    };
    let mut h = H::new(cfg);
    let mut c = Client::new(1, "alice", "alice-pw");
    let _ = h
        .input(c.addr, &H::build(&c, ALLOCATE, &udp, false))
        .pop()
        .map(|t| {
            let m = Message::from_bytes(&t.data).unwrap();
            c.nonce = Some(m.attribute::<Nonce>().unwrap().nonce().to_owned());
        });
    assert!(
        h.e.handle_client(h.now, c.addr, &H::build(&c, ALLOCATE, &udp, true))
            .is_none()
    );
    let mut tried = vec![];
    let answer = loop {
        match h.e.poll_output().expect("an output") {
            Output::BindRelay { request, addr } => {
                tried.push(addr.port());
                h.e.relay_bound(h.now, request, Err(()));
            }
            Output::Transmit(t) => break t,
            other => panic!("unexpected {other:?}"),
        }
    };
    tried.sort();
    assert_eq!(tried, [50000, 50001, 50002]);
    assert_eq!(code(&answer.data), 508);
    assert_eq!(h.e.stats().allocations, 0);
}

#[test]
fn tcp_close_deletes_allocation() {
    let mut h = H::default();
    let mut c = Client::new(5000, "alice", "alice-pw");
    c.addr.transport = Transport::Tcp;
    let relay = h.allocate(&mut c);
    h.e.client_closed(h.now, c.addr);
    assert_eq!(
        h.e.poll_output(),
        Some(Output::ReleaseRelay { addr: relay })
    );
    assert_eq!(h.e.stats().allocations, 0);
}

#[test]
fn bandwidth_limit_drops_excess() {
    let cfg = Config {
        max_bandwidth_bytes_per_sec: 1000,
        ..lab()
    };
    let mut h = H::new(cfg);
    let mut c = Client::new(5000, "alice", "alice-pw");
    let relay = h.allocate(&mut c);
    let peer: SocketAddr = "127.0.0.1:9000".parse().unwrap();
    assert_eq!(
        code(&h.req(&mut c, CHANNEL_BIND, &channel_attrs(0x4000, peer))),
        0
    );
    let payload = [7u8; 400];
    let passed = (0..5)
        .filter(|_| h.peer_sends(relay, peer, &payload).is_some())
        .count();
    assert_eq!(passed, 2);
    h.advance(Duration::from_millis(500));
    assert!(h.peer_sends(relay, peer, &payload).is_some());
    assert_eq!(h.e.stats().dropped_bandwidth, 3);
}

#[test]
fn garbage_and_truncated_input() {
    let mut h = H::default();
    let c = client_addr(1);
    for g in [
        &[][..],
        &[0xff; 3],
        &[0x80, 1, 2, 3, 4],
        &[0; 19],
        &[0; 20],
        &[0x40, 0, 0, 10],
    ] {
        assert!(h.input(c, g).is_empty());
    }
    // a Binding request whose attribute claims more bytes than there are: 400
    let mut req = Message::builder_request(BINDING, MessageWriteVec::new()).finish();
    req.extend_from_slice(&[0x80, 0x22, 0x00, 0x40, 1, 2, 3, 4]);
    req[3] = 8;
    let resp = h.one(c, &req);
    assert_eq!(code(&resp), 400);
    // a fingerprint that does not match: dropped silently or 400, never a success
    let mut w = Message::builder_request(BINDING, MessageWriteVec::new());
    w.add_fingerprint().unwrap();
    let mut bad = w.finish();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    for t in h.input(c, &bad) {
        assert_eq!(code(&t.data), 400);
    }
    // an unknown method: 400
    let req = Message::builder_request(Method::new(0x0123), MessageWriteVec::new()).finish();
    assert_eq!(code(&h.one(c, &req)), 400);
}

proptest::proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200), stun in proptest::bool::ANY) {
        let mut h = H::new(lab());
        let mut b = bytes;
        if stun && b.len() >= 20 {
            b[0] &= 0x3f;
            let len = (b.len() - 20) as u16;
            b[2..4].copy_from_slice(&len.to_be_bytes());
            b[4..8].copy_from_slice(&0x2112_A442_u32.to_be_bytes());
        }
        for t in h.input(client_addr(1), &b) {
            proptest::prop_assert!(Message::from_bytes(&t.data).is_ok());
        }
        let relay: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        let mut buf = vec![0; PEER_HEADROOM + b.len()];
        buf[PEER_HEADROOM..].copy_from_slice(&b);
        let len = b.len();
        proptest::prop_assert!(h.e.handle_peer(h.now, relay, "8.8.8.8:1".parse().unwrap(), &mut buf, len).is_none());
    }
}

#[test]
fn external_address_is_announced() {
    let cfg = Config {
        external_ipv4: Some("203.0.113.10".parse().unwrap()),
        ..lab()
    };
    let mut h = H::new(cfg);
    let mut c = Client::new(5000, "alice", "alice-pw");
    let announced = h.allocate(&mut c);
    assert_eq!(announced.ip(), IpAddr::from([203, 0, 113, 10]));
    // peers reach the socket bound on the internal address with the same port
    let peer: SocketAddr = "127.0.0.1:9000".parse().unwrap();
    assert_eq!(code(&h.req(&mut c, CREATE_PERMISSION, &peer_attr(peer))), 0);
    let bound = SocketAddr::from(([127, 0, 0, 1], announced.port()));
    assert!(h.peer_sends(bound, peer, b"x").is_some());
}

#[test]
fn expired_channel_is_quarantined_for_five_minutes() {
    let mut h = H::new(Config {
        max_lifetime_secs: 3600,
        ..lab()
    });
    let mut c = Client::new(5000, "alice", "alice-pw");
    h.allocate(&mut c);
    let long = |w: &mut MessageWriteVec| {
        w.add_attribute(&Lifetime::new(3600)).unwrap();
    };
    assert_eq!(code(&h.req(&mut c, REFRESH, &long)), 0);
    let p1: SocketAddr = "127.0.0.1:9001".parse().unwrap();
    let p2: SocketAddr = "127.0.0.1:9002".parse().unwrap();
    assert_eq!(
        code(&h.req(&mut c, CHANNEL_BIND, &channel_attrs(0x4000, p1))),
        0
    );
    assert_eq!(h.e.stats().channels, 1);
    h.advance(Duration::from_secs(601));
    assert_eq!(h.e.stats().channels, 0, "expired");
    c.nonce = None;
    // within 5 minutes: the number to another peer, the peer to another number: 400
    assert_eq!(
        code(&h.req(&mut c, CHANNEL_BIND, &channel_attrs(0x4000, p2))),
        400
    );
    assert_eq!(
        code(&h.req(&mut c, CHANNEL_BIND, &channel_attrs(0x4001, p1))),
        400
    );
    h.advance(Duration::from_secs(300));
    c.nonce = None;
    // after the quarantine both are free
    assert_eq!(
        code(&h.req(&mut c, CHANNEL_BIND, &channel_attrs(0x4000, p2))),
        0
    );
    assert_eq!(
        code(&h.req(&mut c, CHANNEL_BIND, &channel_attrs(0x4001, p1))),
        0
    );
    // the same pair may be bound again while quarantined
    h.advance(Duration::from_secs(601));
    c.nonce = None;
    assert_eq!(
        code(&h.req(&mut c, CHANNEL_BIND, &channel_attrs(0x4000, p2))),
        0
    );
}

#[test]
fn expiry_sweeps_run_at_most_once_a_second() {
    let mut h = H::new(lab());
    let mut c = Client::new(5000, "alice", "alice-pw");
    h.allocate(&mut c);
    for i in 1..=50u8 {
        let peer = SocketAddr::from(([127, 0, 0, i], 9000));
        assert_eq!(code(&h.req(&mut c, CREATE_PERMISSION, &peer_attr(peer))), 0);
        h.now += Duration::from_millis(10);
    }
    h.advance(Duration::from_secs(299));
    assert_eq!(h.e.stats().permissions, 50);
    let end = h.now + Duration::from_secs(3);
    let mut sweeps = 0;
    while let Some(t) = h.e.poll_timeout().filter(|t| *t <= end) {
        h.now = h.now.max(t);
        h.e.handle_timeout(h.now);
        sweeps += 1;
    }
    assert!(sweeps <= 4, "{sweeps} sweeps for 50 staggered expiries");
    h.now = end;
    h.e.handle_timeout(h.now);
    assert_eq!(h.e.stats().permissions, 0);
}

#[test]
fn additional_address_family_is_refused_for_ipv6() {
    use turn_types::attribute::{AdditionalAddressFamily, AddressErrorCode};
    let mut h = H::default();
    let mut c = Client::new(5000, "alice", "alice-pw");
    let v4 = |w: &mut MessageWriteVec| {
        udp(w);
        // the builder refuses IPv4 here, so write the attribute raw
        let raw =
            stun_types::attribute::RawAttribute::new(AdditionalAddressFamily::TYPE, &[1, 0, 0, 0]);
        w.add_attribute(&raw).unwrap();
    };
    assert_eq!(code(&h.req(&mut c, ALLOCATE, &v4)), 400);
    let both = |w: &mut MessageWriteVec| {
        udp(w);
        w.add_attribute(&RequestedAddressFamily::new(AddressFamily::IPV4))
            .unwrap();
        w.add_attribute(&AdditionalAddressFamily::new(AddressFamily::IPV6))
            .unwrap();
    };
    assert_eq!(code(&h.req(&mut c, ALLOCATE, &both)), 400);
    let dual = |w: &mut MessageWriteVec| {
        udp(w);
        w.add_attribute(&AdditionalAddressFamily::new(AddressFamily::IPV6))
            .unwrap();
    };
    let resp = h.req(&mut c, ALLOCATE, &dual);
    assert_eq!(code(&resp), 0);
    let msg = Message::from_bytes(&resp).unwrap();
    let relay = msg
        .attribute::<XorRelayedAddress>()
        .unwrap()
        .addr(msg.transaction_id());
    assert!(relay.is_ipv4());
    let err = msg.attribute::<AddressErrorCode>().unwrap();
    assert_eq!(
        (err.family(), err.error().code()),
        (AddressFamily::IPV6, 440)
    );
}

#[test]
fn malformed_optional_attributes_get_400() {
    let mut h = H::default();
    let mut c = Client::new(5000, "alice", "alice-pw");
    for (t, value) in [
        (Lifetime::TYPE, &[0u8, 1][..]),
        (EvenPort::TYPE, &[0, 0]),
        (ReservationToken::TYPE, &[1, 2, 3]),
    ] {
        let attrs = move |w: &mut MessageWriteVec| {
            udp(w);
            w.add_attribute(&stun_types::attribute::RawAttribute::new(t, value))
                .unwrap();
        };
        assert_eq!(code(&h.req(&mut c, ALLOCATE, &attrs)), 400, "{t}");
    }
    h.allocate(&mut c);
    let bad_lifetime = |w: &mut MessageWriteVec| {
        w.add_attribute(&stun_types::attribute::RawAttribute::new(
            Lifetime::TYPE,
            &[9],
        ))
        .unwrap();
    };
    assert_eq!(code(&h.req(&mut c, REFRESH, &bad_lifetime)), 400);
}
