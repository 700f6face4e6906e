//! The SFU node registry and the group-call rooms in Redis: the thin I/O
//! layer under [`crate::sfu_nodes`]. Keys (`P` is `cluster.name`):
//!
//! - `P:sfu:node:{id}`: the node's [`NodeStatus`] as JSON, renewed at every
//!   heartbeat with a short TTL; gone means dead.
//! - `P:sfu:nodes`: a set of every registered node id; an id whose status
//!   key is gone is a dead node whose rooms have not been moved yet.
//! - `P:sfu:rooms:{id}`: the rooms placed on that node.
//! - `P:gcall:{room}`: a hash, `node` (where the room lives) and `members`
//!   (JSON list of the accounts that may join); expires with the room.
//! - `P:gcall:{room}:devs`: a hash device -> account of every device that
//!   took a ticket for the room: who is told when the room moves.
//! - `P:sfu:evacuate:{id}`: a lock (`SET NX PX`) so that one signaling
//!   node moves a dead or draining node's rooms.
//! - `P:gcall:{room}:kicked`: the accounts the call's admin kicked, written
//!   by the SFU node that hosted the room, read by any node the room moves
//!   to; expires with the room.

use crate::sfu_nodes::NodeStatus;
use palaver_proto::{AccountId, DeviceId};
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::time::Duration;

/// A Redis operation of the registry failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("malformed registry entry {key}: {source}")]
    Malformed {
        key: String,
        source: serde_json::Error,
    },
}

type Result<T> = std::result::Result<T, RegistryError>;

/// A group call as the registry knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomRecord {
    /// The SFU node hosting it.
    pub node: String,
    /// Accounts that may join.
    pub members: Vec<AccountId>,
    /// Who started it (the admin).
    pub creator: Option<AccountId>,
}

/// Handle on the registry; cheap to clone.
#[derive(Clone)]
pub struct SfuRegistry {
    redis: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for SfuRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SfuRegistry")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Adds ARGV[1] to the kicked set KEYS[1], expiring with the room KEYS[2]
/// (ARGV[2] ms if the room has no expiry).
const RECORD_KICK: &str = r#"
redis.call('SADD', KEYS[1], ARGV[1])
local ttl = redis.call('PTTL', KEYS[2])
if ttl <= 0 then ttl = tonumber(ARGV[2]) end
redis.call('PEXPIRE', KEYS[1], ttl)
return 0
"#;

fn px(d: Duration) -> u64 {
    d.as_millis().max(1) as u64
}

impl SfuRegistry {
    /// Connects to Redis (`redis_url` is a secret: errors never contain it).
    pub async fn connect(redis_url: &str, prefix: &str) -> Result<SfuRegistry> {
        let client = redis::Client::open(redis_url)?;
        let redis = client.get_connection_manager().await?;
        Ok(Self::new(redis, prefix))
    }

    /// Over an existing connection.
    pub fn new(redis: ConnectionManager, prefix: &str) -> SfuRegistry {
        SfuRegistry {
            redis,
            prefix: prefix.to_owned(),
        }
    }

    fn key(&self, parts: std::fmt::Arguments<'_>) -> String {
        format!("{}:{parts}", self.prefix)
    }

    fn node_key(&self, id: &str) -> String {
        self.key(format_args!("sfu:node:{id}"))
    }

    fn nodes_key(&self) -> String {
        self.key(format_args!("sfu:nodes"))
    }

    fn rooms_key(&self, id: &str) -> String {
        self.key(format_args!("sfu:rooms:{id}"))
    }

    fn room_key(&self, room: &str) -> String {
        self.key(format_args!("gcall:{room}"))
    }

    fn devs_key(&self, room: &str) -> String {
        self.key(format_args!("gcall:{room}:devs"))
    }

    fn kicked_key(&self, room: &str) -> String {
        self.key(format_args!("gcall:{room}:kicked"))
    }

    // --- Kicks, shared by the SFU nodes a room lives on. ---

