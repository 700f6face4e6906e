//! Which peer a datagram belongs to, in O(1): by the sender's address once
//! known, else by the ICE username of a STUN binding request. Nothing here
//! scans the peers.

use std::collections::HashMap;
use std::net::SocketAddr;

/// A peer inside one worker.
pub type PeerKey = u64;

/// Returns our ICE ufrag from a STUN message's USERNAME attribute
/// (`"<our ufrag>:<their ufrag>"`), or `None` if `buf` is not a STUN
/// message carrying one.
pub fn stun_local_ufrag(buf: &[u8]) -> Option<&str> {
    const MAGIC: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
    const USERNAME: u16 = 0x0006;
    if buf.len() < 20 || buf[0] & 0xc0 != 0 || buf[4..8] != MAGIC {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let mut attrs = buf.get(20..20 + len)?;
    while attrs.len() >= 4 {
        let kind = u16::from_be_bytes([attrs[0], attrs[1]]);
        let alen = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4 + alen)?;
        if kind == USERNAME {
            let name = std::str::from_utf8(value).ok()?;
            return name.split(':').next();
        }
        let padded = (4 + alen + 3) & !3;
        attrs = attrs.get(padded..)?;
    }
    None
}

/// The lookup tables of one worker.
#[derive(Debug, Default)]
pub struct Demux {
    by_ufrag: HashMap<String, PeerKey>,
    by_addr: HashMap<SocketAddr, PeerKey>,
    addrs_of: HashMap<PeerKey, Vec<SocketAddr>>,
}

/// How many remote addresses one peer may have (ICE tries a few).
const MAX_ADDRS_PER_PEER: usize = 8;

impl Demux {
    pub fn insert_peer(&mut self, peer: PeerKey, ufrag: String) {
        self.by_ufrag.insert(ufrag, peer);
        self.addrs_of.insert(peer, Vec::new());
    }

    /// The peer for a datagram from `source`.
    pub fn lookup(&mut self, source: SocketAddr, buf: &[u8]) -> Option<PeerKey> {
        if let Some(p) = self.by_addr.get(&source) {
            return Some(*p);
        }
        let peer = *self.by_ufrag.get(stun_local_ufrag(buf)?)?;
        let addrs = self.addrs_of.get_mut(&peer)?;
        if addrs.len() < MAX_ADDRS_PER_PEER {
            addrs.push(source);
            self.by_addr.insert(source, peer);
        }
        Some(peer)
    }

    /// An ICE restart: the peer has a new ufrag, and its old addresses
    /// are forgotten (its new path is learned from the new STUN checks).
    pub fn rekey(&mut self, peer: PeerKey, old_ufrag: &str, new_ufrag: String) {
        if self.by_ufrag.get(old_ufrag) == Some(&peer) {
            self.by_ufrag.remove(old_ufrag);
        }
        self.by_ufrag.insert(new_ufrag, peer);
        for a in self
            .addrs_of
            .get_mut(&peer)
            .map(std::mem::take)
            .unwrap_or_default()
        {
            if self.by_addr.get(&a) == Some(&peer) {
                self.by_addr.remove(&a);
            }
        }
    }

    pub fn remove_peer(&mut self, peer: PeerKey, ufrag: &str) {
        self.by_ufrag.remove(ufrag);
        for a in self.addrs_of.remove(&peer).unwrap_or_default() {
            if self.by_addr.get(&a) == Some(&peer) {
                self.by_addr.remove(&a);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_ufrag.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ufrag.is_empty()
    }
}

/// Peers waiting to be polled, each once however often it was touched:
/// a subscriber written many packets in one batch is polled once, and
/// str0m's per-poll work (timers, pacing, SCTP, DTLS) is paid once.
#[derive(Debug, Default)]
pub struct Dirty {
    list: Vec<PeerKey>,
    set: std::collections::HashSet<PeerKey>,
}

impl Dirty {
    pub fn push(&mut self, peer: PeerKey) {
        if self.set.insert(peer) {
            self.list.push(peer);
        }
    }

    pub fn pop(&mut self) -> Option<PeerKey> {
        let peer = self.list.pop()?;
        self.set.remove(&peer);
        Some(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        // A PRIORITY attribute first, to exercise skipping.
        attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        attrs.extend_from_slice(&0x0006u16.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn finds_peer_by_ufrag_then_by_address() {
        let mut d = Demux::default();
        d.insert_peer(1, "abcd".into());
        d.insert_peer(2, "wxyz".into());
        let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        assert_eq!(d.lookup(a, b"\x80garbage"), None);
        assert_eq!(d.lookup(a, &binding_request("wxyz:remote")), Some(2));
        // Media from the same address now maps without STUN.
        assert_eq!(d.lookup(a, &[0x80, 0x60, 0, 1]), Some(2));
        d.remove_peer(2, "wxyz");
        assert_eq!(d.lookup(a, &[0x80, 0x60, 0, 1]), None);
        assert_eq!(d.lookup(a, &binding_request("wxyz:remote")), None);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn dirty_peers_are_polled_once() {
        let mut d = Dirty::default();
        for k in [1, 2, 1, 1, 3, 2] {
            d.push(k);
        }
        let mut got = Vec::new();
        while let Some(k) = d.pop() {
            got.push(k);
        }
        got.sort();
        assert_eq!(got, [1, 2, 3]);
        d.push(1);
        assert_eq!(d.pop(), Some(1), "popped peers can be touched again");
    }

    #[test]
    fn truncated_stun_is_ignored() {
        let m = binding_request("abcd:efgh");
        for n in 0..m.len() {
            let _ = stun_local_ufrag(&m[..n]);
        }
        assert_eq!(stun_local_ufrag(&m), Some("abcd"));
    }
}
