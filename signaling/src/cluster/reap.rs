//! Presence after a node dies: its accounts go offline for everyone.
//!
//! Each node keeps the set of accounts with devices connected to it
//! (`{prefix}:node:{node}:accounts`) and its name in `{prefix}:nodes`. On
//! every heartbeat a node looks for nodes whose `alive` key is gone; the
//! first to take `{prefix}:reap:{node}` reads the dead node's accounts,
//! drops its entries, and hands the accounts that have no device left on
//! any live node to its gateway, which records their last-seen time and
//! announces them offline. A node that starts under a name that died
//! before reaps its own leftovers the same way.

use super::Cluster;
use palaver_proto::AccountId;
use redis::AsyncCommands;
use std::collections::HashMap;
use tokio::sync::mpsc;

/// How long the claim on a dead node's leftovers lasts.
const REAP_LOCK_MS: u64 = 60_000;

impl super::Keys {
    fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    pub(super) fn node_accounts(&self, node: &str) -> String {
        format!("{}:node:{node}:accounts", self.prefix)
    }

    fn reap(&self, node: &str) -> String {
        format!("{}:reap:{node}", self.prefix)
    }
}

/// Where accounts found offline after a node died go.
pub(super) struct Reaped {
    tx: mpsc::UnboundedSender<Vec<AccountId>>,
    rx: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<Vec<AccountId>>>>,
}

impl Default for Reaped {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Reaped {
            tx,
            rx: parking_lot::Mutex::new(Some(rx)),
        }
    }
}

impl Cluster {
    /// The accounts that went offline because their node died, for the
    /// gateway to announce (once; `None` after the first call).
    pub(crate) fn take_reaped(&self) -> Option<mpsc::UnboundedReceiver<Vec<AccountId>>> {
        self.reaped.rx.lock().take()
    }

    /// Adds the commands that keep this node's presence bookkeeping to a
    /// heartbeat pipeline.
    pub(super) fn beat_nodes(&self, pipe: &mut redis::Pipeline, now_ms: u64) {
        pipe.hset(self.keys.nodes(), &self.config.node_id, now_ms)
            .ignore();
    }

    /// `account` has no device left here.
    pub(crate) async fn account_left(&self, account: AccountId) {
        let mut r = self.redis.clone();
        let key = self.keys.node_accounts(&self.config.node_id);
        let done: redis::RedisResult<i64> = r.srem(key, account.0).await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "cannot update this node's accounts in Redis");
        }
    }

    /// Forgets this node on a clean stop (its connections said goodbye).
    pub(super) async fn leave_nodes(&self) {
        let mut r = self.redis.clone();
        let _: redis::RedisResult<()> = redis::pipe()
            .hdel(self.keys.nodes(), &self.config.node_id)
            .ignore()
            .del(self.keys.node_accounts(&self.config.node_id))
            .ignore()
            .query_async(&mut r)
            .await;
    }

    /// Reaps every node that stopped beating.
    pub(super) async fn reap_dead_nodes(&self) {
        let mut r = self.redis.clone();
        let nodes: HashMap<String, u64> = match r.hgetall(self.keys.nodes()).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the cluster's nodes");
                return;
            }
        };
        for node in nodes.keys() {
            if *node == self.config.node_id || self.alive(&mut r, node).await {
                continue;
            }
            self.reap(node).await;
        }
    }

    /// Takes `node`'s leftovers (if no other node took them) and hands the
    /// accounts now offline everywhere to the gateway.
    pub(super) async fn reap(&self, node: &str) {
        let mut r = self.redis.clone();
        let claimed: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(self.keys.reap(node))
            .arg(&self.config.node_id)
            .arg("NX")
            .arg("PX")
            .arg(REAP_LOCK_MS)
            .query_async(&mut r)
            .await;
        if !matches!(claimed, Ok(Some(_))) {
            return;
        }
        let key = self.keys.node_accounts(node);
        let taken: redis::RedisResult<(Vec<u64>,)> = redis::pipe()
            .smembers(&key)
            .del(&key)
            .ignore()
            .hdel(self.keys.nodes(), node)
            .ignore()
            .del(self.keys.reap(node))
            .ignore()
            .query_async(&mut r)
            .await;
        let accounts = match taken {
            Ok((a,)) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a dead node's accounts");
                return;
            }
        };
        let mut offline = Vec::new();
        for account in accounts.into_iter().map(AccountId) {
            if !self.router.is_online(account) && self.devices_elsewhere(account).await.is_empty() {
                offline.push(account);
            }
        }
        tracing::info!(
            accounts = offline.len(),
            "a node stopped; its accounts are offline"
        );
        if !offline.is_empty() {
            let _ = self.reaped.tx.send(offline);
        }
    }
}
