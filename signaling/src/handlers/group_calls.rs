//! `group_call_start` and `group_call_join`: tickets for the SFU.

use super::{Reply, ReqError, blocked, not_found};
use crate::conn::Conn;
use crate::group_calls::{GroupCallConfig, new_room_name};
use crate::now_ms;
use crate::sfu_nodes;
use crate::sfu_registry::{RegistryError, SfuRegistry};
use palaver_proto::frames::{Media, ServerFrame};
use palaver_proto::join_token::{self, JoinClaims};
use palaver_proto::{AccountId, DeviceId, ErrorCode, GroupId, RequestId};
use std::sync::Arc;
use std::time::Instant;

fn not_configured() -> ReqError {
    ReqError::new(
        ErrorCode::UnsupportedFrame,
        "group calls are not configured on this server",
    )
}

impl Conn {
    pub(super) async fn group_call_start(
        &mut self,
        id: RequestId,
        mut invite: Vec<AccountId>,
        media: Media,
        group: Option<GroupId>,
    ) -> Reply {
        let me = self.me()?;
        if let Some(g) = group {
            // A call in a chat group rings its members; only members start one.
            let info = self.gw.store.group(me.account, g).await?.ok_or_else(|| {
                ReqError::new(
                    ErrorCode::NotFound,
                    "the group does not exist or you are not a member",
                )
            })?;
            invite.extend(info.members.iter().map(|m| m.account));
        }
        let cfg = self
            .gw
            .config
            .group_calls
            .clone()
            .ok_or_else(not_configured)?;
        if let Err(wait) = self
            .gw
            .limits
            .call_offers
            .check(&me.device.0, Instant::now())
        {
            self.count_limited("call_offers_per_device");
            return Err(ReqError::rate_limited(wait));
        }
        invite.sort();
        invite.dedup();
        invite.retain(|a| *a != me.account);
        if invite.len() > cfg.max_invites {
            return Err(ReqError::new(
                ErrorCode::InvalidArgument,
                format!("at most {} invites", cfg.max_invites),
            ));
        }
        let mut ring = Vec::new();
        for &to in &invite {
            if self.gw.store.devices(to).await?.is_none() {
                return Err(not_found());
            }
            let (i_block, they_block) = self.gw.store.blocks(me.account, to).await?;
            if i_block {
                return Err(blocked());
            }
            // Blocked by them: not invited, as if offline.
            if !they_block {
                ring.push(to);
            }
        }
        let (room, sfu_url) = self.place_room(&cfg, me.account, &ring).await?;
        self.group_call_ticket(id, room.clone(), sfu_url, true)
            .await?;
        let incoming = Arc::new(ServerFrame::GroupCallIncoming {
            room,
            from: me.account,
            from_device: me.device,
            media,
        });
        // On every node: invitees may be connected anywhere.
        for to in ring {
            for device in self.gw.connected_devices(to).await {
                self.gw.deliver_frame(device, incoming.clone());
            }
        }
        Ok(())
    }

    pub(super) async fn group_call_join(&mut self, id: RequestId, room: String) -> Reply {
        let me = self.me()?;
        let cfg = self
            .gw
            .config
            .group_calls
            .clone()
            .ok_or_else(not_configured)?;
        if let Some(reg) = self.gw.sfu_registry() {
            let record = reg
                .room(&room)
                .await?
                .filter(|r| r.members.contains(&me.account))
                .ok_or_else(not_found)?;
            if reg.is_kicked(&room, me.account).await? {
                return Err(ReqError::new(
                    ErrorCode::Forbidden,
                    "the call's admin removed you from this call",
                ));
            }
            let url = node_url(&reg, &cfg, &record.node).await?;
            let admin = record.creator == Some(me.account);
            return self.group_call_ticket(id, room, url, admin).await;
        }
        let (allowed, admin) = {
            let rooms = self.gw.group_calls.lock();
            (
                rooms.may_join(&room, me.account, Instant::now(), cfg.room_ttl),
                rooms.is_creator(&room, me.account),
            )
        };
        let url = cfg.sfu_url.clone().ok_or_else(not_configured)?;
        if !allowed {
            return Err(not_found());
        }
        self.group_call_ticket(id, room, url, admin).await
    }

