//! Kicks that outlive the room's node.
//!
//! The core refuses a kicked account while the room is open on its worker
//! (see `moderation`). When a room moves to another SFU node (its node died
//! or drains), that memory is gone; a [`KickLog`] shared by the nodes (in
//! `palaver sfu` with `cluster.redis_url`: the SFU node registry in Redis)
//! keeps the kicks for the room's lifetime. The driver records every kick
//! the workers report ([`Worker::take_kicks`]) and asks the log before it
//! hands a join to a worker.

use palaver_proto::AccountId;
use std::future::Future;
use std::pin::Pin;

use crate::worker::Worker;

/// A kick a worker carried out, for the driver to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kick {
    pub room: String,
    pub account: AccountId,
}

/// Where kicks are kept across SFU nodes.
pub trait KickLog: Send + Sync + 'static {
    /// Records a kick; must not block (queue the write).
    fn record(&self, kick: Kick);

    /// Whether `account` was kicked from `room` on any node. An error
    /// reading the log should answer `false` (and be logged): a kick is a
    /// moderation aid, and an unreachable log must not stop every call.
    fn is_kicked(
        &self,
        room: String,
        account: AccountId,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
}

impl Worker {
    /// The kicks since the last call, oldest first.
    pub fn take_kicks(&mut self) -> Vec<Kick> {
        std::mem::take(&mut self.kicks)
    }
}
