//! Ad-hoc group calls: which accounts may join which SFU room, and the
//! signed join tokens (see `palaver_proto::join_token`) handed to them.
//! Plain state; callers pass the time.

use palaver_proto::AccountId;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Where group calls happen and how tickets are signed.
#[derive(Clone, PartialEq, Eq)]
pub struct GroupCallConfig {
    /// The SFU's base URL, e.g. `https://sfu.example`: the only SFU on a
    /// single node; with the SFU node registry (`cluster.redis_url`), only
    /// used while no SFU node is registered.
    pub sfu_url: Option<String>,
    /// HMAC key shared with the SFU.
    pub token_secret: Vec<u8>,
    /// Lifetime of a join token.
    pub token_ttl: Duration,
    /// Accounts one `group_call_start` may invite.
    pub max_invites: usize,
    /// A room is forgotten (nobody else may join) this long after it started.
    pub room_ttl: Duration,
    /// With the SFU node registry: how often this node looks for dead or
    /// draining SFU nodes whose rooms must move.
    pub node_poll: Duration,
}

impl std::fmt::Debug for GroupCallConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCallConfig")
            .field("sfu_url", &self.sfu_url)
            .field("token_secret", &"[redacted]")
            .field("token_ttl", &self.token_ttl)
            .field("max_invites", &self.max_invites)
            .field("room_ttl", &self.room_ttl)
            .field("node_poll", &self.node_poll)
            .finish()
    }
}

#[derive(Debug)]
struct Grant {
    creator: AccountId,
    members: HashSet<AccountId>,
    started: Instant,
}

/// The rooms signaling created and who may join them.
#[derive(Debug, Default)]
pub(crate) struct Rooms {
    rooms: HashMap<String, Grant>,
}

impl Rooms {
    /// Creates a room for `creator` and `invited`; returns its name.
    pub(crate) fn create(
        &mut self,
        creator: AccountId,
        invited: &[AccountId],
        now: Instant,
        ttl: Duration,
    ) -> String {
        self.rooms
            .retain(|_, g| now.saturating_duration_since(g.started) < ttl);
        let name = new_room_name();
        let members = invited.iter().copied().chain([creator]).collect();
        self.rooms.insert(
            name.clone(),
            Grant {
                creator,
                members,
                started: now,
            },
        );
        name
    }

    /// True when `account` may join `room` (it exists and has not expired).
    pub(crate) fn may_join(
        &self,
        room: &str,
        account: AccountId,
        now: Instant,
        ttl: Duration,
    ) -> bool {
        self.rooms.get(room).is_some_and(|g| {
            g.members.contains(&account) && now.saturating_duration_since(g.started) < ttl
        })
    }
}

/// A fresh, unguessable room name.
pub(crate) fn new_room_name() -> String {
    format!("g{:016x}", rand::random::<u64>())
}

impl Rooms {
    /// True when `account` started `room` (its tickets carry `admin`).
    pub(crate) fn is_creator(&self, room: &str, account: AccountId) -> bool {
        self.rooms.get(room).is_some_and(|g| g.creator == account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_members_join_until_the_room_expires() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        let mut r = Rooms::default();
        let room = r.create(AccountId(1), &[AccountId(2)], t0, ttl);
        assert!(r.may_join(&room, AccountId(1), t0, ttl));
        assert!(r.may_join(&room, AccountId(2), t0, ttl));
        assert!(!r.may_join(&room, AccountId(3), t0, ttl));
        assert!(!r.may_join("nope", AccountId(1), t0, ttl));
        assert!(r.is_creator(&room, AccountId(1)));
        assert!(!r.is_creator(&room, AccountId(2)));
        assert!(!r.may_join(&room, AccountId(2), t0 + ttl, ttl));
        // Expired rooms are dropped when the next one is made.
        let other = r.create(AccountId(5), &[], t0 + ttl, ttl);
        assert_ne!(room, other);
        assert_eq!(r.rooms.len(), 1);
    }
}
