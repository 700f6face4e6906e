//! The role configs of the compose deployment (deploy/*.toml) load:
//! every key known (deny_unknown_fields), every value of the right type.

use super::{QueueBackend, load};
use std::path::Path;

fn deploy(name: &str) -> super::Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name);
    load(Some(&path), &[]).unwrap_or_else(|e| panic!("deploy/{name}: {e}"))
}

#[test]
fn deploy_configs_load() {
    for name in ["signaling.toml", "sfu.toml", "turn.toml"] {
        deploy(name);
    }
    let media = deploy("media.toml");
    assert_eq!(media.transcoder.queue_backend, QueueBackend::Redis);
    assert!(!media.transcoder.in_process);
    let worker = deploy("transcoder.toml");
    assert_eq!(worker.transcoder.queue_backend, QueueBackend::Redis);
    // Workers hold the queue's URL only: no database, no media secrets.
    assert!(worker.storage.postgres_url_file.is_none());
    assert!(worker.cluster.redis_url_file.is_none());
    assert!(worker.media.master_keys_file.is_none());
    assert!(worker.media.s3.secret_access_key_file.is_none());
}
