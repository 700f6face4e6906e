//! The tokio-facing driver end to end on 127.0.0.1: a STUN/TURN client
//! written with stun-types over UDP and TCP, a UDP peer, and shutdown.
#![allow(clippy::disallowed_methods)] // tests own the clock and the runtime

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use palaver_turn::{Config, Secrets, TurnServer};
use stun_types::attribute::{ErrorCode, Nonce, Realm, Username, XorMappedAddress};
use stun_types::message::{
    BINDING, IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass,
    MessageIntegrityCredentials, MessageType, MessageWriteVec, Method, TransactionId,
};
use stun_types::prelude::*;
use turn_types::attribute::{
    ChannelNumber, Data, RequestedTransport, XorPeerAddress, XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, SEND};

/// Safety net only: every wait below is for a datagram that must arrive.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

trait Wire {
    fn send(&mut self, data: &[u8]);
    fn recv(&mut self) -> Vec<u8>;
}

struct Udp(UdpSocket, SocketAddr);

impl Wire for Udp {
    fn send(&mut self, data: &[u8]) {
        self.0.send_to(data, self.1).unwrap();
    }
    fn recv(&mut self) -> Vec<u8> {
        let mut buf = [0; 2048];
        let (n, _) = self.0.recv_from(&mut buf).expect("answer from the server");
        buf[..n].to_vec()
    }
}

struct Tcp(TcpStream);

impl Wire for Tcp {
    fn send(&mut self, data: &[u8]) {
        self.0.write_all(data).unwrap();
        let pad = (4 - data.len() % 4) % 4;
        if data[0] >> 6 == 1 {
            self.0.write_all(&[0; 3][..pad]).unwrap();
        }
    }
    fn recv(&mut self) -> Vec<u8> {
        let mut head = [0; 4];
        self.0.read_exact(&mut head).unwrap();
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let body = if head[0] >> 6 == 1 {
            len.next_multiple_of(4)
        } else {
            16 + len
        };
        let mut rest = vec![0; body];
        self.0.read_exact(&mut rest).unwrap();
        let mut msg = head.to_vec();
        msg.extend_from_slice(&rest);
        if head[0] >> 6 == 1 {
            msg.truncate(4 + len);
        }
        msg
    }
}

struct Client<W> {
    wire: W,
    nonce: String,
}

fn creds() -> MessageIntegrityCredentials {
    LongTermKeyCredentials::new("alice".into(), "alice-pw".into(), "palaver".into()).into()
}

fn code(resp: &[u8]) -> u16 {
    let msg = Message::from_bytes(resp).unwrap();
    msg.attribute::<ErrorCode>().map(|e| e.code()).unwrap_or(0)
}

impl<W: Wire> Client<W> {
    fn new(mut wire: W) -> Self {
        let mut w = Message::builder_request(ALLOCATE, MessageWriteVec::new());
        w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
            .unwrap();
        wire.send(&w.finish());
        let resp = wire.recv();
        assert_eq!(code(&resp), 401);
        let msg = Message::from_bytes(&resp).unwrap();
        assert_eq!(msg.attribute::<Realm>().unwrap().realm(), "palaver");
        let nonce = msg.attribute::<Nonce>().unwrap().nonce().to_owned();
        Client { wire, nonce }
    }

    fn request(&mut self, method: Method, attrs: &dyn Fn(&mut MessageWriteVec)) -> Vec<u8> {
        let mut w = Message::builder_request(method, MessageWriteVec::new());
        attrs(&mut w);
        w.add_attribute(&Username::new("alice").unwrap()).unwrap();
        w.add_attribute(&Realm::new("palaver").unwrap()).unwrap();
        w.add_attribute(&Nonce::new(&self.nonce).unwrap()).unwrap();
        w.add_message_integrity(&creds(), IntegrityAlgorithm::Sha1)
            .unwrap();
        w.add_fingerprint().unwrap();
        self.wire.send(&w.finish());
        let resp = self.wire.recv();
        Message::from_bytes(&resp)
            .unwrap()
            .validate_integrity(&creds())
            .unwrap();
        resp
    }

    fn allocate(&mut self) -> SocketAddr {
        let resp = self.request(ALLOCATE, &|w| {
            w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                .unwrap();
        });
        assert_eq!(code(&resp), 0);
        let msg = Message::from_bytes(&resp).unwrap();
        msg.attribute::<XorRelayedAddress>()
            .unwrap()
            .addr(msg.transaction_id())
    }

