//! Per-participant statistics (the admin listener's `/sfu/participants`):
//! bitrates in and out, loss, RTT and bandwidth estimate from str0m's
//! once-a-second `PeerStats`, and the simulcast layer each forwarded video
//! is on. Part of the sans-IO core.

use std::time::Instant;

use palaver_proto::{AccountId, DeviceId};
use serde::Serialize;
use str0m::stats::PeerStats;

use crate::peer::Peer;
use crate::worker::Worker;

/// What str0m reported last, kept to turn byte totals into rates.
#[derive(Debug, Default, Clone)]
pub(crate) struct Measured {
    last: Option<(Instant, u64, u64)>,
    bitrate_in: u64,
    bitrate_out: u64,
    loss_in: Option<f32>,
    loss_out: Option<f32>,
    rtt_ms: Option<u64>,
}

impl Measured {
    /// Folds in one `PeerStats` event.
    pub(crate) fn update(&mut self, s: &PeerStats) {
        let (rx, tx) = (s.peer_bytes_rx, s.peer_bytes_tx);
        if let Some((t, prx, ptx)) = self.last {
            let ms = s.timestamp.saturating_duration_since(t).as_millis() as u64;
            let rate = |now: u64, before: u64| (now.saturating_sub(before) * 8000).checked_div(ms);
            if let (Some(i), Some(o)) = (rate(rx, prx), rate(tx, ptx)) {
                self.bitrate_in = i;
                self.bitrate_out = o;
            }
        }
        self.last = Some((s.timestamp, rx, tx));
        self.loss_in = s.ingress_loss_fraction.or(self.loss_in);
        self.loss_out = s.egress_loss_fraction.or(self.loss_out);
        let pair_rtt = s
            .selected_candidate_pair
            .as_ref()
            .and_then(|p| p.current_round_trip_time);
        if let Some(rtt) = s.rtt.or(pair_rtt) {
            self.rtt_ms = Some(rtt.as_millis() as u64);
        }
    }
}

/// One participant, as `/sfu/participants` shows it (JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParticipantStats {
    pub room: String,
    pub account: AccountId,
    pub device: DeviceId,
    /// Whole datagrams, all media and control, over the last second.
    pub bitrate_in_bps: u64,
    pub bitrate_out_bps: u64,
    /// Fraction of packets lost (0 to 1) toward the SFU and toward the
    /// participant, from RTCP reports; absent before the first report.
    pub loss_in: Option<f32>,
    pub loss_out: Option<f32>,
    pub rtt_ms: Option<u64>,
    /// The egress bandwidth estimate (TWCC), bits per second.
    pub bandwidth_estimate_bps: Option<u64>,
    /// The simulcast layer forwarded to this participant, per source
    /// stream (only simulcast videos).
    pub layers: Vec<ForwardedLayer>,
}

/// The layer of one forwarded simulcast video.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForwardedLayer {
    pub stream: String,
    pub rid: String,
}

fn stats_of(room: &str, p: &Peer) -> ParticipantStats {
    let m = &p.measured;
    let mut layers: Vec<ForwardedLayer> = p
        .tracks_out
        .values()
        .filter_map(|t| {
            Some(ForwardedLayer {
                stream: t.stream.clone(),
                rid: t.current?.to_string(),
            })
        })
        .collect();
    layers.sort_by(|a, b| a.stream.cmp(&b.stream));
    ParticipantStats {
        room: room.to_owned(),
        account: p.claims.account,
        device: p.claims.device,
        bitrate_in_bps: m.bitrate_in,
        bitrate_out_bps: m.bitrate_out,
        loss_in: m.loss_in,
        loss_out: m.loss_out,
        rtt_ms: m.rtt_ms,
        bandwidth_estimate_bps: p.bwe,
        layers,
    }
}

impl Worker {
    /// Every participant of this worker.
    pub fn participant_stats(&self) -> Vec<ParticipantStats> {
        let mut out = Vec::with_capacity(self.peers.len());
        for r in self.rooms.values() {
            for k in &r.members {
                if let Some(p) = self.peers.get(k) {
                    out.push(stats_of(r.name(), p));
                }
            }
        }
        out
    }
}
