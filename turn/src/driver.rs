//! The driver: sockets and an event loop around the sans-IO [`Engine`].
//!
//! The relay path is one tight loop on one dedicated thread (epoll through
//! `mio`, the reactor under tokio): a datagram is read, handed to the engine,
//! and the engine's answer written out, with no task wake-up, channel or
//! allocation per packet. The async API ([`TurnServer::bind`],
//! [`TurnServer::run`]) lets the `palaver` binary start and stop it from tokio.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::{Config, ConfigError, Secrets};
use crate::engine::{ClientAddr, Engine, Output, PEER_HEADROOM, Transport};
use crate::stats::Stats;

const WAKER: Token = Token(0);
const UDP: Token = Token(1);
const TCP: Token = Token(2);
const TLS: Token = Token(3);
const CONN_BASE: usize = 16;
const RELAY_BASE: usize = 1 << 30;
/// Largest buffered output per TCP client before relayed data is dropped.
const MAX_TCP_BACKLOG: usize = 4 << 20;
/// Largest STUN or ChannelData frame on TCP (header + 16-bit length, padded).
const MAX_FRAME: usize = 4 + 65_535 + 3;
/// Consecutive receive errors (ICMP reports) tolerated in one drain.
const MAX_RECV_ERRORS: u32 = 64;
const LISTEN_BUFFER: usize = 4 << 20;
const RELAY_BUFFER: usize = 1 << 20;

