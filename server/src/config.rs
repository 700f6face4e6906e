//! The configuration file: one TOML document, unknown keys rejected,
//! overridden by `PALAVER__SECTION__KEY` environment variables and then by
//! command-line flags, validated before anything starts.

#[cfg(test)]
mod deploy_tests;
mod media_s3;
mod turn_regions;

pub use media_s3::{MediaS3Section, MediaStorage};
use palaver_signaling::config::{Rate, RateLimits};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Prefix of environment overrides: `PALAVER__SERVER__LISTEN=127.0.0.1:9000`.
pub const ENV_PREFIX: &str = "PALAVER__";

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
}

pub(crate) fn key_err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// A secret value. Its `Debug` never shows it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where embedded state lives: the SQLite file and the media folder.
    pub data_dir: PathBuf,
    pub server: ServerSection,
    pub log: LogSection,
    pub storage: StorageSection,
    pub cluster: ClusterSection,
    pub signaling: SignalingSection,
    pub verifier: VerifierSection,
    pub admin: AdminSection,
    pub calls: CallsSection,
    pub media: MediaSection,
    /// Transcoding of processed uploads (docs/transcoder.md).
    pub transcoder: TranscoderSection,
    /// The STUN/TURN server (`palaver turn`, and inside `palaver serve`).
    pub turn: palaver_turn::Config,
    /// Which roles `palaver serve` runs.
    pub serve: ServeSection,
    /// The SFU for group calls (`palaver sfu`, and inside `palaver serve`).
    pub sfu: crate::sfu::SfuSection,
    /// The browser client served at `/` (docs/web.md).
    pub web: crate::web::WebSection,
    /// TLS on the main listener (docs/tls.md).
    pub tls: crate::tls::TlsSection,
    /// Push for offline devices (docs/push.md).
    pub push: crate::push::PushSection,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeSection {
    /// Run the STUN/TURN server inside `palaver serve`.
    pub turn: bool,
    /// Run the SFU inside `palaver serve`.
    pub sfu: bool,
}

impl Default for ServeSection {
    fn default() -> Self {
        ServeSection {
            turn: true,
            sfu: true,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("palaver-data"),
            server: ServerSection::default(),
            log: LogSection::default(),
            storage: StorageSection::default(),
            cluster: ClusterSection::default(),
            signaling: SignalingSection::default(),
            verifier: VerifierSection::default(),
            admin: AdminSection::default(),
            calls: CallsSection::default(),
            turn: palaver_turn::Config::default(),
            serve: ServeSection::default(),
            media: MediaSection::default(),
            transcoder: TranscoderSection::default(),
            sfu: crate::sfu::SfuSection::default(),
            web: crate::web::WebSection::default(),
            tls: crate::tls::TlsSection::default(),
            push: crate::push::PushSection::default(),
        }
    }
}

/// `[transcoder]`: jobs, their limits and the outputs (docs/transcoder.md).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TranscoderSection {
    /// Processed uploads of video, audio and images get a transcoding job.
    pub enabled: bool,
    /// Run the jobs inside the media role (`palaver serve`, `palaver
    /// media`); false leaves them to `palaver transcoder` processes on the
    /// same machine.
    pub in_process: bool,
    /// Jobs at once; 0 means one per CPU core.
    pub workers: usize,
    /// Jobs waiting in memory; the rest wait in the database.
    pub queue: usize,
    /// Runs of a job (worker crash, time limit) before it fails for good.
    pub max_attempts: u32,
    /// How often `palaver transcoder` looks for new jobs.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Wall-clock limit of one job; the worker process is killed after it.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Address space of a worker process (RLIMIT_AS).
    pub max_memory_bytes: u64,
    /// CPU time of a worker process (RLIMIT_CPU).
    pub max_cpu_secs: u64,
    /// Largest file a worker may write (RLIMIT_FSIZE).
    pub max_output_bytes: u64,
    /// Longest video or voice note.
    #[serde(with = "humantime_serde")]
    pub max_duration: Duration,
    pub max_image_pixels: u64,
    pub max_video_pixels: u64,
    pub max_frames: u64,
    pub video_max_side: u32,
    pub video_max_short_side: u32,
    pub video_max_bitrate: u64,
    pub video_crf: u32,
    pub video_preset: String,
    pub video_max_fps: u32,
    pub audio_bitrate: u64,
    pub voice_bitrate: u64,
    pub image_max_side: u32,
    /// `jpeg` or `webp`.
    pub image_format: palaver_transcoder::plan::ImageFormat,
    pub thumb_side: u32,
    /// Where jobs wait: `local` (in process, or `palaver transcoder`
    /// polling the media database on the same machine) or `redis` (a Redis
    /// stream on `cluster.redis_url`; workers anywhere).
    pub queue_backend: QueueBackend,
    /// `redis` queue: the Redis of the queue (a secret); default
    /// `cluster.redis_url`. Workers need only this, not the cluster's.
    pub redis_url: Option<Secret>,
    pub redis_url_file: Option<PathBuf>,
    /// `redis` queue: the media role's job endpoint for workers.
    pub internal_listen: SocketAddr,
    /// `redis` queue: the URL workers reach `internal_listen` at; default
    /// `http://` and the bound address.
    pub internal_url: Option<String>,
    /// `redis` queue: a job a worker took and has not finished after this
    /// long (its worker died) goes to another worker. Longer than `timeout`.
    #[serde(with = "humantime_serde")]
    pub reclaim_after: Duration,
}

