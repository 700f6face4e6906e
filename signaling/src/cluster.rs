//! Routing between signaling nodes through Redis.
//!
//! - Registry: `palaver:dev:{device}` names the node holding a device's
//!   connection and `palaver:acct:{account}` (a hash device -> node) lists an
//!   account's connected devices. Entries live `registry_ttl` and each node
//!   renews its own every `heartbeat`, as well as `palaver:alive:{node}`
//!   (`palaver` is `cluster.name`): a
//!   node that dies stops renewing, and its entries stop counting at once
//!   (readers check the node is alive) and vanish after the TTL.
//! - Inbox: every node subscribes to `palaver:inbox:{node}` and to
//!   `palaver:broadcast`. After a commit, the store's notifier hands the new
//!   envelopes to one publisher task (so they leave in commit order); it
//!   looks up the nodes of the devices not connected here and publishes the
//!   envelopes to them. Typing, pushes and revocations go the same way;
//!   presence changes are broadcast.
//! - Loss: Redis pub/sub is at most once. An envelope is durable before it
//!   is announced, each device's sequence numbers are consecutive, and a
//!   connection re-reads its queue when it sees a gap and every
//!   `catch_up_interval`: a lost notification delays a message, it never
//!   loses one.

mod call_store;
mod calls;
mod online;
mod reap;

pub(crate) use call_store::CallChange;
pub(crate) use calls::RemoteCall;

use crate::router::{Push, Router};
use base64::Engine;
use palaver_messaging::{Notifier, StoredEnvelope};
use palaver_proto::frames::{EnvelopeKind, LastSeenPrivacy, ServerFrame};
use palaver_proto::{AccountId, ClientMsgId, DeviceId, GroupId, Seq};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Settings of the Redis routing.
#[derive(Clone)]
pub struct ClusterConfig {
    /// `redis://...`; a secret, never logged.
    pub redis_url: String,
    /// This node's name in the registry.
    pub node_id: String,
    /// Prefix of every Redis key and channel: clusters sharing one Redis
    /// keep apart by name.
    pub name: String,
    pub heartbeat: Duration,
    pub registry_ttl: Duration,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis_url", &"[redacted]")
            .field("node_id", &self.node_id)
            .field("name", &self.name)
            .field("heartbeat", &self.heartbeat)
            .field("registry_ttl", &self.registry_ttl)
            .finish()
    }
}

/// Why the cluster routing could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// An envelope on its way to another node.
#[derive(Debug, Serialize, Deserialize)]
struct WireEnvelope {
    seq: u64,
    device: DeviceId,
    kind: EnvelopeKind,
    from: AccountId,
    from_device: DeviceId,
    msg: String,
    ts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<GroupId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ref_msg: Option<String>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD_NO_PAD
}

impl WireEnvelope {
    fn from_stored(e: &StoredEnvelope) -> Self {
        WireEnvelope {
            seq: e.seq.0,
            device: e.device,
            kind: e.kind,
            from: e.from,
            from_device: e.from_device,
            msg: e.msg.as_str().to_owned(),
            ts: e.ts,
            payload: e.payload.as_ref().map(|p| b64().encode(p)),
            group: e.group,
            ref_msg: e.ref_msg.as_ref().map(|m| m.as_str().to_owned()),
        }
    }

    fn into_stored(self) -> Option<StoredEnvelope> {
        Some(StoredEnvelope {
            seq: Seq(self.seq),
            device: self.device,
            kind: self.kind,
            from: self.from,
            from_device: self.from_device,
            msg: ClientMsgId::new(self.msg).ok()?,
            ts: self.ts,
            payload: match self.payload {
                Some(p) => Some(b64().decode(p).ok()?),
                None => None,
            },
            group: self.group,
            ref_msg: self.ref_msg.and_then(|m| ClientMsgId::new(m).ok()),
        })
    }
}

