//! Group requests: create, inspect, change, invite, join and send.

use crate::conn::Conn;
use crate::handlers::ReqError;
use crate::now_ms;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use palaver_messaging::groups::{GroupError, GroupOp};
use palaver_messaging::{
    GroupChangeRequest, GroupSendOutcome, GroupSendRequest, GroupTarget, NewGroup,
};
use palaver_proto::frames::{ClientFrame, ServerFrame};
use palaver_proto::groups::GroupInfo;
use palaver_proto::{ClientMsgId, ErrorCode, GroupId, RequestId};
use rand::RngCore;

/// Longest invite code accepted, in bytes.
const MAX_CODE: usize = 64;

type Reply = Result<(), ReqError>;

pub(crate) fn group_error(e: GroupError) -> ReqError {
    let code = match &e {
        GroupError::NotMember => ErrorCode::NotFound,
        GroupError::NotAdmin | GroupError::AnnounceOnly | GroupError::Creator => {
            ErrorCode::Forbidden
        }
        GroupError::Full { .. } => ErrorCode::GroupFull,
        GroupError::UnknownAccount(_) => ErrorCode::NotFound,
        GroupError::Invalid(_) | GroupError::NotAMember(_) | GroupError::AlreadyMember => {
            ErrorCode::InvalidArgument
        }
    };
    ReqError::new(code, e.to_string())
}

