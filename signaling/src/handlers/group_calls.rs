//! `group_call_start` and `group_call_join`: tickets for the SFU.

use super::{Reply, ReqError, blocked, not_found};
use crate::conn::Conn;
use crate::now_ms;
use crate::router::Push;
use palaver_proto::frames::{Media, ServerFrame};
use palaver_proto::join_token::{self, JoinClaims};
use palaver_proto::{AccountId, ErrorCode, GroupId, RequestId};
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
        let room =
            self.gw
                .group_calls
                .lock()
                .create(me.account, &ring, Instant::now(), cfg.room_ttl);
        self.group_call_ticket(id, room.clone())?;
        let incoming = Arc::new(ServerFrame::GroupCallIncoming {
            room,
            from: me.account,
            from_device: me.device,
            media,
        });
        for to in ring {
            for device in self.gw.router.connected_devices(to) {
                self.gw
                    .router
                    .deliver(device, Push::Frame(incoming.clone()));
            }
        }
        Ok(())
    }

    pub(super) fn group_call_join(&mut self, id: RequestId, room: String) -> Reply {
        let me = self.me()?;
        let cfg = self
            .gw
            .config
            .group_calls
            .as_ref()
            .ok_or_else(not_configured)?;
        let allowed =
            self.gw
                .group_calls
                .lock()
                .may_join(&room, me.account, Instant::now(), cfg.room_ttl);
        if !allowed {
            return Err(not_found());
        }
        self.group_call_ticket(id, room)
    }

    fn group_call_ticket(&mut self, id: RequestId, room: String) -> Reply {
        let me = self.me()?;
        let cfg = self
            .gw
            .config
            .group_calls
            .as_ref()
            .ok_or_else(not_configured)?;
        let expires_at = now_ms() / 1000 + cfg.token_ttl.as_secs();
        let claims = JoinClaims {
            room: room.clone(),
            account: me.account,
            device: me.device,
            publish: true,
            subscribe: true,
            exp: expires_at,
        };
        let token = join_token::sign(&cfg.token_secret, &claims)
            .map_err(|e| ReqError::new(ErrorCode::Internal, e.to_string()))?;
        let frame = ServerFrame::GroupCallTicket {
            id,
            room,
            sfu_url: cfg.sfu_url.clone(),
            token,
            expires_at,
            ice_servers: self.gw.ice_servers(me.device),
        };
        self.reply(frame);
        Ok(())
    }
}
