//! Helpers for end-to-end tests: run the real `palaver` binary on
//! 127.0.0.1 with a temporary data directory, and talk to it with the SDK.

pub mod garage;
mod media;
pub mod pki;
pub mod push_endpoint;
pub mod sfu_driver;
pub mod sfu_node;

pub use media::{Backend, MediaServer};
use palaver_client::{Client, Event, Registration};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// How long a test waits for something the server should do promptly.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// The `palaver` binary beside these tests. `cargo nextest` does not build
/// it (it builds test targets only): `scripts/test.sh` runs `cargo build
/// --workspace --bins` first; by hand, run `cargo build -p palaver-server`
/// before the tests or they use a stale binary (or set `PALAVER_BIN`).
pub fn palaver_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PALAVER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("palaver");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p palaver-server`, or run scripts/test.sh)",
        bin.display()
    );
    bin
}

/// A running `palaver serve`.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub config: Option<PathBuf>,
    pub ws_url: String,
    pub admin_url: String,
    /// The media listener, `http://127.0.0.1:PORT` (empty if disabled).
    pub media_url: String,
    /// The SFU's media UDP address (empty if the SFU is disabled).
    pub sfu_udp: String,
    pub stderr_log: PathBuf,
    /// The main listener's `IP:PORT`.
    pub main_addr: String,
    /// SHA-256 of the TLS certificate it printed at start, if TLS is on.
    pub tls_sha256: Option<String>,
    /// The HTTP-to-HTTPS redirect listener's `IP:PORT`, if configured.
    pub redirect_addr: Option<String>,
    /// TURN's TLS listener `IP:PORT`, if configured.
    pub turn_tls_addr: Option<String>,
    /// The media store's HTTPS listener `IP:PORT` (`media.tls_listen`).
    pub media_tls_addr: Option<String>,
    /// How the process is started again by `restart`.
    launch: Launch,
}

/// The role and environment of a server process.
#[derive(Debug, Clone)]
struct Launch {
    role: &'static str,
    env: Vec<(String, String)>,
    /// Extra flags after the role.
    args: Vec<String>,
}

/// The PostgreSQL server of the tests (`scripts/postgres.sh`).
pub fn postgres_url() -> String {
    std::env::var("PALAVER_TEST_POSTGRES_URL").expect(
        "PALAVER_TEST_POSTGRES_URL is not set: run scripts/test.sh, or \
         `eval \"$(scripts/postgres.sh start)\"` first",
    )
}

/// The Redis server of the tests (`scripts/redis.sh`).
pub fn redis_url() -> String {
    std::env::var("PALAVER_TEST_REDIS_URL").expect(
        "PALAVER_TEST_REDIS_URL is not set: run scripts/test.sh, or \
         `eval \"$(scripts/redis.sh start)\"` first",
    )
}

/// Whether `Server::start*` use PostgreSQL (`PALAVER_TEST_BACKEND=postgres`,
/// as the second pass of scripts/test.sh sets) instead of SQLite.
pub fn on_postgres() -> bool {
    match std::env::var("PALAVER_TEST_BACKEND").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("PALAVER_TEST_BACKEND={other}: use sqlite or postgres"),
    }
}

/// A schema no other test uses.
pub fn fresh_schema() -> String {
    format!("t_{:016x}", rand::random::<u64>())
}

/// Environment that points a server at PostgreSQL, in `schema`. The URL
/// travels in the environment, as a secret should.
pub fn postgres_env(schema: &str) -> Vec<(String, String)> {
    vec![
        ("PALAVER__STORAGE__BACKEND".into(), "postgres".into()),
        ("PALAVER__STORAGE__POSTGRES_URL".into(), postgres_url()),
        ("PALAVER__STORAGE__POSTGRES_SCHEMA".into(), schema.into()),
        ("PALAVER__STORAGE__POSTGRES_POOL_SIZE".into(), "8".into()),
    ]
}

impl Server {
    /// Starts a server with default settings and a fresh data directory.
    pub fn start() -> Server {
        Self::start_with("")
    }

    /// Starts a server with extra TOML configuration, on the backend the
    /// environment selects (see [`on_postgres`]).
    pub fn start_with(config: &str) -> Server {
        Self::start_with_env(config, Vec::new())
    }

    /// Starts a server with extra TOML configuration and environment
    /// variables (`PALAVER__SECTION__KEY` overrides), on the backend the
    /// environment selects.
    pub fn start_with_env(config: &str, extra: Vec<(String, String)>) -> Server {
        let mut env = if on_postgres() {
            postgres_env(&fresh_schema())
        } else {
            Vec::new()
        };
        env.extend(extra);
        Self::launch(
            config,
            Launch {
                role: "serve",
                env,
                args: Vec::new(),
            },
        )
    }

