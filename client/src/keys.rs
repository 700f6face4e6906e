//! The key directory requests: upload, claim, count.

use crate::{Client, Result, unexpected};
use palaver_proto::frames::{ClientFrame, ServerFrame};
use palaver_proto::keys::{KeyBundle, KeyUpload};
use palaver_proto::{AccountId, DeviceId};

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundles {
    pub bundles: Vec<KeyBundle>,
    /// Current devices that published no keys.
    pub without_keys: Vec<DeviceId>,
}

impl Client {
    /// Publishes this device's keys; returns the one-time keys in stock.
    pub async fn keys_upload(&mut self, keys: KeyUpload) -> Result<u32> {
        let id = self.id();
        match self.call(ClientFrame::KeysUpload { id, keys }).await? {
            ServerFrame::KeysStock { one_time_keys, .. } => Ok(one_time_keys),
            f => Err(unexpected(f)),
        }
    }

    /// One-time keys this device has left in the directory.
    pub async fn keys_count(&mut self) -> Result<u32> {
        let id = self.id();
        match self.call(ClientFrame::KeysCount { id }).await? {
            ServerFrame::KeysStock { one_time_keys, .. } => Ok(one_time_keys),
            f => Err(unexpected(f)),
        }
    }

    /// Claims a bundle for every current device of `account` (or one device).
    pub async fn keys_claim(
        &mut self,
        account: AccountId,
        device: Option<DeviceId>,
    ) -> Result<Bundles> {
        let id = self.id();
        match self
            .call(ClientFrame::KeysClaim {
                id,
                account,
                device,
            })
            .await?
        {
            ServerFrame::KeyBundles {
                bundles,
                without_keys,
                ..
            } => Ok(Bundles {
                bundles,
                without_keys,
            }),
            f => Err(unexpected(f)),
        }
    }
}
