//! `palaver sfu`: the join endpoint on `sfu.listen`, the admin listener
//! (metrics, per-participant stats) on `admin.listen`, the media workers,
//! and with `cluster.redis_url` the node's entry in the SFU node registry
//! (heartbeat, load, drain on SIGTERM). See docs/sfu.md, "Several nodes".

use crate::config::{Config, Secrets};
use crate::http::{self, HttpOptions};
use crate::run::{announce, wait_for_signal};
use anyhow::Context;
use palaver_sfu::Sfu;
use palaver_signaling::sfu_nodes::NodeStatus;
use palaver_signaling::sfu_registry::SfuRegistry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Runs the SFU role until SIGTERM or SIGINT.
pub async fn run(cfg: &Config, secrets: &Secrets) -> anyhow::Result<()> {
    let secret = secrets.sfu_token_secret.clone().context(
        "config key `sfu.token_secret`: required by `palaver sfu` (shared with signaling)",
    )?;
    let sfu = Sfu::start(
        &cfg.sfu.driver_config(),
        secret.expose().as_bytes().to_vec(),
    )
    .context("cannot start the SFU (config section `sfu`)")?;
    let listener = TcpListener::bind(cfg.sfu.listen)
        .await
        .with_context(|| format!("cannot listen on sfu.listen = {}", cfg.sfu.listen))?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let opts = HttpOptions {
        header_timeout: cfg.server.header_timeout,
        max_connections: 10_000,
        shutdown_timeout: cfg.server.shutdown_timeout,
    };
    let app = palaver_sfu::http::routes(sfu.clone())
        .route("/healthz", axum::routing::get(|| async { "ok\n" }));
    let task = tokio::spawn(http::serve(listener, app, opts.clone(), stop.clone()));
    let admin = TcpListener::bind(cfg.admin.listen)
        .await
        .with_context(|| format!("cannot listen on admin.listen = {}", cfg.admin.listen))?;
    announce("admin", admin.local_addr()?);
    let admin_app = crate::admin::routes(crate::admin::AdminState {
        registry: Arc::new(prometheus_client::registry::Registry::default()),
        verifier: None,
        token: secrets.admin_token.clone(),
        turn: None,
        store: None,
        sfu: Some(sfu.clone()),
    });
    let admin_opts = HttpOptions {
        max_connections: 256,
        ..opts.clone()
    };
    let admin_task = tokio::spawn(http::serve(admin, admin_app, admin_opts, stop.clone()));
    let node = match &secrets.redis_url {
        Some(url) => Some(Registered::start(cfg, url.expose(), &sfu, addr).await?),
        None => None,
    };
    for udp in sfu.udp_addrs() {
        announce("sfu udp", udp);
    }
    announce("sfu", addr);
    tracing::info!(%addr, "palaver sfu started");
    wait_for_signal().await?;
    if let Some(node) = node {
        node.drain(&sfu, cfg.sfu.drain_timeout).await;
    }
    stop.cancel();
    let _ = task.await;
    let _ = admin_task.await;
    sfu.shutdown();
    Ok(())
}

/// This node's entry in the registry, renewed by a heartbeat task.
struct Registered {
    registry: SfuRegistry,
    id: String,
    draining: Arc<AtomicBool>,
    beat_now: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Registered {
    async fn start(
        cfg: &Config,
        redis_url: &str,
        sfu: &Arc<Sfu>,
        addr: std::net::SocketAddr,
    ) -> anyhow::Result<Registered> {
        let registry = SfuRegistry::connect(redis_url, &cfg.cluster.name)
            .await
            .context("cannot reach Redis (cluster.redis_url)")?;
        let id = cfg
            .cluster
            .node_id
            .clone()
            .unwrap_or_else(|| format!("sfu-{:016x}", rand::random::<u64>()));
        let url = cfg
            .sfu
            .public_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("http://{addr}"));
        let base = NodeStatus {
            id: id.clone(),
            url,
            candidates: sfu.udp_addrs().iter().map(|a| a.to_string()).collect(),
            capacity: cfg.sfu.capacity,
            participants: 0,
            rooms: 0,
            draining: false,
        };
        let beat = Heartbeat {
            registry: registry.clone(),
            sfu: sfu.clone(),
            base,
            ttl: cfg.sfu.node_ttl,
            draining: Arc::new(AtomicBool::new(false)),
            beat_now: Arc::new(tokio::sync::Notify::new()),
        };
        // The first entry before the node says it is up.
        beat.once()
            .await
            .context("cannot register in Redis (cluster.redis_url)")?;
        // Kicks outlive this node: a room that moves keeps them.
        sfu.set_kick_log(Arc::new(crate::sfu_kicks::RegistryKicks::start(
            registry.clone(),
        )));
        tracing::info!(sfu_node = %id, "registered in the SFU node registry");
        let (draining, beat_now) = (beat.draining.clone(), beat.beat_now.clone());
        let stop = CancellationToken::new();
        let task = tokio::spawn(beat.run(cfg.sfu.heartbeat, stop.clone()));
        Ok(Registered {
            registry,
            id,
            draining,
            beat_now,
            stop,
            task,
        })
    }

    /// Says the node drains (signaling moves its rooms and places no new
    /// ones here), waits until it is empty or `timeout`, then deregisters.
    async fn drain(self, sfu: &Sfu, timeout: std::time::Duration) {
        tracing::info!(sfu_node = %self.id, "draining");
        self.draining.store(true, Ordering::Relaxed);
        self.beat_now.notify_one();
        let empty = async {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
            while sfu.stats().await.participants > 0 {
                tick.tick().await;
            }
        };
        if tokio::time::timeout(timeout, empty).await.is_err() {
            tracing::warn!("participants still connected at sfu.drain_timeout");
        }
        self.stop.cancel();
        let _ = self.task.await;
        if let Err(e) = self.registry.deregister(&self.id).await {
            tracing::warn!(error = %e, "cannot remove this node from the registry");
        }
    }
}

/// Renews the node's status (load from the workers) every `heartbeat`.
struct Heartbeat {
    registry: SfuRegistry,
    sfu: Arc<Sfu>,
    base: NodeStatus,
    ttl: std::time::Duration,
    draining: Arc<AtomicBool>,
    beat_now: Arc<tokio::sync::Notify>,
}

impl Heartbeat {
    async fn once(&self) -> Result<(), palaver_signaling::sfu_registry::RegistryError> {
        let stats = self.sfu.stats().await;
        let status = NodeStatus {
            participants: u32::try_from(stats.participants).unwrap_or(u32::MAX),
            rooms: u32::try_from(stats.rooms).unwrap_or(u32::MAX),
            draining: self.draining.load(Ordering::Relaxed),
            ..self.base.clone()
        };
        self.registry.beat(&status, self.ttl).await
    }

    async fn run(self, every: std::time::Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
                _ = self.beat_now.notified() => {}
            }
            if let Err(e) = self.once().await {
                tracing::warn!(error = %e, "cannot renew this SFU node's registry entry");
            }
        }
    }
}