    /// Records that the admin kicked `account` from `room`; the record
    /// lives as long as the room (or `fallback_ttl` if the room is
    /// unknown).
    pub async fn record_kick(
        &self,
        room: &str,
        account: AccountId,
        fallback_ttl: Duration,
    ) -> Result<()> {
        let mut r = self.redis.clone();
        redis::Script::new(RECORD_KICK)
            .key(self.kicked_key(room))
            .key(self.room_key(room))
            .arg(account.0)
            .arg(px(fallback_ttl))
            .invoke_async::<()>(&mut r)
            .await?;
        Ok(())
    }

    /// Whether `account` was kicked from `room`, on any node.
    pub async fn is_kicked(&self, room: &str, account: AccountId) -> Result<bool> {
        let mut r = self.redis.clone();
        Ok(r.sismember(self.kicked_key(room), account.0).await?)
    }

    // --- The SFU node's side. ---

    /// Publishes `status` for `ttl` and adds the node to the set of nodes.
    pub async fn beat(&self, status: &NodeStatus, ttl: Duration) -> Result<()> {
        let body = serde_json::to_string(status).map_err(|source| RegistryError::Malformed {
            key: self.node_key(&status.id),
            source,
        })?;
        let mut r = self.redis.clone();
        redis::pipe()
            .cmd("SET")
            .arg(self.node_key(&status.id))
            .arg(body)
            .arg("PX")
            .arg(px(ttl))
            .ignore()
            .sadd(self.nodes_key(), &status.id)
            .ignore()
            .query_async::<()>(&mut r)
            .await?;
        Ok(())
    }

    /// Removes the node's status at once (a clean stop): signaling moves
    /// whatever rooms it still has at its next pass.
    pub async fn deregister(&self, id: &str) -> Result<()> {
        let mut r = self.redis.clone();
        r.del::<_, ()>(self.node_key(id)).await?;
        Ok(())
    }

    // --- Signaling's side. ---

    /// Every registered node id, and the statuses of the live ones.
    pub async fn nodes(&self) -> Result<(Vec<String>, Vec<NodeStatus>)> {
        let mut r = self.redis.clone();
        let mut ids: Vec<String> = r.smembers(self.nodes_key()).await?;
        ids.sort();
        if ids.is_empty() {
            return Ok((ids, Vec::new()));
        }
        let keys: Vec<String> = ids.iter().map(|id| self.node_key(id)).collect();
        let bodies: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut r).await?;
        let mut live = Vec::new();
        for (key, body) in keys.iter().zip(bodies) {
            let Some(body) = body else { continue };
            match serde_json::from_str::<NodeStatus>(&body) {
                Ok(s) => live.push(s),
                // One bad entry must not hide the other nodes.
                Err(e) => tracing::warn!(%key, error = %e, "ignoring a malformed SFU node status"),
            }
        }
        Ok((ids, live))
    }

    /// Records a new room on `node`, started by `creator` and open to
    /// `members`, for `ttl`.
    pub async fn create_room(
        &self,
        room: &str,
        creator: AccountId,
        members: &[AccountId],
        node: &str,
        ttl: Duration,
    ) -> Result<()> {
        let ids: Vec<u64> = members.iter().map(|a| a.0).collect();
        let members = serde_json::to_string(&ids).map_err(|source| RegistryError::Malformed {
            key: self.room_key(room),
            source,
        })?;
        let mut r = self.redis.clone();
        redis::pipe()
            .hset_multiple(
                self.room_key(room),
                &[
                    ("node", node),
                    ("members", &members),
                    ("creator", &creator.0.to_string()),
                ],
            )
            .ignore()
            .pexpire(self.room_key(room), px(ttl) as i64)
            .ignore()
            .sadd(self.rooms_key(node), room)
            .ignore()
            .query_async::<()>(&mut r)
            .await?;
        Ok(())
    }

