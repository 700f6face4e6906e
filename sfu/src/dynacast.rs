//! Dynacast and subscriber preferences.
//!
//! A subscriber may cap the quality it receives from a stream (a small tile
//! wants the lowest layer, a hidden one none at all) with a `video_quality`
//! message. Simulcast layers that no subscriber receives or wants are then
//! paused at the publisher: the SFU sends it `publish_layers` with the
//! layers to keep, and the client stops encoding the others
//! (`RTCRtpSender.setParameters`, `encodings[i].active`). An encoder that
//! does not run costs the publisher CPU and uplink nothing.
//!
//! The lowest layer is never paused, so a new subscriber gets a picture at
//! once. A paused layer keeps the rate it had when it was last sent, so
//! layer choice can still pick it; picking it resumes it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use str0m::media::{MediaKind, Mid, Rid};

use crate::demux::PeerKey;
use crate::layers::RateMeter;
use crate::messages::ServerMessage;
use crate::worker::Worker;

/// A layer nobody wants for this long is paused.
pub const PAUSE_AFTER: Duration = Duration::from_secs(3);
/// A resumed layer is chosen by its remembered rate for this long; if no
/// packet of it came by then (the browser would not encode it), it counts
/// as 0 again.
pub const RESUME_GRACE: Duration = Duration::from_secs(3);
/// Preferences a subscriber may hold (the room limit is 32).
pub const MAX_PREFERENCES: usize = 64;

/// The most a subscriber wants to receive from one stream's video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// No video at all (the tile is hidden, or audio only).
    Off,
    /// The lowest simulcast layer.
    Low,
    /// The second layer (the top one with two layers).
    Medium,
    /// Whatever the bandwidth allows.
    #[default]
    High,
}

impl Quality {
    /// The index of the highest layer allowed out of `n` (lowest first).
    pub fn cap(self, n: usize) -> usize {
        let top = n.saturating_sub(1);
        match self {
            Quality::Off | Quality::Low => 0,
            Quality::Medium => top.min(1),
            Quality::High => top,
        }
    }
}

/// One simulcast layer of a published track.
#[derive(Debug)]
pub struct Layer {
    pub rid: Rid,
    pub meter: RateMeter,
    /// The SFU asked the publisher to stop sending it.
    pub paused: bool,
    /// The last rate measured while it was sent.
    known_rate: u64,
    unwanted_since: Option<Instant>,
    resumed_at: Option<Instant>,
}

impl Layer {
    pub fn new(rid: Rid) -> Self {
        Self {
            rid,
            meter: RateMeter::default(),
            paused: false,
            known_rate: 0,
            unwanted_since: None,
            resumed_at: None,
        }
    }

    /// The rate to choose layers by: the measured one; for a layer paused
    /// by the SFU (or resumed a moment ago), the last one measured.
    pub fn rate(&mut self, now: Instant) -> u64 {
        let measured = self.meter.bitrate(now);
        if measured > 0 {
            self.known_rate = measured;
            self.resumed_at = None;
            return measured;
        }
        let resuming = self
            .resumed_at
            .is_some_and(|t| now.saturating_duration_since(t) < RESUME_GRACE);
        if self.paused || resuming {
            return self.known_rate;
        }
        // Stopped by the browser itself, or a resume that never came: not
        // pickable, and not worth pausing either.
        self.resumed_at = None;
        self.known_rate = 0;
        0
    }
}

/// Updates which of `layers` are paused, given the rids some subscriber
/// receives or wants; `lowest` is never paused. Returns true when the set
/// of active layers changed (the publisher must be told).
pub fn update_pauses(layers: &mut [Layer], wanted: &[Rid], lowest: Rid, now: Instant) -> bool {
    let mut changed = false;
    for l in layers.iter_mut() {
        if l.rid == lowest || wanted.contains(&l.rid) {
            l.unwanted_since = None;
            if l.paused {
                l.paused = false;
                l.resumed_at = Some(now);
                changed = true;
            }
            continue;
        }
        let since = *l.unwanted_since.get_or_insert(now);
        let long_enough = now.saturating_duration_since(since) >= PAUSE_AFTER;
        if !l.paused && long_enough && l.known_rate > 0 {
            l.paused = true;
            changed = true;
        }
    }
    changed
}

