//! Test certificates: a private CA that signs server certificates (fresh
//! or out of date), the rustls client trusting it, and a device that
//! registers and connects over wss.

use crate::{Server, phone};
use palaver_client::rustls::{ClientConfig, RootCertStore};
use palaver_client::{Client, Registration, tls};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A private CA, and the certificate files of the server it signs.
#[allow(missing_debug_implementations)]
pub struct Pki {
    dir: tempfile::TempDir,
    pub ca: CertifiedIssuer<'static, KeyPair>,
}

impl Default for Pki {
    fn default() -> Pki {
        Pki::new()
    }
}

impl Pki {
    pub fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "palaver test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Signs a new certificate for localhost and 127.0.0.1 (out of date
    /// since 2021 if `expired`), puts it in place of the server's files and
    /// returns its SHA-256 fingerprint.
    pub fn issue(&self, expired: bool) -> String {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let mut params = CertificateParams::new(names).unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &*self.ca).unwrap();
        write_atomic(&self.path("key.pem"), key.serialize_pem().as_bytes());
        write_atomic(&self.path("cert.pem"), cert.pem().as_bytes());
        fingerprint(cert.der())
    }

    /// The `[tls]` section pointing at the files, plus `extra` keys.
    pub fn config(&self, extra: &str) -> String {
        format!(
            "[tls]\ncert_file = {:?}\nkey_file = {:?}\n{extra}",
            self.path("cert.pem"),
            self.path("key.pem")
        )
    }

    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        tls::client_config(roots).unwrap()
    }
}

/// Replaces a file in one step, so the server never reads half of it.
pub fn write_atomic(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub fn fingerprint(der: &[u8]) -> String {
    let hex: Vec<String> = Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    hex.join(":")
}

/// Registers a device and connects it, everything over wss.
pub async fn wss_device(server: &Server, config: &Arc<ClientConfig>) -> (Client, Registration) {
    let url = format!("wss://localhost:{}/v1/ws", server.main_port());
    let phone = phone();
    let mut c = Client::connect_tls(&url, Some(config.clone()))
        .await
        .unwrap();
    c.request_code(&phone).await.unwrap();
    let code = palaver_client::dev_code(&server.admin_url, &phone)
        .await
        .unwrap();
    let reg = c.verify(&phone, &code, "tls").await.unwrap();
    let mut c = Client::connect_tls(&url, Some(config.clone()))
        .await
        .unwrap();
    c.auth(reg.device, &reg.credential).await.unwrap();
    (c, reg)
}
