//! Which SFU node hosts a group call: the pure decisions behind the SFU
//! node registry (the Redis I/O is in [`crate::sfu_registry`]).
//!
//! Each `palaver sfu` node publishes a [`NodeStatus`] with a short TTL; a
//! node whose status is gone is dead. New rooms go to the least-loaded live
//! node that is not draining ([`pick`]); the rooms of dead and draining
//! nodes are spread over the others ([`replan`]). No clock, no I/O.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// What an SFU node says about itself at every heartbeat (JSON in Redis).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's name, unique in the cluster.
    pub id: String,
    /// Base URL of its join endpoint, handed to clients in tickets.
    pub url: String,
    /// Its media UDP candidates (`ip:port`, one per worker), for operators.
    #[serde(default)]
    pub candidates: Vec<String>,
    /// Participants it takes before it counts as full.
    pub capacity: u32,
    /// Participants connected now.
    pub participants: u32,
    /// Rooms open now.
    pub rooms: u32,
    /// Takes no new rooms; its rooms are moved elsewhere.
    #[serde(default)]
    pub draining: bool,
}

impl NodeStatus {
    /// Load as a fraction of capacity, in millionths (no floats in order).
    fn load(&self, extra: u32) -> u64 {
        let used = u64::from(self.participants.saturating_add(extra));
        used.saturating_mul(1_000_000) / u64::from(self.capacity.max(1))
    }

    /// Not draining, and room for `extra` more participants.
    fn takes(&self, extra: u32) -> bool {
        !self.draining && self.participants.saturating_add(extra) <= self.capacity
    }
}

/// The node for a new room: the live, non-draining node with the lowest
/// load (participants / capacity), then the fewest rooms, then by id (so
/// every signaling node decides alike). `None` when all are full or gone.
pub fn pick(nodes: &[NodeStatus]) -> Option<&NodeStatus> {
    pick_with(nodes, &HashMap::new(), 1)
}

/// Like [`pick`] for a room of `size`, counting `extra[id]` more
/// participants on a node (rooms placed earlier in the same pass).
fn pick_with<'a>(
    nodes: &'a [NodeStatus],
    extra: &HashMap<&str, u32>,
    size: u32,
) -> Option<&'a NodeStatus> {
    let more = |n: &NodeStatus| extra.get(n.id.as_str()).copied().unwrap_or(0);
    nodes
        .iter()
        .filter(|n| n.takes(more(n).saturating_add(size)))
        .min_by(|a, b| (a.load(more(a)), a.rooms, &a.id).cmp(&(b.load(more(b)), b.rooms, &b.id)))
}

/// Registered nodes whose rooms must move: those without a live status
/// (dead: the heartbeat key expired) and those draining.
pub fn to_evacuate(registered: &[String], live: &[NodeStatus]) -> Vec<String> {
    let mut out: Vec<String> = registered
        .iter()
        .filter(|id| live.iter().all(|n| &n.id != *id))
        .cloned()
        .collect();
    out.extend(live.iter().filter(|n| n.draining).map(|n| n.id.clone()));
    out.sort();
    out.dedup();
    out
}

/// A room to move, with how many participants it is expected to bring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomLoad {
    pub room: String,
    pub participants: u32,
}

/// New homes for `rooms` (of node `from`), one at a time on the
/// least-loaded node, counting the rooms already placed. Rooms no node can
/// take are left out (their participants are told nothing and the room is
/// retried at the next pass).
pub fn replan(from: &str, rooms: &[RoomLoad], live: &[NodeStatus]) -> Vec<(String, String)> {
    let others: Vec<NodeStatus> = live.iter().filter(|n| n.id != from).cloned().collect();
    let mut extra: HashMap<&str, u32> = HashMap::new();
    let mut moves = Vec::new();
    for r in rooms {
        let size = r.participants.max(1);
        let Some(node) = pick_with(&others, &extra, size) else {
            continue;
        };
        *extra.entry(node.id.as_str()).or_default() += size;
        moves.push((r.room.clone(), node.id.clone()));
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, participants: u32, capacity: u32) -> NodeStatus {
        NodeStatus {
            id: id.into(),
            url: format!("http://{id}"),
            candidates: Vec::new(),
            capacity,
            participants,
            rooms: participants / 2,
            draining: false,
        }
    }

    #[test]
    fn picks_the_least_loaded_relative_to_capacity() {
        let nodes = [node("a", 10, 100), node("b", 10, 20), node("c", 30, 1000)];
        assert_eq!(pick(&nodes).unwrap().id, "c");
        assert!(pick(&[]).is_none());
    }

    #[test]
    fn ties_break_on_rooms_then_id() {
        let mut a = node("a", 0, 10);
        a.rooms = 1;
        let b = node("b", 0, 10);
        let c = node("c", 0, 10);
        assert_eq!(pick(&[a, c, b]).unwrap().id, "b");
    }

    #[test]
    fn full_and_draining_nodes_take_no_rooms() {
        let mut d = node("d", 0, 10);
        d.draining = true;
        let full = node("f", 10, 10);
        assert!(pick(&[d.clone(), full.clone()]).is_none());
        assert_eq!(pick(&[d, full, node("ok", 9, 10)]).unwrap().id, "ok");
    }

    #[test]
    fn dead_and_draining_nodes_are_evacuated() {
        let mut drain = node("b", 0, 10);
        drain.draining = true;
        let live = [node("a", 0, 10), drain];
        let registered = vec!["a".to_owned(), "b".to_owned(), "dead".to_owned()];
        assert_eq!(to_evacuate(&registered, &live), vec!["b", "dead"]);
        assert!(to_evacuate(&["a".to_owned()], &live[..1]).is_empty());
    }

    #[test]
    fn replan_spreads_rooms_and_skips_the_source() {
        let live = [node("a", 0, 10), node("b", 0, 10), node("old", 0, 10)];
        let rooms: Vec<RoomLoad> = ["r1", "r2", "r3", "r4"]
            .iter()
            .map(|r| RoomLoad {
                room: (*r).into(),
                participants: 3,
            })
            .collect();
        let moves = replan("old", &rooms, &live);
        assert_eq!(moves.len(), 4);
        assert!(moves.iter().all(|(_, to)| to != "old"));
        let on_a = moves.iter().filter(|(_, to)| to == "a").count();
        assert_eq!(on_a, 2, "{moves:?}");
    }

    #[test]
    fn replan_leaves_rooms_nobody_can_take() {
        let live = [node("a", 0, 4)];
        let rooms = [
            RoomLoad {
                room: "r1".into(),
                participants: 3,
            },
            RoomLoad {
                room: "r2".into(),
                participants: 3,
            },
        ];
        assert_eq!(
            replan("dead", &rooms, &live),
            vec![("r1".to_owned(), "a".to_owned())]
        );
        assert!(replan("a", &rooms, &live).is_empty());
    }

    #[test]
    fn status_survives_json() {
        let n = node("a", 3, 10);
        let back: NodeStatus = serde_json::from_str(&serde_json::to_string(&n).unwrap()).unwrap();
        assert_eq!(back, n);
    }
}
