//! The SFU's kicks in the SFU node registry (Redis), so that a room that
//! moves to another node keeps them (see `palaver_sfu::kicks`).

use palaver_proto::AccountId;
use palaver_sfu::{Kick, KickLog};
use palaver_signaling::sfu_registry::SfuRegistry;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a kick is kept when its room has no expiry in the registry.
const FALLBACK_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest a join waits for the registry before going on without it.
const READ_WAIT: Duration = Duration::from_secs(2);

/// Kicks written by one task (in order), read at each join.
pub(crate) struct RegistryKicks {
    registry: SfuRegistry,
    tx: mpsc::UnboundedSender<Kick>,
}

impl RegistryKicks {
    /// Starts the writer task on the current runtime.
    pub(crate) fn start(registry: SfuRegistry) -> RegistryKicks {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write(registry.clone(), rx));
        RegistryKicks { registry, tx }
    }
}

async fn write(registry: SfuRegistry, mut rx: mpsc::UnboundedReceiver<Kick>) {
    while let Some(k) = rx.recv().await {
        if let Err(e) = registry.record_kick(&k.room, k.account, FALLBACK_TTL).await {
            tracing::warn!(error = %e, "cannot record a kick in the SFU node registry");
        }
    }
}

impl KickLog for RegistryKicks {
    fn record(&self, kick: Kick) {
        let _ = self.tx.send(kick);
    }

    fn is_kicked(
        &self,
        room: String,
        account: AccountId,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            match tokio::time::timeout(READ_WAIT, self.registry.is_kicked(&room, account)).await {
                Ok(Ok(kicked)) => kicked,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read the kicks; letting the join through");
                    false
                }
                Err(_) => {
                    tracing::warn!("the registry did not answer in time; letting the join through");
                    false
                }
            }
        })
    }
}
