//! Group chats in the SDK: thin requests over the `group_*` frames.

use crate::{Client, Result, Sent, unexpected};
use palaver_proto::frames::{ClientFrame, Payload, ServerFrame};
use palaver_proto::groups::{GroupEdit, GroupInfo};
use palaver_proto::{AccountId, ClientMsgId, GroupId};

impl Client {
    async fn group_reply(&mut self, frame: ClientFrame) -> Result<GroupInfo> {
        match self.call(frame).await? {
            ServerFrame::Group { group, .. } => Ok(group),
            f => Err(unexpected(f)),
        }
    }

    /// Creates a group with these members besides this account.
    pub async fn group_create(&mut self, name: &str, members: &[AccountId]) -> Result<GroupInfo> {
        let id = self.id();
        self.group_reply(ClientFrame::GroupCreate {
            id,
            name: name.to_owned(),
            members: members.to_vec(),
        })
        .await
    }

    /// A group this account belongs to.
    pub async fn group_get(&mut self, group: GroupId) -> Result<GroupInfo> {
        let id = self.id();
        self.group_reply(ClientFrame::GroupGet { id, group }).await
    }

    /// Every group this account belongs to.
    pub async fn group_list(&mut self) -> Result<Vec<GroupInfo>> {
        let id = self.id();
        match self.call(ClientFrame::GroupList { id }).await? {
            ServerFrame::GroupList { groups, .. } => Ok(groups),
            f => Err(unexpected(f)),
        }
    }

    /// Changes a group's name, description, picture or announcement mode.
    pub async fn group_update(&mut self, group: GroupId, edit: GroupEdit) -> Result<GroupInfo> {
        let id = self.id();
        self.group_reply(ClientFrame::GroupUpdate { id, group, edit })
            .await
    }

    /// Adds members (admins only).
    pub async fn group_add(&mut self, group: GroupId, accounts: &[AccountId]) -> Result<GroupInfo> {
        let id = self.id();
        let accounts = accounts.to_vec();
        self.group_reply(ClientFrame::GroupAdd {
            id,
            group,
            accounts,
        })
        .await
    }

    /// Removes members (admins only).
    pub async fn group_remove(
        &mut self,
        group: GroupId,
        accounts: &[AccountId],
    ) -> Result<GroupInfo> {
        let id = self.id();
        let accounts = accounts.to_vec();
        self.group_reply(ClientFrame::GroupRemove {
            id,
            group,
            accounts,
        })
        .await
    }

    /// Makes members admins (`true`) or plain members (`false`).
    pub async fn group_set_admin(
        &mut self,
        group: GroupId,
        accounts: &[AccountId],
        admin: bool,
    ) -> Result<GroupInfo> {
        let id = self.id();
        let accounts = accounts.to_vec();
        let frame = if admin {
            ClientFrame::GroupPromote {
                id,
                group,
                accounts,
            }
        } else {
            ClientFrame::GroupDemote {
                id,
                group,
                accounts,
            }
        };
        self.group_reply(frame).await
    }

    /// Leaves a group.
    pub async fn group_leave(&mut self, group: GroupId) -> Result<()> {
        let id = self.id();
        self.call_done(ClientFrame::GroupLeave { id, group }).await
    }

    /// The group's invite code; `reset` replaces it (admins only).
    pub async fn group_invite(&mut self, group: GroupId, reset: bool) -> Result<String> {
        let id = self.id();
        match self
            .call(ClientFrame::GroupInvite { id, group, reset })
            .await?
        {
            ServerFrame::GroupInvite { code, .. } => Ok(code),
            f => Err(unexpected(f)),
        }
    }

    /// Joins a group with an invite code.
    pub async fn group_join(&mut self, code: &str) -> Result<GroupInfo> {
        let id = self.id();
        let code = code.to_owned();
        self.group_reply(ClientFrame::GroupJoin { id, code }).await
    }

    /// Sends one payload (a sender-key ciphertext) to every member device.
    pub async fn group_send(
        &mut self,
        group: GroupId,
        msg: &ClientMsgId,
        payload: Vec<u8>,
    ) -> Result<Sent> {
        self.group_send_edit(group, msg, payload, None).await
    }

    /// Like [`Client::group_send`]; with `edit_of`, the message replaces an
    /// earlier one of this account in the group.
    pub async fn group_send_edit(
        &mut self,
        group: GroupId,
        msg: &ClientMsgId,
        payload: Vec<u8>,
        edit_of: Option<&ClientMsgId>,
    ) -> Result<Sent> {
        let id = self.id();
        let frame = ClientFrame::GroupSend {
            id,
            group,
            msg: msg.clone(),
            payload: Payload(payload),
            edit_of: edit_of.cloned(),
        };
        match self.call(frame).await? {
            ServerFrame::Sent { ts, duplicate, .. } => Ok(Sent { ts, duplicate }),
            f => Err(unexpected(f)),
        }
    }
}
