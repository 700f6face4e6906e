//! Shared pieces of the Palaver load generators (`idle-conns`,
//! `msg-throughput`): a WebSocket connect that can pick its source address,
//! request/reply helpers over the `/v1/ws` protocol, a tiny keep-alive HTTP
//! client for the admin listener's development code look-up, and bulk
//! registration of devices with a credentials cache file.
//!
//! Everything here talks to loopback only; the binaries refuse other
//! addresses.

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use palaver_proto::codec::{decode_server, encode_client};
use palaver_proto::frames::{ClientFrame, ServerFrame};
use palaver_proto::{ErrorCode, RequestId};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A client WebSocket over a plain TCP stream.
pub type Ws = WebSocketStream<TcpStream>;

/// Fails unless `addr` is a loopback address: the generators are for
/// benchmarking a local server only.
pub fn require_loopback(addr: SocketAddr) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() {
        bail!("{addr} is not a loopback address; the load generators only target loopback");
    }
    Ok(())
}

/// Credentials of one linked device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    pub phone: String,
    pub account: u64,
    pub device: u64,
    pub credential: String,
}

/// WebSocket settings with small buffers (the client side of a benchmark
/// shares the machine with the server, so it keeps its memory low).
pub fn small_ws_config(read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0)
}

/// Connects to `ws://server/v1/ws`, optionally from `source` (any
/// 127.x.y.z, to get past the ~64k ephemeral ports of one source address),
/// and reads the `hello` frame.
pub async fn connect(
    server: SocketAddr,
    source: Option<IpAddr>,
    config: WebSocketConfig,
) -> anyhow::Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("bind {ip}"))?;
    }
    let stream = socket.connect(server).await.context("connect")?;
    stream.set_nodelay(true)?;
    let url = format!("ws://{server}/v1/ws");
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .context("websocket handshake")?;
    match next_frame(&mut ws).await? {
        ServerFrame::Hello { .. } => Ok(ws),
        other => bail!("expected hello, got {other:?}"),
    }
}

/// Sends one client frame and flushes it.
pub async fn send_frame(ws: &mut Ws, frame: &ClientFrame) -> anyhow::Result<()> {
    ws.send(Message::Text(encode_client(frame).into())).await?;
    Ok(())
}

/// Reads the next server frame (skipping WebSocket pings and pongs).
pub async fn next_frame(ws: &mut Ws) -> anyhow::Result<ServerFrame> {
    loop {
        match ws.next().await {
            None => bail!("connection closed"),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Message::Text(t))) => return Ok(decode_server(t.as_str())?),
            Some(Ok(Message::Close(c))) => bail!("connection closed by the server: {c:?}"),
            Some(Ok(_)) => {}
        }
    }
}

/// The request id of a reply frame.
pub fn reply_id(f: &ServerFrame) -> Option<RequestId> {
    match f {
        ServerFrame::CodeSent { id, .. }
        | ServerFrame::Registered { id, .. }
        | ServerFrame::Authed { id, .. }
        | ServerFrame::Account { id, .. }
        | ServerFrame::DeviceList { id, .. }
        | ServerFrame::Sent { id, .. }
        | ServerFrame::Done { id }
        | ServerFrame::PresenceList { id, .. }
        | ServerFrame::Pong { id }
        | ServerFrame::Group { id, .. } => Some(*id),
        ServerFrame::Error(e) => e.id,
        _ => None,
    }
}

/// Sends a request and waits for its reply, skipping pushes. Error replies
/// come back as `Ok(ServerFrame::Error)` so callers can look at the code.
pub async fn call(ws: &mut Ws, frame: ClientFrame, id: RequestId) -> anyhow::Result<ServerFrame> {
    send_frame(ws, &frame).await?;
    loop {
        let f = next_frame(ws).await?;
        if reply_id(&f) == Some(id) {
            return Ok(f);
        }
    }
}

/// Authenticates `ws` as a device.
pub async fn auth(ws: &mut Ws, c: &Creds) -> anyhow::Result<()> {
    let id = RequestId(1);
    let frame = ClientFrame::Auth {
        id,
        device: palaver_proto::DeviceId(c.device),
        credential: c.credential.clone(),
    };
    match call(ws, frame, id).await? {
        ServerFrame::Authed { .. } => Ok(()),
        other => bail!("auth of device {} failed: {other:?}", c.device),
    }
}

/// A keep-alive HTTP/1.1 client for the admin listener (`GET` only).
#[derive(Debug)]
pub struct Admin {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Admin {
    pub fn new(addr: SocketAddr) -> Self {
        Admin { addr, conn: None }
    }

