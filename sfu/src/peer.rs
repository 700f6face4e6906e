//! One participant: its str0m `Rtc`, the tracks it publishes, the tracks
//! it receives, and the renegotiation over the `palaver` data channel.

use std::collections::HashMap;
use std::time::Instant;

use palaver_proto::join_token::JoinClaims;
use str0m::Rtc;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid};
use str0m::rtp::Ssrc;

use crate::demux::PeerKey;
use crate::dynacast::{Layer, Quality};
use crate::messages::{ParticipantInfo, ServerMessage};
use crate::rewrite::Rewriter;

/// A track this participant publishes.
#[derive(Debug)]
pub(crate) struct TrackIn {
    pub(crate) mid: Mid,
    pub(crate) kind: MediaKind,
    /// Simulcast layers with their measured rates; empty without
    /// simulcast.
    pub(crate) layers: Vec<Layer>,
}

/// Negotiation state of a track sent to this participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutState {
    ToOpen,
    Negotiating(Mid),
    Open(Mid),
    ToStop(Mid),
    NegotiatingStop(Mid),
}

/// A track sent to this participant: another participant's track.
#[derive(Debug)]
pub(crate) struct TrackOut {
    pub(crate) source: PeerKey,
    pub(crate) source_mid: Mid,
    /// The source participant's MediaStream id.
    pub(crate) stream: String,
    pub(crate) kind: MediaKind,
    pub(crate) state: OutState,
    pub(crate) rewriter: Option<Rewriter>,
    /// The simulcast layer forwarded now, and the one wanted next.
    pub(crate) current: Option<Rid>,
    pub(crate) target: Option<Rid>,
    /// Video waits for a keyframe before the first packet and after a
    /// switch of source.
    pub(crate) has_keyframe: bool,
    /// The last payload type mapping (publisher's pt, subscriber's pt).
    pub(crate) pt_cache: Option<(Pt, Pt)>,
    /// The subscriber asked for no video from this stream.
    pub(crate) off: bool,
}

impl TrackOut {
    pub(crate) fn open_mid(&self) -> Option<Mid> {
        match self.state {
            OutState::Open(m) => Some(m),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) key: PeerKey,
    pub(crate) room: u64,
    pub(crate) claims: JoinClaims,
    pub(crate) rtc: Rtc,
    pub(crate) ufrag: String,
    /// Proves a later ICE restart request comes from this participant.
    pub(crate) session_secret: [u8; 16],
    pub(crate) ice_deadline: Option<Instant>,
    /// ICE and DTLS completed once (later ICE disconnections get a grace).
    pub(crate) connected_once: bool,
    pub(crate) timer: Option<Instant>,
    pub(crate) channel: Option<ChannelId>,
    pending: Option<SdpPendingOffer>,
    pub(crate) tracks_in: Vec<TrackIn>,
    pub(crate) ssrc_cache: HashMap<Ssrc, (Mid, Option<Rid>)>,
    /// Keyed by source participant and its mid.
    pub(crate) tracks_out: HashMap<(PeerKey, Mid), TrackOut>,
    /// Latest egress bandwidth estimate, bits per second.
    pub(crate) bwe: Option<u64>,
    /// From str0m's stats events (participant_stats).
    pub(crate) measured: crate::participant_stats::Measured,
    /// `video_quality` preferences by stream id.
    pub(crate) quality: HashMap<String, Quality>,
    /// Messages waiting for the channel to open.
    outbox: Vec<String>,
    pub(crate) closing: bool,
    /// Tracks were added or removed, or an answer came: try to offer.
    pub(crate) needs_negotiation: bool,
}

impl Peer {
    pub(crate) fn new(
        key: PeerKey,
        room: u64,
        claims: JoinClaims,
        rtc: Rtc,
        ufrag: String,
    ) -> Self {
        Self {
            key,
            room,
            claims,
            rtc,
            ufrag,
            session_secret: rand::random(),
            ice_deadline: None,
            connected_once: false,
            timer: None,
            channel: None,
            pending: None,
            tracks_in: Vec::new(),
            ssrc_cache: HashMap::new(),
            tracks_out: HashMap::new(),
            bwe: None,
            measured: Default::default(),
            quality: HashMap::new(),
            outbox: Vec::new(),
            closing: false,
            needs_negotiation: false,
        }
    }

