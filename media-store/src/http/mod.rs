//! The media HTTP/1.1 server: a lean accept loop and connection handler
//! (no generic framework on the download path), with header, idle, body
//! and send timeouts, and a connection cap that makes room for a new
//! client by closing the longest-idle keep-alive connection.
//!
//! Routes (see docs/media.md for the full protocol):
//! - `GET|HEAD /v1/media/{id}`: download (capability query or owner auth)
//! - `GET|HEAD /v1/cap/{exp}/{sig}/{id}[/{name}]`: capability in the path
//! - `PUT /v1/media/sealed/{sha256}`, `POST /v1/media`: one-request upload
//! - `POST /v1/media/{id}/link`, `DELETE /v1/media/{id}`, `GET /v1/media/usage`
//! - `GET /v1/media/{id}/job`: transcoding state and variants (owner only)
//! - `OPTIONS|POST /v1/uploads`, `HEAD|PATCH|DELETE /v1/uploads/{uid}`: tus 1.0
//! - `GET /healthz`

mod authlimit;
mod conn;
mod download;
mod job;
mod remote;
mod reply;
mod tls;
mod upload;

use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::service::Media;
pub use authlimit::AuthFailureRate;
use authlimit::FailedAuths;
use conn::{Conn, Head, HeadError, Timeouts};
use reply::Reply;
use tls::Io;
pub use tls::TlsListener;

/// Checks device credentials (the messaging store, in the server).
#[async_trait]
pub trait DeviceAuth: Send + Sync + std::fmt::Debug + 'static {
    /// The account of `device` if `credential` is its current credential.
    async fn authenticate(&self, device: u64, credential: &str) -> Option<u64>;
}

/// HTTP settings of the media listener.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Base of the URLs handed out, e.g. `https://media.example`.
    pub public_url: String,
    pub max_connections: usize,
    /// Time to send a complete request head once it has started.
    pub header_timeout: Duration,
    /// Keep-alive connections idle this long are closed.
    pub idle_timeout: Duration,
    /// A response write that makes no progress this long closes the connection.
    pub send_timeout: Duration,
    /// A request body read that makes no progress this long ends the request.
    pub body_timeout: Duration,
    /// Failed logins per client address (IPv4, or IPv6 /64) before 429.
    pub auth_failures: AuthFailureRate,
    /// A secret that a trusted front (the main listener's media proxy in
    /// the same process) sends in [`PROXY_SECRET_HEADER`] beside the
    /// client's address in [`CLIENT_ADDR_HEADER`]: then that address, not
    /// the proxy's, is the one rate limits count. `None`: headers ignored.
    pub proxy_secret: Option<String>,
}

/// Header carrying the client's address from a trusted proxy.
pub const CLIENT_ADDR_HEADER: &str = "x-palaver-client-addr";
/// Header carrying the trusted proxy's secret.
pub const PROXY_SECRET_HEADER: &str = "x-palaver-proxy-secret";

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            public_url: "http://127.0.0.1:8081".into(),
            max_connections: 10_000,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            auth_failures: AuthFailureRate::default(),
            proxy_secret: None,
        }
    }
}

/// Connection counters for metrics.
#[derive(Debug, Default)]
pub struct HttpStats {
    pub open: Gauge,
    pub accepted: Counter,
    pub evicted_idle: Counter,
    pub refused: Counter,
    pub auth_failures: Counter,
    pub auth_rate_limited: Counter,
}

impl HttpStats {
    /// Registers the metrics under `palaver_media_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("palaver_media");
        r.register("connections", "Open media connections", self.open.clone());
        r.register(
            "connections_accepted",
            "Media connections accepted",
            self.accepted.clone(),
        );
        r.register(
            "connections_evicted_idle",
            "Idle keep-alive connections closed to make room at the cap",
            self.evicted_idle.clone(),
        );
        r.register(
            "connections_refused",
            "Connections refused with 503 (every connection busy)",
            self.refused.clone(),
        );
        r.register(
            "auth_failures",
            "Requests with wrong device credentials",
            self.auth_failures.clone(),
        );
        r.register(
            "auth_rate_limited",
            "Requests refused with 429: too many failed logins from the address",
            self.auth_rate_limited.clone(),
        );
    }
}

