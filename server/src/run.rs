//! Starting and stopping the roles.

use crate::admin::{self, AdminState};
use crate::cli::{Cli, Command, ServeArgs};
use crate::config::{self, Backend, Config, Durability, VerifierKind};
use crate::http::{self, HttpOptions};
use anyhow::Context;
use palaver_messaging::postgres::{PostgresConfig, PostgresStore};
use palaver_messaging::sqlite::{SqliteConfig, SqliteStore};
use palaver_messaging::{Notifier, Store};
use palaver_signaling::router::Router;
use palaver_signaling::{DevVerifier, Gateway, Metrics, Verifier};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub async fn main(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(cli.config, args, Role::Serve).await,
        Command::Signaling(args) => serve(cli.config, args, Role::Signaling).await,
        Command::Turn(args) => serve(cli.config, args, Role::Turn).await,
        Command::CheckConfig(args) => {
            let cfg = load(cli.config, &args)?;
            print_config(&cfg);
            Ok(())
        }
        Command::Sfu(args) => sfu_only(cli.config, args).await,
        Command::Media(args) => media_only(cli.config, args).await,
        Command::Transcoder(args) => transcoder_only(cli.config, args).await,
        // Handled in main before the runtime starts.
        Command::TranscodeWorker => Ok(()),
    }
}

fn load(path: Option<std::path::PathBuf>, args: &ServeArgs) -> anyhow::Result<Config> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut cfg = config::load(path.as_deref(), &env)?;
    if let Some(d) = &args.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Some(l) = args.listen {
        cfg.server.listen = l;
    }
    if let Some(l) = args.admin_listen {
        cfg.admin.listen = l;
    }
    if let Some(l) = args.media_listen {
        cfg.media.listen = l;
    }
    if args.tls_self_signed {
        cfg.tls.self_signed = true;
    }
    cfg.validate()?;
    Ok(cfg)
}

#[allow(clippy::print_stdout)]
fn print_config(cfg: &Config) {
    println!("{cfg:#?}");
}

/// Finds the browser client and says where (or that it is missing).
#[allow(clippy::print_stdout)]
fn web_dir(cfg: &Config) -> crate::web::WebDir {
    let dir = crate::web::locate(&cfg.web);
    match &dir {
        crate::web::WebDir::Found(d) => println!("palaver: web client from {}", d.display()),
        crate::web::WebDir::Missing(_) => {
            println!("palaver: web client not built (scripts/web.sh builds it)")
        }
    }
    dir
}

/// Tells scripts and tests where the listeners ended up (port 0 picks one).
#[allow(clippy::print_stdout)]
pub fn announce(what: &str, addr: std::net::SocketAddr) {
    println!("palaver: {what} listening on {addr}");
}

/// A line for scripts and tests: `palaver: <what> <value>`.
#[allow(clippy::print_stdout)]
pub fn announce_text(what: &str, value: &str) {
    println!("palaver: {what} {value}");
}

/// Raises the soft limit on open files to the hard limit: every connection
/// is a file descriptor. Warns when `server.max_connections` cannot be
/// reached (raise the hard limit, e.g. systemd `LimitNOFILE=`).
fn raise_file_limit(max_connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
    }
    let current = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    if (max_connections as u64).saturating_add(1000) > current {
        tracing::warn!(
            open_files = current,
            max_connections,
            "the open-file limit caps connections below server.max_connections"
        );
    }
}

pub fn prepare_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data_dir {}", dir.display()))
}

/// What one process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Everything implemented, in one process.
    Serve,
    /// The WebSocket gateway and messaging core.
    Signaling,
    /// The STUN/TURN server.
    Turn,
}

/// The TURN secret of `palaver serve` when none is configured: signaling
/// and TURN run in this process and only need to agree with each other. It
/// is made once and kept in the data directory (mode 0600), so that TURN
/// credentials issued before a restart stay valid after it.
fn local_turn_secret(data_dir: &std::path::Path) -> anyhow::Result<String> {
    local_secret_file(data_dir, "turn.secret", "calls.turn_secret_file")
}

/// Reads `<data_dir>/<name>`, or makes it (32 random bytes, base64, mode
/// 0600) if it does not exist yet.
pub fn local_secret_file(
    data_dir: &std::path::Path,
    name: &str,
    key: &str,
) -> anyhow::Result<String> {
    use base64::Engine;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join(name);
    if path.exists() {
        return Ok(config::read_secret_file(key, &path)?.expose().to_owned());
    }
    let bytes: [u8; 32] = rand::random();
    let secret = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(f, "{secret}")?;
    f.sync_all()?;
    Ok(secret)
}

