//! Moving group calls off dead and draining SFU nodes.
//!
//! Every signaling node with the SFU node registry looks at the registry
//! every `GroupCallConfig::node_poll`. For each node to evacuate
//! ([`sfu_nodes::to_evacuate`]: its status key expired, or it is
//! draining), the first signaling node to take the node's evacuation lock
//! moves its rooms ([`sfu_nodes::replan`]) and pushes `group_call_moved`,
//! with a fresh ticket, to every device that took a ticket for the room,
//! wherever it is connected (cross-node routing). Devices in the call
//! rejoin on the new node; the others ignore the push.

use crate::Gateway;
use crate::group_calls::GroupCallConfig;
use crate::handlers::sign_ticket;
use crate::sfu_nodes::{self, NodeStatus, RoomLoad};
use crate::sfu_registry::{RegistryError, SfuRegistry};
use palaver_proto::frames::ServerFrame;
use std::sync::Arc;
use std::time::Duration;

/// Another signaling node may retry an evacuation after this long (if the
/// one holding the lock died half-way, or some rooms found no node).
const LOCK_TTL: Duration = Duration::from_secs(5);

impl Gateway {
    /// Watches the SFU node registry until shutdown (nothing to do without
    /// one, or without group calls).
    pub async fn run_sfu_monitor(self: Arc<Self>) {
        let (Some(reg), Some(cfg)) = (self.sfu_registry(), self.config.group_calls.clone()) else {
            return;
        };
        let holder = self
            .cluster
            .as_ref()
            .map(|c| c.node_id().to_owned())
            .unwrap_or_default();
        let mut tick = tokio::time::interval(cfg.node_poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.evacuate_once(&reg, &cfg, &holder).await {
                tracing::warn!(error = %e, "cannot check the SFU nodes");
            }
        }
    }

    async fn evacuate_once(
        &self,
        reg: &SfuRegistry,
        cfg: &GroupCallConfig,
        holder: &str,
    ) -> Result<(), RegistryError> {
        let (registered, live) = reg.nodes().await?;
        for node in sfu_nodes::to_evacuate(&registered, &live) {
            if reg.lock_evacuation(&node, holder, LOCK_TTL).await? {
                self.evacuate(reg, cfg, &node, &live).await?;
            }
        }
        Ok(())
    }

    async fn evacuate(
        &self,
        reg: &SfuRegistry,
        cfg: &GroupCallConfig,
        node: &str,
        live: &[NodeStatus],
    ) -> Result<(), RegistryError> {
        let dead = live.iter().all(|n| n.id != node);
        let rooms = reg.rooms_of(node).await?;
        let mut loads = Vec::with_capacity(rooms.len());
        for room in rooms {
            let participants = reg.room_size(&room).await?;
            loads.push(RoomLoad { room, participants });
        }
        let moves = sfu_nodes::replan(node, &loads, live);
        let stranded = loads.len() - moves.len();
        for (room, to) in &moves {
            if reg.move_room(room, node, to).await? {
                let url = live.iter().find(|n| &n.id == to).map(|n| n.url.clone());
                self.tell_moved(reg, cfg, room, url.unwrap_or_default())
                    .await?;
            }
        }
        tracing::info!(
            sfu_node = %node,
            dead,
            moved = moves.len(),
            stranded,
            "evacuated an SFU node"
        );
        if dead && stranded == 0 {
            reg.forget_node(node).await?;
        }
        Ok(())
    }

    /// Pushes a fresh ticket for `room` on `url` to its ticket holders.
    async fn tell_moved(
        &self,
        reg: &SfuRegistry,
        cfg: &GroupCallConfig,
        room: &str,
        url: String,
    ) -> Result<(), RegistryError> {
        let creator = reg.room(room).await?.and_then(|r| r.creator);
        for (account, device) in reg.ticket_holders(room).await? {
            // A kicked account is not told where the call went.
            if reg.is_kicked(room, account).await? {
                continue;
            }
            let admin = creator == Some(account);
            let Ok((token, expires_at)) = sign_ticket(cfg, room, account, device, admin) else {
                continue;
            };
            let frame = ServerFrame::GroupCallMoved {
                room: room.to_owned(),
                sfu_url: url.clone(),
                token,
                expires_at,
                ice_servers: self.ice_servers(device),
            };
            self.deliver_frame(device, Arc::new(frame));
        }
        Ok(())
    }
}