pub(crate) struct Ctx {
    pub media: Arc<Media>,
    pub auth: Arc<dyn DeviceAuth>,
    pub cfg: HttpConfig,
    pub failed_auths: FailedAuths,
    pub stats: Arc<HttpStats>,
}

struct Slot {
    idle: AtomicBool,
    close: CancellationToken,
}

#[derive(Default)]
struct Slots {
    next: u64,
    open: HashMap<u64, Arc<Slot>>,
}

/// Serves until `shutdown`, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    media: Arc<Media>,
    auth: Arc<dyn DeviceAuth>,
    cfg: HttpConfig,
    stats: Arc<HttpStats>,
    shutdown: CancellationToken,
) {
    serve_with_tls(listener, None, media, auth, cfg, stats, shutdown).await
}

/// Like [`serve`], with a second listener speaking HTTPS (`tls`). Both
/// share the connection cap, the failed-login limits and the routes.
pub async fn serve_with_tls(
    listener: TcpListener,
    tls: Option<TlsListener>,
    media: Arc<Media>,
    auth: Arc<dyn DeviceAuth>,
    cfg: HttpConfig,
    stats: Arc<HttpStats>,
    shutdown: CancellationToken,
) {
    let shared = Shared {
        slots: Arc::new(Mutex::new(Slots::default())),
        ctx: Arc::new(Ctx {
            media,
            auth,
            failed_auths: FailedAuths::new(cfg.auth_failures),
            cfg,
            stats,
        }),
        tasks: tokio_util::task::TaskTracker::new(),
        shutdown,
    };
    let secure = async {
        if let Some(t) = tls {
            let tls = Some((t.config, t.handshake_timeout));
            accept_loop(t.listener, tls, &shared).await;
        }
    };
    tokio::join!(accept_loop(listener, None, &shared), secure);
    shared.tasks.close();
    shared.tasks.wait().await;
}

/// What the accept loops of one media server share.
struct Shared {
    slots: Arc<Mutex<Slots>>,
    ctx: Arc<Ctx>,
    tasks: tokio_util::task::TaskTracker,
    shutdown: CancellationToken,
}

type TlsSetup = (Arc<rustls::ServerConfig>, Duration);

