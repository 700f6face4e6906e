//! The calls of the call leader, persisted in Redis so that the next
//! leader can take them over.
//!
//! The leader writes the state of each call that changed
//! ([`crate::calls::CallSnapshot`], JSON) into the hash
//! `{prefix}:calls:state` (field: the call id) and deletes the field when
//! the call ends. One writer task applies the changes in the order the
//! state machine made them. A node that becomes the leader reads the hash
//! before it answers its first call request as the leader, and hands the
//! calls to its gateway ([`Cluster::take_loaded_calls`]); the gateway
//! restores them and treats devices that are connected nowhere as dropped
//! (they get the usual reconnect grace).

use super::Cluster;
use palaver_proto::{CallId, DeviceId};
use redis::AsyncCommands;
use std::collections::{HashMap, HashSet};
use tokio::sync::mpsc;

/// A call's new persisted state (`None`: it ended).
pub(crate) type CallChange = (CallId, Option<String>);

impl super::Keys {
    fn call_state(&self) -> String {
        format!("{}:calls:state", self.prefix)
    }
}

/// The writer's queue and the calls loaded on takeover.
pub(super) struct CallStore {
    tx: mpsc::UnboundedSender<Vec<CallChange>>,
    rx: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<Vec<CallChange>>>>,
    loaded: parking_lot::Mutex<Option<Vec<String>>>,
    took_over: tokio::sync::Notify,
}

impl Default for CallStore {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        CallStore {
            tx,
            rx: parking_lot::Mutex::new(Some(rx)),
            loaded: parking_lot::Mutex::new(None),
            took_over: tokio::sync::Notify::new(),
        }
    }
}

impl Cluster {
    /// Queues the new state of calls that changed on this node (the
    /// leader), for the writer task.
    pub(crate) fn persist_calls(&self, changes: Vec<CallChange>) {
        if !changes.is_empty() {
            let _ = self.call_store.tx.send(changes);
        }
    }

    /// The calls read from Redis when this node became the leader, once.
    pub(crate) fn take_loaded_calls(&self) -> Option<Vec<String>> {
        self.call_store.loaded.lock().take()
    }

    /// How often the leader looks for call devices connected nowhere: a
    /// dead node's registry entries stop counting after `registry_ttl`.
    pub(crate) fn absent_sweep_interval(&self) -> std::time::Duration {
        self.config.registry_ttl
    }

    /// Whether this node runs the calls now.
    pub(crate) fn leads_calls(&self) -> bool {
        self.calls.leader.lock().as_deref() == Some(self.config.node_id.as_str())
    }

    /// Resolves when this node took the call leadership over.
    pub(crate) async fn took_over_calls(&self) {
        self.call_store.took_over.notified().await;
    }

    /// Reads the persisted calls; called before this node acts as the new
    /// leader.
    pub(super) async fn load_calls(&self) {
        let mut r = self.redis.clone();
        let all: redis::RedisResult<HashMap<u64, String>> = r.hgetall(self.keys.call_state()).await;
        match all {
            Ok(calls) => {
                tracing::info!(calls = calls.len(), "taking over the persisted calls");
                *self.call_store.loaded.lock() = Some(calls.into_values().collect());
                self.call_store.took_over.notify_one();
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the persisted calls"),
        }
    }

    /// Writes the queued call changes, in order, until the queue closes.
    pub(super) async fn write_calls(self: std::sync::Arc<Self>) {
        let Some(mut rx) = self.call_store.rx.lock().take() else {
            return;
        };
        let mut r = self.redis.clone();
        let key = self.keys.call_state();
        while let Some(changes) = rx.recv().await {
            let mut pipe = redis::pipe();
            for (call, state) in changes {
                match state {
                    Some(json) => pipe.hset(&key, call.0, json).ignore(),
                    None => pipe.hdel(&key, call.0).ignore(),
                };
            }
            if let Err(e) = pipe.query_async::<()>(&mut r).await {
                tracing::warn!(error = %e, "cannot persist call state in Redis");
            }
        }
    }

    /// The devices among `devices` connected here or to a live node.
    pub(crate) async fn connected(&self, devices: &[DeviceId]) -> HashSet<DeviceId> {
        if devices.is_empty() {
            return HashSet::new();
        }
        let mut r = self.redis.clone();
        let mut out: HashSet<DeviceId> = devices
            .iter()
            .copied()
            .filter(|d| self.router.has_device(*d))
            .collect();
        let elsewhere = self.nodes_of(&mut r, devices).await;
        for (device, node) in elsewhere {
            if self.alive(&mut r, &node).await {
                out.insert(device);
            }
        }
        out
    }
}
