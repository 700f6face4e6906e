//! Joining the cluster of signaling nodes (`[cluster]`, Redis).

use crate::config::{Config, Secret};
use anyhow::Context;
use palaver_signaling::cluster::{Cluster, ClusterConfig};
use palaver_signaling::router::Router;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Connects to Redis and starts routing between nodes until `stop`.
pub async fn start(
    cfg: &Config,
    redis_url: &Secret,
    router: Arc<Router>,
    stop: CancellationToken,
) -> anyhow::Result<Arc<Cluster>> {
    let node_id = cfg
        .cluster
        .node_id
        .clone()
        .unwrap_or_else(|| format!("node-{:016x}", rand::random::<u64>()));
    let config = ClusterConfig {
        redis_url: redis_url.expose().to_owned(),
        node_id,
        name: cfg.cluster.name.clone(),
        heartbeat: cfg.cluster.heartbeat,
        registry_ttl: cfg.cluster.registry_ttl,
    };
    // The URL holds the password: errors name the key, never the value.
    Cluster::start(config, router, stop)
        .await
        .context("cannot join the cluster (cluster.redis_url)")
}
