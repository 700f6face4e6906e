//! Push subscriptions for offline devices (docs/push.md).

use crate::{Client, Result};
use palaver_proto::frames::ClientFrame;
use palaver_proto::push::PushTarget;

impl Client {
    /// Asks the server to wake this device through `target` while it has
    /// no connection; replaces an earlier subscription.
    pub async fn push_subscribe(&mut self, target: PushTarget) -> Result<()> {
        let id = self.id();
        self.call_done(ClientFrame::PushSubscribe { id, target })
            .await
    }

    /// Stops pushes to this device.
    pub async fn push_unsubscribe(&mut self) -> Result<()> {
        let id = self.id();
        self.call_done(ClientFrame::PushUnsubscribe { id }).await
    }

    /// No message pushes until `until_ms` (Unix ms); `None` ends the quiet time.
    pub async fn push_quiet(&mut self, until_ms: Option<u64>) -> Result<()> {
        let id = self.id();
        self.call_done(ClientFrame::PushQuiet { id, until_ms })
            .await
    }
}