    /// Starts `palaver serve` with extra TOML configuration and extra flags
    /// (for example `--tls-self-signed`).
    pub fn start_with_args(config: &str, args: &[&str]) -> Server {
        let env = if on_postgres() {
            postgres_env(&fresh_schema())
        } else {
            Vec::new()
        };
        let args = args.iter().map(|a| a.to_string()).collect();
        Self::launch(
            config,
            Launch {
                role: "serve",
                env,
                args,
            },
        )
    }

    /// Starts `palaver signaling` as one node of a cluster: PostgreSQL in
    /// `schema`, shared with the other nodes, and Redis between them.
    pub fn start_node(schema: &str, name: &str) -> Server {
        Self::start_node_with(schema, name, &[])
    }

    /// Like [`Server::start_node`], with extra environment (overrides).
    pub fn start_node_with(schema: &str, name: &str, extra: &[(&str, &str)]) -> Server {
        let mut env = postgres_env(schema);
        env.push(("PALAVER__CLUSTER__REDIS_URL".into(), redis_url()));
        env.push(("PALAVER__CLUSTER__NODE_ID".into(), name.into()));
        // Tests share one Redis: each cluster keeps to its own keys.
        env.push(("PALAVER__CLUSTER__NAME".into(), schema.into()));
        env.push(("PALAVER__MEDIA__ENABLED".into(), "false".into()));
        // Short, so a killed node's registry entries lapse within a test.
        env.push(("PALAVER__CLUSTER__HEARTBEAT".into(), "500ms".into()));
        env.push(("PALAVER__CLUSTER__REGISTRY_TTL".into(), "2s".into()));
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Self::launch(
            "",
            Launch {
                role: "signaling",
                env,
                args: Vec::new(),
            },
        )
    }

    fn launch(config: &str, launch: Launch) -> Server {
        let tmp = tempfile::tempdir().expect("temp dir");
        let data_dir = tmp.path().join("data");
        let cfg = tmp.path().join("palaver.toml");
        std::fs::write(&cfg, config).expect("write config");
        let mut s = Self::spawn(&data_dir, &cfg, tmp.path(), launch);
        s._tmp = Some(tmp);
        s
    }

    fn spawn(data_dir: &Path, cfg: &Path, log_dir: &Path, launch: Launch) -> Server {
        static N: AtomicU32 = AtomicU32::new(0);
        let stderr_log = log_dir.join(format!("stderr-{}.log", N.fetch_add(1, Ordering::Relaxed)));
        let stderr = std::fs::File::create(&stderr_log).expect("log file");
        let mut child = Command::new(palaver_bin())
            .args(["--config"])
            .arg(cfg)
            .arg(launch.role)
            .args(&launch.args)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--media-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            // Tests run in parallel: the embedded TURN server takes free ports.
            .env("PALAVER__TURN__LISTEN_UDP", "\"127.0.0.1:0\"")
            .env("PALAVER__TURN__LISTEN_TCP", "\"127.0.0.1:0\"")
            .env("PALAVER__SFU__UDP_PORT", "0")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start palaver");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (mut main, mut admin, mut media, mut sfu_udp) = (None, None, None, None);
        let (mut tls_sha256, mut redirect_addr, mut turn_tls_addr) = (None, None, None);
        let mut media_tls_addr = None;
        while main.is_none() || admin.is_none() {
            let Some(Ok(line)) = lines.next() else {
                let log = std::fs::read_to_string(&stderr_log).unwrap_or_default();
                panic!("palaver exited before listening; stderr:\n{log}");
            };
            let addr = line.rsplit(' ').next().unwrap_or("").to_owned();
            if line.starts_with("palaver: main listening on") {
                main = Some(addr);
            } else if line.starts_with("palaver: admin listening on") {
                admin = Some(addr);
            } else if line.starts_with("palaver: media listening on") {
                media = Some(addr);
            } else if line.starts_with("palaver: sfu udp listening on") {
                sfu_udp = Some(addr);
            } else if line.starts_with("palaver: tls certificate sha256") {
                tls_sha256 = Some(addr);
            } else if line.starts_with("palaver: redirect listening on") {
                redirect_addr = Some(addr);
            } else if line.starts_with("palaver: turn tls listening on") {
                turn_tls_addr = Some(addr);
            } else if line.starts_with("palaver: media tls listening on") {
                media_tls_addr = Some(addr);
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let main = main.unwrap();
        Server {
            child: Some(child),
            data_dir: data_dir.to_owned(),
            _tmp: None,
            config: Some(cfg.to_owned()),
            ws_url: format!("ws://{main}/v1/ws"),
            main_addr: main,
            tls_sha256,
            redirect_addr,
            turn_tls_addr,
            media_tls_addr,
            admin_url: format!("http://{}", admin.unwrap()),
            media_url: media.map(|m| format!("http://{m}")).unwrap_or_default(),
            sfu_udp: sfu_udp.unwrap_or_default(),
            stderr_log,
            launch,
        }
    }

    /// The main listener's port.
    pub fn main_port(&self) -> u16 {
        let port = self.main_addr.rsplit(':').next().unwrap_or("");
        port.parse().expect("main_addr ends with a port")
    }

    /// Kills the server with SIGKILL (no chance to clean up).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill");
            c.wait().expect("wait");
        }
    }