/// `transcoder.queue_backend`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    Local,
    Redis,
}

impl Default for TranscoderSection {
    fn default() -> Self {
        let s = palaver_transcoder::Settings::default();
        let l = palaver_transcoder::Limits::default();
        let p = palaver_transcoder::worker::ProcessLimits::default();
        TranscoderSection {
            enabled: true,
            in_process: true,
            workers: 0,
            queue: 1024,
            max_attempts: 3,
            poll_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(600),
            max_memory_bytes: p.memory_bytes,
            max_cpu_secs: p.cpu_secs,
            max_output_bytes: p.file_bytes,
            max_duration: Duration::from_millis(l.max_duration_ms),
            max_image_pixels: l.max_image_pixels,
            max_video_pixels: l.max_video_pixels,
            max_frames: l.max_frames,
            video_max_side: s.video_max_side,
            video_max_short_side: s.video_max_short_side,
            video_max_bitrate: s.video_max_bitrate,
            video_crf: s.video_crf,
            video_preset: s.video_preset,
            video_max_fps: s.video_max_fps,
            audio_bitrate: s.audio_bitrate,
            voice_bitrate: s.voice_bitrate,
            image_max_side: s.image_max_side,
            image_format: s.image_format,
            thumb_side: s.thumb_side,
            queue_backend: QueueBackend::Local,
            redis_url: None,
            redis_url_file: None,
            internal_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            internal_url: None,
            reclaim_after: Duration::from_secs(660),
        }
    }
}

impl TranscoderSection {
    /// Output settings for the transcoder library.
    pub fn settings(&self) -> palaver_transcoder::Settings {
        palaver_transcoder::Settings {
            video_max_side: self.video_max_side,
            video_max_short_side: self.video_max_short_side,
            video_max_bitrate: self.video_max_bitrate,
            video_crf: self.video_crf,
            video_preset: self.video_preset.clone(),
            video_max_fps: self.video_max_fps,
            audio_bitrate: self.audio_bitrate,
            voice_bitrate: self.voice_bitrate,
            image_max_side: self.image_max_side,
            image_format: self.image_format,
            thumb_side: self.thumb_side,
            ..Default::default()
        }
    }

    /// Input limits, the largest input being `media.max_processed_bytes`.
    pub fn limits(&self, max_input_bytes: u64) -> palaver_transcoder::Limits {
        palaver_transcoder::Limits {
            max_input_bytes,
            max_duration_ms: self.max_duration.as_millis() as u64,
            max_image_pixels: self.max_image_pixels,
            max_video_pixels: self.max_video_pixels,
            max_side: palaver_transcoder::Limits::default().max_side,
            max_frames: self.max_frames,
        }
    }