impl Worker {
    /// After layer choice: pauses what nobody in `room` receives or wants,
    /// resumes what somebody now wants, and tells the publishers.
    pub(crate) fn dynacast(&mut self, members: &[PeerKey], now: Instant) {
        let mut wanted: HashMap<(PeerKey, Mid), Vec<Rid>> = HashMap::new();
        for k in members {
            let Some(p) = self.peers.get(k) else {
                continue;
            };
            for t in p.tracks_out.values() {
                let w = wanted.entry((t.source, t.source_mid)).or_default();
                if t.kind == MediaKind::Video && !t.off {
                    w.extend(t.target.iter().chain(t.current.iter()).copied());
                }
            }
        }
        for k in members {
            let Some(p) = self.peers.get_mut(k) else {
                continue;
            };
            let mut messages = Vec::new();
            for t in p.tracks_in.iter_mut().filter(|t| t.layers.len() > 1) {
                let Some(lowest) = lowest_layer(&mut t.layers, now) else {
                    continue;
                };
                let w = wanted.get(&(*k, t.mid)).map_or(&[][..], |v| v.as_slice());
                if update_pauses(&mut t.layers, w, lowest, now) {
                    messages.push(ServerMessage::PublishLayers {
                        mid: t.mid.to_string(),
                        active: t
                            .layers
                            .iter()
                            .filter(|l| !l.paused)
                            .map(|l| l.rid.to_string())
                            .collect(),
                    });
                }
            }
            if !messages.is_empty() {
                self.stats.publish_layer_updates += messages.len() as u64;
                for m in &messages {
                    p.send(m);
                }
                self.dirty.push(*k);
            }
        }
    }
}

impl Worker {
    /// A subscriber's `video_quality`: kept per stream (also for streams
    /// not in the room yet) and applied at once.
    pub(crate) fn video_quality(
        &mut self,
        key: PeerKey,
        stream: String,
        quality: Quality,
        now: Instant,
    ) {
        let Some(p) = self.peers.get_mut(&key) else {
            return;
        };
        let known = p.quality.contains_key(&stream);
        if stream.is_empty() || stream.len() > 64 {
            p.send(&ServerMessage::Error {
                message: "video_quality: stream must be 1 to 64 characters".into(),
            });
            return;
        }
        if !known && p.quality.len() >= MAX_PREFERENCES {
            p.send(&ServerMessage::Error {
                message: format!("video_quality: at most {MAX_PREFERENCES} streams"),
            });
            return;
        }
        p.quality.insert(stream, quality);
        let room = p.room;
        self.choose_layers(room, now);
    }
}

/// The layer with the lowest known rate (the first rid while none is
/// measured yet).
fn lowest_layer(layers: &mut [Layer], now: Instant) -> Option<Rid> {
    let mut best: Option<(u64, Rid)> = None;
    for l in layers.iter_mut() {
        let r = l.rate(now);
        if r > 0 && best.is_none_or(|(b, _)| r < b) {
            best = Some((r, l.rid));
        }
    }
    best.map(|b| b.1).or_else(|| layers.first().map(|l| l.rid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(rid: &str, bytes_per_20ms: usize, t0: Instant) -> Layer {
        let mut l = Layer::new(rid.into());
        for i in 0..=50 {
            l.meter
                .add(bytes_per_20ms, t0 + Duration::from_millis(20 * i));
        }
        l
    }

    #[test]
    fn unwanted_layers_pause_after_a_while_and_resume_when_wanted() {
        let t0 = Instant::now();
        let mut layers = vec![measured("q", 400, t0), measured("f", 4000, t0)];
        let t1 = t0 + Duration::from_millis(1100);
        assert_eq!(lowest_layer(&mut layers, t1), Some("q".into()));
        let (q, f): (Rid, Rid) = ("q".into(), "f".into());
        // Nobody wants f: not paused at once (a switch may be under way).
        assert!(!update_pauses(&mut layers, &[q], q, t1));
        assert!(!layers[1].paused);
        let t2 = t1 + PAUSE_AFTER;
        assert!(update_pauses(&mut layers, &[q], q, t2));
        assert!(layers[1].paused && !layers[0].paused);
        // The lowest layer is never paused, even when nobody watches.
        assert!(!update_pauses(&mut layers, &[], q, t2 + PAUSE_AFTER));
        assert!(!layers[0].paused);
        // Paused, f keeps its rate for layer choice long after its last
        // packet.
        let t3 = t2 + Duration::from_secs(30);
        assert_eq!(layers[1].rate(t3), 1_600_000);
        // Wanted again: resumed, and told.
        assert!(update_pauses(&mut layers, &[f], q, t3));
        assert!(!layers[1].paused);
        assert_eq!(layers[1].rate(t3 + Duration::from_secs(1)), 1_600_000);
        // The publisher never sent it again: after the grace it counts as 0.
        assert_eq!(layers[1].rate(t3 + RESUME_GRACE), 0);
        // ... and a layer with no known rate is not paused (nothing to
        // resume it by).
        let t4 = t3 + RESUME_GRACE + PAUSE_AFTER;
        update_pauses(&mut layers, &[q], q, t3 + RESUME_GRACE);
        assert!(!update_pauses(&mut layers, &[q], q, t4));
        assert!(!layers[1].paused);
    }

    #[test]
    fn quality_caps() {
        assert_eq!(Quality::High.cap(3), 2);
        assert_eq!(Quality::Medium.cap(3), 1);
        assert_eq!(Quality::Medium.cap(2), 1);
        assert_eq!(Quality::Low.cap(3), 0);
        assert_eq!(Quality::Off.cap(3), 0);
        assert_eq!(Quality::High.cap(0), 0);
        let q: Quality = serde_json::from_str("\"medium\"").unwrap();
        assert_eq!(q, Quality::Medium);
    }
}
