//! The certificate every TLS listener of the process presents, reloaded
//! from its files without a restart.
//!
//! [`CertResolver`] holds the current certificate and key; each handshake
//! reads it, so a reload takes effect on the next connection while open
//! connections keep the session they have. [`watch`] reloads on SIGHUP and
//! when a file's modification time or size changes (polled). A file that
//! does not load (missing, bad PEM, key not matching the certificate)
//! leaves the previous certificate in place and logs an error.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Why a certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("{path}: not a PEM certificate chain: {message}")]
    BadCertificate { path: PathBuf, message: String },
    #[error("{path}: no usable PEM private key: {message}")]
    BadKey { path: PathBuf, message: String },
    #[error("the key in {key} does not belong to the certificate in {cert}: {message}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
}

/// The crypto provider of every TLS endpoint in the binary.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The certificate and key files, and how the current ones were loaded.
#[derive(Debug)]
pub struct CertResolver {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    provider: Arc<CryptoProvider>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl CertResolver {
    /// Loads the files once; an error here stops the start-up.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<CertResolver>, LoadError> {
        let provider = provider();
        let key = load_pair(cert_path, key_path, &provider)?;
        Ok(Arc::new(CertResolver {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(key)),
            provider,
        }))
    }

    /// The certificate handshakes use now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// SHA-256 of the leaf certificate, as `AB:CD:...`.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.current().cert.first().map_or(&[][..], |c| c.as_ref()))
    }

    /// Reads the files again; on success the next handshakes use them.
    pub fn reload(&self) -> Result<(), LoadError> {
        let key = Arc::new(load_pair(&self.cert_path, &self.key_path, &self.provider)?);
        match self.current.write() {
            Ok(mut g) => *g = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
        Ok(())
    }

    /// What the poll compares: modification time and size of both files.
    fn stamp(&self) -> Option<Stamp> {
        Some((file_stamp(&self.cert_path)?, file_stamp(&self.key_path)?))
    }
}

type Stamp = ((SystemTime, u64), (SystemTime, u64));

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// SHA-256 of a DER certificate, as colon-separated upper-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

fn load_pair(cert: &Path, key: &Path, p: &CryptoProvider) -> Result<CertifiedKey, LoadError> {
    let chain = load_chain(cert)?;
    let pem = read(key)?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| LoadError::BadKey {
        path: key.to_owned(),
        message: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, der, p).map_err(|e| LoadError::Mismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
        message: e.to_string(),
    })
}

fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let pem = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LoadError::BadCertificate {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(LoadError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reloads `resolver` on SIGHUP and when its files change (checked every
/// `interval`), until `stop`.
pub async fn watch(
    resolver: Arc<CertResolver>,
    interval: Duration,
    mut hup: tokio::signal::unix::Signal,
    stop: CancellationToken,
) {
    let mut seen = resolver.stamp();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = stop.cancelled() => return,
            _ = hup.recv() => true,
            _ = tick.tick() => false,
        };
        let stamp = resolver.stamp();
        if !forced && stamp == seen {
            continue;
        }
        // A failed load is logged once per change, not on every poll.
        seen = stamp;
        match resolver.reload() {
            Ok(()) => tracing::info!(
                sha256 = %resolver.fingerprint(),
                "tls certificate reloaded"
            ),
            Err(e) => tracing::error!(
                error = %e,
                "tls certificate reload failed; keeping the previous certificate"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn reload_replaces_and_a_bad_file_keeps_the_old_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = write_pair(dir.path(), "a.example");
        let r = CertResolver::load(&c, &k).unwrap();
        let first = r.fingerprint();
        std::fs::write(&k, "not a key").unwrap();
        assert!(matches!(r.reload(), Err(LoadError::BadKey { .. })));
        assert_eq!(r.fingerprint(), first);
        write_pair(dir.path(), "b.example");
        r.reload().unwrap();
        assert_ne!(r.fingerprint(), first);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        let (c, _) = write_pair(one.path(), "a.example");
        let (_, k) = write_pair(two.path(), "a.example");
        let e = CertResolver::load(&c, &k).unwrap_err();
        assert!(matches!(e, LoadError::Mismatch { .. }), "{e}");
    }

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = write_pair(dir.path(), "a.example");
        let e = CertResolver::load(&dir.path().join("nope.pem"), &k).unwrap_err();
        assert!(e.to_string().contains("nope.pem"), "{e}");
        std::fs::write(&c, "").unwrap();
        let e = CertResolver::load(&c, &k).unwrap_err();
        assert!(matches!(e, LoadError::NoCertificate { .. }), "{e}");
    }
}