    /// Resource limits of a worker process.
    pub fn process_limits(&self) -> palaver_transcoder::worker::ProcessLimits {
        palaver_transcoder::worker::ProcessLimits {
            memory_bytes: self.max_memory_bytes,
            cpu_secs: self.max_cpu_secs,
            file_bytes: self.max_output_bytes,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Main listener: WebSocket, health checks.
    pub listen: SocketAddr,
    /// Most simultaneous connections on the main listener.
    pub max_connections: usize,
    /// Time a client has to send its request headers.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Time given to open connections to finish at shutdown.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:8080".parse().expect("valid default"),
            max_connections: 1_100_000,
            header_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A tracing filter such as `info` or `palaver_signaling=debug,info`.
    /// `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// One embedded database file: one node.
    Sqlite,
    /// A PostgreSQL server shared by every node.
    Postgres,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    Full,
    Normal,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    pub backend: Backend,
    /// SQLite database file; default `<data_dir>/palaver.db`.
    pub sqlite_path: Option<PathBuf>,
    /// `full` fsyncs every commit (survives power loss); `normal` survives
    /// process crashes only.
    pub durability: Durability,
    /// Most writes grouped into one commit.
    pub max_batch: usize,
    /// The PostgreSQL connection URL (`postgres://user:password@host/db`),
    /// required for `backend = "postgres"`. A secret.
    pub postgres_url: Option<Secret>,
    pub postgres_url_file: Option<PathBuf>,
    /// The schema holding Palaver's tables; created if missing.
    pub postgres_schema: String,
    /// Most PostgreSQL connections per process.
    pub postgres_pool_size: usize,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            backend: Backend::Sqlite,
            sqlite_path: None,
            durability: Durability::Full,
            max_batch: 1024,
            postgres_url: None,
            postgres_url_file: None,
            postgres_schema: "public".into(),
            postgres_pool_size: 16,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SignalingSection {
    pub max_frame_bytes: usize,
    pub read_buffer_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub auth_timeout: Duration,
    pub max_devices: u32,
    #[serde(with = "humantime_serde")]
    pub code_ttl: Duration,
    pub code_max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub envelope_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    pub inflight_window: usize,
    pub max_envelopes_per_send: usize,
    /// Most members of a group, the creator included.
    pub max_group_members: usize,
    #[serde(with = "humantime_serde")]
    pub revoke_window: Duration,
    #[serde(with = "humantime_serde")]
    pub edit_window: Duration,
    #[serde(with = "humantime_serde")]
    pub link_code_ttl: Duration,
    pub max_settings_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub status_ttl: Duration,
    pub max_status_audience: usize,
    pub rate_limits: RateLimits,
}

impl Default for SignalingSection {
    fn default() -> Self {
        let d = palaver_signaling::GatewayConfig::default();
        SignalingSection {
            max_frame_bytes: d.max_frame_bytes,
            read_buffer_bytes: d.read_buffer_bytes,
            idle_timeout: d.idle_timeout,
            auth_timeout: d.auth_timeout,
            max_devices: d.max_devices,
            code_ttl: d.code_ttl,
            code_max_attempts: d.code_max_attempts,
            envelope_ttl: d.envelope_ttl,
            dedup_window: d.dedup_window,
            inflight_window: d.inflight_window,
            max_envelopes_per_send: d.max_envelopes_per_send,
            max_group_members: d.max_group_members,
            revoke_window: d.revoke_window,
            edit_window: d.edit_window,
            link_code_ttl: d.link_code_ttl,
            max_settings_bytes: d.max_settings_bytes,
            status_ttl: d.status_ttl,
            max_status_audience: d.max_status_audience,
            rate_limits: d.rate_limits,
        }
    }
}

impl SignalingSection {
    pub fn gateway_config(
        &self,
        calls: &CallsSection,
        turn_secret: Option<&Secret>,
    ) -> palaver_signaling::GatewayConfig {
        palaver_signaling::GatewayConfig {
            calls: palaver_signaling::calls::CallConfig {
                ring_timeout: calls.ring_timeout,
                reconnect_grace: calls.reconnect_grace,
            },
            ice: palaver_signaling::calls::IceConfig {
                stun_urls: calls.stun_urls.clone(),
                turn_urls: calls.turn_urls.clone(),
                turn_secret: turn_secret.map(|s| s.expose().to_owned()),
                credential_ttl: calls.turn_credential_ttl,
                turn_regions: calls.region_servers(),
                region: calls.region.clone(),
            },
            max_frame_bytes: self.max_frame_bytes,
            read_buffer_bytes: self.read_buffer_bytes,
            idle_timeout: self.idle_timeout,
            auth_timeout: self.auth_timeout,
            max_devices: self.max_devices,
            code_ttl: self.code_ttl,
            code_max_attempts: self.code_max_attempts,
            envelope_ttl: self.envelope_ttl,
            dedup_window: self.dedup_window,
            inflight_window: self.inflight_window,
            max_envelopes_per_send: self.max_envelopes_per_send,
            max_group_members: self.max_group_members,
            revoke_window: self.revoke_window,
            edit_window: self.edit_window,
            link_code_ttl: self.link_code_ttl,
            max_settings_bytes: self.max_settings_bytes,
            status_ttl: self.status_ttl,
            max_status_audience: self.max_status_audience,
            rate_limits: self.rate_limits.clone(),
            ..palaver_signaling::GatewayConfig::default()
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CallsSection {
    /// How long a call rings before it ends unanswered.
    #[serde(with = "humantime_serde")]
    pub ring_timeout: Duration,
    /// How long a party whose connection dropped may rejoin.
    #[serde(with = "humantime_serde")]
    pub reconnect_grace: Duration,
    /// STUN URLs handed to call participants.
    pub stun_urls: Vec<String>,
    /// TURN URLs handed to call participants with fresh credentials.
    pub turn_urls: Vec<String>,
    /// Secret shared with the TURN server for time-limited credentials.
    pub turn_secret: Option<Secret>,
    pub turn_secret_file: Option<PathBuf>,
    /// Lifetime of the TURN credentials issued for a call.
    #[serde(with = "humantime_serde")]
    pub turn_credential_ttl: Duration,
    /// This signaling node's region: its TURN servers are listed first.
    pub region: Option<String>,
    /// TURN servers by region (`[[calls.turn_servers]]`), all sharing
    /// `turn_secret`; handed out before `turn_urls` (docs/deployment.md).
    pub turn_servers: Vec<TurnServersEntry>,
}

/// `[[calls.turn_servers]]`: the TURN servers of one region.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TurnServersEntry {
    pub region: String,
    /// `turn:`/`turns:` URLs.
    pub urls: Vec<String>,
}

impl Default for CallsSection {
    fn default() -> Self {
        let d = palaver_signaling::GatewayConfig::default();
        CallsSection {
            ring_timeout: d.calls.ring_timeout,
            reconnect_grace: d.calls.reconnect_grace,
            stun_urls: Vec::new(),
            turn_urls: Vec::new(),
            turn_secret: None,
            turn_secret_file: None,
            turn_credential_ttl: d.ice.credential_ttl,
            region: None,
            turn_servers: Vec::new(),
        }
    }
}

/// Several signaling nodes: routing between them through Redis.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// `redis://[:password@]host:port/`; absent: a single node, routing in
    /// process. A secret.
    pub redis_url: Option<Secret>,
    pub redis_url_file: Option<PathBuf>,
    /// This node's name in the registry; default: a random one per start.
    pub node_id: Option<String>,
    /// Prefix of the cluster's Redis keys and channels: clusters sharing a
    /// Redis keep apart by name.
    pub name: String,
    /// How often this node renews its registry entries.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// How long entries of a node that stopped renewing them stay.
    #[serde(with = "humantime_serde")]
    pub registry_ttl: Duration,
    /// How often each connection re-reads its queue, in case a
    /// notification between nodes was lost.
    #[serde(with = "humantime_serde")]
    pub catch_up_interval: Duration,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            redis_url: None,
            redis_url_file: None,
            node_id: None,
            name: "palaver".into(),
            heartbeat: Duration::from_secs(5),
            registry_ttl: Duration::from_secs(15),
            catch_up_interval: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VerifierKind {
    /// Logs codes and shows them on the admin listener. Development only.
    Dev,
    /// POSTs each code to an SMS gateway.
    Webhook,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VerifierSection {
    pub kind: VerifierKind,
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 key signing webhook bodies (`X-Palaver-Signature`).
    pub webhook_secret: Option<Secret>,
    pub webhook_secret_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,
}

impl Default for VerifierSection {
    fn default() -> Self {
        VerifierSection {
            kind: VerifierKind::Dev,
            webhook_url: None,
            webhook_secret: None,
            webhook_secret_file: None,
            webhook_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Admin listener: `/metrics`, `/healthz`, development code look-up.
    pub listen: SocketAddr,
    /// Bearer token required on the admin listener when set.
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: "127.0.0.1:9090".parse().expect("valid default"),
            token: None,
            token_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MediaSection {
    /// Run the media store inside `palaver serve`.
    pub enabled: bool,
    /// Media listener: uploads and downloads (docs/media.md), plain HTTP
    /// with `sendfile`, for a TLS proxy in front and the main listener's
    /// media proxy.
    pub listen: SocketAddr,
    /// A second media listener speaking HTTPS with the `[tls]`
    /// certificate; capability URLs then default to `https://<tls_listen>`.
    pub tls_listen: Option<SocketAddr>,
    /// Blobs, metadata and staging; default `<data_dir>/media`.
    pub dir: Option<PathBuf>,
    /// Base of the capability URLs handed out; default `http://<listen>`.
    pub public_url: Option<String>,
    pub max_connections: usize,
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    pub max_single_upload_bytes: u64,
    pub max_sealed_bytes: u64,
    pub max_processed_bytes: u64,
    pub quota_bytes: u64,
    #[serde(with = "humantime_serde")]
    pub upload_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub link_ttl: Duration,
    pub max_ranges: usize,
    #[serde(with = "humantime_serde")]
    pub maintenance_interval: Duration,
    /// HMAC key of capability URLs (at least 32 characters). Default: a
    /// random key generated once in `<dir>/capability.key`.
    pub capability_secret: Option<Secret>,
    pub capability_secret_file: Option<PathBuf>,
    /// Master keys, lines `KID:HEX64`, the first active. Default: one
    /// random key generated once in `<dir>/master.keys`.
    pub master_keys: Option<Secret>,
    pub master_keys_file: Option<PathBuf>,
    /// Requests with wrong device credentials per client address (IPv4,
    /// or IPv6 /64); past the limit, credentials get 429 unchecked.
    pub auth_failures_per_ip: Rate,
    /// Where blobs go: `local` (`<dir>/blobs`) or `s3` (`[media.s3]`).
    pub storage: MediaStorage,
    pub s3: MediaS3Section,
}

impl Default for MediaSection {
    fn default() -> Self {
        let l = palaver_media_store::Limits::default();
        let h = palaver_media_store::HttpConfig::default();
        MediaSection {
            enabled: true,
            listen: "127.0.0.1:8081".parse().expect("valid default"),
            tls_listen: None,
            dir: None,
            public_url: None,
            max_connections: h.max_connections,
            header_timeout: h.header_timeout,
            idle_timeout: h.idle_timeout,
            send_timeout: h.send_timeout,
            body_timeout: h.body_timeout,
            max_single_upload_bytes: l.max_single_upload,
            max_sealed_bytes: l.max_sealed,
            max_processed_bytes: l.max_processed,
            quota_bytes: l.quota,
            upload_ttl: l.upload_ttl,
            link_ttl: l.link_ttl,
            max_ranges: l.max_ranges,
            maintenance_interval: Duration::from_secs(60),
            capability_secret: None,
            capability_secret_file: None,
            master_keys: None,
            master_keys_file: None,
            auth_failures_per_ip: Rate {
                burst: h.auth_failures.burst,
                per_minute: h.auth_failures.per_minute,
            },
            storage: MediaStorage::Local,
            s3: MediaS3Section::default(),
        }
    }
}

/// Reads the config file (if any), applies environment overrides, and
/// deserializes it, naming the offending key on error.
pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
    let mut table = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            text.parse::<toml::Table>()
                .map_err(|e| ConfigError::Syntax {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?
        }
        None => toml::Table::new(),
    };
    apply_env(&mut table, env)?;
    let de = toml::Value::Table(table);
    serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner().to_string();
        let message = inner
            .lines()
            .next()
            .unwrap_or("invalid value")
            .trim()
            .to_owned();
        key_err(if key == "." { "(top level)" } else { &key }, message)
    })
}

fn apply_env(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    for (var, raw) in env {
        let Some(path) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let keys: Vec<String> = path.split("__").map(|k| k.to_ascii_lowercase()).collect();
        if keys.iter().any(|k| k.is_empty()) {
            return Err(ConfigError::Env {
                var: var.clone(),
                message: "empty key segment".into(),
            });
        }
        let value = parse_env_value(raw);
        let mut cur = &mut *table;
        for k in &keys[..keys.len() - 1] {
            let entry = cur
                .entry(k.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cur = entry.as_table_mut().ok_or_else(|| ConfigError::Env {
                var: var.clone(),
                message: format!("`{k}` is not a section"),
            })?;
        }
        cur.insert(keys[keys.len() - 1].clone(), value);
    }
    Ok(())
}

/// Environment values are TOML scalars when they parse as one (numbers,
/// booleans, quoted strings, arrays), and plain strings otherwise.
fn parse_env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

/// Reads a secret from a file, refusing files that others can read.
pub fn read_secret_file(key: &str, path: &Path) -> Result<Secret, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| key_err(key, format!("cannot read {}: {e}", path.display())))?;
    if meta.permissions().mode() & 0o004 != 0 {
        return Err(key_err(
            key,
            format!("{} is world-readable; chmod o-r it", path.display()),
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| key_err(key, format!("cannot read {}: {e}", path.display())))?;
    let value = text.trim_end_matches(['\n', '\r']).to_owned();
    if value.is_empty() {
        return Err(key_err(key, format!("{} is empty", path.display())));
    }
    Ok(Secret(value))
}

/// Secrets resolved from inline values or files.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub admin_token: Option<Secret>,
    pub webhook_secret: Option<Secret>,
    pub turn_secret: Option<Secret>,
    pub media_capability_secret: Option<Secret>,
    pub media_master_keys: Option<Secret>,
    pub media_s3_secret_access_key: Option<Secret>,
    pub sfu_token_secret: Option<Secret>,
    pub postgres_url: Option<Secret>,
    pub redis_url: Option<Secret>,
    /// `transcoder.redis_url`, else `cluster.redis_url`.
    pub transcoder_redis_url: Option<Secret>,
    /// `[[push.relays]]` with their secrets.
    pub push_relays: Vec<crate::push::Relay>,
}

fn one_of(
    key: &str,
    inline: &Option<Secret>,
    file: &Option<PathBuf>,
) -> Result<Option<Secret>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(key_err(key, "set either the value or the _file, not both")),
        (Some(s), None) => Ok(Some(s.clone())),
        (None, Some(p)) => read_secret_file(&format!("{key}_file"), p).map(Some),
        (None, None) => Ok(None),
    }
}

impl Config {
    /// Checks values that parse but make no sense, and loads secrets.
    pub fn validate(&self) -> Result<Secrets, ConfigError> {
        let s = &self.signaling;
        if !(1024..=16 * 1024 * 1024).contains(&s.max_frame_bytes) {
            return Err(key_err(
                "signaling.max_frame_bytes",
                "must be 1 KiB to 16 MiB",
            ));
        }
        if !(256..=1024 * 1024).contains(&s.read_buffer_bytes) {
            return Err(key_err(
                "signaling.read_buffer_bytes",
                "must be 256 B to 1 MiB",
            ));
        }
        if s.max_devices == 0 || s.max_devices > 64 {
            return Err(key_err("signaling.max_devices", "must be 1 to 64"));
        }
        if s.code_max_attempts == 0 {
            return Err(key_err("signaling.code_max_attempts", "must be at least 1"));
        }
        if s.inflight_window == 0 {
            return Err(key_err("signaling.inflight_window", "must be at least 1"));
        }
        if !(2..=100_000).contains(&s.max_group_members) {
            return Err(key_err(
                "signaling.max_group_members",
                "must be 2 to 100000",
            ));
        }
        for (key, d) in [
            ("signaling.idle_timeout", s.idle_timeout),
            ("signaling.auth_timeout", s.auth_timeout),
            ("signaling.code_ttl", s.code_ttl),
            ("signaling.envelope_ttl", s.envelope_ttl),
            ("server.header_timeout", self.server.header_timeout),
        ] {
            if d.is_zero() {
                return Err(key_err(key, "must be longer than zero"));
            }
        }
        if self.storage.max_batch == 0 {
            return Err(key_err("storage.max_batch", "must be at least 1"));
        }
        if self.server.max_connections == 0 {
            return Err(key_err("server.max_connections", "must be at least 1"));
        }
        if self.server.listen == self.admin.listen && self.server.listen.port() != 0 {
            return Err(key_err("admin.listen", "must differ from server.listen"));
        }
        let secrets = Secrets {
            admin_token: one_of("admin.token", &self.admin.token, &self.admin.token_file)?,
            webhook_secret: one_of(
                "verifier.webhook_secret",
                &self.verifier.webhook_secret,
                &self.verifier.webhook_secret_file,
            )?,
            turn_secret: one_of(
                "calls.turn_secret",
                &self.calls.turn_secret,
                &self.calls.turn_secret_file,
            )?,
            media_capability_secret: one_of(
                "media.capability_secret",
                &self.media.capability_secret,
                &self.media.capability_secret_file,
            )?,
            media_master_keys: one_of(
                "media.master_keys",
                &self.media.master_keys,
                &self.media.master_keys_file,
            )?,
            media_s3_secret_access_key: one_of(
                "media.s3.secret_access_key",
                &self.media.s3.secret_access_key,
                &self.media.s3.secret_access_key_file,
            )?,
            sfu_token_secret: one_of(
                "sfu.token_secret",
                &self.sfu.token_secret,
                &self.sfu.token_secret_file,
            )?,
            postgres_url: one_of(
                "storage.postgres_url",
                &self.storage.postgres_url,
                &self.storage.postgres_url_file,
            )?,
            redis_url: one_of(
                "cluster.redis_url",
                &self.cluster.redis_url,
                &self.cluster.redis_url_file,
            )?,
            transcoder_redis_url: None,
            push_relays: self.push.validate()?,
        };
        let mut secrets = secrets;
        secrets.transcoder_redis_url = one_of(
            "transcoder.redis_url",
            &self.transcoder.redis_url,
            &self.transcoder.redis_url_file,
        )?
        .or_else(|| secrets.redis_url.clone());
        self.validate_cluster(&secrets)?;
        self.validate_transcoder_queue(&secrets)?;
        self.sfu.validate()?;
        self.tls.validate()?;
        if let Some(s) = &secrets.sfu_token_secret
            && s.expose().len() < 32
        {
            return Err(key_err(
                "sfu.token_secret",
                "must be at least 32 characters",
            ));
        }
        for (key, d) in [
            ("calls.ring_timeout", self.calls.ring_timeout),
            ("calls.reconnect_grace", self.calls.reconnect_grace),
            ("calls.turn_credential_ttl", self.calls.turn_credential_ttl),
        ] {
            if d.is_zero() {
                return Err(key_err(key, "must be longer than zero"));
            }
        }
        for url in &self.calls.stun_urls {
            if !url.starts_with("stun:") && !url.starts_with("stuns:") {
                return Err(key_err(
                    "calls.stun_urls",
                    format!("{url:?} is not a stun: URL"),
                ));
            }
        }
        for url in &self.calls.turn_urls {
            if !url.starts_with("turn:") && !url.starts_with("turns:") {
                return Err(key_err(
                    "calls.turn_urls",
                    format!("{url:?} is not a turn: URL"),
                ));
            }
        }
        self.calls.validate_regions(secrets.turn_secret.is_some())?;
        self.turn
            .validate()
            .map_err(|e| key_err("turn", e.to_string()))?;
        if !self.calls.turn_urls.is_empty() && secrets.turn_secret.is_none() {
            return Err(key_err(
                "calls.turn_secret",
                "required when calls.turn_urls is set (or calls.turn_secret_file)",
            ));
        }
        self.validate_media(&secrets)?;
        if !self.admin.listen.ip().is_loopback() && secrets.admin_token.is_none() {
            return Err(key_err(
                "admin.token",
                "required when admin.listen is not a loopback address",
            ));
        }
        if let Some(t) = &secrets.admin_token
            && t.expose().len() < 16
        {
            return Err(key_err("admin.token", "must be at least 16 characters"));
        }
        if self.verifier.kind == VerifierKind::Webhook {
            let url = self.verifier.webhook_url.as_deref().ok_or_else(|| {
                key_err("verifier.webhook_url", "required for kind = \"webhook\"")
            })?;
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(key_err("verifier.webhook_url", "must be an http(s) URL"));
            }
            if secrets.webhook_secret.is_none() {
                return Err(key_err(
                    "verifier.webhook_secret",
                    "required for kind = \"webhook\" (or webhook_secret_file)",
                ));
            }
        }
        Ok(secrets)
    }

    fn validate_transcoder_queue(&self, secrets: &Secrets) -> Result<(), ConfigError> {
        let t = &self.transcoder;
        if t.queue_backend != QueueBackend::Redis {
            return Ok(());
        }
        match &secrets.transcoder_redis_url {
            None => {
                return Err(key_err(
                    "transcoder.queue_backend",
                    "`redis` needs transcoder.redis_url or cluster.redis_url",
                ));
            }
            Some(u) if !u.expose().starts_with("redis://") => {
                return Err(key_err("transcoder.redis_url", "must be a redis:// URL"));
            }
            _ => {}
        }
        if t.reclaim_after <= t.timeout {
            return Err(key_err(
                "transcoder.reclaim_after",
                "must be longer than transcoder.timeout",
            ));
        }
        if t.max_attempts == 0 {
            return Err(key_err("transcoder.max_attempts", "must be at least 1"));
        }
        if let Some(u) = &t.internal_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(key_err("transcoder.internal_url", "must be an http(s) URL"));
        }
        Ok(())
    }

    fn validate_cluster(&self, secrets: &Secrets) -> Result<(), ConfigError> {
        let st = &self.storage;
        if st.postgres_pool_size == 0 || st.postgres_pool_size > 1000 {
            return Err(key_err("storage.postgres_pool_size", "must be 1 to 1000"));
        }
        if !palaver_messaging::postgres::valid_schema(&st.postgres_schema) {
            return Err(key_err(
                "storage.postgres_schema",
                "lower-case letters, digits and _, not starting with a digit, at most 63",
            ));
        }
        match (st.backend, &secrets.postgres_url) {
            (Backend::Postgres, None) => {
                return Err(key_err(
                    "storage.postgres_url",
                    "required for backend = \"postgres\" (or storage.postgres_url_file)",
                ));
            }
            (Backend::Postgres, Some(url))
                if !url.expose().starts_with("postgres://")
                    && !url.expose().starts_with("postgresql://") =>
            {
                return Err(key_err(
                    "storage.postgres_url",
                    "must be a postgres:// or postgresql:// URL",
                ));
            }
            _ => {}
        }
        if let Some(url) = &secrets.redis_url {
            if st.backend != Backend::Postgres {
                return Err(key_err(
                    "cluster.redis_url",
                    "several nodes need a shared database: set storage.backend = \"postgres\"",
                ));
            }
            if !url.expose().starts_with("redis://") {
                return Err(key_err("cluster.redis_url", "must be a redis:// URL"));
            }
        }
        let c = &self.cluster;
        if c.heartbeat.is_zero() || c.registry_ttl <= c.heartbeat {
            return Err(key_err(
                "cluster.registry_ttl",
                "must be longer than cluster.heartbeat, which must be longer than zero",
            ));
        }
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !name_ok(&c.name) {
            return Err(key_err("cluster.name", "1 to 64 of A-Z, a-z, 0-9, - and _"));
        }
        if c.node_id.as_deref().is_some_and(|n| !name_ok(n)) {
            return Err(key_err(
                "cluster.node_id",
                "1 to 64 of A-Z, a-z, 0-9, - and _",
            ));
        }
        if c.catch_up_interval.is_zero() {
            return Err(key_err(
                "cluster.catch_up_interval",
                "must be longer than zero",
            ));
        }
        Ok(())
    }

    fn validate_media(&self, secrets: &Secrets) -> Result<(), ConfigError> {
        let m = &self.media;
        for (key, d) in [
            ("media.header_timeout", m.header_timeout),
            ("media.idle_timeout", m.idle_timeout),
            ("media.send_timeout", m.send_timeout),
            ("media.body_timeout", m.body_timeout),
            ("media.upload_ttl", m.upload_ttl),
            ("media.link_ttl", m.link_ttl),
            ("media.maintenance_interval", m.maintenance_interval),
        ] {
            if d.is_zero() {
                return Err(key_err(key, "must be longer than zero"));
            }
        }
        if m.max_connections == 0 {
            return Err(key_err("media.max_connections", "must be at least 1"));
        }
        let r = m.auth_failures_per_ip;
        if r.burst == 0 || r.per_minute.is_nan() || r.per_minute <= 0.0 {
            return Err(key_err(
                "media.auth_failures_per_ip",
                "burst must be at least 1 and per_minute above 0",
            ));
        }
        if !(1..=1000).contains(&m.max_ranges) {
            return Err(key_err("media.max_ranges", "must be 1 to 1000"));
        }
        if m.enabled && m.listen == self.server.listen && m.listen.port() != 0 {
            return Err(key_err("media.listen", "must differ from server.listen"));
        }
        if m.tls_listen.is_some() && !self.tls.enabled() {
            return Err(key_err(
                "media.tls_listen",
                "needs the [tls] certificate (tls.cert_file or tls.self_signed)",
            ));
        }
        if let Some(u) = &m.public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(key_err("media.public_url", "must be an http(s) URL"));
        }
        if let Some(s) = &secrets.media_capability_secret
            && s.expose().len() < 32
        {
            return Err(key_err(
                "media.capability_secret",
                "must be at least 32 characters",
            ));
        }
        if let Some(k) = &secrets.media_master_keys
            && let Err(e) = palaver_media_store::MasterKeys::parse(k.expose())
        {
            return Err(key_err("media.master_keys", e.to_string()));
        }
        if m.storage == MediaStorage::S3 {
            m.s3.validate(secrets.media_s3_secret_access_key.as_ref())?;
        }
        Ok(())
    }

    /// The media folder.
    pub fn media_dir(&self) -> PathBuf {
        self.media
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("media"))
    }

