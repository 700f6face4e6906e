//! Forwarding: RTP from a publisher into its subscribers' outgoing streams,
//! keyframe requests back toward the publisher, and simulcast layer choice.

use std::time::Instant;

use str0m::format::PayloadParams;
use str0m::media::{KeyframeRequest, KeyframeRequestKind, MediaKind, Mid, Rid};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite};

use crate::demux::PeerKey;
use crate::dynacast::Quality;
use crate::keyframe::{KeyframeGate, starts_keyframe};
use crate::layers::choose_layer;
use crate::messages::ServerMessage;
use crate::peer::{Peer, TrackOut};
use crate::rewrite::Rewriter;
use crate::worker::Worker;

/// What every subscriber needs to know about one incoming packet.
struct Incoming<'a> {
    publisher: PeerKey,
    mid: Mid,
    rid: Option<Rid>,
    /// Publisher and layer, for the rewriter.
    source: u64,
    params: PayloadParams,
    keyframe: bool,
    packet: &'a RtpPacket,
}

impl Worker {
    pub(crate) fn forward(&mut self, key: PeerKey, packet: RtpPacket, now: Instant) {
        self.stats.rtp_in += 1;
        self.stats.rtp_bytes_in += packet.payload.len() as u64;
        let Some(publisher) = self.peers.get_mut(&key) else {
            return;
        };
        let Some(incoming) = describe(publisher, &packet, now) else {
            return;
        };
        let room = publisher.room;
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        if let Some(level) = packet.header.ext_vals.audio_level {
            r.speaker.record(key, level, now);
        }
        let members = std::mem::take(&mut r.members);
        for &sub in &members {
            if sub == key {
                continue;
            }
            if let Some(s) = self.peers.get_mut(&sub)
                && forward_to(s, &incoming, &mut self.seed, &mut self.stats, now)
            {
                self.dirty.push(sub);
            }
        }
        if let Some(r) = self.rooms.get_mut(&room) {
            r.members = members;
        }
    }

    pub(crate) fn keyframe_from_subscriber(
        &mut self,
        key: PeerKey,
        req: KeyframeRequest,
        now: Instant,
    ) {
        self.stats.keyframe_requests_in += 1;
        let Some(sub) = self.peers.get(&key) else {
            return;
        };
        let Some(t) = sub
            .tracks_out
            .values()
            .find(|t| t.open_mid() == Some(req.mid))
        else {
            return;
        };
        let (source, mid, rid) = (t.source, t.source_mid, t.current.or(t.target));
        self.request_keyframe(source, mid, rid, req.kind, now);
    }

    /// Asks `publisher` for a keyframe on (`mid`, `rid`), merged with other
    /// requests for the same stream and rate-limited.
    pub(crate) fn request_keyframe(
        &mut self,
        publisher: PeerKey,
        mid: Mid,
        rid: Option<Rid>,
        kind: KeyframeRequestKind,
        now: Instant,
    ) {
        let Some(p) = self.peers.get(&publisher) else {
            return;
        };
        let Some(room) = self.rooms.get_mut(&p.room) else {
            return;
        };
        let interval = self.cfg.keyframe_interval;
        let gate = room
            .gates
            .entry((publisher, mid, rid))
            .or_insert_with(|| KeyframeGate::new(interval));
        if let Some(kind) = gate.request(kind, now) {
            self.send_keyframe_request(publisher, mid, rid, kind);
        }
    }

    fn send_keyframe_request(
        &mut self,
        publisher: PeerKey,
        mid: Mid,
        rid: Option<Rid>,
        kind: KeyframeRequestKind,
    ) {
        let Some(p) = self.peers.get_mut(&publisher) else {
            return;
        };
        let mut api = p.rtc.direct_api();
        if let Some(rx) = api.stream_rx_by_mid(mid, rid) {
            rx.request_keyframe(kind);
            self.stats.keyframe_requests_sent += 1;
            self.dirty.push(publisher);
        }
    }

    pub(crate) fn flush_keyframe_gates(&mut self, room: u64, now: Instant) {
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        let due: Vec<_> = r
            .gates
            .iter_mut()
            .filter_map(|(k, g)| g.poll(now).map(|kind| (*k, kind)))
            .collect();
        for ((publisher, mid, rid), kind) in due {
            self.send_keyframe_request(publisher, mid, rid, kind);
        }
    }

