//! ICE restart: a participant whose network changed (a phone moving from
//! Wi-Fi to mobile data) keeps its session — tracks, subscriptions, DTLS
//! and the data channel — and only renews its ICE credentials and path.
//!
//! The data channel runs over the broken path, so the restart offer comes
//! over HTTP (`POST /v1/rooms/{room}/restart`), authenticated by the
//! session token the SFU gave in `welcome`. A participant whose ICE
//! disconnected is kept for `sfu.ice_timeout` to give it that chance.

use std::time::Instant;

use str0m::change::SdpOffer;
use str0m::media::Mid;

use crate::demux::PeerKey;
use crate::peer::OutState;
use crate::worker::Worker;

/// Why an ICE restart was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestartError {
    /// Unknown session, wrong secret, or another room: all look the same
    /// from outside.
    #[error("no such session in this room")]
    NoSession,
    #[error("malformed SDP offer: {0}")]
    BadOffer(String),
}

/// A session token: `<peer key>.<32 hex digits of secret>`.
pub(crate) fn session_token(key: PeerKey, secret: &[u8; 16]) -> String {
    let mut s = format!("{key}.");
    for b in secret {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn parse_token(token: &str) -> Option<(PeerKey, [u8; 16])> {
    let (key, hex) = token.split_once('.')?;
    if hex.len() != 32 {
        return None;
    }
    let mut secret = [0u8; 16];
    for (i, b) in secret.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some((key.parse().ok()?, secret))
}

/// Compares in constant time, so timing does not tell how much of a guess
/// was right.
fn same(a: &[u8; 16], b: &[u8; 16]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// The mids (`a=mid:`) of an SDP.
fn mids(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .map(str::to_owned)
        .collect()
}

impl Worker {
    /// Applies a participant's ICE-restart offer; returns the answer with
    /// our new ICE credentials.
    pub fn restart(
        &mut self,
        room: &str,
        token: &str,
        offer: &str,
        now: Instant,
    ) -> Result<String, RestartError> {
        let (key, secret) = parse_token(token).ok_or(RestartError::NoSession)?;
        let in_room = |w: &Worker| {
            let p = w.peers.get(&key)?;
            let r = w.rooms.get(&p.room)?;
            (r.name() == room && same(&p.session_secret, &secret) && !p.closing).then_some(())
        };
        in_room(self).ok_or(RestartError::NoSession)?;
        let parsed =
            SdpOffer::from_sdp_string(offer).map_err(|e| RestartError::BadOffer(e.to_string()))?;
        let offered = mids(offer);
        let Some(peer) = self.peers.get_mut(&key) else {
            return Err(RestartError::NoSession);
        };
        // Our own offer, if one was under way, is void: the client rolled
        // it back or answered into the dead channel.
        peer.drop_pending_offer();
        let answer = peer
            .rtc
            .sdp_api()
            .accept_offer(parsed)
            .map_err(|e| RestartError::BadOffer(e.to_string()))?;
        let opened = settle_tracks(peer, &offered);
        let old = std::mem::replace(
            &mut peer.ufrag,
            peer.rtc.direct_api().local_ice_credentials().ufrag,
        );
        peer.ice_deadline = Some(now + self.cfg.ice_timeout);
        peer.needs_negotiation = true;
        let new = peer.ufrag.clone();
        self.demux.rekey(key, &old, new);
        self.stats.ice_restarts += 1;
        self.request_for_opened(key, &opened, now);
        self.dirty.push(key);
        self.drive(now);
        Ok(answer.to_sdp_string())
    }
}

/// Tracks caught in our voided offer: those the client's offer carries were
/// answered on its side, so they are open; the others are offered again.
fn settle_tracks(peer: &mut crate::peer::Peer, offered: &[String]) -> Vec<Mid> {
    let has = |m: &Mid| offered.iter().any(|o| o == &m.to_string());
    let mut opened = Vec::new();
    for t in peer.tracks_out.values_mut() {
        match t.state {
            OutState::Negotiating(m) if has(&m) => {
                t.state = OutState::Open(m);
                opened.push(m);
            }
            OutState::Negotiating(_) => t.state = OutState::ToOpen,
            OutState::NegotiatingStop(m) => t.state = OutState::ToStop(m),
            _ => {}
        }
    }
    opened
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let secret = [0xab; 16];
        let t = session_token(42, &secret);
        assert_eq!(t, format!("42.{}", "ab".repeat(16)));
        assert_eq!(parse_token(&t), Some((42, secret)));
        for bad in [
            "",
            "42",
            "42.",
            "x.abab",
            "42.zz",
            &t[..t.len() - 1],
            "42.ééééééééééééééé",
        ] {
            assert_eq!(parse_token(bad), None, "{bad}");
        }
        assert!(same(&secret, &[0xab; 16]));
        assert!(!same(&secret, &[0xac; 16]));
    }

    #[test]
    fn finds_mids() {
        let sdp =
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 x 96\r\na=mid:1\r\n";
        assert_eq!(mids(sdp), ["0", "1"]);
    }
}
