//! Wiring of the Redis queue into the roles: the media role's side
//! (dispatcher, results consumer, internal endpoint) and the worker loop
//! of `palaver transcoder`.

use super::Streams;
use super::dispatch::MediaSide;
use super::redis_io::Queue;
use super::worker::WorkerSide;
use crate::config::{Config, Secrets};
use anyhow::Context;
use palaver_media_store::Media;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

async fn connect(cfg: &Config, secrets: &Secrets, role: &str) -> anyhow::Result<Queue> {
    let url = secrets
        .transcoder_redis_url
        .as_ref()
        .context("transcoder.queue_backend = \"redis\" needs transcoder.redis_url")?;
    let consumer = match &cfg.cluster.node_id {
        Some(n) => format!("{role}-{n}"),
        None => format!("{role}-{:016x}", rand::random::<u64>()),
    };
    Queue::connect(url.expose(), Streams::new(&cfg.cluster.name), consumer)
        .await
        .context("cannot connect to Redis (cluster.redis_url) for the transcoding queue")
}

/// The media role's side; with `transcoder.in_process` also a worker
/// loop in this process.
pub async fn start_media(
    media: Arc<Media>,
    cfg: &Config,
    secrets: &Secrets,
    registry: &mut Registry,
    stop: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let t = &cfg.transcoder;
    let queue = connect(cfg, secrets, "media").await?;
    let dir = cfg.media_dir();
    let key = crate::media::generated(&dir.join("transcoder.key"), || {
        hex::encode(rand::random::<[u8; 32]>())
    })?;
    let listener = tokio::net::TcpListener::bind(t.internal_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on transcoder.internal_listen = {}",
                t.internal_listen
            )
        })?;
    let addr = listener.local_addr()?;
    let url = t
        .internal_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"))
        .trim_end_matches('/')
        .to_owned();
    let side = Arc::new(MediaSide::new(
        media,
        queue,
        super::TokenKey::new(key.trim().as_bytes()),
        url,
        dir.join("tmp").join("remote"),
        t.poll_interval,
    ));
    side.stats.register(registry);
    let app = super::internal::routes(side.clone(), t.max_output_bytes);
    let s = stop.clone();
    let http = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(s.cancelled_owned());
        if let Err(e) = serve.await {
            tracing::warn!(error = %e, "transcoder internal endpoint stopped");
        }
    });
    tracing::info!(%addr, "transcoder internal endpoint listening");
    let queue_tasks = super::dispatch::start(side, stop.clone()).await?;
    let local = if t.in_process {
        let w = worker_side(cfg, secrets, "worker").await?;
        Some(tokio::spawn(super::worker::run(w, stop)))
    } else {
        None
    };
    Ok(tokio::spawn(async move {
        let _ = queue_tasks.await;
        if let Some(l) = local {
            let _ = l.await;
        }
        let _ = http.await;
    }))
}

async fn worker_side(
    cfg: &Config,
    secrets: &Secrets,
    role: &str,
) -> anyhow::Result<Arc<WorkerSide>> {
    Ok(Arc::new(WorkerSide {
        queue: connect(cfg, secrets, role).await?,
        cfg: cfg.transcoder.clone(),
        max_input: cfg.media.max_processed_bytes,
        cmd: crate::transcode::worker_command()?,
        work_dir: cfg.data_dir.join("transcoder-work").join(role),
        http: reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()?,
        stats: Default::default(),
    }))
}

/// The whole `palaver transcoder` process on the Redis queue: the worker
/// loop and an admin listener (`/metrics`, `/healthz`) until SIGTERM.
pub async fn worker_role(
    cfg: Config,
    secrets: Secrets,
    mut registry: Registry,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let w = worker_side(&cfg, &secrets, "worker").await?;
    w.stats.register(&mut registry);
    let q = w.queue.clone();
    let probe: crate::ops::Probe = Arc::new(move || {
        let q = q.clone();
        Box::pin(async move { q.ping().await.map_err(|_| "redis".to_owned()) })
    });
    let admin = crate::ops::admin_listener(&cfg, &secrets, registry, probe, stop.clone()).await?;
    tracing::info!(consumer = %w.queue.consumer, "palaver transcoder started on the Redis queue");
    let worker = tokio::spawn(super::worker::run(w, stop.clone()));
    crate::run::wait_for_signal().await?;
    stop.cancel();
    worker.await??;
    let _ = admin.await;
    Ok(())
}