    fn with_peer(&mut self, method: Method, peer: SocketAddr, channel: Option<u16>) -> u16 {
        code(&self.request(method, &|w| {
            if let Some(c) = channel {
                w.add_attribute(&ChannelNumber::new(c)).unwrap();
            }
            let tx = w.transaction_id();
            w.add_attribute(&XorPeerAddress::new(peer, tx)).unwrap();
        }))
    }
}

fn udp_peer() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

fn peer_recv(peer: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0; 2048];
    let (n, from) = peer.recv_from(&mut buf).expect("relayed datagram");
    (buf[..n].to_vec(), from)
}

async fn start() -> (
    SocketAddr,
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), palaver_turn::Error>>,
    palaver_turn::StatsHandle,
) {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = Config {
        listen_udp: any,
        listen_tcp: Some(any),
        peer_allow: vec!["127.0.0.0/8".parse().unwrap()],
        ..Config::default()
    };
    let secrets = Secrets {
        rest_secret: None,
        static_users: vec![("alice".into(), "alice-pw".into())],
    };
    let server = TurnServer::bind(config, secrets).await.unwrap();
    let (udp, tcp) = (server.local_udp_addr(), server.local_tcp_addr().unwrap());
    assert_ne!(udp.port(), 0);
    let stats = server.stats_handle();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    (udp, tcp, tx, task, stats)
}

