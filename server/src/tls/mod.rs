//! TLS on the main listener (HTTPS and WSS): the `[tls]` config section,
//! the server configuration built from it, the certificate resolver that
//! reloads its files, the HTTP-to-HTTPS redirect listener and the
//! development certificate (docs/tls.md).

pub mod redirect;
pub mod resolver;
pub mod self_signed;

use crate::config::ConfigError;
pub use resolver::CertResolver;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `[tls]`: certificate files, reload, redirect and HSTS.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// PEM certificate chain, leaf first. With `key_file`, turns TLS on.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    pub key_file: Option<PathBuf>,
    /// Make (once) and use a self-signed certificate in `<data_dir>/tls/`
    /// (`--tls-self-signed`). Development only.
    pub self_signed: bool,
    /// Names and addresses the self-signed certificate is valid for.
    pub self_signed_names: Vec<String>,
    /// How often the files' modification times are checked; a change (or
    /// SIGHUP) reloads them.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Time a client gets to complete the TLS handshake.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A plain HTTP listener answering every request with a redirect to
    /// the same path over HTTPS on the main listener's port.
    pub redirect_listen: Option<SocketAddr>,
    /// Send `Strict-Transport-Security` on every HTTPS response.
    pub hsts: bool,
    #[serde(with = "humantime_serde")]
    pub hsts_max_age: Duration,
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection {
            cert_file: None,
            key_file: None,
            self_signed: false,
            self_signed_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            reload_interval: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            redirect_listen: None,
            hsts: false,
            hsts_max_age: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

fn key_err(key: &str, message: &str) -> ConfigError {
    ConfigError::Key {
        key: key.to_owned(),
        message: message.to_owned(),
    }
}

impl TlsSection {
    /// TLS is on: files given, or the development certificate.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() || self.self_signed
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => return Err(key_err("tls.key_file", "required with tls.cert_file")),
            (None, Some(_)) => return Err(key_err("tls.cert_file", "required with tls.key_file")),
            (Some(_), Some(_)) if self.self_signed => {
                return Err(key_err(
                    "tls.self_signed",
                    "cannot be combined with tls.cert_file",
                ));
            }
            _ => {}
        }
        if self.self_signed && self.self_signed_names.is_empty() {
            return Err(key_err("tls.self_signed_names", "needs at least one name"));
        }
        if self.reload_interval < Duration::from_millis(100) {
            return Err(key_err("tls.reload_interval", "must be at least 100ms"));
        }
        if self.handshake_timeout.is_zero() {
            return Err(key_err("tls.handshake_timeout", "must be above zero"));
        }
        if !self.enabled() && (self.redirect_listen.is_some() || self.hsts) {
            return Err(key_err(
                "tls.redirect_listen",
                "redirect and hsts need TLS (tls.cert_file or tls.self_signed)",
            ));
        }
        Ok(())
    }
}

