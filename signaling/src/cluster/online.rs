//! Which devices have a connection on another node (for push: a device
//! connected anywhere is not pushed).

use super::{Cluster, bounded};
use palaver_proto::DeviceId;
use std::collections::HashSet;

impl Cluster {
    /// The devices of `devices` registered to another node (none if Redis
    /// does not answer in time: then they are pushed, which is harmless).
    pub(crate) async fn connected_elsewhere(&self, devices: &[DeviceId]) -> HashSet<DeviceId> {
        let mut r = self.redis.clone();
        bounded(self.nodes_of(&mut r, devices))
            .await
            .map(|nodes| nodes.into_keys().collect())
            .unwrap_or_default()
    }
}