async fn serve(
    path: Option<std::path::PathBuf>,
    args: ServeArgs,
    role: Role,
) -> anyhow::Result<()> {
    let cfg = load(path, &args)?;
    let secrets = cfg.validate()?;
    crate::telemetry::init(&cfg.log)?;

    let http_stop = CancellationToken::new();
    let mut background = Vec::new();
    let run_turn = role == Role::Turn || (role == Role::Serve && cfg.serve.turn);
    let turn_secret = match (&secrets.turn_secret, role) {
        (Some(s), _) => Some(s.expose().to_owned()),
        (None, Role::Serve) if run_turn => {
            prepare_data_dir(&cfg.data_dir)?;
            Some(local_turn_secret(&cfg.data_dir)?)
        }
        (None, Role::Turn) => anyhow::bail!(
            "config key `calls.turn_secret`: required by `palaver turn` (shared with signaling)"
        ),
        (None, _) => None,
    };
    let mut turn_stats = None;
    let mut local_turn = None;
    // Set once the TURN sockets are bound (and its certificate loaded).
    let turn_running = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if run_turn {
        let mut server = palaver_turn::TurnServer::bind(
            cfg.turn.clone(),
            palaver_turn::Secrets {
                rest_secret: turn_secret.clone(),
                static_users: Vec::new(),
            },
        )
        .await
        .context("cannot start the TURN server (config section `turn`)")?;
        if let Some(t) = &cfg.turn.tls {
            let stop = http_stop.clone();
            let reload = cfg.tls.reload_interval;
            server.set_tls_config(crate::tls::start_turn(t, reload, stop, &mut background)?);
        }
        if let Some(tls) = server.local_tls_addr() {
            announce("turn tls", tls);
        }
        announce("turn udp", server.local_udp_addr());
        if let Some(tcp) = server.local_tcp_addr() {
            announce("turn tcp", tcp);
        }
        local_turn = Some((server.local_udp_addr(), server.local_tcp_addr()));
        turn_running.store(true, std::sync::atomic::Ordering::Relaxed);
        turn_stats = Some(server.stats_handle());
        let stop = http_stop.clone().cancelled_owned();
        let running = turn_running.clone();
        background.push(tokio::spawn(async move {
            if let Err(e) = server.run(stop).await {
                tracing::error!(error = %e, "the TURN server stopped");
            }
            running.store(false, std::sync::atomic::Ordering::Relaxed);
        }));
    }

    let mut registry = Registry::default();
    let admin_opts = HttpOptions {
        header_timeout: cfg.server.header_timeout,
        max_connections: 256,
        shutdown_timeout: cfg.server.shutdown_timeout,
    };
    if role == Role::Turn {
        let admin_listener = TcpListener::bind(cfg.admin.listen)
            .await
            .with_context(|| format!("cannot listen on admin.listen = {}", cfg.admin.listen))?;
        let signals = Signals::install()?;
        announce("admin", admin_listener.local_addr()?);
        let admin_app = admin::routes(AdminState {
            registry: Arc::new(registry),
            verifier: None,
            token: secrets.admin_token.clone(),
            turn: turn_stats,
            store: None,
            sfu: None,
        })
        .merge(crate::ops::readyz(crate::ops::turn_probe(turn_running)));
        background.push(tokio::spawn(http::serve(
            admin_listener,
            admin_app,
            admin_opts,
            http_stop.clone(),
        )));
        tracing::info!("palaver turn started");
        signals.wait().await;
        tracing::info!("shutting down");
        http_stop.cancel();
        for task in background {
            let _ = task.await;
        }
        tracing::info!("stopped");
        return Ok(());
    }

    prepare_data_dir(&cfg.data_dir)?;
    raise_file_limit(cfg.server.max_connections);
    let metrics = Arc::new(Metrics::default());
    metrics.register(&mut registry);

    let router = Arc::new(Router::default());
    let cluster = match &secrets.redis_url {
        Some(url) => {
            Some(crate::cluster::start(&cfg, url, router.clone(), http_stop.clone()).await?)
        }
        None => None,
    };
    let notifier: Arc<dyn Notifier> = match &cluster {
        Some(c) => c.notifier(),
        None => router.clone(),
    };
    let push_metrics = Arc::new(palaver_signaling::push::PushMetrics::default());
    push_metrics.register(&mut registry);
    let (notifier, push_events) = crate::push::wrap(&cfg.push, notifier, &push_metrics);
    let store = open_store(&cfg, &secrets, notifier).await?;

    let (verifier, dev_codes): (Arc<dyn Verifier>, bool) = match cfg.verifier.kind {
        VerifierKind::Dev => {
            tracing::warn!(
                "using the development verifier: codes are logged and shown on the admin listener"
            );
            (Arc::new(DevVerifier::default()), true)
        }
        VerifierKind::Webhook => {
            let url = cfg.verifier.webhook_url.clone().unwrap_or_default();
            let secret = secrets
                .webhook_secret
                .clone()
                .context("verifier.webhook_secret")?;
            (
                Arc::new(crate::webhook::WebhookVerifier::new(
                    url,
                    secret,
                    cfg.verifier.webhook_timeout,
                )?),
                false,
            )
        }
    };

    let main_listener = TcpListener::bind(cfg.server.listen)
        .await
        .with_context(|| format!("cannot listen on server.listen = {}", cfg.server.listen))?;
    let admin_listener = TcpListener::bind(cfg.admin.listen)
        .await
        .with_context(|| format!("cannot listen on admin.listen = {}", cfg.admin.listen))?;
    let main_addr = main_listener.local_addr()?;
    let tls = crate::tls::start(
        &cfg.tls,
        &cfg.data_dir,
        main_addr.port(),
        &admin_opts,
        http_stop.clone(),
        &mut background,
    )
    .await?;
    let mut gateway_config = cfg.signaling.gateway_config(&cfg.calls, None);
    gateway_config.ice.turn_secret = turn_secret;
    let no_turn_configured = cfg.calls.turn_urls.is_empty() && cfg.calls.turn_servers.is_empty();
    if let (true, Some((udp, tcp))) = (no_turn_configured, local_turn) {
        // The embedded TURN server, as clients on this machine reach it. Set
        // calls.stun_urls and calls.turn_urls to public names in production.
        gateway_config.ice.stun_urls = vec![format!("stun:{udp}")];
        gateway_config.ice.turn_urls = std::iter::once(format!("turn:{udp}?transport=udp"))
            .chain(tcp.map(|t| format!("turn:{t}?transport=tcp")))
            .collect();
    }
    let sfu_secret = group_call_secret(&cfg, &secrets, role)?;
    let main_base = match tls {
        Some(_) => format!("https://{main_addr}"),
        None => format!("http://{main_addr}"),
    };
    gateway_config.group_calls = group_calls(
        &cfg,
        sfu_secret.as_deref(),
        &main_base,
        role,
        cluster.is_some(),
    );
    if cluster.is_some() {
        gateway_config.catch_up_interval = Some(cfg.cluster.catch_up_interval);
    }
    let gw = Gateway::new(
        gateway_config,
        store.clone(),
        router,
        cluster,
        verifier.clone(),
        metrics,
    );

    let admin_addr = admin_listener.local_addr()?;

    let opts = HttpOptions {
        header_timeout: cfg.server.header_timeout,
        max_connections: cfg.server.max_connections,
        shutdown_timeout: cfg.server.shutdown_timeout,
    };
    let mut main_app = palaver_signaling::http::routes(gw.clone());
    let vapid = crate::push::load_or_create(&cfg.data_dir, cfg.push.vapid_key_file.as_deref())?;
    main_app = main_app.merge(crate::push::routes(&vapid));
    if let Some(events) = push_events {
        let relays = &secrets.push_relays;
        let (store, stop) = (store.clone(), http_stop.clone());
        crate::push::start(&cfg.push, relays, vapid, store, &gw, events, stop)?;
    }
    let sfu = if role == Role::Serve && cfg.serve.sfu {
        let secret = sfu_secret.clone().unwrap_or_default();
        let sfu = palaver_sfu::Sfu::start(&cfg.sfu.driver_config(), secret.into_bytes())
            .context("cannot start the SFU (config section `sfu`)")?;
        for addr in sfu.udp_addrs() {
            announce("sfu udp", addr);
        }
        main_app = main_app.merge(palaver_sfu::http::routes(sfu.clone()));
        Some(sfu)
    } else {
        None
    };
    let media = if cfg.media.enabled {
        Some(
            crate::media::start(
                &cfg,
                &secrets,
                store.clone(),
                &mut registry,
                tls.as_ref(),
                http_stop.clone(),
            )
            .await?,
        )
    } else {
        None
    };
    if let Some(m) = &media {
        main_app = main_app.merge(crate::media_proxy::routes(m.addr, m.proxy_secret.clone()));
    }
    main_app = main_app.merge(crate::web::router(web_dir(&cfg)));
    let admin_app = admin::routes(AdminState {
        registry: Arc::new(registry),
        verifier: dev_codes.then(|| verifier.clone()),
        token: secrets.admin_token.clone(),
        turn: turn_stats,
        store: Some(store.clone()),
        sfu: sfu.clone(),
    });
    let main_task = tokio::spawn(http::serve_tls(
        main_listener,
        main_app,
        opts.clone(),
        tls,
        http_stop.clone(),
    ));
    let admin_task = tokio::spawn(http::serve(
        admin_listener,
        admin_app,
        HttpOptions {
            max_connections: 256,
            ..opts.clone()
        },
        http_stop.clone(),
    ));
    let maintenance = tokio::spawn(gw.clone().run_maintenance());
    let call_timers = tokio::spawn(gw.clone().run_call_timers());
    let sfu_monitor = tokio::spawn(gw.clone().run_sfu_monitor());

    tracing::info!(%main_addr, %admin_addr, data_dir = %cfg.data_dir.display(), "palaver started");
    let signals = Signals::install()?;
    // Media first: scripts and tests read the lines until main and admin.
    if let Some(m) = &media {
        tracing::info!(media_addr = %m.addr, "media store started");
        announce_media(m);
    }
    announce("main", main_addr);
    announce("admin", admin_addr);

    signals.wait().await;
    tracing::info!("shutting down: refusing new connections, finishing open requests");
    http_stop.cancel();
    if tokio::time::timeout(cfg.server.shutdown_timeout, gw.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open at the shutdown timeout");
    }
    let _ = main_task.await;
    let _ = admin_task.await;
    let _ = maintenance.await;
    let _ = call_timers.await;
    let _ = sfu_monitor.await;
    for task in background {
        let _ = task.await;
    }
    if let Some(m) = media {
        stop_media(m, cfg.server.shutdown_timeout).await;
    }
    if let Some(sfu) = sfu {
        sfu.shutdown();
    }
    store.health().await.context("final flush of the store")?;
    tracing::info!("stopped");
    Ok(())
}