/// A fresh invite code: 16 random bytes, base64url.
fn new_invite_code() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Conn {
    /// Handles the `group_*` frames.
    pub(crate) async fn group_frame(&mut self, frame: ClientFrame) -> Reply {
        use ClientFrame as F;
        match frame {
            F::GroupCreate { id, name, members } => self.group_create(id, name, members).await,
            F::GroupGet { id, group } => self.group_get(id, group).await,
            F::GroupList { id } => self.group_list(id).await,
            F::GroupUpdate { id, group, edit } => {
                self.group_change(id, GroupTarget::Id(group), GroupOp::Edit(edit))
                    .await
            }
            F::GroupAdd {
                id,
                group,
                accounts,
            } => {
                self.group_change(id, GroupTarget::Id(group), GroupOp::Add(accounts))
                    .await
            }
            F::GroupRemove {
                id,
                group,
                accounts,
            } => {
                self.group_change(id, GroupTarget::Id(group), GroupOp::Remove(accounts))
                    .await
            }
            F::GroupPromote {
                id,
                group,
                accounts,
            } => {
                self.group_change(id, GroupTarget::Id(group), GroupOp::Promote(accounts))
                    .await
            }
            F::GroupDemote {
                id,
                group,
                accounts,
            } => {
                self.group_change(id, GroupTarget::Id(group), GroupOp::Demote(accounts))
                    .await
            }
            F::GroupLeave { id, group } => self.group_leave(id, group).await,
            F::GroupInvite { id, group, reset } => self.group_invite(id, group, reset).await,
            F::GroupJoin { id, code } => {
                if code.is_empty() || code.len() > MAX_CODE {
                    Err(ReqError::new(
                        ErrorCode::NotFound,
                        "no group has this invite code",
                    ))
                } else {
                    self.group_change(id, GroupTarget::InviteCode(code), GroupOp::Join)
                        .await
                }
            }
            F::GroupSend {
                id,
                group,
                msg,
                payload,
                edit_of,
            } => self.group_send(id, group, msg, payload.0, edit_of).await,
            _ => Err(ReqError::new(ErrorCode::Internal, "not a group frame")),
        }
    }

    pub(crate) fn expiry(&self, now: u64) -> u64 {
        now + self.gw.config.envelope_ttl.as_millis() as u64
    }

    fn reply_group(&mut self, id: RequestId, group: GroupInfo) -> Reply {
        self.reply(ServerFrame::Group { id, group });
        Ok(())
    }

    async fn group_create(
        &mut self,
        id: RequestId,
        name: String,
        members: Vec<palaver_proto::AccountId>,
    ) -> Reply {
        let me = self.me()?;
        self.check_send_rate(me)?;
        let now = now_ms();
        let new = NewGroup {
            creator: me.account,
            name,
            members,
            now_ms: now,
            expires_at_ms: self.expiry(now),
            limit: self.gw.config.max_group_members,
        };
        let group = self
            .gw
            .store
            .create_group(new)
            .await?
            .map_err(group_error)?;
        tracing::info!(
            group = group.group.0,
            members = group.members.len(),
            "group created"
        );
        self.reply_group(id, group)
    }

    async fn group_get(&mut self, id: RequestId, group: GroupId) -> Reply {
        let me = self.me()?;
        let info = self
            .gw
            .store
            .group(me.account, group)
            .await?
            .ok_or_else(|| group_error(GroupError::NotMember))?;
        self.reply_group(id, info)
    }

    async fn group_list(&mut self, id: RequestId) -> Reply {
        let me = self.me()?;
        let groups = self.gw.store.groups_of(me.account).await?;
        self.reply(ServerFrame::GroupList { id, groups });
        Ok(())
    }

    /// Applies one change by this account and returns the group after it.
    async fn apply_change(
        &mut self,
        target: GroupTarget,
        op: GroupOp,
        new_code: Option<String>,
    ) -> Result<GroupInfo, ReqError> {
        let me = self.me()?;
        let now = now_ms();
        let req = GroupChangeRequest {
            actor: me.account,
            target,
            op,
            new_code,
            now_ms: now,
            expires_at_ms: self.expiry(now),
            limit: self.gw.config.max_group_members,
        };
        self.gw.store.change_group(req).await?.map_err(group_error)
    }

    async fn group_change(&mut self, id: RequestId, target: GroupTarget, op: GroupOp) -> Reply {
        let group = self.apply_change(target, op, None).await?;
        self.reply_group(id, group)
    }

    async fn group_leave(&mut self, id: RequestId, group: GroupId) -> Reply {
        self.apply_change(GroupTarget::Id(group), GroupOp::Leave, None)
            .await?;
        self.reply(ServerFrame::Done { id });
        Ok(())
    }

    async fn group_invite(&mut self, id: RequestId, group: GroupId, reset: bool) -> Reply {
        let me = self.me()?;
        if reset {
            let code = new_invite_code();
            self.apply_change(
                GroupTarget::Id(group),
                GroupOp::ResetInvite,
                Some(code.clone()),
            )
            .await?;
            self.reply(ServerFrame::GroupInvite { id, group, code });
            return Ok(());
        }
        let code = self
            .gw
            .store
            .group_invite_code(me.account, group, new_invite_code())
            .await?
            .map_err(group_error)?;
        self.reply(ServerFrame::GroupInvite { id, group, code });
        Ok(())
    }

    async fn group_send(
        &mut self,
        id: RequestId,
        group: GroupId,
        msg: ClientMsgId,
        payload: Vec<u8>,
        edit_of: Option<ClientMsgId>,
    ) -> Reply {
        let me = self.me()?;
        self.check_send_rate(me)?;
        let now = now_ms();
        let req = GroupSendRequest {
            from: me.account,
            from_device: me.device,
            group,
            msg: msg.clone(),
            payload,
            now_ms: now,
            expires_at_ms: self.expiry(now),
            edit_of,
            edit_window_ms: self.gw.config.edit_window.as_millis() as u64,
        };
        let (ts, duplicate) = match self.gw.store.group_send(req).await? {
            GroupSendOutcome::Stored { ts } => (ts, false),
            GroupSendOutcome::Duplicate { ts } => (ts, true),
            GroupSendOutcome::Refused(e) => return Err(group_error(e)),
            GroupSendOutcome::Amend(e) => return Err(crate::chats::amend_error(e)),
        };
        self.sent(id, msg, ts, duplicate);
        Ok(())
    }
}