/// Accepts connections until shutdown; each runs in its own task (after
/// its TLS handshake, when `tls` is given).
async fn accept_loop(listener: TcpListener, tls: Option<TlsSetup>, sh: &Shared) {
    let stats = &sh.ctx.stats;
    loop {
        let (stream, peer) = tokio::select! {
            _ = sh.shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "media accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some((id, slot)) = admit(&sh.slots, sh.ctx.cfg.max_connections, stats) else {
            // A TLS client cannot read a plain answer: it is just closed.
            if tls.is_none() {
                refuse(stream);
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        stats.accepted.inc();
        stats.open.inc();
        let (ctx, slots, stop, tls) = (
            sh.ctx.clone(),
            sh.slots.clone(),
            sh.shutdown.clone(),
            tls.clone(),
        );
        sh.tasks.spawn(async move {
            let io = match tls {
                None => Some(Io::Plain(stream)),
                Some((config, limit)) => tls::accept(stream, config, limit).await,
            };
            if let Some(io) = io {
                connection(io, peer.ip(), &ctx, &slot, &stop).await;
            }
            slots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .open
                .remove(&id);
            ctx.stats.open.dec();
        });
    }
}

/// Takes a connection slot; at the cap, closes an idle keep-alive
/// connection to make room. `None` if every connection is busy.
fn admit(slots: &Mutex<Slots>, max: usize, stats: &HttpStats) -> Option<(u64, Arc<Slot>)> {
    let mut s = slots.lock().unwrap_or_else(|e| e.into_inner());
    // Only at the cap is the table scanned (connections being evicted
    // still sit in it until their task ends, so count only live ones).
    if s.open.len() >= max && s.open.values().filter(|x| !x.close.is_cancelled()).count() >= max {
        let victim = s
            .open
            .values()
            .find(|x| x.idle.load(Ordering::Relaxed) && !x.close.is_cancelled());
        match victim {
            Some(v) => {
                v.close.cancel();
                stats.evicted_idle.inc();
            }
            None => {
                stats.refused.inc();
                return None;
            }
        }
    }
    s.next += 1;
    let id = s.next;
    let slot = Arc::new(Slot {
        idle: AtomicBool::new(true),
        close: CancellationToken::new(),
    });
    s.open.insert(id, slot.clone());
    Some((id, slot))
}

/// Every connection busy: a best-effort 503 without waiting, then close.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
}

async fn connection(stream: Io, peer: IpAddr, ctx: &Ctx, slot: &Slot, stop: &CancellationToken) {
    let t = Timeouts {
        header: ctx.cfg.header_timeout,
        idle: ctx.cfg.idle_timeout,
        send: ctx.cfg.send_timeout,
        body: ctx.cfg.body_timeout,
    };
    let mut conn = Conn::new(stream, t, peer);
    loop {
        slot.idle.store(true, Ordering::Relaxed);
        let started = tokio::select! {
            s = conn.wait_for_request() => s,
            _ = slot.close.cancelled() => false,
            _ = stop.cancelled() => false,
        };
        if !started {
            return;
        }
        slot.idle.store(false, Ordering::Relaxed);
        let head = match conn.read_head().await {
            Ok(h) => h,
            Err(HeadError::Closed) => return,
            Err(HeadError::Reject(status)) => {
                let r = Reply::error(status, reply::reason(status)).closing();
                if r.send(&mut conn, false).await.is_ok() {
                    conn.linger().await;
                }
                return;
            }
        };
        let keep = head.keep_alive() && !stop.is_cancelled();
        let is_head = head.method == "HEAD";
        let mut reply = match dispatch(ctx, &mut conn, &head).await {
            Ok(r) => r,
            Err(r) => r.closing(),
        };
        if !keep {
            reply.close = true;
        }
        if !reply.close && head.http10 {
            // HTTP/1.0 closes by default: say that this one stays open.
            reply = reply.header("Connection", "keep-alive");
        }
        let close = reply.close;
        if reply.send(&mut conn, is_head).await.is_err() {
            return;
        }
        if close {
            conn.linger().await;
            return;
        }
    }
}

/// Routes a request. `Err` replies close the connection (the request body,
/// if any, was not read).
async fn dispatch(ctx: &Ctx, conn: &mut Conn, head: &Head) -> Result<Reply, Reply> {
    if head.header("transfer-encoding").is_some() {
        return Err(Reply::error(
            411,
            "chunked bodies are not accepted: send Content-Length",
        ));
    }
    let segs: Vec<&str> = head.path.split('/').collect();
    let m = head.method.as_str();
    match (m, segs.as_slice()) {
        ("GET" | "HEAD", ["", "healthz"]) => Ok(Reply::error(200, "ok")),
        (_, ["", "v1", "uploads"]) | (_, ["", "v1", "uploads", _]) => {
            upload::tus(ctx, conn, head, segs.get(3).copied()).await
        }
        ("PUT", ["", "v1", "media", "sealed", sha]) => {
            upload::put_sealed(ctx, conn, head, sha).await
        }
        ("POST", ["", "v1", "media"]) => upload::post_processed(ctx, conn, head).await,
        ("GET", ["", "v1", "media", "usage"]) => upload::usage(ctx, head).await,
        ("POST", ["", "v1", "media", id, "link"]) => download::link(ctx, head, id).await,
        ("GET", ["", "v1", "media", id, "job"]) => job::get(ctx, head, id).await,
        ("GET" | "HEAD", ["", "v1", "media", id]) => download::get(ctx, head, id).await,
        ("GET" | "HEAD", ["", "v1", "cap", exp, sig, id] | ["", "v1", "cap", exp, sig, id, _]) => {
            download::get_path(ctx, head, exp, sig, id).await
        }
        ("DELETE", ["", "v1", "media", id]) => download::delete(ctx, head, id).await,
        _ => {
            no_body(head)?;
            Ok(Reply::error(404, "not found"))
        }
    }
}

/// Requests that must not carry a body: one with Content-Length > 0 makes
/// the reply close the connection (the body is not read).
fn no_body(head: &Head) -> Result<(), Reply> {
    match content_length(head) {
        Ok(None | Some(0)) => Ok(()),
        _ => Err(Reply::error(400, "unexpected request body")),
    }
}

/// Content-Length, refusing duplicates that disagree and non-digits.
pub(crate) fn content_length(head: &Head) -> Result<Option<u64>, Reply> {
    let mut found: Option<u64> = None;
    for (n, v) in &head.headers {
        if n != "content-length" {
            continue;
        }
        let s = std::str::from_utf8(v).map_err(|_| Reply::error(400, "bad Content-Length"))?;
        if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Reply::error(400, "bad Content-Length"));
        }
        let v: u64 = s
            .parse()
            .map_err(|_| Reply::error(400, "bad Content-Length"))?;
        if found.is_some_and(|f| f != v) {
            return Err(Reply::error(400, "conflicting Content-Length"));
        }
        found = Some(v);
    }
    Ok(found)
}