    async fn try_get(&mut self, path: &str) -> anyhow::Result<(u16, String)> {
        if self.conn.is_none() {
            self.conn = Some(BufReader::new(TcpStream::connect(self.addr).await?));
        }
        let conn = self.conn.as_mut().context("connected")?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr);
        conn.get_mut().write_all(req.as_bytes()).await?;
        let mut line = String::new();
        conn.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {line:?}"))?;
        let mut len = 0usize;
        let mut close = false;
        loop {
            line.clear();
            if conn.read_line(&mut line).await? == 0 {
                bail!("eof in headers");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                len = v.trim().parse()?;
            } else if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
        }
        let mut body = vec![0u8; len];
        conn.read_exact(&mut body).await?;
        if close {
            self.conn = None;
        }
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// `GET path`: status and body. Reconnects once on a broken connection.
    pub async fn get(&mut self, path: &str) -> anyhow::Result<(u16, String)> {
        match self.try_get(path).await {
            Ok(r) => Ok(r),
            Err(_) => {
                self.conn = None;
                self.try_get(path).await
            }
        }
    }

    /// The last code the development verifier sent to `phone`.
    pub async fn dev_code(&mut self, phone: &str) -> anyhow::Result<Option<String>> {
        let path = format!("/dev/codes/{}", phone.replace('+', "%2B"));
        let (status, body) = self.get(&path).await?;
        match status {
            200 => Ok(Some(body.trim().to_owned())),
            404 => Ok(None),
            s => bail!("GET {path}: HTTP {s}: {body}"),
        }
    }
}

/// The i-th phone number under a prefix such as `+49151` (then 8 digits).
pub fn phone(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:08}")
}

/// Reads a credentials cache: one device per line, `phone account device
/// credential`. A missing file is an empty cache.
pub fn load_cache(path: &Path) -> anyhow::Result<BTreeMap<String, Vec<Creds>>> {
    let mut map: BTreeMap<String, Vec<Creds>> = BTreeMap::new();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(map),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [phone, account, device, credential] = parts[..] else {
            continue;
        };
        let (Ok(account), Ok(device)) = (account.parse(), device.parse()) else {
            continue;
        };
        map.entry(phone.to_owned()).or_default().push(Creds {
            phone: phone.to_owned(),
            account,
            device,
            credential: credential.to_owned(),
        });
    }
    Ok(map)
}

/// Options of [`register_all`].
#[derive(Debug, Clone)]
pub struct RegisterOptions {
    pub server: SocketAddr,
    pub admin: SocketAddr,
    /// Phone prefix: accounts are `prefix` + 8 digits.
    pub prefix: String,
    pub accounts: usize,
    pub devices_per_account: usize,
    /// Accounts registered at the same time.
    pub concurrency: usize,
    /// Credentials cache; devices already in it are not registered again.
    pub cache: std::path::PathBuf,
}

/// Makes sure `accounts` accounts with `devices_per_account` devices each
/// exist, registering what the cache lacks (request_code, code from the
/// admin listener, verify; one connection per account), and returns their
/// credentials grouped by account, in phone order.
pub async fn register_all(opts: &RegisterOptions) -> anyhow::Result<Vec<Vec<Creds>>> {
    let cache = load_cache(&opts.cache)?;
    let mut todo: Vec<(String, usize)> = Vec::new();
    for i in 0..opts.accounts {
        let p = phone(&opts.prefix, i);
        let have = cache.get(&p).map_or(0, Vec::len);
        if have < opts.devices_per_account {
            todo.push((p, opts.devices_per_account - have));
        }
    }
    let missing: usize = todo.iter().map(|t| t.1).sum();
    let mut result = cache;
    if missing > 0 {
        eprintln!(
            "registering {missing} devices on {} accounts ({} at a time)",
            todo.len(),
            opts.concurrency
        );
        let started = Instant::now();
        let todo = Arc::new(todo);
        let next = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Creds>();
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..opts.concurrency.max(1) {
            let (todo, next, tx, opts, done) = (
                todo.clone(),
                next.clone(),
                tx.clone(),
                opts.clone(),
                done.clone(),
            );
            workers.spawn(async move {
                let mut admin = Admin::new(opts.admin);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((phone, n)) = todo.get(i) else {
                        return Ok::<(), anyhow::Error>(());
                    };
                    register_account(&opts, &mut admin, phone, *n, &tx, &done).await?;
                }
            });
        }
        drop(tx);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&opts.cache)
            .with_context(|| format!("open {}", opts.cache.display()))?;
        let mut last_report = Instant::now();
        let mut count = 0usize;
        while let Some(c) = rx.recv().await {
            writeln!(
                file,
                "{} {} {} {}",
                c.phone, c.account, c.device, c.credential
            )?;
            result.entry(c.phone.clone()).or_default().push(c);
            count += 1;
            if last_report.elapsed() > Duration::from_secs(10) {
                last_report = Instant::now();
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "  registered {count}/{missing} devices in {secs:.0} s ({:.0}/s)",
                    count as f64 / secs
                );
            }
        }
        file.flush()?;
        while let Some(r) = workers.join_next().await {
            r??;
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "registered {count} devices in {secs:.1} s: {:.0} devices/s",
            count as f64 / secs
        );
    }
    let mut out = Vec::with_capacity(opts.accounts);
    for i in 0..opts.accounts {
        let p = phone(&opts.prefix, i);
        let mut devs = result.remove(&p).unwrap_or_default();
        devs.truncate(opts.devices_per_account);
        if devs.len() < opts.devices_per_account {
            bail!("account {p} has only {} devices", devs.len());
        }
        out.push(devs);
    }
    Ok(out)
}