    /// A subscriber just accepted new tracks: ask their publishers for a
    /// keyframe so the video starts at once.
    pub(crate) fn request_for_opened(&mut self, key: PeerKey, opened: &[Mid], now: Instant) {
        let Some(sub) = self.peers.get(&key) else {
            return;
        };
        let wanted: Vec<_> = sub
            .tracks_out
            .values()
            .filter(|t| t.kind == MediaKind::Video)
            .filter(|t| t.open_mid().is_some_and(|m| opened.contains(&m)))
            .map(|t| (t.source, t.source_mid, t.target))
            .collect();
        for (source, mid, rid) in wanted {
            self.request_keyframe(source, mid, rid, KeyframeRequestKind::Pli, now);
        }
    }

    /// Re-picks each subscriber's simulcast layer from its bandwidth
    /// estimate; a new target gets a keyframe request and is switched to
    /// when that keyframe arrives.
    pub(crate) fn choose_layers(&mut self, room: u64, now: Instant) {
        let Some(r) = self.rooms.get(&room) else {
            return;
        };
        let members = r.members.clone();
        let mut rates = std::collections::HashMap::new();
        for k in &members {
            if let Some(p) = self.peers.get_mut(k) {
                for t in p.tracks_in.iter_mut().filter(|t| !t.layers.is_empty()) {
                    let mut l: Vec<(Rid, u64)> =
                        t.layers.iter_mut().map(|l| (l.rid, l.rate(now))).collect();
                    l.sort_by_key(|(_, rate)| *rate);
                    rates.insert((*k, t.mid), l);
                }
            }
        }
        let mut requests = Vec::new();
        for k in &members {
            let Some(p) = self.peers.get_mut(k) else {
                continue;
            };
            retarget(p, &rates, &mut requests);
            still_waiting(p, &mut requests);
        }
        for (publisher, mid, rid) in requests {
            self.request_keyframe(publisher, mid, rid, KeyframeRequestKind::Pli, now);
        }
        self.dynacast(&members, now);
    }
}

/// Video tracks of `p` still waiting for a keyframe on their target layer
/// (a new subscription, or a switch): the request is repeated on every
/// layout pass (merged and rate-limited per publisher stream), because a
/// lost PLI, or one that reached a publisher still setting up its encoder,
/// would otherwise leave the picture black until the publisher's next
/// keyframe of its own, which can be minutes away.
fn still_waiting(p: &Peer, requests: &mut Vec<(PeerKey, Mid, Option<Rid>)>) {
    for t in p.tracks_out.values() {
        let waiting = t.current != t.target || !t.has_keyframe;
        if t.kind == MediaKind::Video && t.open_mid().is_some() && waiting && !t.off {
            requests.push((t.source, t.source_mid, t.target));
        }
    }
}

fn retarget(
    p: &mut Peer,
    rates: &std::collections::HashMap<(PeerKey, Mid), Vec<(Rid, u64)>>,
    requests: &mut Vec<(PeerKey, Mid, Option<Rid>)>,
) {
    let videos = p
        .tracks_out
        .values()
        .filter(|t| t.kind == MediaKind::Video && t.open_mid().is_some())
        .count()
        .max(1) as u64;
    let budget = p.bwe.unwrap_or(1_000_000) / videos;
    let mut desired = 0;
    for t in p.tracks_out.values_mut().filter(|t| t.open_mid().is_some()) {
        if t.kind != MediaKind::Video {
            continue;
        }
        let quality = p.quality.get(&t.stream).copied().unwrap_or_default();
        if apply_off(t, quality == Quality::Off) {
            continue;
        }
        let Some(layers) = rates.get(&(t.source, t.source_mid)) else {
            continue;
        };
        let layers = &layers[..=quality.cap(layers.len())];
        desired += layers.last().map_or(0, |l| l.1);
        let only: Vec<u64> = layers.iter().map(|l| l.1).collect();
        let current = t.current.and_then(|c| layers.iter().position(|l| l.0 == c));
        let pick = layers[choose_layer(&only, budget, current)].0;
        if t.target != Some(pick) {
            t.target = Some(pick);
            if t.current != Some(pick) {
                requests.push((t.source, t.source_mid, Some(pick)));
            }
        }
    }
    if desired > 0 {
        use str0m::bwe::Bitrate;
        p.rtc
            .bwe()
            .set_bitrate(Bitrate::kbps(100), Bitrate::bps(desired + desired / 5));
    }
}

/// Turns a track's video off or back on; returns true while it is off.
/// Back on, it starts again on a keyframe of the layer chosen next.
fn apply_off(t: &mut TrackOut, off: bool) -> bool {
    if off != t.off {
        t.off = off;
        t.current = None;
        t.has_keyframe = false;
    }
    off
}

