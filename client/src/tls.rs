//! TLS for `wss://` URLs: rustls with the aws-lc-rs provider (the one the
//! server uses), TLS 1.2 and 1.3 only.

use crate::{Error, Result};
use rustls::{ClientConfig, RootCertStore};
use std::sync::Arc;

/// A client configuration that trusts `roots` (for example a private CA,
/// or a development certificate from `palaver serve --tls-self-signed`).
pub fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The operating system's trusted roots; certificates that fail to parse
/// are skipped.
pub fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (_added, _ignored) = roots.add_parsable_certificates(found.certs);
    roots
}

/// The configuration [`crate::Client::connect`] uses for `wss://` URLs.
pub fn default_config() -> Result<Arc<ClientConfig>> {
    client_config(system_roots())
}