    pub(crate) fn info(&self) -> ParticipantInfo {
        ParticipantInfo {
            account: self.claims.account,
            device: self.claims.device,
            stream: stream_id(&self.claims),
        }
    }

    /// Sends `msg` on the data channel, or keeps it until the channel opens.
    pub(crate) fn send(&mut self, msg: &ServerMessage) {
        let Ok(json) = serde_json::to_string(msg) else {
            return;
        };
        self.send_text(json);
    }

    fn send_text(&mut self, json: String) {
        let Some(mut ch) = self.channel.and_then(|id| self.rtc.channel(id)) else {
            self.outbox.push(json);
            return;
        };
        if let Err(e) = ch.write(false, json.as_bytes()) {
            tracing::debug!(peer = self.key, error = %e, "data channel write failed");
        }
    }

    pub(crate) fn channel_opened(&mut self, id: ChannelId) {
        self.channel = Some(id);
        for json in std::mem::take(&mut self.outbox) {
            self.send_text(json);
        }
    }

    /// Adds and stops m-lines as the room changed, and sends one offer at a
    /// time over the data channel. Returns true when an offer went out.
    pub(crate) fn negotiate(&mut self) -> bool {
        if self.channel.is_none() || self.pending.is_some() || self.closing {
            return false;
        }
        let mut change = self.rtc.sdp_api();
        for t in self.tracks_out.values_mut() {
            match t.state {
                OutState::ToOpen => {
                    let mid = change.add_media(
                        t.kind,
                        Direction::SendOnly,
                        Some(t.stream.clone()),
                        None,
                        None,
                    );
                    t.state = OutState::Negotiating(mid);
                }
                OutState::ToStop(mid) => {
                    change.stop_media(mid);
                    t.state = OutState::NegotiatingStop(mid);
                }
                _ => {}
            }
        }
        if !change.has_changes() {
            return false;
        }
        let Some((offer, pending)) = change.apply() else {
            return false;
        };
        self.pending = Some(pending);
        self.send(&ServerMessage::Offer {
            sdp: offer.to_sdp_string(),
        });
        true
    }

    /// Forgets our offer under way, if any (an ICE restart voids it).
    pub(crate) fn drop_pending_offer(&mut self) {
        self.pending = None;
    }

    /// The token for `POST /v1/rooms/{room}/restart`.
    pub(crate) fn session_token(&self) -> String {
        crate::restart::session_token(self.key, &self.session_secret)
    }

    /// Applies the participant's answer to our last offer. Returns the mids
    /// that just opened.
    pub(crate) fn accept_answer(&mut self, sdp: &str) -> Result<Vec<Mid>, String> {
        let answer = SdpAnswer::from_sdp_string(sdp).map_err(|e| e.to_string())?;
        let pending = self.pending.take().ok_or("no offer is pending")?;
        self.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| e.to_string())?;
        let mut opened = Vec::new();
        for t in self.tracks_out.values_mut() {
            if let OutState::Negotiating(m) = t.state {
                t.state = OutState::Open(m);
                opened.push(m);
            }
        }
        self.tracks_out
            .retain(|_, t| !matches!(t.state, OutState::NegotiatingStop(_)));
        Ok(opened)
    }

    /// Stops every track received from `source`.
    pub(crate) fn drop_source(&mut self, source: PeerKey) {
        self.tracks_out.retain(|_, t| {
            if t.source != source {
                return true;
            }
            match t.state {
                OutState::ToOpen => false,
                OutState::Negotiating(m) | OutState::Open(m) => {
                    t.state = OutState::ToStop(m);
                    true
                }
                _ => true,
            }
        });
    }

    pub(crate) fn track_out_mut(&mut self, source: PeerKey, mid: Mid) -> Option<&mut TrackOut> {
        self.tracks_out.get_mut(&(source, mid))
    }
}

/// The MediaStream id of a participant's tracks: `a<account>d<device>`.
pub(crate) fn stream_id(c: &JoinClaims) -> String {
    format!("a{}d{}", c.account, c.device)
}