/// TLS as the listeners use it.
#[derive(Debug, Clone)]
pub struct Tls {
    pub resolver: Arc<CertResolver>,
    pub config: Arc<rustls::ServerConfig>,
    pub handshake_timeout: Duration,
    /// The `Strict-Transport-Security` value, when HSTS is on.
    pub hsts: Option<axum::http::HeaderValue>,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    SelfSigned(#[from] self_signed::SelfSignedError),
    #[error("tls.cert_file / tls.key_file: {0}")]
    Load(#[from] resolver::LoadError),
    #[error("TLS settings refused by rustls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Loads the certificate (making the development one if asked) and builds
/// the server configuration: TLS 1.3 and 1.2 only, the provider's default
/// cipher suites (all AEAD with forward secrecy), HTTP/1.1 by ALPN.
pub fn setup(section: &TlsSection, data_dir: &Path) -> Result<Option<Tls>, SetupError> {
    let (cert, key) = match (&section.cert_file, &section.key_file) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ if section.self_signed => {
            let (c, k, made) = self_signed::ensure(data_dir, &section.self_signed_names)?;
            if made {
                tracing::warn!(cert = %c.display(), "made a self-signed development certificate");
            }
            (c, k)
        }
        _ => return Ok(None),
    };
    let resolver = CertResolver::load(&cert, &key)?;
    let config = server_config(resolver.clone(), vec![b"http/1.1".to_vec()])?;
    let hsts = section.hsts.then(|| {
        let value = format!("max-age={}", section.hsts_max_age.as_secs());
        axum::http::HeaderValue::from_str(&value).expect("digits are a valid header value")
    });
    Ok(Some(Tls {
        resolver,
        config,
        handshake_timeout: section.handshake_timeout,
        hsts,
    }))
}

/// A server configuration presenting `resolver`'s certificate: TLS 1.3
/// and 1.2 only, the provider's default suites, `alpn` protocols.
pub fn server_config(
    resolver: Arc<CertResolver>,
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(resolver::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = alpn;
    Ok(Arc::new(config))
}

/// TURN's TLS listener (`turn.tls`) with a certificate that reloads like
/// the main listener's: on SIGHUP and when its files change.
pub fn start_turn(
    turn: &palaver_turn::TlsConfig,
    interval: Duration,
    stop: CancellationToken,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let resolver = CertResolver::load(&turn.cert_path, &turn.key_path)
        .map_err(|e| anyhow::anyhow!("turn.tls: {e}"))?;
    let config = server_config(resolver.clone(), Vec::new())?;
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tasks.push(tokio::spawn(resolver::watch(resolver, interval, hup, stop)));
    Ok(config)
}

/// Starts the reload task: SIGHUP and the file poll. SIGHUP is caught
/// from here on (it no longer ends the process).
pub fn spawn_reload(
    tls: &Tls,
    interval: Duration,
    stop: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(resolver::watch(
        tls.resolver.clone(),
        interval,
        hup,
        stop,
    )))
}

/// Sets TLS up for `palaver serve`/`signaling`: loads (or makes) the
/// certificate, prints its fingerprint, starts the reload task and, if
/// configured, the redirect listener. `None` when TLS is off.
pub async fn start(
    section: &TlsSection,
    data_dir: &Path,
    https_port: u16,
    opts: &crate::http::HttpOptions,
    stop: CancellationToken,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<Option<Tls>> {
    use anyhow::Context;
    let Some(tls) = setup(section, data_dir)? else {
        return Ok(None);
    };
    crate::run::announce_text("tls certificate sha256", &tls.resolver.fingerprint());
    tasks.push(
        spawn_reload(&tls, section.reload_interval, stop.clone()).context("cannot watch SIGHUP")?,
    );
    if let Some(addr) = section.redirect_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on tls.redirect_listen = {addr}"))?;
        crate::run::announce_text("redirect listening on", &listener.local_addr()?.to_string());
        let opts = crate::http::HttpOptions {
            max_connections: 1024,
            ..opts.clone()
        };
        let app = redirect::routes(https_port);
        tasks.push(tokio::spawn(crate::http::serve(listener, app, opts, stop)));
    }
    Ok(Some(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_a_pair_and_conflicts_are_named() {
        let mut s = TlsSection {
            cert_file: Some("c.pem".into()),
            ..TlsSection::default()
        };
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("tls.key_file")
        );
        s.key_file = Some("k.pem".into());
        s.validate().unwrap();
        s.self_signed = true;
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("tls.self_signed")
        );
        let s = TlsSection {
            hsts: true,
            ..TlsSection::default()
        };
        assert!(s.validate().is_err(), "hsts without TLS");
    }

    #[test]
    fn only_tls_12_and_13() {
        let dir = tempfile::tempdir().unwrap();
        let s = TlsSection {
            self_signed: true,
            hsts: true,
            ..TlsSection::default()
        };
        let tls = setup(&s, dir.path()).unwrap().unwrap();
        assert_eq!(tls.hsts.unwrap(), "max-age=31536000");
        let suites = &tls.config.crypto_provider().cipher_suites;
        assert!(suites.iter().all(|c| {
            matches!(
                c.version().version,
                rustls::ProtocolVersion::TLSv1_2 | rustls::ProtocolVersion::TLSv1_3
            )
        }));
    }
}