async fn register_account(
    opts: &RegisterOptions,
    admin: &mut Admin,
    phone: &str,
    n: usize,
    tx: &tokio::sync::mpsc::UnboundedSender<Creds>,
    done: &AtomicU64,
) -> anyhow::Result<()> {
    let mut ws: Option<Ws> = None;
    let mut linked = 0;
    let mut failures = 0;
    let mut req = 0u64;
    while linked < n {
        if ws.is_none() {
            ws = Some(connect(opts.server, None, small_ws_config(4096)).await?);
        }
        let conn = ws.as_mut().context("connected")?;
        match register_device(conn, admin, phone, &mut req).await {
            Ok(Some(c)) => {
                linked += 1;
                done.fetch_add(1, Ordering::Relaxed);
                let _ = tx.send(c);
            }
            Ok(None) => {}
            Err(e) => {
                failures += 1;
                if failures > 20 {
                    return Err(e.context(format!("registering {phone}")));
                }
                ws = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    if let Some(mut ws) = ws {
        let _ = ws.close(None).await;
    }
    Ok(())
}

/// One request_code + verify. `Ok(None)`: retry (rate limited, code lost).
async fn register_device(
    ws: &mut Ws,
    admin: &mut Admin,
    phone: &str,
    req: &mut u64,
) -> anyhow::Result<Option<Creds>> {
    *req += 1;
    let id = RequestId(*req);
    let f = ClientFrame::RequestCode {
        id,
        phone: phone.to_owned(),
    };
    match call(ws, f, id).await? {
        ServerFrame::CodeSent { .. } => {}
        ServerFrame::Error(e) if e.code == ErrorCode::RateLimited => {
            let wait = e.retry_after_ms.unwrap_or(100).min(5_000);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            return Ok(None);
        }
        other => bail!("request_code {phone}: {other:?}"),
    }
    let Some(code) = admin.dev_code(phone).await? else {
        return Ok(None);
    };
    *req += 1;
    let id = RequestId(*req);
    let f = ClientFrame::Verify {
        id,
        phone: phone.to_owned(),
        code,
        device_name: format!("bench-{req}"),
    };
    match call(ws, f, id).await? {
        ServerFrame::Registered {
            account,
            device,
            credential,
            ..
        } => Ok(Some(Creds {
            phone: phone.to_owned(),
            account: account.0,
            device: device.0,
            credential,
        })),
        ServerFrame::Error(e)
            if matches!(
                e.code,
                ErrorCode::RateLimited | ErrorCode::CodeInvalid | ErrorCode::CodeExpired
            ) =>
        {
            // Rate limited, or the dev verifier's code map was cleared or
            // overwritten meanwhile: request a new code.
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(None)
        }
        other => bail!("verify {phone}: {other:?}"),
    }
}

/// A process's resident memory in bytes (`VmRSS` of /proc/PID/status).
pub fn vm_rss(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_kib(&status, "VmRSS:").map(|k| k * 1024)
}

/// A `Key:   123 kB` value of /proc/*/status or /proc/meminfo, in KiB.
pub fn status_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// This process's soft limit on open files (`Max open files` of
/// /proc/self/limits). The server started by the same shell has the same.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// CPU time (user + system) in seconds of a whole process, and of its
/// threads named `thread` (for example `sqlite-writer`), from /proc. Clock
/// ticks are assumed to be 100 per second (the Linux default).
pub fn cpu_seconds(pid: &str, thread: &str) -> Option<(f64, f64)> {
    fn ticks(stat: &str) -> Option<u64> {
        // Fields after the parenthesised command name; utime and stime are
        // fields 14 and 15 of the whole line.
        let rest = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
    }
    let total = ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    let mut named = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let dir = entry.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() == thread {
            named += std::fs::read_to_string(dir.join("stat"))
                .ok()
                .and_then(|s| ticks(&s))
                .unwrap_or(0);
        }
    }
    Some((total as f64 / 100.0, named as f64 / 100.0))
}

/// Percentile (0..=100) of sorted samples.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Microseconds since the Unix epoch (the machine clock shared by senders
/// and receivers).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
