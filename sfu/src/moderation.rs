//! Requests of a call's admin on the data channel: kick a participant, ask
//! one to mute. The admin is whoever holds a join token with `admin`
//! (signaling gives it to the call's starter). Part of the sans-IO core.

use crate::demux::PeerKey;
use crate::messages::{MediaKindName, ServerMessage, Target};
use crate::worker::Worker;

impl Worker {
    /// `from` asks to remove `target` from their room: the target gets
    /// `kicked` and is dropped (the others get `left`), and its account may
    /// not join this room again while the room is open on this worker (and,
    /// through the driver's [`crate::KickLog`], on any node it moves to).
    pub(crate) fn kick(&mut self, from: PeerKey, target: Target) {
        let Some(victim) = self.admin_target(from, target) else {
            return;
        };
        let Some(by) = self.peers.get(&from).map(|p| p.info()) else {
            return;
        };
        let room = self.peers.get(&victim).map(|p| p.room);
        if let Some(r) = room.and_then(|room| self.rooms.get_mut(&room)) {
            r.kicked.insert(target.account);
            let kick = crate::Kick {
                room: r.name().to_owned(),
                account: target.account,
            };
            self.kicks.push(kick);
        }
        if let Some(p) = self.peers.get_mut(&victim) {
            tracing::debug!(peer = victim, by = from, "kicked by the call's admin");
            p.send(&ServerMessage::Kicked { by });
            // Sent on the next poll, then the peer is dropped (drive).
            p.closing = true;
            self.dirty.push(victim);
        }
    }

    /// `from` asks `target` to mute `kind`; the target's client decides.
    pub(crate) fn mute_request(&mut self, from: PeerKey, target: Target, kind: MediaKindName) {
        let Some(victim) = self.admin_target(from, target) else {
            return;
        };
        let Some(info) = self.peers.get(&from).map(|p| p.info()) else {
            return;
        };
        if let Some(p) = self.peers.get_mut(&victim) {
            p.send(&ServerMessage::MuteRequest { from: info, kind });
            self.dirty.push(victim);
        }
    }

    /// The participant `target` in `from`'s room, if `from` is the admin;
    /// otherwise `from` gets an `error` and the answer is `None`.
    fn admin_target(&mut self, from: PeerKey, target: Target) -> Option<PeerKey> {
        let peer = self.peers.get(&from)?;
        let found = self.rooms.get(&peer.room).and_then(|r| {
            r.members.iter().copied().find(|k| {
                self.peers.get(k).is_some_and(|p| {
                    p.claims.account == target.account && p.claims.device == target.device
                })
            })
        });
        let refusal = match (peer.claims.admin, found) {
            (false, _) => "only the call's admin may do this",
            (true, None) => "no such participant in this room",
            (true, Some(k)) if k == from => "you cannot do this to yourself",
            (true, Some(k)) => return Some(k),
        };
        if let Some(p) = self.peers.get_mut(&from) {
            p.send(&ServerMessage::Error {
                message: refusal.into(),
            });
            self.dirty.push(from);
        }
        None
    }
}