/// What nodes tell each other.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Wire {
    Envelopes {
        envelopes: Vec<WireEnvelope>,
    },
    Revoked {
        device: DeviceId,
    },
    /// The device connected on another node: close its connection here.
    Replaced {
        device: DeviceId,
    },
    Typing {
        from: AccountId,
        from_device: DeviceId,
        to: AccountId,
        typing: bool,
    },
    Presence {
        origin: String,
        account: AccountId,
        online: bool,
        last_seen: Option<u64>,
        privacy: LastSeenPrivacy,
    },
    Frame {
        device: DeviceId,
        frame: Box<ServerFrame>,
    },
    /// A call request for the call leader (see `calls::remote`).
    Call {
        from: String,
        req: u64,
        input: crate::calls::CallInput,
    },
    /// The leader's verdict on a call request.
    CallDone {
        req: u64,
        error: Option<crate::calls::CallError>,
    },
}

/// Work for the publisher task, in the order it was produced.
enum Outbound {
    Envelopes(Vec<Arc<StoredEnvelope>>),
    Revoked(DeviceId),
    Typing {
        from: AccountId,
        from_device: DeviceId,
        to: AccountId,
        typing: bool,
    },
    Presence(Wire),
    Frame(DeviceId, Arc<ServerFrame>),
}

/// This node's view of the cluster.
pub struct Cluster {
    config: ClusterConfig,
    keys: Keys,
    redis: ConnectionManager,
    router: Arc<Router>,
    out: mpsc::UnboundedSender<Outbound>,
    calls: calls::LeaderState,
    reaped: reap::Reaped,
    call_store: call_store::CallStore,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.config.node_id)
            .finish_non_exhaustive()
    }
}

/// Names of this cluster's keys and channels.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn dev(&self, d: DeviceId) -> String {
        format!("{}:dev:{}", self.prefix, d.0)
    }

    fn acct(&self, a: AccountId) -> String {
        format!("{}:acct:{}", self.prefix, a.0)
    }

    fn alive(&self, node: &str) -> String {
        format!("{}:alive:{node}", self.prefix)
    }

    fn inbox(&self, node: &str) -> String {
        format!("{}:inbox:{node}", self.prefix)
    }

    fn calls_leader(&self) -> String {
        format!("{}:calls:leader", self.prefix)
    }

    fn broadcast(&self) -> String {
        format!("{}:broadcast", self.prefix)
    }
}

/// Longest a connection waits for Redis before going on without it.
const REDIS_WAIT: Duration = Duration::from_secs(2);

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(REDIS_WAIT, f).await.ok()
}

/// Deletes a registry entry only if it still names this node.
const UNREGISTER: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[2], ARGV[2]) end
return 0
"#;

impl Cluster {
    /// Connects to Redis, subscribes to this node's inbox and starts the
    /// publisher and heartbeat tasks; they stop with `stop`.
    pub async fn start(
        config: ClusterConfig,
        router: Arc<Router>,
        stop: CancellationToken,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let client = redis::Client::open(config.redis_url.as_str())?;
        let redis = client.get_connection_manager().await?;
        let keys = Keys {
            prefix: config.name.clone(),
        };
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(keys.inbox(&config.node_id)).await?;
        pubsub.subscribe(keys.broadcast()).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let cluster = Arc::new(Cluster {
            config,
            keys,
            redis,
            router,
            out: tx,
            calls: calls::LeaderState::default(),
            reaped: reap::Reaped::default(),
            call_store: call_store::CallStore::default(),
        });
        // Leftovers of an earlier run under this name.
        cluster.reap(&cluster.config.node_id).await;
        cluster.beat().await?;
        tokio::spawn(cluster.clone().subscriber(client, pubsub, stop.clone()));
        tokio::spawn(cluster.clone().publisher(rx));
        tokio::spawn(cluster.clone().write_calls());
        tokio::spawn(cluster.clone().heartbeat(stop));
        tracing::info!(node = %cluster.config.node_id, "joined the cluster");
        Ok(cluster)
    }

    /// The store's notifier: local delivery, then the other nodes.
    pub fn notifier(self: &Arc<Self>) -> Arc<dyn Notifier> {
        self.clone()
    }