/// Looks up what the publisher's packet is: track, layer, codec.
fn describe<'a>(publisher: &mut Peer, packet: &'a RtpPacket, now: Instant) -> Option<Incoming<'a>> {
    if !publisher.claims.publish {
        return None;
    }
    let ssrc = packet.header.ssrc;
    let (mid, rid) = match publisher.ssrc_cache.get(&ssrc) {
        Some(v) => *v,
        None => {
            let mut api = publisher.rtc.direct_api();
            let rx = api.stream_rx(&ssrc)?;
            let v = (rx.mid(), rx.rid());
            publisher.ssrc_cache.insert(ssrc, v);
            v
        }
    };
    let params = *publisher
        .rtc
        .codec_config()
        .find(|p| p.pt() == packet.header.payload_type)?;
    let track = publisher.tracks_in.iter_mut().find(|t| t.mid == mid)?;
    let mut layer = 0;
    if let Some(rid) = rid {
        let i = track.layers.iter().position(|l| l.rid == rid)?;
        track.layers[i].meter.add(packet.payload.len(), now);
        layer = i as u64 + 1;
    }
    let keyframe =
        track.kind == MediaKind::Video && starts_keyframe(params.spec().codec, &packet.payload);
    Some(Incoming {
        publisher: publisher.key,
        mid,
        rid,
        source: publisher.key << 8 | layer,
        params,
        keyframe,
        packet,
    })
}

/// Writes one packet into subscriber `s`, if it receives that track and
/// layer. Returns true when something was written.
fn forward_to(
    s: &mut Peer,
    inc: &Incoming,
    seed: &mut u64,
    stats: &mut crate::worker::Stats,
    now: Instant,
) -> bool {
    let Some(t) = s.track_out_mut(inc.publisher, inc.mid) else {
        return false;
    };
    let Some(out_mid) = t.open_mid() else {
        return false;
    };
    let mut switched = false;
    if t.kind == MediaKind::Video {
        if t.off {
            return false;
        } else if inc.rid == t.current && t.has_keyframe {
            // The layer being forwarded.
        } else if inc.rid == t.target && inc.keyframe {
            switched = inc.rid.is_some() && t.current != inc.rid;
            t.current = inc.rid;
            t.has_keyframe = true;
        } else {
            return false;
        }
    }
    let clock = inc.params.spec().clock_rate.get();
    let rw = t
        .rewriter
        .get_or_insert_with(|| Rewriter::new(first_seq(seed), clock))
        .rewrite(
            inc.source,
            *inc.packet.seq_no,
            inc.packet.header.timestamp,
            now,
        );
    let Some(rw) = rw else {
        return false;
    };
    let video = t.kind == MediaKind::Video;
    let layer_msg = switched.then(|| ServerMessage::Layer {
        stream: t.stream.clone(),
        rid: inc.rid.map(|r| r.to_string()).unwrap_or_default(),
    });
    let in_pt = inc.params.pt();
    let cached = t.pt_cache.filter(|(i, _)| *i == in_pt).map(|(_, o)| o);
    let pt = match cached {
        Some(o) => o,
        None => {
            let Some(o) = s
                .rtc
                .codec_config()
                .match_params(inc.params)
                .map(|p| p.pt())
            else {
                return false;
            };
            if let Some(t) = s.tracks_out.get_mut(&(inc.publisher, inc.mid)) {
                t.pt_cache = Some((in_pt, o));
            }
            o
        }
    };
    let mut api = s.rtc.direct_api();
    let Some(tx) = api.stream_tx_by_mid(out_mid, None) else {
        return false;
    };
    let h = &inc.packet.header;
    let ext = ExtensionValues {
        audio_level: h.ext_vals.audio_level,
        voice_activity: h.ext_vals.voice_activity,
        video_orientation: h.ext_vals.video_orientation,
        ..Default::default()
    };
    let write = RtpWrite::new(
        pt,
        rw.seq.into(),
        rw.ts,
        inc.packet.timestamp,
        inc.packet.payload.clone(),
    )
    .marker(h.marker)
    .ext_vals(ext)
    .nackable(video);
    tx.write_rtp(write);
    stats.rtp_forwarded += 1;
    stats.rtp_bytes_forwarded += inc.packet.payload.len() as u64;
    if switched {
        stats.layer_switches += 1;
    }
    if let Some(m) = layer_msg {
        s.send(&m);
    }
    true
}

/// A random-looking first outgoing sequence number below 16,384 (rollover
/// counter 0, far from the wrap).
fn first_seq(seed: &mut u64) -> u16 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed % 16_000) as u16 + 1
}