/// The join-token secret: configured, or in `palaver serve` with the SFU
/// inside, the one kept in the data directory.
fn group_call_secret(
    cfg: &Config,
    secrets: &config::Secrets,
    role: Role,
) -> anyhow::Result<Option<String>> {
    Ok(match &secrets.sfu_token_secret {
        Some(s) => Some(s.expose().to_owned()),
        None if role == Role::Serve && cfg.serve.sfu => {
            Some(crate::sfu::local_secret(&cfg.data_dir)?)
        }
        None => None,
    })
}

/// Group calls are offered when signaling knows the secret and an SFU: its
/// URL, or the SFU node registry (`registry`: nodes share Redis).
fn group_calls(
    cfg: &Config,
    secret: Option<&str>,
    main_base: &str,
    role: Role,
    registry: bool,
) -> Option<palaver_signaling::group_calls::GroupCallConfig> {
    let sfu_url = match (&cfg.sfu.public_url, role) {
        (Some(u), _) => Some(u.trim_end_matches('/').to_owned()),
        (None, Role::Serve) if cfg.serve.sfu => Some(main_base.to_owned()),
        _ => None,
    };
    if sfu_url.is_none() && !registry {
        return None;
    }
    Some(palaver_signaling::group_calls::GroupCallConfig {
        sfu_url,
        token_secret: secret?.as_bytes().to_vec(),
        token_ttl: cfg.sfu.token_ttl,
        max_invites: cfg.sfu.room_limit.saturating_sub(1),
        room_ttl: std::time::Duration::from_secs(24 * 3600),
        node_poll: cfg.sfu.heartbeat,
    })
}

