//! Sequences of operations from several clients and peers in virtual time
//! (allocate, refresh, permissions, channels, data both ways, TCP close,
//! time passing). Checks invariants after every step.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use palaver_turn::{ClientAddr, Config, Engine, Output, PEER_HEADROOM, Secrets, Transport};
use stun_types::attribute::{Nonce, Realm, Username};
use stun_types::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageType,
    MessageWriteVec, Method, TransactionId,
};
use stun_types::prelude::*;
use turn_types::attribute::{
    ChannelNumber, Data, EvenPort, Lifetime, RequestedTransport, ReservationToken, XorPeerAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH, SEND};

#[derive(Arbitrary, Debug)]
enum Op {
    Allocate { client: u8, even: Option<bool>, token: Option<u8>, lifetime: Option<u16> },
    Refresh { client: u8, lifetime: Option<u16> },
    Permission { client: u8, peer: u8 },
    ChannelBind { client: u8, channel: u16, peer: u8 },
    ChannelData { client: u8, channel: u16, len: u8 },
    Send { client: u8, peer: u8, len: u8 },
    FromPeer { relay: u8, peer: u8, len: u8 },
    Raw { client: u8, bytes: Vec<u8> },
    Close { client: u8 },
    BindFails,
    Advance { secs: u16 },
}

fn client(i: u8) -> ClientAddr {
    ClientAddr {
        transport: if i % 2 == 0 { Transport::Udp } else { Transport::Tcp },
        local: "127.0.0.1:3478".parse().unwrap(),
        remote: SocketAddr::from(([127, 0, 0, 2], 5000 + u16::from(i % 8))),
    }
}

fn peer(i: u8) -> SocketAddr {
    let ips = [[127, 0, 0, 1], [10, 0, 0, 1], [8, 8, 8, 8], [169, 254, 169, 254]];
    SocketAddr::from((ips[usize::from(i % 4)], 9000 + u16::from(i / 4 % 4)))
}

struct World {
    engine: Engine,
    now: Instant,
    nonce: String,
    relays: Vec<SocketAddr>,
    fail_binds: bool,
}

impl World {
    fn request(&mut self, c: u8, method: Method, attrs: impl Fn(&mut MessageWriteVec)) {
        let mut w = Message::builder_request(method, MessageWriteVec::new());
        attrs(&mut w);
        w.add_attribute(&Username::new("u").unwrap()).unwrap();
        w.add_attribute(&Realm::new("palaver").unwrap()).unwrap();
        w.add_attribute(&Nonce::new(&self.nonce).unwrap()).unwrap();
        let creds = LongTermKeyCredentials::new("u".into(), "p".into(), "palaver".into());
        w.add_message_integrity(&creds.into(), IntegrityAlgorithm::Sha1).unwrap();
        self.input(c, &w.finish());
    }

    fn input(&mut self, c: u8, bytes: &[u8]) {
        let _ = self.engine.handle_client(self.now, client(c), bytes);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::Transmit(t) => {
                    let msg = Message::from_bytes(&t.data).expect("answers parse");
                    if let Ok(n) = msg.attribute::<Nonce>() {
                        self.nonce = n.nonce().to_owned();
                    }
                }
                Output::BindRelay { request, addr } => {
                    let result = if self.fail_binds { Err(()) } else { Ok(addr) };
                    if result.is_ok() {
                        self.relays.push(addr);
                    }
                    self.engine.relay_bound(self.now, request, result);
                }
                Output::ReleaseRelay { addr } => {
                    assert!(self.relays.contains(&addr), "release of a relay never bound");
                    self.relays.retain(|r| *r != addr);
                }
            }
        }
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Allocate { client, even, token, lifetime } => self.request(client, ALLOCATE, |w| {
                w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP)).unwrap();
                if let Some(r) = even {
                    w.add_attribute(&EvenPort::new(r)).unwrap();
                }
                if let Some(t) = token {
                    w.add_attribute(&ReservationToken::new(u64::from(t))).unwrap();
                }
                if let Some(l) = lifetime {
                    w.add_attribute(&Lifetime::new(u32::from(l))).unwrap();
                }
            }),
            Op::Refresh { client, lifetime } => self.request(client, REFRESH, |w| {
                if let Some(l) = lifetime {
                    w.add_attribute(&Lifetime::new(u32::from(l))).unwrap();
                }
            }),
            Op::Permission { client, peer: p } => self.request(client, CREATE_PERMISSION, |w| {
                let tx = w.transaction_id();
                w.add_attribute(&XorPeerAddress::new(peer(p), tx)).unwrap();
            }),
            Op::ChannelBind { client, channel, peer: p } => self.request(client, CHANNEL_BIND, |w| {
                let tx = w.transaction_id();
                w.add_attribute(&ChannelNumber::new(channel)).unwrap();
                w.add_attribute(&XorPeerAddress::new(peer(p), tx)).unwrap();
            }),
            Op::ChannelData { client, channel, len } => {
                let mut b = vec![0; 4 + usize::from(len)];
                b[..2].copy_from_slice(&channel.to_be_bytes());
                b[2..4].copy_from_slice(&u16::from(len).to_be_bytes());
                self.input(client, &b);
            }
            Op::Send { client, peer: p, len } => {
                let mtype = MessageType::from_class_method(MessageClass::Indication, SEND);
                let mut w = Message::builder(mtype, TransactionId::generate(), MessageWriteVec::new());
                let tx = w.transaction_id();
                w.add_attribute(&XorPeerAddress::new(peer(p), tx)).unwrap();
                w.add_attribute(&Data::new(&vec![7; usize::from(len)])).unwrap();
                self.input(client, &w.finish());
            }
            Op::FromPeer { relay, peer: p, len } => {
                let relay = self.relays.get(usize::from(relay) % self.relays.len().max(1)).copied();
                let relay = relay.unwrap_or_else(|| "127.0.0.1:50000".parse().unwrap());
                let mut buf = vec![0; PEER_HEADROOM + usize::from(len)];
                let _ = self.engine.handle_peer(self.now, relay, peer(p), &mut buf, usize::from(len));
            }
            Op::Raw { client, bytes } => self.input(client, &bytes),
            Op::Close { client: c } => {
                self.engine.client_closed(self.now, client(c));
                self.drain();
            }
            Op::BindFails => self.fail_binds = !self.fail_binds,
            Op::Advance { secs } => {
                self.now += Duration::from_secs(u64::from(secs));
                self.engine.handle_timeout(self.now);
                self.drain();
            }
        }
        let stats = self.engine.stats();
        assert!(stats.allocations <= 8, "one allocation per 5-tuple at most");
        assert!(self.relays.len() as u64 <= stats.allocations);
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let config = Config {
        peer_allow: vec!["127.0.0.0/8".parse().unwrap()],
        relay_port_min: 50000,
        relay_port_max: 50007,
        max_allocations_per_user: 5,
        ..Config::default()
    };
    let secrets = Secrets { rest_secret: None, static_users: vec![("u".into(), "p".into())] };
    let now = Instant::now();
    let engine = Engine::new(&config, &secrets, now, 1_800_000_000, [5; 32]).unwrap();
    let mut world = World { engine, now, nonce: "0".repeat(32), relays: vec![], fail_binds: false };
    for op in ops.into_iter().take(64) {
        world.step(op);
    }
});
