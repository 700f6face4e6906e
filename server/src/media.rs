//! The media role: builds the media service from the configuration, binds
//! its listener and runs its maintenance (expiry, stale uploads, orphan
//! blobs, master-key rotation).

use crate::config::{Config, MediaStorage, Secrets};
use anyhow::Context;
use async_trait::async_trait;
use palaver_media_store::{
    AuthFailureRate, BlobStore, CapabilityKey, DeviceAuth, HttpConfig, HttpStats, Limits,
    LocalStore, MasterKeys, Media, S3Store,
};
use palaver_messaging::Store;
use palaver_messaging::policy::{hash_credential, hashes_equal};
use palaver_proto::DeviceId;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Device credentials checked against the messaging store.
struct StoreAuth(Arc<dyn Store>);

impl std::fmt::Debug for StoreAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreAuth")
    }
}

#[async_trait]
impl DeviceAuth for StoreAuth {
    async fn authenticate(&self, device: u64, credential: &str) -> Option<u64> {
        let rec = self.0.device(DeviceId(device)).await.ok()??;
        (!rec.revoked && hashes_equal(&rec.credential_hash, &hash_credential(credential)))
            .then_some(rec.account.0)
    }
}

/// Reads a generated secret, creating it (mode 0600) on first start.
pub(crate) fn generated(path: &Path, make: impl FnOnce() -> String) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            f.write_all(make().as_bytes())?;
            f.sync_all()?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The configured blob backend; an S3 bucket is checked (reachable, the
/// credentials accepted) before the listener starts.
async fn blob_store(
    cfg: &Config,
    secrets: &Secrets,
    dir: &Path,
) -> anyhow::Result<Arc<dyn BlobStore>> {
    match cfg.media.storage {
        MediaStorage::Local => Ok(Arc::new(
            LocalStore::open(&dir.join("blobs"))
                .with_context(|| format!("cannot open the media folder {}", dir.display()))?,
        )),
        MediaStorage::S3 => {
            let secret = secrets
                .media_s3_secret_access_key
                .as_ref()
                .context("media.s3.secret_access_key is required")?;
            let store = S3Store::new(&cfg.media.s3.store_config(secret));
            store.check().await.with_context(|| {
                format!(
                    "cannot use the S3 bucket media.s3.bucket = {}",
                    cfg.media.s3.bucket
                )
            })?;
            Ok(Arc::new(store))
        }
    }
}

/// A running media role.
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    /// The HTTPS listener (`media.tls_listen`).
    pub tls_addr: Option<SocketAddr>,
    /// What the main listener's media proxy sends so that the media store
    /// counts failed logins per client, not per proxy (random per process).
    pub proxy_secret: String,
    pub media: Arc<Media>,
    pub server: JoinHandle<()>,
    pub maintenance: JoinHandle<()>,
    /// The in-process transcoding queue, when it runs here.
    pub transcoder: Option<JoinHandle<()>>,
}

/// Opens the media service (metadata, blobs, keys) without a listener.
pub async fn open(
    cfg: &Config,
    secrets: &Secrets,
    registry: &mut prometheus_client::registry::Registry,
) -> anyhow::Result<Arc<Media>> {
    let m = &cfg.media;
    let dir = cfg.media_dir();
    crate::run::prepare_data_dir(&dir)?;
    let cap_secret = match &secrets.media_capability_secret {
        Some(s) => s.expose().to_owned(),
        None => generated(&dir.join("capability.key"), || {
            hex::encode(rand::random::<[u8; 32]>())
        })?,
    };
    let keys_text = match &secrets.media_master_keys {
        Some(s) => s.expose().to_owned(),
        None => generated(&dir.join("master.keys"), || MasterKeys::generate_text("k1"))?,
    };
    let keys = MasterKeys::parse(&keys_text).context("media.master_keys")?;
    let blobs = blob_store(cfg, secrets, &dir).await?;
    let limits = Limits {
        max_single_upload: m.max_single_upload_bytes,
        max_sealed: m.max_sealed_bytes,
        max_processed: m.max_processed_bytes,
        quota: m.quota_bytes,
        upload_ttl: m.upload_ttl,
        link_ttl: m.link_ttl,
        max_ranges: m.max_ranges,
    };
    let media = Arc::new(
        Media::open(
            &dir,
            blobs,
            keys,
            CapabilityKey::new(cap_secret.trim().as_bytes()),
            limits,
        )
        .context("cannot open the media store")?,
    );
    media.stats.register(registry);
    Ok(media)
}

/// Binds `media.tls_listen` with the process's TLS settings (`[tls]`).
async fn tls_listener(
    cfg: &Config,
    tls: Option<&crate::tls::Tls>,
) -> anyhow::Result<Option<palaver_media_store::http::TlsListener>> {
    let Some(addr) = cfg.media.tls_listen else {
        return Ok(None);
    };
    let tls = tls.context("media.tls_listen needs the [tls] certificate")?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on media.tls_listen = {addr}"))?;
    Ok(Some(palaver_media_store::http::TlsListener {
        listener,
        config: tls.config.clone(),
        handshake_timeout: tls.handshake_timeout,
    }))
}

/// The base of the URLs handed out: `media.public_url`, else the HTTPS
/// listener, else the plain one.
fn public_url(cfg: &Config, addr: SocketAddr, tls_addr: Option<SocketAddr>) -> String {
    let own = match tls_addr {
        Some(a) => format!("https://{a}"),
        None => format!("http://{addr}"),
    };
    cfg.media
        .public_url
        .clone()
        .unwrap_or(own)
        .trim_end_matches('/')
        .to_owned()
}