fn relay_roundtrip<W: Wire>(c: &mut Client<W>, relay: SocketAddr) {
    let peer = udp_peer();
    let peer_addr = peer.local_addr().unwrap();
    // Send indication -> peer; peer -> Data indication
    assert_eq!(c.with_peer(CREATE_PERMISSION, peer_addr, None), 0);
    let mtype = MessageType::from_class_method(MessageClass::Indication, SEND);
    let mut w = Message::builder(mtype, TransactionId::generate(), MessageWriteVec::new());
    let tx = w.transaction_id();
    w.add_attribute(&XorPeerAddress::new(peer_addr, tx))
        .unwrap();
    w.add_attribute(&Data::new(b"via send")).unwrap();
    c.wire.send(&w.finish());
    let (data, from) = peer_recv(&peer);
    assert_eq!((data.as_slice(), from), (&b"via send"[..], relay));
    peer.send_to(b"back via data", relay).unwrap();
    let ind = c.wire.recv();
    let msg = Message::from_bytes(&ind).unwrap();
    assert!(msg.has_method(DATA));
    assert_eq!(msg.attribute::<Data>().unwrap().data(), b"back via data");
    // ChannelBind -> ChannelData both ways (odd length exercises TCP padding)
    assert_eq!(c.with_peer(CHANNEL_BIND, peer_addr, Some(0x4001)), 0);
    c.wire
        .send(&[0x40, 0x01, 0, 5, b'h', b'e', b'l', b'l', b'o']);
    assert_eq!(peer_recv(&peer).0, b"hello");
    peer.send_to(b"world", relay).unwrap();
    assert_eq!(
        c.wire.recv(),
        [0x40, 0x01, 0, 5, b'w', b'o', b'r', b'l', b'd']
    );
    // policy on the real path: private and metadata peers are refused
    for denied in ["10.0.0.1:80", "169.254.169.254:80", "0.0.0.0:9"] {
        assert_eq!(
            c.with_peer(CREATE_PERMISSION, denied.parse().unwrap(), None),
            403
        );
    }
    assert_eq!(c.with_peer(CHANNEL_BIND, peer_addr, Some(0x5000)), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_and_tcp_clients_relay_through_the_driver() {
    let (udp_addr, tcp_addr, stop, task, stats) = start().await;
    let handle = tokio::task::spawn_blocking(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        // garbage first: the server must keep serving
        for g in [&[0xffu8; 7][..], &[0; 20], &[0x40, 0, 0xff, 0xff]] {
            sock.send_to(g, udp_addr).unwrap();
        }
        let mut udp = Udp(sock, udp_addr);
        let req = Message::builder_request(BINDING, MessageWriteVec::new()).finish();
        udp.send(&req);
        let resp = udp.recv();
        let msg = Message::from_bytes(&resp).unwrap();
        let mapped = msg
            .attribute::<XorMappedAddress>()
            .unwrap()
            .addr(msg.transaction_id());
        assert_eq!(mapped, udp.0.local_addr().unwrap());

        let mut c = Client::new(udp);
        let relay = c.allocate();
        relay_roundtrip(&mut c, relay);

        let stream = TcpStream::connect(tcp_addr).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut t = Client::new(Tcp(stream));
        let relay = t.allocate();
        relay_roundtrip(&mut t, relay);
    });
    handle.await.unwrap();
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let s = stats.get();
    assert_eq!(s.allocations_created, 2);
    assert_eq!(s.packets_to_peer, 4);
    assert_eq!(s.packets_to_client, 4);
    assert_eq!(s.peer_denied, 6);
    assert!(s.dropped_malformed >= 1, "{s:?}");
}

#[tokio::test]
async fn bind_refuses_invalid_config_and_busy_port() {
    let bad = Config {
        relay_port_min: 2000,
        relay_port_max: 1999,
        ..Config::default()
    };
    let err = TurnServer::bind(bad, Secrets::default()).await.unwrap_err();
    assert!(err.to_string().contains("relay_port_min"), "{err}");
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let cfg = Config {
        listen_udp: taken.local_addr().unwrap(),
        listen_tcp: None,
        ..Config::default()
    };
    let err = TurnServer::bind(cfg, Secrets::default()).await.unwrap_err();
    assert!(
        matches!(err, palaver_turn::Error::Bind { what: "udp", .. }),
        "{err}"
    );
}

#[test]
fn config_from_toml_refuses_unknown_keys() {
    let cfg: Config =
        toml::from_str("realm = \"example.org\"\npeer_allow = [\"10.0.0.0/8\"]\n").unwrap();
    assert_eq!(cfg.realm, "example.org");
    assert_eq!(cfg.listen_udp, Config::default().listen_udp);
    // the example in docs/turn.md
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/turn.md")).unwrap();
    let example = doc
        .split("```toml\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let cfg: Config = toml::from_str(example).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.external_ipv4, Some("203.0.113.20".parse().unwrap()));
    assert_eq!(cfg.tls.unwrap().listen.port(), 5349);
    let err = toml::from_str::<Config>("relam = \"typo\"\n").unwrap_err();
    assert!(err.to_string().contains("relam"), "{err}");
    let err = toml::from_str::<Config>("peer_allow = [\"10.0.0.0/40\"]\n").unwrap_err();
    assert!(err.to_string().contains("CIDR"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_beyond_the_limit_are_closed() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = Config {
        listen_udp: any,
        listen_tcp: Some(any),
        max_tcp_connections: 1,
        ..Config::default()
    };
    let server = TurnServer::bind(config, Secrets::default()).await.unwrap();
    let tcp = server.local_tcp_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    tokio::task::spawn_blocking(move || {
        let binding = Message::builder_request(BINDING, MessageWriteVec::new()).finish();
        let first = TcpStream::connect(tcp).unwrap();
        first.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut first = Tcp(first);
        first.send(&binding);
        assert_eq!(code(&first.recv()), 0, "first connection is served");
        let mut second = TcpStream::connect(tcp).unwrap();
        second.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let _ = second.write_all(&binding);
        let mut buf = [0; 64];
        let n = second.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "second connection is closed without an answer");
        first.send(&binding);
        assert_eq!(code(&first.recv()), 0, "first connection still served");
    })
    .await
    .unwrap();
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tcp_connections_without_allocation_are_closed() {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = Config {
        listen_udp: any,
        listen_tcp: Some(any),
        tcp_idle_timeout_secs: 1,
        ..Config::default()
    };
    let secrets = Secrets {
        rest_secret: None,
        static_users: vec![("alice".into(), "alice-pw".into())],
    };
    let server = TurnServer::bind(config, secrets).await.unwrap();
    let tcp = server.local_tcp_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    tokio::task::spawn_blocking(move || {
        let with_allocation = TcpStream::connect(tcp).unwrap();
        with_allocation.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut a = Client::new(Tcp(with_allocation));
        a.allocate();
        let mut idle = TcpStream::connect(tcp).unwrap();
        idle.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut buf = [0; 16];
        // the server closes the quiet connection (EOF) well before the 5 s safety net
        assert_eq!(idle.read(&mut buf).unwrap_or(0), 0);
        // the connection with an allocation is quiet as long, and still served
        let binding = Message::builder_request(BINDING, MessageWriteVec::new()).finish();
        a.wire.send(&binding);
        assert_eq!(code(&a.wire.recv()), 0);
    })
    .await
    .unwrap();
    tx.send(()).unwrap();
    task.await.unwrap().unwrap();
}