    /// The SQLite file.
    pub fn sqlite_path(&self) -> PathBuf {
        self.storage
            .sqlite_path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("palaver.db"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        load(Some(&path), &env)
    }

    #[test]
    fn defaults_are_valid() {
        let c = load(None, &[]).unwrap();
        assert_eq!(c, Config::default());
        c.validate().unwrap();
    }

    #[test]
    fn the_documented_example_is_the_defaults() {
        let doc = include_str!("../../docs/configuration.md");
        let start = doc.find("```toml\n").expect("toml block") + 8;
        let end = start + doc[start..].find("```").expect("end of block");
        let c = load_str(&doc[start..end], &[]).expect("documented config loads");
        assert_eq!(
            c,
            Config::default(),
            "docs/configuration.md shows the defaults"
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = load_str("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n", &[]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("server") && msg.contains("lisen"), "{msg}");
        let e = load_str(
            "[signaling.rate_limits.code_requests_per_ip]\nburst = 1\nper_minute = 1.0\nfoo = 1\n",
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("foo"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = load_str("[signaling]\nmax_devices = \"many\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("signaling.max_devices"), "{e}");
        let c = load_str("[signaling]\nmax_devices = 0\n", &[]).unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("signaling.max_devices"), "{e}");
        let e = load_str("[server]\nheader_timeout = \"soon\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("server.header_timeout"), "{e}");
    }

    #[test]
    fn env_overrides_file() {
        let c = load_str(
            "[server]\nlisten = \"127.0.0.1:1000\"\n",
            &[
                ("PALAVER__SERVER__LISTEN", "127.0.0.1:2000"),
                ("PALAVER__SIGNALING__MAX_DEVICES", "7"),
                ("PALAVER__SIGNALING__IDLE_TIMEOUT", "30s"),
                ("OTHER", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 2000);
        assert_eq!(c.signaling.max_devices, 7);
        assert_eq!(c.signaling.idle_timeout, Duration::from_secs(30));
        let e = load_str("", &[("PALAVER__SERVER__NOPE", "1")]).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn secrets_from_files_and_never_debug_printed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "0123456789abcdef-secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut c = Config::default();
        c.admin.token_file = Some(path.clone());
        let e = c.validate().unwrap_err();
        assert!(
            e.to_string().contains("admin.token_file") && e.to_string().contains("world-readable")
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = c.validate().unwrap();
        assert_eq!(
            s.admin_token.as_ref().unwrap().expose(),
            "0123456789abcdef-secret"
        );
        assert!(!format!("{s:?}").contains("secret\""));
        assert!(!format!("{s:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn postgres_and_redis_urls_are_checked_secrets() {
        let url = "postgres://palaver:hunter2-secret@127.0.0.1:5432/palaver";
        let c = load_str("[storage]\nbackend = \"postgres\"\n", &[]).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("storage.postgres_url"), "{e}");
        let c = load_str(
            "[storage]\nbackend = \"postgres\"\n",
            &[("PALAVER__STORAGE__POSTGRES_URL", url)],
        )
        .unwrap();
        let s = c.validate().unwrap();
        assert_eq!(s.postgres_url.as_ref().unwrap().expose(), url);
        assert!(!format!("{c:?}{s:?}").contains("hunter2"));
        // Redis routing needs the shared database.
        let c = load_str(
            "[cluster]\nredis_url = \"redis://:pw@127.0.0.1:6379/\"\n",
            &[],
        )
        .unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("cluster.redis_url"), "{e}");
        let mut c = Config::default();
        c.storage.postgres_schema = "Bad-Name".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("storage.postgres_schema"), "{e}");
        let mut c = Config::default();
        c.cluster.registry_ttl = c.cluster.heartbeat;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("cluster.registry_ttl"), "{e}");
    }

    #[test]
    fn public_admin_listener_needs_a_token() {
        let mut c = Config::default();
        c.admin.listen = "0.0.0.0:9090".parse().unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("admin.token")
        );
        let mut c = Config::default();
        c.verifier.kind = VerifierKind::Webhook;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("verifier.webhook_url")
        );
    }
}