/// Starts the media listeners (plain, and HTTPS when `media.tls_listen` is
/// set; `tls` is the process's `[tls]` setup), its maintenance task and the
/// transcoding queue (`[transcoder]`).
pub async fn start(
    cfg: &Config,
    secrets: &Secrets,
    store: Arc<dyn Store>,
    registry: &mut prometheus_client::registry::Registry,
    tls: Option<&crate::tls::Tls>,
    stop: CancellationToken,
) -> anyhow::Result<Running> {
    let m = &cfg.media;
    let media = open(cfg, secrets, registry).await?;
    let transcoder =
        crate::transcode::start_in_media(media.clone(), cfg, secrets, registry, stop.clone())
            .await?;
    let http_stats = Arc::new(HttpStats::default());
    http_stats.register(registry);
    // The first maintenance pass (at start-up) also removes orphan blobs.
    let listener = TcpListener::bind(m.listen)
        .await
        .with_context(|| format!("cannot listen on media.listen = {}", m.listen))?;
    let addr = listener.local_addr()?;
    let secure = tls_listener(cfg, tls).await?;
    let tls_addr = match &secure {
        Some(t) => Some(t.listener.local_addr()?),
        None => None,
    };
    let proxy_secret = hex::encode(rand::random::<[u8; 32]>());
    let http = HttpConfig {
        public_url: public_url(cfg, addr, tls_addr),
        max_connections: m.max_connections,
        header_timeout: m.header_timeout,
        idle_timeout: m.idle_timeout,
        send_timeout: m.send_timeout,
        body_timeout: m.body_timeout,
        auth_failures: AuthFailureRate {
            burst: m.auth_failures_per_ip.burst,
            per_minute: m.auth_failures_per_ip.per_minute,
        },
        proxy_secret: Some(proxy_secret.clone()),
    };
    let server = tokio::spawn(palaver_media_store::http::serve_with_tls(
        listener,
        secure,
        media.clone(),
        Arc::new(StoreAuth(store)),
        http,
        http_stats,
        stop.clone(),
    ));
    let media_handle = media.clone();
    let every = m.maintenance_interval;
    let maintenance = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => media.maintain().await,
            }
        }
    });
    Ok(Running {
        addr,
        tls_addr,
        proxy_secret,
        media: media_handle,
        server,
        maintenance,
        transcoder,
    })
}

/// What `palaver media`'s `/readyz` asks besides its own databases.
#[derive(Clone, Default)]
pub struct Deps {
    /// The bucket (`media.storage = "s3"`): HeadBucket.
    pub s3: Option<S3Store>,
    /// The Redis of the job queue (`transcoder.queue_backend = "redis"`).
    pub redis: Option<redis::Client>,
}

impl Deps {
    pub fn of(cfg: &Config, secrets: &Secrets) -> anyhow::Result<Deps> {
        let s3 = match (cfg.media.storage, &secrets.media_s3_secret_access_key) {
            (MediaStorage::S3, Some(k)) => Some(S3Store::new(&cfg.media.s3.store_config(k))),
            _ => None,
        };
        let redis = match (&cfg.transcoder.queue_backend, &secrets.transcoder_redis_url) {
            (crate::config::QueueBackend::Redis, Some(u)) if cfg.transcoder.enabled => {
                Some(redis::Client::open(u.expose()).context("transcoder.redis_url")?)
            }
            _ => None,
        };
        Ok(Deps { s3, redis })
    }

    async fn check(&self) -> Result<(), String> {
        if let Some(s3) = &self.s3 {
            s3.check().await.map_err(|_| "s3".to_owned())?;
        }
        if let Some(r) = &self.redis {
            let ping = async {
                let mut c = r.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async::<String>(&mut c).await
            };
            match tokio::time::timeout(std::time::Duration::from_secs(3), ping).await {
                Ok(Ok(_)) => {}
                _ => return Err("redis".to_owned()),
            }
        }
        Ok(())
    }
}

/// Readiness of `palaver media`: the messaging store (device
/// credentials), the media metadata database, and `deps`.
pub fn probe(store: Arc<dyn Store>, media: Arc<Media>, deps: Deps) -> crate::ops::Probe {
    Arc::new(move || {
        let (store, media, deps) = (store.clone(), media.clone(), deps.clone());
        Box::pin(async move {
            store.health().await.map_err(|_| "database".to_owned())?;
            media
                .jobs_in_state("running")
                .await
                .map_err(|_| "media database".to_owned())?;
            deps.check().await
        })
    })
}

/// `[tls]` for `palaver media` alone, when `media.tls_listen` is set: the
/// certificate loaded (its fingerprint printed) and reloaded on SIGHUP and
/// file changes until `stop`.
pub fn media_tls(cfg: &Config, stop: CancellationToken) -> anyhow::Result<Option<crate::tls::Tls>> {
    if cfg.media.tls_listen.is_none() {
        return Ok(None);
    }
    let Some(tls) = crate::tls::setup(&cfg.tls, &cfg.data_dir)? else {
        anyhow::bail!("media.tls_listen needs the [tls] certificate");
    };
    crate::run::announce_text("tls certificate sha256", &tls.resolver.fingerprint());
    // The task ends with `stop`; it is not awaited at shutdown.
    drop(crate::tls::spawn_reload(
        &tls,
        cfg.tls.reload_interval,
        stop,
    )?);
    Ok(Some(tls))
}