    /// The room, if it exists (and has not expired).
    pub async fn room(&self, room: &str) -> Result<Option<RoomRecord>> {
        let mut r = self.redis.clone();
        let h: HashMap<String, String> = r.hgetall(self.room_key(room)).await?;
        let (Some(node), Some(members)) = (h.get("node"), h.get("members")) else {
            return Ok(None);
        };
        let ids: Vec<u64> =
            serde_json::from_str(members).map_err(|source| RegistryError::Malformed {
                key: self.room_key(room),
                source,
            })?;
        Ok(Some(RoomRecord {
            node: node.clone(),
            members: ids.into_iter().map(AccountId).collect(),
            creator: h.get("creator").and_then(|c| c.parse().ok()).map(AccountId),
        }))
    }

    /// Remembers that `device` took a ticket for `room` (it is told if the
    /// room moves). Expires with the room.
    pub async fn add_ticket_holder(
        &self,
        room: &str,
        account: AccountId,
        device: DeviceId,
        ttl: Duration,
    ) -> Result<()> {
        let mut r = self.redis.clone();
        redis::pipe()
            .hset(self.devs_key(room), device.0, account.0)
            .ignore()
            .pexpire(self.devs_key(room), px(ttl) as i64)
            .ignore()
            .query_async::<()>(&mut r)
            .await?;
        Ok(())
    }

    /// The devices that took a ticket for `room`, with their accounts.
    pub async fn ticket_holders(&self, room: &str) -> Result<Vec<(AccountId, DeviceId)>> {
        let mut r = self.redis.clone();
        let h: HashMap<u64, u64> = r.hgetall(self.devs_key(room)).await?;
        let mut out: Vec<(AccountId, DeviceId)> = h
            .into_iter()
            .map(|(d, a)| (AccountId(a), DeviceId(d)))
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Rooms placed on `node` that still exist, with their ticket counts.
    pub async fn rooms_of(&self, node: &str) -> Result<Vec<String>> {
        let mut r = self.redis.clone();
        let mut rooms: Vec<String> = r.smembers(self.rooms_key(node)).await?;
        rooms.sort();
        Ok(rooms)
    }

    /// How many devices took tickets for `room` (an estimate of its size).
    pub async fn room_size(&self, room: &str) -> Result<u32> {
        let mut r = self.redis.clone();
        let n: u64 = r.hlen(self.devs_key(room)).await?;
        Ok(n.min(u64::from(u32::MAX)) as u32)
    }

    /// Takes the evacuation lock of `node` for `ttl`; true if this caller
    /// got it (then it alone moves the node's rooms).
    pub async fn lock_evacuation(&self, node: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let key = self.key(format_args!("sfu:evacuate:{node}"));
        let mut r = self.redis.clone();
        let got: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(holder)
            .arg("NX")
            .arg("PX")
            .arg(px(ttl))
            .query_async(&mut r)
            .await?;
        Ok(got.is_some())
    }

    /// Points `room` at node `to` (if the room still exists and is still on
    /// `from`); true if it moved. Atomic, so a room is never moved twice.
    pub async fn move_room(&self, room: &str, from: &str, to: &str) -> Result<bool> {
        const MOVE: &str = r#"
if redis.call('HGET', KEYS[1], 'node') ~= ARGV[1] then
  redis.call('SREM', KEYS[2], ARGV[3])
  return 0
end
redis.call('HSET', KEYS[1], 'node', ARGV[2])
redis.call('SREM', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[3])
return 1
"#;
        let mut r = self.redis.clone();
        let moved: i64 = redis::Script::new(MOVE)
            .key(self.room_key(room))
            .key(self.rooms_key(from))
            .key(self.rooms_key(to))
            .arg(from)
            .arg(to)
            .arg(room)
            .invoke_async(&mut r)
            .await?;
        Ok(moved == 1)
    }

    /// Forgets a dead node once its rooms have moved.
    pub async fn forget_node(&self, node: &str) -> Result<()> {
        let mut r = self.redis.clone();
        redis::pipe()
            .srem(self.nodes_key(), node)
            .ignore()
            .del(self.rooms_key(node))
            .ignore()
            .query_async::<()>(&mut r)
            .await?;
        Ok(())
    }
}