    /// Sends SIGTERM and waits for the process to exit; returns its status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let pid = c.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
        c.wait().expect("wait")
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits for a server that was sent SIGTERM by someone else to exit.
    pub fn terminate_wait(&mut self) -> std::process::ExitStatus {
        self.child.take().expect("running").wait().expect("wait")
    }

    /// Starts a new process on the same data directory and config.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        let cfg = self.config.clone().expect("config");
        let log_dir = self.stderr_log.parent().expect("log dir").to_owned();
        let mut next = Self::spawn(&self.data_dir, &cfg, &log_dir, self.launch.clone());
        self.child = next.child.take();
        self.ws_url = std::mem::take(&mut next.ws_url);
        self.admin_url = std::mem::take(&mut next.admin_url);
        self.media_url = std::mem::take(&mut next.media_url);
        self.stderr_log = std::mem::take(&mut next.stderr_log);
        self.main_addr = std::mem::take(&mut next.main_addr);
        self.tls_sha256 = next.tls_sha256.take();
        self.redirect_addr = next.redirect_addr.take();
        self.turn_tls_addr = next.turn_tls_addr.take();
        self.media_tls_addr = next.media_tls_addr.take();
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// A new connection.
    pub async fn connect(&self) -> Client {
        Client::connect(&self.ws_url).await.expect("connect")
    }

    /// Registers a new device for `phone` and returns it connected and
    /// authenticated.
    pub async fn device(&self, phone: &str) -> (Client, Registration) {
        let reg = palaver_client::register_dev(&self.ws_url, &self.admin_url, phone, "test")
            .await
            .expect("register");
        let mut c = self.connect().await;
        c.auth(reg.device, &reg.credential).await.expect("auth");
        (c, reg)
    }

    /// Reads `/metrics` from the admin listener.
    pub async fn metrics(&self) -> String {
        http_get(&self.admin_url, "/metrics").await.1
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A minimal HTTP GET (status, body).
pub async fn http_get(base: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hostport = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(hostport)
        .await
        .expect("connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text[9..12].parse().expect("status");
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A phone number no other test uses (valid German mobile numbers).
pub fn phone() -> String {
    let n: u32 = rand::random::<u32>() % 100_000_000;
    format!("+49151{n:08}")
}

/// Waits for the next event, failing the test if none comes in time.
pub async fn next_event(c: &mut Client) -> Event {
    tokio::time::timeout(PATIENCE, c.next_event())
        .await
        .expect("timed out waiting for an event")
        .expect("connection failed")
}

/// Waits for the next envelope, skipping other events.
pub async fn next_envelope(c: &mut Client) -> palaver_client::Envelope {
    loop {
        if let Event::Envelope(e) = next_event(c).await {
            return e;
        }
    }
}

/// The next call frame (`Event::Call`), skipping other events.
pub async fn next_call(c: &mut Client) -> palaver_client::proto::frames::ServerFrame {
    loop {
        if let palaver_client::Event::Call(f) = next_event(c).await {
            return f;
        }
    }
}

/// Asserts that the next call frame ends `call` with `reason`.
pub async fn expect_ended(
    c: &mut Client,
    call: palaver_client::proto::CallId,
    reason: palaver_client::proto::frames::EndReason,
) {
    match next_call(c).await {
        palaver_client::proto::frames::ServerFrame::CallEnded {
            call: got,
            reason: r,
        } => assert_eq!((got, r), (call, reason)),
        other => panic!("expected call_ended {reason:?}, got {other:?}"),
    }
}