/// Errors of the driver.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work.
    #[error("invalid TURN configuration: {0}")]
    Config(#[from] ConfigError),
    /// A listening socket could not be bound.
    #[error("cannot bind TURN {what} listener on {addr}: {source}")]
    Bind {
        /// `udp` or `tcp`.
        what: &'static str,
        /// The address from the configuration.
        addr: SocketAddr,
        /// The operating system's error.
        source: io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("TURN TLS: cannot use {path}: {reason}")]
    Tls {
        /// The file (or the pair) that failed.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The event loop failed.
    #[error("TURN event loop: {0}")]
    Io(#[from] io::Error),
    /// The event loop thread panicked (a bug).
    #[error("TURN event loop stopped unexpectedly")]
    Stopped,
}

/// A handle on the latest counters, refreshed about once a second.
#[derive(Debug, Clone, Default)]
pub struct StatsHandle(Arc<Mutex<Stats>>);

impl StatsHandle {
    /// The latest snapshot.
    pub fn get(&self) -> Stats {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn set(&self, stats: Stats) {
        if let Ok(mut s) = self.0.lock() {
            *s = stats;
        }
    }
}

/// A bound STUN/TURN server, ready to [`run`](TurnServer::run).
#[derive(Debug)]
pub struct TurnServer {
    config: Config,
    secrets: Secrets,
    udp: std::net::UdpSocket,
    tcp: Option<std::net::TcpListener>,
    tls: Option<(std::net::TcpListener, Arc<rustls::ServerConfig>)>,
    stats: StatsHandle,
}

fn load_tls(tls: &crate::config::TlsConfig) -> Result<Arc<rustls::ServerConfig>, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let err = |path: &std::path::Path, reason: String| Error::Tls {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(&tls.cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| err(&tls.cert_path, e.to_string()))?;
    if certs.is_empty() {
        return Err(err(&tls.cert_path, "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_path)
        .map_err(|e| err(&tls.key_path, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&tls.cert_path, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| err(&tls.key_path, e.to_string()))?;
    Ok(Arc::new(config))
}

fn tcp_listener(what: &'static str, addr: SocketAddr) -> Result<std::net::TcpListener, Error> {
    std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| Error::Bind { what, addr, source })
}

fn udp_socket(addr: SocketAddr, buffer: usize) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // best effort: the kernel caps these at net.core.[rw]mem_max
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

impl TurnServer {
    /// Validates `config` and binds the listening sockets.
    pub async fn bind(config: Config, secrets: Secrets) -> Result<TurnServer, Error> {
        config.validate()?;
        let udp = udp_socket(config.listen_udp, LISTEN_BUFFER).map_err(|source| Error::Bind {
            what: "udp",
            addr: config.listen_udp,
            source,
        })?;
        let tcp = config
            .listen_tcp
            .map(|addr| tcp_listener("tcp", addr))
            .transpose()?;
        let tls = match &config.tls {
            Some(tls) => Some((tcp_listener("tls", tls.listen)?, load_tls(tls)?)),
            None => None,
        };
        Ok(TurnServer {
            config,
            secrets,
            udp,
            tcp,
            tls,
            stats: StatsHandle::default(),
        })
    }

    /// Replaces the TLS configuration loaded from `config.tls`, for example
    /// with one whose certificate resolver reloads its files. Without
    /// `config.tls` there is no TLS listener and this does nothing.
    pub fn set_tls_config(&mut self, tls: Arc<rustls::ServerConfig>) {
        if let Some((_, current)) = self.tls.as_mut() {
            *current = tls;
        }
    }

    /// The bound UDP address (useful with port 0).
    pub fn local_udp_addr(&self) -> SocketAddr {
        self.udp.local_addr().unwrap_or(self.config.listen_udp)
    }

    /// The bound TCP address, if TCP is enabled.
    pub fn local_tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound TLS address, if TLS is enabled.
    pub fn local_tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// The latest counters (refreshed about once a second while running).
    pub fn stats(&self) -> Stats {
        self.stats.get()
    }

    /// A handle that keeps reading the counters after [`run`](TurnServer::run)
    /// took the server.
    pub fn stats_handle(&self) -> StatsHandle {
        self.stats.clone()
    }

    /// Serves until `shutdown` completes. The event loop runs on its own
    /// thread; this future only waits for it.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        #[allow(clippy::disallowed_methods)] // the driver owns the clock
        let (now, unix) = (
            Instant::now(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        );
        let engine = Engine::new(&self.config, &self.secrets, now, unix, rand::random())?;
        let event_loop = EventLoop::new(self, engine)?;
        let waker = Arc::new(Waker::new(event_loop.poll.registry(), WAKER)?);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("palaver-turn".into())
            .spawn(move || {
                let _ = done_tx.send(event_loop.run());
            })?;
        tokio::pin!(shutdown);
        tokio::pin!(done_rx);
        tokio::select! {
            () = &mut shutdown => {
                waker.wake()?;
                done_rx.await.map_err(|_| Error::Stopped)?
            }
            r = &mut done_rx => r.map_err(|_| Error::Stopped)?,
        }
    }
}

struct Conn {
    stream: TcpStream,
    client: ClientAddr,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    tls: Option<Box<rustls::ServerConnection>>,
    /// When the connection last received bytes.
    last_rx: Instant,
}

struct Relay {
    sock: UdpSocket,
    addr: SocketAddr,
}

/// Slots indexed by token offset, with a free list.
struct Slab<T> {
    items: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Slab<T> {
    fn new() -> Self {
        Slab {
            items: Vec::new(),
            free: Vec::new(),
        }
    }

    fn insert(&mut self, item: T) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.items[i] = Some(item);
                i
            }
            None => {
                self.items.push(Some(item));
                self.items.len() - 1
            }
        }
    }

    fn remove(&mut self, i: usize) -> Option<T> {
        let item = self.items.get_mut(i)?.take();
        if item.is_some() {
            self.free.push(i);
        }
        item
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.items.get_mut(i)?.as_mut()
    }
}

/// Where client-bound bytes go: the UDP listener or a TCP connection.
struct ClientSockets {
    udp: UdpSocket,
    conns: Slab<Conn>,
    conn_by_client: HashMap<ClientAddr, usize>,
}

impl ClientSockets {
    fn send(&mut self, client: &ClientAddr, data: &[u8]) {
        match client.transport {
            Transport::Udp => {
                let _ = self.udp.send_to(data, client.remote);
            }
            Transport::Tcp | Transport::Tls => {
                let Some(&i) = self.conn_by_client.get(client) else {
                    return;
                };
                let Some(conn) = self.conns.get_mut(i) else {
                    return;
                };
                if conn.wbuf.len() + data.len() > MAX_TCP_BACKLOG {
                    return;
                }
                conn.wbuf.extend_from_slice(data);
                if data.first().is_some_and(|b| b >> 6 == 1) {
                    let pad = (4 - data.len() % 4) % 4;
                    conn.wbuf.extend_from_slice(&[0; 3][..pad]);
                }
                let _ = flush(conn);
            }
        }
    }
}

fn flush(conn: &mut Conn) -> io::Result<()> {
    if let Some(tls) = conn.tls.as_mut() {
        if !conn.wbuf.is_empty() {
            tls.writer().write_all(&conn.wbuf)?;
            conn.wbuf.clear();
        }
        while tls.wants_write() {
            match tls.write_tls(&mut conn.stream) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        return Ok(());
    }
    while !conn.wbuf.is_empty() {
        match conn.stream.write(&conn.wbuf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                conn.wbuf.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The length of the next complete frame in `buf` (STUN or padded
/// ChannelData), `Ok(None)` when more bytes are needed, `Err` on garbage.
fn frame_len(buf: &[u8]) -> Result<Option<(usize, usize)>, ()> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let (message, framed) = match buf[0] >> 6 {
        0 => (20 + len, 20 + len),
        1 => (4 + len, (4 + len).next_multiple_of(4)),
        _ => return Err(()),
    };
    Ok((buf.len() >= framed).then_some((message, framed)))
}

struct EventLoop {
    poll: Poll,
    engine: Engine,
    clients: ClientSockets,
    udp_local: SocketAddr,
    tcp: Option<TcpListener>,
    tcp_local: Option<SocketAddr>,
    tls: Option<(TcpListener, SocketAddr, Arc<rustls::ServerConfig>)>,
    relays: Slab<Relay>,
    relay_by_addr: HashMap<SocketAddr, usize>,
    buf: Vec<u8>,
    stats: StatsHandle,
    max_tcp_connections: usize,
    tcp_idle_timeout: Duration,
}

impl EventLoop {
    fn new(server: TurnServer, engine: Engine) -> io::Result<EventLoop> {
        let poll = Poll::new()?;
        let udp_local = server.udp.local_addr()?;
        let mut udp = UdpSocket::from_std(server.udp);
        poll.registry()
            .register(&mut udp, UDP, Interest::READABLE)?;
        let mut tcp = server.tcp.map(TcpListener::from_std);
        let tcp_local = match tcp.as_mut() {
            Some(l) => {
                poll.registry().register(l, TCP, Interest::READABLE)?;
                Some(l.local_addr()?)
            }
            None => None,
        };
        let tls = match server.tls {
            Some((l, cfg)) => {
                let mut l = TcpListener::from_std(l);
                poll.registry().register(&mut l, TLS, Interest::READABLE)?;
                let local = l.local_addr()?;
                Some((l, local, cfg))
            }
            None => None,
        };
        Ok(EventLoop {
            poll,
            tls,
            engine,
            clients: ClientSockets {
                udp,
                conns: Slab::new(),
                conn_by_client: HashMap::new(),
            },
            udp_local,
            tcp,
            tcp_local,
            relays: Slab::new(),
            relay_by_addr: HashMap::new(),
            buf: vec![0; PEER_HEADROOM + 65_536],
            max_tcp_connections: server.config.max_tcp_connections,
            tcp_idle_timeout: Duration::from_secs(u64::from(server.config.tcp_idle_timeout_secs)),
            stats: server.stats,
        })
    }

    #[allow(clippy::disallowed_methods)] // the driver owns the clock
    fn clock() -> Instant {
        Instant::now()
    }

    fn run(mut self) -> Result<(), Error> {
        let mut events = Events::with_capacity(256);
        let mut next_publish = Self::clock();
        loop {
            let now = Self::clock();
            let wake = self
                .engine
                .poll_timeout()
                .map_or(next_publish, |t| t.min(next_publish));
            let timeout = wake.saturating_duration_since(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            let now = Self::clock();
            for event in events.iter() {
                match event.token() {
                    WAKER => {
                        self.stats.set(self.engine.stats());
                        return Ok(());
                    }
                    UDP => self.udp_readable(now),
                    TCP => self.accept(now, false),
                    TLS => self.accept(now, true),
                    Token(t) if t >= RELAY_BASE => self.relay_readable(now, t - RELAY_BASE),
                    Token(t) => self.conn_ready(now, t - CONN_BASE),
                }
            }
            let now = Self::clock();
            if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                self.engine.handle_timeout(now);
                self.drain(now);
            }
            if now >= next_publish {
                self.stats.set(self.engine.stats());
                self.close_idle_conns(now);
                next_publish = now + Duration::from_secs(1);
            }
        }
    }

    fn drain(&mut self, now: Instant) {
        while let Some(out) = self.engine.poll_output() {
            match out {
                Output::Transmit(t) => self.clients.send(&t.to, &t.data),
                Output::BindRelay { request, addr } => {
                    let result = self.bind_relay(addr).map_err(|e| {
                        tracing::warn!(port = addr.port(), error = %e, "cannot bind relay socket");
                    });
                    self.engine.relay_bound(now, request, result);
                }
                Output::ReleaseRelay { addr } => {
                    let relay = self
                        .relay_by_addr
                        .remove(&addr)
                        .and_then(|i| self.relays.remove(i));
                    if let Some(mut r) = relay {
                        let _ = self.poll.registry().deregister(&mut r.sock);
                    }
                }
            }
        }
    }

    fn bind_relay(&mut self, addr: SocketAddr) -> io::Result<SocketAddr> {
        let sock = UdpSocket::from_std(udp_socket(addr, RELAY_BUFFER)?);
        let bound = sock.local_addr()?;
        let i = self.relays.insert(Relay { sock, addr: bound });
        let relay = self.relays.get_mut(i).expect("just inserted");
        if let Err(e) = self.poll.registry().register(
            &mut relay.sock,
            Token(RELAY_BASE + i),
            Interest::READABLE,
        ) {
            self.relays.remove(i);
            return Err(e);
        }
        self.relay_by_addr.insert(bound, i);
        Ok(bound)
    }

    fn udp_readable(&mut self, mut now: Instant) {
        let (mut count, mut errors) = (0u32, 0u32);
        loop {
            let (n, from) = match self.clients.udp.recv_from(&mut self.buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // ICMP errors surface here on Linux; give up after a few in a row
                Err(_) if errors < MAX_RECV_ERRORS => {
                    errors += 1;
                    continue;
                }
                Err(_) => return,
            };
            count += 1;
            if count.is_multiple_of(64) {
                now = Self::clock();
            }
            let client = ClientAddr {
                transport: Transport::Udp,
                local: self.udp_local,
                remote: from,
            };
            self.client_message(now, client, 0, n);
        }
    }

    /// Feeds `self.buf[start..end]` from `client` to the engine and carries out the result.
    fn client_message(&mut self, now: Instant, client: ClientAddr, start: usize, end: usize) {
        if let Some(p) = self
            .engine
            .handle_client(now, client, &self.buf[start..end])
        {
            let relay = self
                .relay_by_addr
                .get(&p.relay)
                .and_then(|&i| self.relays.get_mut(i));
            if let Some(r) = relay {
                let _ = r.sock.send_to(p.data, p.peer);
            }
        }
        self.drain(now);
    }

    fn relay_readable(&mut self, mut now: Instant, i: usize) {
        let (mut count, mut errors) = (0u32, 0u32);
        loop {
            let Some(relay) = self.relays.get_mut(i) else {
                return;
            };
            let addr = relay.addr;
            let (n, peer) = match relay.sock.recv_from(&mut self.buf[PEER_HEADROOM..]) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) if errors < MAX_RECV_ERRORS => {
                    errors += 1;
                    continue;
                }
                Err(_) => return,
            };
            count += 1;
            if count.is_multiple_of(64) {
                now = Self::clock();
            }
            if let Some(out) = self.engine.handle_peer(now, addr, peer, &mut self.buf, n) {
                self.clients.send(&out.client, out.data);
            }
        }
    }

    fn accept(&mut self, now: Instant, tls: bool) {
        let (listener, local, tls_config) = match (tls, &self.tls, &self.tcp) {
            (true, Some((l, local, cfg)), _) => (l, *local, Some(cfg)),
            (false, _, Some(l)) => (l, self.tcp_local.unwrap_or(self.udp_local), None),
            _ => return,
        };
        loop {
            let (stream, remote) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "TCP accept failed");
                    return;
                }
            };
            if self.clients.conn_by_client.len() >= self.max_tcp_connections {
                tracing::warn!("TCP connection limit reached, closing a new connection");
                continue;
            }
            let _ = stream.set_nodelay(true);
            let tls = match tls_config.map(|c| rustls::ServerConnection::new(c.clone())) {
                Some(Ok(conn)) => Some(Box::new(conn)),
                Some(Err(_)) => continue,
                None => None,
            };
            let transport = if tls.is_some() {
                Transport::Tls
            } else {
                Transport::Tcp
            };
            let client = ClientAddr {
                transport,
                local,
                remote,
            };
            let conn = Conn {
                stream,
                client,
                rbuf: Vec::new(),
                wbuf: Vec::new(),
                tls,
                last_rx: now,
            };
            let i = self.clients.conns.insert(conn);
            let Some(conn) = self.clients.conns.get_mut(i) else {
                return;
            };
            let interest = Interest::READABLE | Interest::WRITABLE;
            let token = Token(CONN_BASE + i);
            if self
                .poll
                .registry()
                .register(&mut conn.stream, token, interest)
                .is_err()
            {
                self.clients.conns.remove(i);
                continue;
            }
            self.clients.conn_by_client.insert(client, i);
        }
    }

    fn conn_ready(&mut self, now: Instant, i: usize) {
        let Some(conn) = self.clients.conns.get_mut(i) else {
            return;
        };
        let client = conn.client;
        conn.last_rx = now;
        let mut rbuf = std::mem::take(&mut conn.rbuf);
        let mut state = if flush(conn).is_ok() {
            ReadState::More
        } else {
            ReadState::Closed
        };
        while state == ReadState::More {
            let Some(conn) = self.clients.conns.get_mut(i) else {
                return;
            };
            state = match conn.tls.as_mut() {
                Some(tls) => read_tls_available(&mut conn.stream, tls, &mut rbuf),
                None => read_available(&mut conn.stream, &mut rbuf),
            };
            let mut pos = 0;
            loop {
                match frame_len(&rbuf[pos..]) {
                    Ok(Some((message, framed))) => {
                        let n = message.min(self.buf.len());
                        self.buf[..n].copy_from_slice(&rbuf[pos..pos + n]);
                        self.client_message(now, client, 0, n);
                        pos += framed;
                    }
                    Ok(None) => break,
                    Err(()) => {
                        state = ReadState::Closed;
                        break;
                    }
                }
            }
            rbuf.drain(..pos);
        }
        let conn = self
            .clients
            .conns
            .get_mut(i)
            .filter(|_| state != ReadState::Closed);
        if let Some(conn) = conn {
            conn.rbuf = rbuf;
            if flush(conn).is_ok() {
                return;
            }
        }
        self.close_conn(now, i);
    }

    /// Closes TCP/TLS connections without an allocation that have been quiet
    /// for `tcp_idle_timeout`.
    fn close_idle_conns(&mut self, now: Instant) {
        let idle: Vec<usize> = (0..self.clients.conns.items.len())
            .filter(|&i| {
                self.clients.conns.items[i].as_ref().is_some_and(|c| {
                    now.saturating_duration_since(c.last_rx) >= self.tcp_idle_timeout
                        && !self.engine.has_allocation(&c.client)
                })
            })
            .collect();
        for i in idle {
            self.close_conn(now, i);
        }
    }

    fn close_conn(&mut self, now: Instant, i: usize) {
        if let Some(mut conn) = self.clients.conns.remove(i) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.clients.conn_by_client.remove(&conn.client);
            self.engine.client_closed(now, conn.client);
            self.drain(now);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum ReadState {
    /// The socket has nothing more for now.
    Drained,
    /// The buffer is full enough: consume frames, then read again.
    More,
    /// The peer closed or the stream failed.
    Closed,
}

/// Reads what the socket has into `rbuf`, up to two frames' worth.
fn read_available(stream: &mut TcpStream, rbuf: &mut Vec<u8>) -> ReadState {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if rbuf.len() > 2 * MAX_FRAME {
            return ReadState::More;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return ReadState::Closed,
            Ok(n) => rbuf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadState::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return ReadState::Closed,
        }
    }
}

/// Like [`read_available`], through a TLS session.
fn read_tls_available(
    stream: &mut TcpStream,
    tls: &mut rustls::ServerConnection,
    rbuf: &mut Vec<u8>,
) -> ReadState {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if rbuf.len() > 2 * MAX_FRAME {
            return ReadState::More;
        }
        match tls.read_tls(stream) {
            Ok(0) => return ReadState::Closed,
            Ok(_) => {
                if tls.process_new_packets().is_err() {
                    let _ = tls.write_tls(stream);
                    return ReadState::Closed;
                }
                loop {
                    match tls.reader().read(&mut chunk) {
                        Ok(0) => return ReadState::Closed,
                        Ok(n) => rbuf.extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => return ReadState::Closed,
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadState::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return ReadState::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        assert_eq!(frame_len(&[0, 1, 0]), Ok(None));
        let mut stun = vec![0, 1, 0, 4];
        stun.resize(24, 0);
        assert_eq!(frame_len(&stun), Ok(Some((24, 24))));
        assert_eq!(frame_len(&stun[..23]), Ok(None));
        assert_eq!(frame_len(&[0x40, 0, 0, 1, 9, 0, 0, 0]), Ok(Some((5, 8))));
        assert_eq!(frame_len(&[0x40, 0, 0, 1, 9]), Ok(None));
        assert_eq!(frame_len(&[0x80, 0, 0, 1]), Err(()));
    }
}