/// `palaver sfu`: the join endpoint on sfu.listen and the media workers
/// (crate::sfu_node).
async fn sfu_only(path: Option<std::path::PathBuf>, args: ServeArgs) -> anyhow::Result<()> {
    let cfg = load(path, &args)?;
    let secrets = cfg.validate()?;
    crate::telemetry::init(&cfg.log)?;
    crate::sfu_node::run(&cfg, &secrets).await
}

/// Opens the configured storage backend.
async fn open_store(
    cfg: &Config,
    secrets: &config::Secrets,
    notifier: Arc<dyn Notifier>,
) -> anyhow::Result<Arc<dyn Store>> {
    match cfg.storage.backend {
        Backend::Sqlite => {
            let mut sqlite = SqliteConfig::new(cfg.sqlite_path());
            sqlite.durability = match cfg.storage.durability {
                Durability::Full => palaver_messaging::sqlite::Durability::Full,
                Durability::Normal => palaver_messaging::sqlite::Durability::Normal,
            };
            sqlite.max_batch = cfg.storage.max_batch;
            let store = SqliteStore::open(sqlite, notifier).with_context(|| {
                format!("cannot open the database {}", cfg.sqlite_path().display())
            })?;
            Ok(Arc::new(store))
        }
        Backend::Postgres => {
            let url = secrets
                .postgres_url
                .as_ref()
                .context("storage.postgres_url")?;
            let mut pg = PostgresConfig::new(url.expose());
            pg.schema = cfg.storage.postgres_schema.clone();
            pg.pool_size = cfg.storage.postgres_pool_size;
            // The URL is a secret: errors name the key, never the value.
            let store = PostgresStore::open(pg, notifier)
                .await
                .context("cannot open the PostgreSQL store (storage.postgres_url)")?;
            tracing::info!(schema = %cfg.storage.postgres_schema, "using PostgreSQL storage");
            Ok(Arc::new(store))
        }
    }
}