    /// Whether Redis answers a PING in time (for `/readyz`).
    pub(crate) async fn ping(&self) -> bool {
        let mut r = self.redis.clone();
        let pong = bounded(redis::cmd("PING").query_async::<String>(&mut r)).await;
        match pong {
            Some(Ok(_)) => true,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "readiness check: Redis failed");
                false
            }
            None => {
                tracing::warn!("readiness check: Redis did not answer in time");
                false
            }
        }
    }

    /// This node's name.
    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// The SFU node registry, over this node's Redis connection.
    pub fn sfu_registry(&self) -> crate::sfu_registry::SfuRegistry {
        crate::sfu_registry::SfuRegistry::new(self.redis.clone(), &self.config.name)
    }

    fn ttl_ms(&self) -> u64 {
        self.config.registry_ttl.as_millis() as u64
    }

    /// Records that `device` is connected here; tells the node that held it
    /// before to close its connection there.
    pub(crate) async fn register(&self, account: AccountId, device: DeviceId) {
        if bounded(self.register_inner(account, device))
            .await
            .is_none()
        {
            tracing::warn!("Redis did not answer a registration in time");
        }
    }

    async fn register_inner(&self, account: AccountId, device: DeviceId) {
        let mut r = self.redis.clone();
        let node = &self.config.node_id;
        let result: redis::RedisResult<(Option<String>,)> = redis::pipe()
            .cmd("SET")
            .arg(self.keys.dev(device))
            .arg(node)
            .arg("PX")
            .arg(self.ttl_ms())
            .arg("GET")
            .hset(self.keys.acct(account), device.0, node)
            .ignore()
            .pexpire(self.keys.acct(account), self.ttl_ms() as i64)
            .ignore()
            .sadd(self.keys.node_accounts(node), account.0)
            .ignore()
            .query_async(&mut r)
            .await;
        match result {
            Ok((Some(old),)) if old != *node => {
                let msg = Wire::Replaced { device };
                self.publish(&mut r, &self.keys.inbox(&old), &msg).await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot register a device in Redis"),
        }
    }

    /// Forgets `device`'s registration, if it still names this node.
    pub(crate) async fn unregister(&self, account: AccountId, device: DeviceId) {
        if bounded(self.unregister_inner(account, device))
            .await
            .is_none()
        {
            tracing::warn!("Redis did not answer an unregistration in time");
        }
    }

    async fn unregister_inner(&self, account: AccountId, device: DeviceId) {
        let mut r = self.redis.clone();
        let result: redis::RedisResult<i64> = redis::Script::new(UNREGISTER)
            .key(self.keys.dev(device))
            .key(self.keys.acct(account))
            .arg(&self.config.node_id)
            .arg(device.0)
            .invoke_async(&mut r)
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot unregister a device in Redis");
        }
    }

    /// Devices of `account` connected to other live nodes (none if Redis
    /// does not answer in time).
    pub(crate) async fn devices_elsewhere(&self, account: AccountId) -> Vec<DeviceId> {
        bounded(self.devices_elsewhere_inner(account))
            .await
            .unwrap_or_default()
    }

    async fn devices_elsewhere_inner(&self, account: AccountId) -> Vec<DeviceId> {
        let mut r = self.redis.clone();
        let entries: HashMap<u64, String> = match r.hgetall(self.keys.acct(account)).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the registry");
                return Vec::new();
            }
        };
        let mut devices: Vec<DeviceId> = Vec::new();
        for (device, node) in entries {
            if node != self.config.node_id && self.alive(&mut r, &node).await {
                devices.push(DeviceId(device));
            }
        }
        devices.sort_unstable();
        devices
    }

    async fn alive(&self, r: &mut ConnectionManager, node: &str) -> bool {
        r.exists(self.keys.alive(node)).await.unwrap_or(false)
    }

    pub(crate) fn typing(&self, from: AccountId, from_device: DeviceId, to: AccountId, on: bool) {
        let _ = self.out.send(Outbound::Typing {
            from,
            from_device,
            to,
            typing: on,
        });
    }

    pub(crate) fn announce(
        &self,
        account: AccountId,
        online: bool,
        last_seen: Option<u64>,
        privacy: LastSeenPrivacy,
    ) {
        let _ = self.out.send(Outbound::Presence(Wire::Presence {
            origin: self.config.node_id.clone(),
            account,
            online,
            last_seen,
            privacy,
        }));
    }

    /// Sends a frame to a device connected to another node.
    pub(crate) fn deliver_frame(&self, device: DeviceId, frame: Arc<ServerFrame>) {
        let _ = self.out.send(Outbound::Frame(device, frame));
    }

    async fn publish(&self, r: &mut ConnectionManager, channel: &str, msg: &Wire) {
        let body = match serde_json::to_vec(msg) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode a cluster message");
                return;
            }
        };
        let sent: redis::RedisResult<i64> = r.publish(channel, body).await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot publish to Redis; receivers will catch up");
        }
    }

    /// The live node holding each device, for devices not connected here.
    async fn nodes_of(
        &self,
        r: &mut ConnectionManager,
        devices: &[DeviceId],
    ) -> HashMap<DeviceId, String> {
        let remote: Vec<DeviceId> = devices
            .iter()
            .copied()
            .filter(|d| !self.router.has_device(*d))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if remote.is_empty() {
            return HashMap::new();
        }
        let keys: Vec<String> = remote.iter().map(|d| self.keys.dev(*d)).collect();
        let nodes: Vec<Option<String>> = match redis::cmd("MGET").arg(&keys).query_async(r).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the registry");
                return HashMap::new();
            }
        };
        remote
            .into_iter()
            .zip(nodes)
            .filter_map(|(d, n)| n.filter(|n| *n != self.config.node_id).map(|n| (d, n)))
            .collect()
    }

    async fn publisher(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Outbound>) {
        let mut r = self.redis.clone();
        while let Some(item) = rx.recv().await {
            match item {
                Outbound::Envelopes(envs) => self.forward_envelopes(&mut r, &envs).await,
                Outbound::Revoked(device) => {
                    if let Some(node) = self.nodes_of(&mut r, &[device]).await.remove(&device) {
                        self.publish(&mut r, &self.keys.inbox(&node), &Wire::Revoked { device })
                            .await;
                    }
                }
                Outbound::Frame(device, frame) => {
                    if let Some(node) = self.nodes_of(&mut r, &[device]).await.remove(&device) {
                        let frame = Box::new((*frame).clone());
                        self.publish(
                            &mut r,
                            &self.keys.inbox(&node),
                            &Wire::Frame { device, frame },
                        )
                        .await;
                    }
                }
                Outbound::Typing {
                    from,
                    from_device,
                    to,
                    typing,
                } => {
                    let devices = self.devices_elsewhere(to).await;
                    let nodes: std::collections::BTreeSet<String> = self
                        .nodes_of(&mut r, &devices)
                        .await
                        .into_values()
                        .collect();
                    let msg = Wire::Typing {
                        from,
                        from_device,
                        to,
                        typing,
                    };
                    for node in nodes {
                        self.publish(&mut r, &self.keys.inbox(&node), &msg).await;
                    }
                }
                Outbound::Presence(msg) => self.publish(&mut r, &self.keys.broadcast(), &msg).await,
            }
        }
    }

    async fn forward_envelopes(&self, r: &mut ConnectionManager, envs: &[Arc<StoredEnvelope>]) {
        let devices: Vec<DeviceId> = envs.iter().map(|e| e.device).collect();
        let nodes = self.nodes_of(r, &devices).await;
        if nodes.is_empty() {
            return;
        }
        let mut per_node: BTreeMap<&str, Vec<WireEnvelope>> = BTreeMap::new();
        for e in envs {
            if let Some(node) = nodes.get(&e.device) {
                per_node
                    .entry(node.as_str())
                    .or_default()
                    .push(WireEnvelope::from_stored(e));
            }
        }
        for (node, envelopes) in per_node {
            self.publish(r, &self.keys.inbox(node), &Wire::Envelopes { envelopes })
                .await;
        }
    }

    /// Renews this node's liveness and registry entries.
    async fn beat(&self) -> redis::RedisResult<()> {
        let mut r = self.redis.clone();
        let ttl = self.ttl_ms();
        let node = &self.config.node_id;
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.keys.alive(node))
            .arg(1)
            .arg("PX")
            .arg(ttl)
            .ignore();
        // After the liveness key, so that no reaper sees the name without it.
        self.beat_nodes(&mut pipe, crate::now_ms());
        for (account, devices) in self.router.local_devices() {
            for d in &devices {
                pipe.cmd("SET")
                    .arg(self.keys.dev(*d))
                    .arg(node)
                    .arg("PX")
                    .arg(ttl)
                    .ignore()
                    .hset(self.keys.acct(account), d.0, node)
                    .ignore();
            }
            pipe.pexpire(self.keys.acct(account), ttl as i64)
                .ignore()
                .sadd(self.keys.node_accounts(node), account.0)
                .ignore();
        }
        pipe.query_async::<()>(&mut r).await
    }

    async fn heartbeat(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.beat().await {
                tracing::warn!(error = %e, "cannot renew this node's registry entries");
            }
            self.elect_call_leader().await;
            self.reap_dead_nodes().await;
        }
        // A clean stop: other nodes stop routing here at once.
        self.leave_nodes().await;
        let mut r = self.redis.clone();
        let _: redis::RedisResult<i64> = r.del(self.keys.alive(&self.config.node_id)).await;
    }

    async fn subscriber(
        self: Arc<Self>,
        client: redis::Client,
        pubsub: redis::aio::PubSub,
        stop: CancellationToken,
    ) {
        use futures_util::StreamExt;
        let mut pubsub = Some(pubsub);
        loop {
            let mut sub = match pubsub.take() {
                Some(p) => p,
                None => match self.resubscribe(&client).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot subscribe to Redis; retrying");
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                },
            };
            let mut stream = sub.on_message();
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => return,
                    m = stream.next() => m,
                };
                let Some(msg) = msg else { break };
                self.receive(msg.get_payload_bytes());
            }
            tracing::warn!("lost the Redis subscription; reconnecting");
        }
    }

    async fn resubscribe(&self, client: &redis::Client) -> redis::RedisResult<redis::aio::PubSub> {
        let mut p = client.get_async_pubsub().await?;
        p.subscribe(self.keys.inbox(&self.config.node_id)).await?;
        p.subscribe(self.keys.broadcast()).await?;
        Ok(p)
    }

    /// Hands a message from another node to the local connections.
    fn receive(&self, body: &[u8]) {
        let msg: Wire = match serde_json::from_slice(body) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a malformed cluster message");
                return;
            }
        };
        match msg {
            Wire::Envelopes { envelopes } => {
                let envs: Vec<Arc<StoredEnvelope>> = envelopes
                    .into_iter()
                    .filter_map(WireEnvelope::into_stored)
                    .map(Arc::new)
                    .collect();
                self.router.envelopes(&envs);
            }
            Wire::Revoked { device } => self.router.device_revoked(device),
            Wire::Replaced { device } => self.router.replaced_elsewhere(device),
            Wire::Typing {
                from,
                from_device,
                to,
                typing,
            } => self.router.typing(from, from_device, to, typing),
            Wire::Presence {
                origin,
                account,
                online,
                last_seen,
                privacy,
            } => {
                if origin != self.config.node_id {
                    self.router.announce(account, online, last_seen, privacy);
                }
            }
            Wire::Frame { device, frame } => {
                self.router.deliver(device, Push::Frame(Arc::new(*frame)));
            }
            Wire::Call { from, req, input } => self.call_request(from, req, input),
            Wire::CallDone { req, error } => self.call_done(req, error),
        }
    }
}

impl Notifier for Cluster {
    fn envelopes(&self, envelopes: &[Arc<StoredEnvelope>]) {
        self.router.envelopes(envelopes);
        let _ = self.out.send(Outbound::Envelopes(envelopes.to_vec()));
    }

    fn device_revoked(&self, device: DeviceId) {
        self.router.device_revoked(device);
        let _ = self.out.send(Outbound::Revoked(device));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_survive_the_wire() {
        let e = StoredEnvelope {
            seq: Seq(7),
            device: DeviceId(3),
            kind: EnvelopeKind::Message,
            from: AccountId(1),
            from_device: DeviceId(2),
            msg: ClientMsgId::new("m1").unwrap(),
            ts: 5,
            payload: Some(vec![0, 1, 255]),
            group: Some(GroupId(9)),
            ref_msg: None,
        };
        let wire = Wire::Envelopes {
            envelopes: vec![WireEnvelope::from_stored(&e)],
        };
        let body = serde_json::to_vec(&wire).unwrap();
        let Wire::Envelopes { envelopes } = serde_json::from_slice(&body).unwrap() else {
            panic!("wrong variant");
        };
        let back = envelopes.into_iter().next().unwrap().into_stored().unwrap();
        assert_eq!(back, e);
    }
}
