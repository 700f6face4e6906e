//! The end-to-end key directory: upload, claim, stock, low-stock notices.

use crate::conn::Conn;
use crate::handlers::ReqError;
use palaver_messaging::keys::{KeyError, LOW_STOCK, check_upload};
use palaver_proto::frames::{ClientFrame, ServerFrame};
use palaver_proto::keys::KeyUpload;
use palaver_proto::{AccountId, DeviceId, ErrorCode, RequestId};
use std::sync::Arc;
use std::time::Instant;

type Reply = Result<(), ReqError>;

fn key_error(e: KeyError) -> ReqError {
    let code = match e {
        KeyError::BadSignature(_) | KeyError::BadSigningKey => ErrorCode::BadSignature,
        KeyError::IdentityChanged => ErrorCode::Forbidden,
        _ => ErrorCode::InvalidArgument,
    };
    ReqError::new(code, e.to_string())
}

impl Conn {
    /// Handles the `keys_*` frames.
    pub(crate) async fn keys_frame(&mut self, frame: ClientFrame) -> Reply {
        match frame {
            ClientFrame::KeysUpload { id, keys } => self.keys_upload(id, keys).await,
            ClientFrame::KeysClaim {
                id,
                account,
                device,
            } => self.keys_claim(id, account, device).await,
            ClientFrame::KeysCount { id } => {
                let me = self.me()?;
                let one_time_keys = self.gw.store.key_stock(me.device).await?.unwrap_or(0);
                self.reply(ServerFrame::KeysStock { id, one_time_keys });
                Ok(())
            }
            _ => Err(ReqError::new(ErrorCode::Internal, "not a keys frame")),
        }
    }

    async fn keys_upload(&mut self, id: RequestId, keys: KeyUpload) -> Reply {
        let me = self.me()?;
        let checked = check_upload(&keys).map_err(key_error)?;
        let one_time_keys = self
            .gw
            .store
            .upload_keys(me.device, checked)
            .await?
            .map_err(key_error)?;
        self.reply(ServerFrame::KeysStock { id, one_time_keys });
        Ok(())
    }

    async fn keys_claim(
        &mut self,
        id: RequestId,
        account: AccountId,
        device: Option<DeviceId>,
    ) -> Reply {
        let me = self.me()?;
        if let Err(wait) = self
            .gw
            .limits
            .key_claims
            .check(&me.device.0, Instant::now())
        {
            self.count_limited("key_claims_per_device");
            return Err(ReqError::rate_limited(wait));
        }
        let claim = self
            .gw
            .store
            .claim_keys(account, device)
            .await?
            .ok_or_else(|| ReqError::new(ErrorCode::NotFound, "no such account or device"))?;
        for (device, left) in &claim.stock {
            if *left < LOW_STOCK {
                let frame = ServerFrame::KeysLow {
                    one_time_keys: *left,
                };
                self.gw
                    .router
                    .deliver(*device, crate::router::Push::Frame(Arc::new(frame)));
            }
        }
        self.reply(ServerFrame::KeyBundles {
            id,
            account,
            bundles: claim.bundles,
            without_keys: claim.without_keys,
        });
        Ok(())
    }

    /// Tells a device that has just authenticated that its stock is low.
    pub(crate) async fn check_key_stock(&mut self) {
        let Some(me) = self.me else { return };
        match self.gw.store.key_stock(me.device).await {
            Ok(Some(left)) if left < LOW_STOCK => {
                self.reply(ServerFrame::KeysLow {
                    one_time_keys: left,
                });
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read key stock"),
        }
    }
}