/// The media listeners' lines; the HTTPS one first (scripts wait for
/// `media listening`).
fn announce_media(m: &crate::media::Running) {
    if let Some(a) = m.tls_addr {
        announce("media tls", a);
    }
    announce("media", m.addr);
}

async fn stop_media(m: crate::media::Running, grace: std::time::Duration) {
    let _ = m.maintenance.await;
    if let Some(t) = m.transcoder {
        let _ = t.await;
    }
    if tokio::time::timeout(grace, m.server).await.is_err() {
        tracing::warn!("media connections still open at the shutdown timeout");
    }
}

/// A notifier for processes that do not route messages (`palaver media`).
struct NoNotifier;

impl Notifier for NoNotifier {
    fn envelopes(&self, _: &[Arc<palaver_messaging::store::StoredEnvelope>]) {}
    fn device_revoked(&self, _: palaver_proto::DeviceId) {}
}

/// `palaver media`: only the media store, authenticating devices against
/// the database under data_dir.
async fn media_only(path: Option<std::path::PathBuf>, args: ServeArgs) -> anyhow::Result<()> {
    let cfg = load(path, &args)?;
    let secrets = cfg.validate()?;
    crate::telemetry::init(&cfg.log)?;
    prepare_data_dir(&cfg.data_dir)?;
    let store = open_store(&cfg, &secrets, Arc::new(NoNotifier)).await?;
    let stop = CancellationToken::new();
    let mut registry = Registry::default();
    let tls = crate::media::media_tls(&cfg, stop.clone())?;
    let media = crate::media::start(
        &cfg,
        &secrets,
        store.clone(),
        &mut registry,
        tls.as_ref(),
        stop.clone(),
    )
    .await?;
    let deps = crate::media::Deps::of(&cfg, &secrets)?;
    let probe = crate::media::probe(store.clone(), media.media.clone(), deps);
    let admin = crate::ops::admin_listener(&cfg, &secrets, registry, probe, stop.clone()).await?;
    tracing::info!(media_addr = %media.addr, "palaver media started");
    let signals = Signals::install()?;
    announce_media(&media);
    signals.wait().await;
    stop.cancel();
    let _ = admin.await;
    stop_media(media, cfg.server.shutdown_timeout).await;
    store.health().await.context("final flush of the store")?;
    Ok(())
}

/// `palaver transcoder`: transcoding workers only, taking the jobs the
/// media role (`transcoder.in_process = false`) records in the media
/// database under the same data_dir.
async fn transcoder_only(path: Option<std::path::PathBuf>, args: ServeArgs) -> anyhow::Result<()> {
    let cfg = load(path, &args)?;
    let secrets = cfg.validate()?;
    crate::telemetry::init(&cfg.log)?;
    prepare_data_dir(&cfg.data_dir)?;
    let mut registry = Registry::default();
    let stop = CancellationToken::new();
    if cfg.transcoder.queue_backend == crate::config::QueueBackend::Redis {
        return crate::jobqueue::roles::worker_role(cfg, secrets, registry, stop).await;
    }
    let media = crate::media::open(&cfg, &secrets, &mut registry).await?;
    let queue = {
        let (media, cfg, stop) = (media.clone(), cfg.clone(), stop.clone());
        tokio::spawn(async move {
            crate::transcode::run_external(media, &cfg, &mut registry, stop).await
        })
    };
    tracing::info!("palaver transcoder started");
    wait_for_signal().await?;
    stop.cancel();
    queue.await??;
    Ok(())
}

pub async fn wait_for_signal() -> anyhow::Result<()> {
    Signals::install()?.wait().await;
    Ok(())
}

/// SIGTERM and SIGINT, caught from the moment this is made. Make it before
/// announcing the listeners: a script that stops the server right after
/// reading the addresses must not find the default action (death by
/// signal, no clean shutdown).
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot watch SIGINT")?,
        })
    }

    pub async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
