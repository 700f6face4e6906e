//! Delete for everyone, timers, synced settings and device-link codes.

use crate::{Client, Registration, Result, unexpected};
use palaver_proto::business::{AutoMessages, BusinessProfile};
use palaver_proto::frames::{ClientFrame, Payload, ServerFrame};
use palaver_proto::{AccountId, ClientMsgId, GroupId};

/// A chat, for [`Client::set_timer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatRef {
    Direct(AccountId),
    Group(GroupId),
}

impl Client {
    /// Deletes one of this account's messages for everyone.
    pub async fn revoke(&mut self, msg: &ClientMsgId) -> Result<()> {
        let id = self.id();
        let msg = msg.clone();
        self.call_done(ClientFrame::Revoke { id, msg }).await
    }

    /// Posts a status for `audience` (encrypt `payload` for them); it
    /// disappears after a day. Delete it early with [`Client::revoke`].
    pub async fn status_post(
        &mut self,
        msg: &ClientMsgId,
        audience: &[AccountId],
        payload: Vec<u8>,
    ) -> Result<crate::Sent> {
        let id = self.id();
        let frame = ClientFrame::StatusPost {
            id,
            msg: msg.clone(),
            audience: audience.to_vec(),
            payload: Payload(payload),
        };
        match self.call(frame).await? {
            ServerFrame::Sent { ts, duplicate, .. } => Ok(crate::Sent { ts, duplicate }),
            f => Err(unexpected(f)),
        }
    }

    /// Tells the author that this account viewed their status.
    pub async fn status_view(&mut self, author: AccountId, msg: &ClientMsgId) -> Result<()> {
        let id = self.id();
        let msg = msg.clone();
        self.call_done(ClientFrame::StatusView { id, author, msg })
            .await
    }

    /// Reports an account to the operators, optionally disclosing messages
    /// (their ids and decrypted content) and blocking it.
    pub async fn report(
        &mut self,
        account: AccountId,
        reason: &str,
        msgs: &[ClientMsgId],
        evidence: Option<Vec<u8>>,
        block: bool,
    ) -> Result<()> {
        let id = self.id();
        self.call_done(ClientFrame::Report {
            id,
            account,
            reason: reason.to_owned(),
            msgs: msgs.to_vec(),
            evidence: evidence.map(Payload),
            block,
        })
        .await
    }

    /// Publishes this account's business profile and/or automatic messages.
    pub async fn business_set(
        &mut self,
        profile: Option<BusinessProfile>,
        auto: Option<AutoMessages>,
    ) -> Result<()> {
        let id = self.id();
        self.call_done(ClientFrame::BusinessSet { id, profile, auto })
            .await
    }

    /// The business profile of an account, if it has one.
    pub async fn business_get(&mut self, account: AccountId) -> Result<Option<BusinessProfile>> {
        let id = self.id();
        match self.call(ClientFrame::BusinessGet { id, account }).await? {
            ServerFrame::Business { profile, .. } => Ok(profile),
            f => Err(unexpected(f)),
        }
    }

    /// Sets a chat's disappearing-message timer (seconds; 0 turns it off).
    pub async fn set_timer(&mut self, chat: ChatRef, seconds: u64) -> Result<()> {
        let id = self.id();
        let (to, group) = match chat {
            ChatRef::Direct(a) => (Some(a), None),
            ChatRef::Group(g) => (None, Some(g)),
        };
        self.call_done(ClientFrame::SetTimer {
            id,
            to,
            group,
            seconds,
        })
        .await
    }

    /// The account's settings blob and its version.
    pub async fn settings(&mut self) -> Result<(u64, Vec<u8>)> {
        let id = self.id();
        match self.call(ClientFrame::SettingsGet { id }).await? {
            ServerFrame::Settings { version, blob, .. } => Ok((version, blob.0)),
            f => Err(unexpected(f)),
        }
    }

    /// Stores a settings blob based on `version`; returns the new version.
    /// Fails with `stale_version` if another device stored one since.
    pub async fn put_settings(&mut self, version: u64, blob: Vec<u8>) -> Result<u64> {
        let id = self.id();
        let frame = ClientFrame::SettingsPut {
            id,
            version,
            blob: Payload(blob),
        };
        match self.call(frame).await? {
            ServerFrame::Settings { version, .. } => Ok(version),
            f => Err(unexpected(f)),
        }
    }

    /// A one-time code that links a new device to this account.
    pub async fn link_code(&mut self) -> Result<(String, u64)> {
        let id = self.id();
        match self.call(ClientFrame::LinkCodeCreate { id }).await? {
            ServerFrame::LinkCode {
                code,
                expires_in_ms,
                ..
            } => Ok((code, expires_in_ms)),
            f => Err(unexpected(f)),
        }
    }

    /// Links this (unauthenticated) connection's new device with a code
    /// shown by another device of the account.
    pub async fn link(&mut self, code: &str, device_name: &str) -> Result<Registration> {
        let id = self.id();
        let frame = ClientFrame::Link {
            id,
            code: code.to_owned(),
            device_name: device_name.to_owned(),
        };
        match self.call(frame).await? {
            ServerFrame::Registered {
                account,
                device,
                credential,
                new_account,
                ..
            } => Ok(Registration {
                account,
                device,
                credential,
                new_account,
            }),
            f => Err(unexpected(f)),
        }
    }
}