    /// Makes a room for `creator` and `ring` on the least-loaded SFU node
    /// (or the one configured SFU); returns its name and the node's URL.
    async fn place_room(
        &self,
        cfg: &GroupCallConfig,
        creator: AccountId,
        ring: &[AccountId],
    ) -> Result<(String, String), ReqError> {
        let Some(reg) = self.gw.sfu_registry() else {
            let url = cfg.sfu_url.clone().ok_or_else(not_configured)?;
            let room =
                self.gw
                    .group_calls
                    .lock()
                    .create(creator, ring, Instant::now(), cfg.room_ttl);
            return Ok((room, url));
        };
        let (_, live) = reg.nodes().await?;
        let (node, url) = match (sfu_nodes::pick(&live), &cfg.sfu_url) {
            (Some(n), _) => (n.id.clone(), n.url.clone()),
            (None, Some(u)) => (STATIC_NODE.to_owned(), u.clone()),
            (None, None) => return Err(no_sfu()),
        };
        let room = new_room_name();
        let members: Vec<AccountId> = ring.iter().copied().chain([creator]).collect();
        reg.create_room(&room, creator, &members, &node, cfg.room_ttl)
            .await?;
        tracing::info!(%room, %node, "group call placed");
        Ok((room, url))
    }

    /// Answers with a ticket for this device (`admin`: it started the call).
    async fn group_call_ticket(
        &mut self,
        id: RequestId,
        room: String,
        sfu_url: String,
        admin: bool,
    ) -> Reply {
        let me = self.me()?;
        let cfg = self
            .gw
            .config
            .group_calls
            .as_ref()
            .ok_or_else(not_configured)?;
        if let Some(reg) = self.gw.sfu_registry() {
            reg.add_ticket_holder(&room, me.account, me.device, cfg.room_ttl)
                .await?;
        }
        let (token, expires_at) = sign_ticket(cfg, &room, me.account, me.device, admin)?;
        let frame = ServerFrame::GroupCallTicket {
            id,
            room,
            sfu_url,
            token,
            expires_at,
            ice_servers: self.gw.ice_servers(me.device),
        };
        self.reply(frame);
        Ok(())
    }
}

/// The room's `node` when no SFU node was registered: `GroupCallConfig::sfu_url`.
pub(crate) const STATIC_NODE: &str = "@static";

fn no_sfu() -> ReqError {
    ReqError {
        retry_after_ms: Some(1000),
        ..ReqError::new(ErrorCode::Internal, "no SFU node is available; retry later")
    }
}

impl From<RegistryError> for ReqError {
    fn from(e: RegistryError) -> Self {
        tracing::warn!(error = %e, "SFU registry failure");
        ReqError {
            retry_after_ms: Some(1000),
            ..ReqError::new(ErrorCode::Internal, "internal error; retry later")
        }
    }
}

/// The join URL of `node`, if it is alive (a dead node's rooms are about
/// to move: the client retries, or gets `group_call_moved`).
async fn node_url(
    reg: &SfuRegistry,
    cfg: &GroupCallConfig,
    node: &str,
) -> Result<String, ReqError> {
    if node == STATIC_NODE {
        return cfg.sfu_url.clone().ok_or_else(no_sfu);
    }
    let (_, live) = reg.nodes().await?;
    match live.into_iter().find(|n| n.id == node) {
        Some(n) => Ok(n.url),
        None => Err(ReqError {
            retry_after_ms: Some(1000),
            ..ReqError::new(
                ErrorCode::Internal,
                "the call is moving to another SFU node; retry",
            )
        }),
    }
}

/// A join token for `account`'s `device` in `room` (`admin`: may kick and
/// ask to mute); returns it and its expiry (Unix seconds).
pub(crate) fn sign_ticket(
    cfg: &GroupCallConfig,
    room: &str,
    account: AccountId,
    device: DeviceId,
    admin: bool,
) -> Result<(String, u64), ReqError> {
    let expires_at = now_ms() / 1000 + cfg.token_ttl.as_secs();
    let claims = JoinClaims {
        room: room.to_owned(),
        account,
        device,
        publish: true,
        subscribe: true,
        exp: expires_at,
        admin,
    };
    let token = join_token::sign(&cfg.token_secret, &claims)
        .map_err(|e| ReqError::new(ErrorCode::Internal, e.to_string()))?;
    Ok((token, expires_at))
}