/// Authenticates `Authorization: Bearer DEVICE:CREDENTIAL`; the account id.
/// Requests that present credentials from an address with too many recent
/// failures get 429 without a check.
pub(crate) async fn authenticate(ctx: &Ctx, head: &Head) -> Result<u64, Reply> {
    let unauthorized =
        || Reply::error(401, "device credentials required").header("WWW-Authenticate", "Bearer");
    let value = head.header("authorization").ok_or_else(unauthorized)?;
    let now = std::time::Instant::now();
    let peer = client_addr(ctx, head);
    if let Err(wait) = ctx.failed_auths.check(peer, now) {
        ctx.stats.auth_rate_limited.inc();
        return Err(
            Reply::error(429, "too many failed logins from this address")
                .header("Retry-After", wait.as_secs().max(1)),
        );
    }
    let account = match parse_bearer(value) {
        Some((device, credential)) => ctx.auth.authenticate(device, credential).await,
        None => None,
    };
    account.ok_or_else(|| {
        ctx.stats.auth_failures.inc();
        ctx.failed_auths.failed(peer, now);
        unauthorized()
    })
}

/// The client's address: the connection's peer, or the address a trusted
/// proxy vouches for with the shared secret (compared in constant time).
fn client_addr(ctx: &Ctx, head: &Head) -> IpAddr {
    let Some(secret) = ctx.cfg.proxy_secret.as_deref() else {
        return head.peer;
    };
    let vouched = head
        .header(PROXY_SECRET_HEADER)
        .is_some_and(|given| constant_time_eq(given, secret.as_bytes()));
    if !vouched {
        return head.peer;
    }
    head.header_str(CLIENT_ADDR_HEADER)
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or(head.peer)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `Bearer DEVICE:CREDENTIAL`.
fn parse_bearer(value: &[u8]) -> Option<(u64, &str)> {
    let value = std::str::from_utf8(value).ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    let (device, credential) = token.trim().split_once(':')?;
    Some((device.parse().ok()?, credential))
}

/// Logs a storage failure and answers 500 without details.
pub(crate) fn internal(e: impl std::fmt::Display) -> Reply {
    tracing::warn!(error = %e, "media request failed");
    Reply::error(500, "internal error")
}
