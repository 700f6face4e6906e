//! Web Push, the part that runs today: this deployment's VAPID key, made
//! once in `<data_dir>/push/vapid.key` (mode 0600), and its public key for
//! browsers at `GET /v1/push/vapid-key` on the main listener. Subscribing
//! and sending are not built yet (docs/push.md).

use anyhow::Context;
use axum::Json;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use palaver_push::vapid::VapidKey;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Reads the key (`file`, else `<data_dir>/push/vapid.key`), or makes and
/// stores it on the first start.
pub fn load_or_create(data_dir: &Path, file: Option<&Path>) -> anyhow::Result<VapidKey> {
    let path = match file {
        Some(f) => f.to_owned(),
        None => data_dir.join("push").join("vapid.key"),
    };
    let dir = path.parent().unwrap_or(data_dir).to_owned();
    if path.exists() {
        let meta = std::fs::metadata(&path)?;
        anyhow::ensure!(
            meta.permissions().mode() & 0o077 == 0,
            "{} is readable by others: chmod 600 it",
            path.display()
        );
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim())
            .ok()
            .and_then(|b| VapidKey::from_bytes(&b).ok());
        return bytes.with_context(|| format!("{} is not a VAPID key", path.display()));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key = VapidKey::generate();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(f, "{}", URL_SAFE_NO_PAD.encode(key.to_bytes()))?;
    f.sync_all()?;
    Ok(key)
}

/// `GET /v1/push/vapid-key`: `{"public_key": "<base64url point>"}`, the
/// `applicationServerKey` of `PushManager.subscribe`.
pub fn routes(key: &VapidKey) -> axum::Router {
    let body = serde_json::json!({ "public_key": key.public_key() });
    axum::Router::new().route(
        "/v1/push/vapid-key",
        axum::routing::get(move || {
            let body = body.clone();
            async move { Json(body) }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path(), None).unwrap();
        let b = load_or_create(dir.path(), None).unwrap();
        let shared = dir.path().join("elsewhere/vapid.key");
        let c = load_or_create(dir.path(), Some(&shared)).unwrap();
        assert_ne!(a.public_key(), c.public_key());
        let d = load_or_create(dir.path(), Some(&shared)).unwrap();
        assert_eq!(
            c.public_key(),
            d.public_key(),
            "another node reading the shared file"
        );
        assert_eq!(a.public_key(), b.public_key());
        let path = dir.path().join("push/vapid.key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            load_or_create(dir.path(), None).is_err(),
            "world-readable key refused"
        );
    }
}
