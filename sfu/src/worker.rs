//! One worker's sans-IO core: the rooms and participants behind one UDP
//! socket. No sockets, threads or clocks here: the driver feeds datagrams
//! and the time, then drains datagrams to send and asks for the next
//! timeout.
//!
//! Poll order, after every input (`join`, `handle_datagram`,
//! `handle_timeout`): each participant touched is polled until str0m
//! returns a timeout; media it produced is written into the subscribers'
//! `Rtc`s, which are polled in turn. Then `poll_datagram` until `None`,
//! then `next_timeout`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use palaver_proto::join_token::JoinClaims;
use str0m::bwe::BweKind;
use str0m::change::SdpOffer;
use str0m::media::{MediaAdded, MediaKind, Mid, Rid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use crate::demux::{Demux, Dirty, PeerKey};
use crate::dynacast::Layer;
use crate::keyframe::KeyframeGate;
use crate::messages::{ClientMessage, ServerMessage};
use crate::peer::{OutState, Peer, TrackIn, TrackOut};
use crate::speaker::SpeakerDetector;

/// Settings of one worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The address put in the host candidate: public IP and the worker's port.
    pub candidate_addr: SocketAddr,
    /// Most participants in one room.
    pub room_limit: usize,
    /// A participant that has not completed ICE by then is dropped.
    pub ice_timeout: Duration,
    /// At most one keyframe request per publisher stream this often.
    pub keyframe_interval: Duration,
}

/// Why a join was refused.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("room is full ({limit} participants)")]
    RoomFull { limit: usize },
    #[error("malformed SDP offer: {0}")]
    BadOffer(String),
    #[error("the call's admin removed this account from the room")]
    Kicked,
}

/// A datagram to send.
#[derive(Debug)]
pub struct Datagram {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// Counters, for metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub rooms: usize,
    pub participants: usize,
    pub rtp_in: u64,
    pub rtp_bytes_in: u64,
    pub rtp_forwarded: u64,
    pub rtp_bytes_forwarded: u64,
    pub datagrams_out: u64,
    pub keyframe_requests_in: u64,
    pub keyframe_requests_sent: u64,
    pub layer_switches: u64,
    pub ice_restarts: u64,
    pub ice_disconnects: u64,
    /// `publish_layers` messages: simulcast layers paused or resumed.
    pub publish_layer_updates: u64,
    pub unknown_datagrams: u64,
    pub ice_timeouts: u64,
}

impl Stats {
    /// Adds another worker's counters.
    pub fn add(&mut self, o: &Stats) {
        self.rooms += o.rooms;
        self.participants += o.participants;
        self.rtp_in += o.rtp_in;
        self.rtp_bytes_in += o.rtp_bytes_in;
        self.rtp_forwarded += o.rtp_forwarded;
        self.rtp_bytes_forwarded += o.rtp_bytes_forwarded;
        self.datagrams_out += o.datagrams_out;
        self.keyframe_requests_in += o.keyframe_requests_in;
        self.keyframe_requests_sent += o.keyframe_requests_sent;
        self.layer_switches += o.layer_switches;
        self.ice_restarts += o.ice_restarts;
        self.ice_disconnects += o.ice_disconnects;
        self.publish_layer_updates += o.publish_layer_updates;
        self.unknown_datagrams += o.unknown_datagrams;
        self.ice_timeouts += o.ice_timeouts;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Peer(PeerKey),
    Room(u64),
}

/// How often a room re-evaluates the speaker, pending keyframe requests
/// and simulcast layers.
const ROOM_TICK: Duration = Duration::from_millis(100);
const LAYER_EVERY: u32 = 5;

#[derive(Debug)]
pub(crate) struct Room {
    name: String,
    pub(crate) members: Vec<PeerKey>,
    pub(crate) speaker: SpeakerDetector<PeerKey>,
    pub(crate) gates: HashMap<(PeerKey, Mid, Option<Rid>), KeyframeGate>,
    ticks: u32,
    /// Accounts the admin kicked: refused while the room is open here.
    pub(crate) kicked: std::collections::HashSet<palaver_proto::AccountId>,
}

impl Room {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

/// The sans-IO core of one worker.
#[derive(Debug)]
pub struct Worker {
    pub(crate) cfg: WorkerConfig,
    pub(crate) peers: HashMap<PeerKey, Peer>,
    pub(crate) rooms: HashMap<u64, Room>,
    room_names: HashMap<String, u64>,
    pub(crate) demux: Demux,
    timers: BTreeSet<(Instant, Timer)>,
    out: VecDeque<Datagram>,
    next_key: u64,
    pub(crate) stats: Stats,
    pub(crate) dirty: Dirty,
    pub(crate) seed: u64,
    /// Kicks not yet taken by the driver (see `kicks`).
    pub(crate) kicks: Vec<crate::Kick>,
}

impl Worker {
    pub fn new(cfg: WorkerConfig, seed: u64) -> Self {
        str0m::crypto::from_feature_flags().install_process_default();
        Self {
            cfg,
            peers: HashMap::new(),
            rooms: HashMap::new(),
            room_names: HashMap::new(),
            demux: Demux::default(),
            timers: BTreeSet::new(),
            out: VecDeque::new(),
            next_key: 1,
            stats: Stats::default(),
            dirty: Dirty::default(),
            seed: seed | 1,
            kicks: Vec::new(),
        }
    }

    pub fn stats(&self) -> Stats {
        Stats {
            rooms: self.rooms.len(),
            participants: self.peers.len(),
            ..self.stats
        }
    }

    /// Number of participants in `room`.
    pub fn room_size(&self, room: &str) -> usize {
        self.room_names
            .get(room)
            .and_then(|r| self.rooms.get(r))
            .map_or(0, |r| r.members.len())
    }

    /// Admits a participant: answers its SDP offer. The same account and
    /// device joining again replaces its earlier session.
    pub fn join(
        &mut self,
        claims: JoinClaims,
        offer: &str,
        now: Instant,
    ) -> Result<(PeerKey, String), JoinError> {
        // A kicked account is refused before its offer is even read.
        let kicked = self
            .room_names
            .get(&claims.room)
            .and_then(|k| self.rooms.get(k))
            .is_some_and(|r| r.kicked.contains(&claims.account));
        if kicked {
            return Err(JoinError::Kicked);
        }
        let offer =
            SdpOffer::from_sdp_string(offer).map_err(|e| JoinError::BadOffer(e.to_string()))?;
        if let Some(old) = self.find_same_device(&claims) {
            self.remove_peer(old, now);
        }
        let room = self.room_for(&claims.room, now);
        let size = self.rooms.get(&room).map_or(0, |r| r.members.len());
        if size >= self.cfg.room_limit {
            self.drop_room_if_empty(room);
            return Err(JoinError::RoomFull {
                limit: self.cfg.room_limit,
            });
        }
        let (rtc, ufrag, answer) = match self.new_rtc(offer, now) {
            Ok(v) => v,
            Err(e) => {
                self.drop_room_if_empty(room);
                return Err(e);
            }
        };
        let key = self.next_key;
        self.next_key += 1;
        let mut peer = Peer::new(key, room, claims, rtc, ufrag.clone());
        peer.ice_deadline = Some(now + self.cfg.ice_timeout);
        self.demux.insert_peer(key, ufrag);
        self.admit(peer);
        self.dirty.push(key);
        self.drive(now);
        Ok((key, answer))
    }

    fn new_rtc(&self, offer: SdpOffer, now: Instant) -> Result<(Rtc, String, String), JoinError> {
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .set_ice_lite(true)
            .enable_bwe(Some(str0m::bwe::Bitrate::kbps(500)))
            .set_stats_interval(Some(Duration::from_secs(1)))
            .build(now);
        let cand = Candidate::host(self.cfg.candidate_addr, "udp")
            .map_err(|e| JoinError::BadOffer(format!("candidate: {e}")))?;
        rtc.add_local_candidate(cand);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| JoinError::BadOffer(e.to_string()))?;
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        Ok((rtc, ufrag, answer.to_sdp_string()))
    }

    fn find_same_device(&self, c: &JoinClaims) -> Option<PeerKey> {
        let room = self.room_names.get(&c.room)?;
        self.rooms.get(room)?.members.iter().copied().find(|k| {
            self.peers
                .get(k)
                .is_some_and(|p| p.claims.account == c.account && p.claims.device == c.device)
        })
    }

    fn room_for(&mut self, name: &str, now: Instant) -> u64 {
        if let Some(r) = self.room_names.get(name) {
            return *r;
        }
        let key = self.next_key;
        self.next_key += 1;
        self.room_names.insert(name.to_owned(), key);
        self.rooms.insert(
            key,
            Room {
                name: name.to_owned(),
                members: Vec::new(),
                speaker: SpeakerDetector::default(),
                gates: HashMap::new(),
                ticks: 0,
                kicked: Default::default(),
            },
        );
        self.timers.insert((now + ROOM_TICK, Timer::Room(key)));
        key
    }

    fn drop_room_if_empty(&mut self, room: u64) {
        if self.rooms.get(&room).is_some_and(|r| r.members.is_empty())
            && let Some(r) = self.rooms.remove(&room)
        {
            self.room_names.remove(&r.name);
        }
    }

    /// Puts `peer` in its room: it subscribes to what is published there
    /// and the others hear that it joined.
    fn admit(&mut self, mut peer: Peer) {
        let Some(room) = self.rooms.get_mut(&peer.room) else {
            return;
        };
        let joined = ServerMessage::Joined {
            participant: peer.info(),
        };
        for k in &room.members {
            let Some(other) = self.peers.get_mut(k) else {
                continue;
            };
            other.send(&joined);
            if peer.claims.subscribe && other.claims.publish {
                for t in &other.tracks_in {
                    let out = new_track_out(other, t);
                    peer.tracks_out.insert((out.source, out.source_mid), out);
                }
            }
            self.dirty.push(*k);
        }
        peer.needs_negotiation = true;
        room.members.push(peer.key);
        self.peers.insert(peer.key, peer);
    }

    /// Feeds one received datagram and polls everyone it touched.
    /// Datagrams nobody expects are counted and dropped.
    pub fn handle_datagram(
        &mut self,
        source: SocketAddr,
        destination: SocketAddr,
        buf: &[u8],
        now: Instant,
    ) {
        self.receive(source, destination, buf, now);
        self.drive(now);
    }

    /// Feeds one datagram of a batch: only its own peer is polled (str0m
    /// hands out a received packet before it takes the next), and what it
    /// forwards waits in the subscribers' queues until the next
    /// [`Worker::handle_timeout`] polls each touched subscriber once. A
    /// driver that drained several datagrams from its socket saves one
    /// str0m poll per subscriber and datagram.
    pub fn receive(
        &mut self,
        source: SocketAddr,
        destination: SocketAddr,
        buf: &[u8],
        now: Instant,
    ) {
        let Some(key) = self.demux.lookup(source, buf) else {
            self.stats.unknown_datagrams += 1;
            return;
        };
        let Ok(contents) = buf.try_into() else {
            self.stats.unknown_datagrams += 1;
            return;
        };
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        if let Err(e) = peer.rtc.handle_input(input) {
            tracing::debug!(peer = key, error = %e, "input refused");
        }
        self.poll_peer(key, now);
        if self
            .peers
            .get(&key)
            .is_some_and(|p| p.closing || !p.rtc.is_alive())
        {
            self.dirty.push(key);
        }
    }

    /// Advances time: str0m timers, ICE deadlines, room ticks.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Peer(k) => self.peer_timeout(k, now),
                Timer::Room(r) => self.room_tick(r, now),
            }
        }
        self.drive(now);
    }

    fn peer_timeout(&mut self, key: PeerKey, now: Instant) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        peer.timer = None;
        if peer.ice_deadline.is_some_and(|d| d <= now) {
            tracing::debug!(peer = key, "ICE did not complete in time");
            self.stats.ice_timeouts += 1;
            peer.closing = true;
        } else if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
            tracing::debug!(peer = key, error = %e, "timeout refused");
            peer.closing = true;
        }
        self.dirty.push(key);
    }

    /// The next datagram to send.
    pub fn poll_datagram(&mut self) -> Option<Datagram> {
        self.out.pop_front()
    }

    /// When `handle_timeout` must be called next.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Polls every participant touched until all are quiet, then removes
    /// those that left.
    pub(crate) fn drive(&mut self, now: Instant) {
        let mut leaving = Vec::new();
        loop {
            // Only the participants just polled can have started leaving:
            // no scan over the room or the worker.
            while let Some(key) = self.dirty.pop() {
                self.poll_peer(key, now);
                if self
                    .peers
                    .get(&key)
                    .is_some_and(|p| p.closing || !p.rtc.is_alive())
                    && !leaving.contains(&key)
                {
                    leaving.push(key);
                }
            }
            if leaving.is_empty() {
                return;
            }
            for k in leaving.drain(..) {
                self.remove_peer(k, now);
            }
        }
    }

    fn poll_peer(&mut self, key: PeerKey, now: Instant) {
        loop {
            let Some(peer) = self.peers.get_mut(&key) else {
                return;
            };
            if peer.needs_negotiation {
                peer.needs_negotiation = false;
                peer.negotiate();
            }
            let output = match peer.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    tracing::debug!(peer = key, error = %e, "poll failed; closing");
                    peer.closing = true;
                    return;
                }
            };
            match output {
                Output::Transmit(t) => {
                    self.stats.datagrams_out += 1;
                    self.out.push_back(Datagram {
                        source: t.source,
                        destination: t.destination,
                        contents: t.contents.into(),
                    });
                }
                Output::Timeout(at) => {
                    self.set_peer_timer(key, at);
                    return;
                }
                Output::Event(e) => self.on_event(key, e, now),
            }
        }
    }

    fn set_peer_timer(&mut self, key: PeerKey, at: Instant) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let at = peer.ice_deadline.map_or(at, |d| d.min(at));
        if let Some(old) = peer.timer.replace(at) {
            self.timers.remove(&(old, Timer::Peer(key)));
        }
        self.timers.insert((at, Timer::Peer(key)));
    }

    fn on_event(&mut self, key: PeerKey, event: Event, now: Instant) {
        match event {
            Event::Connected => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.ice_deadline = None;
                    p.connected_once = true;
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                // Kept for `ice_timeout`: the network may come back, or the
                // client restart ICE from another one.
                let grace = self.cfg.ice_timeout;
                if let Some(p) = self.peers.get_mut(&key) {
                    p.ice_deadline.get_or_insert(now + grace);
                    self.stats.ice_disconnects += 1;
                }
            }
            Event::IceConnectionStateChange(
                IceConnectionState::Connected | IceConnectionState::Completed,
            ) => {
                if let Some(p) = self.peers.get_mut(&key).filter(|p| p.connected_once) {
                    p.ice_deadline = None;
                }
            }
            Event::Closed => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.closing = true;
                }
            }
            Event::MediaAdded(m) => self.media_added(key, m),
            Event::ChannelOpen(id, _) => self.channel_open(key, id),
            Event::ChannelData(d) => self.channel_data(key, &d.data, now),
            Event::RtpPacket(p) => self.forward(key, p, now),
            Event::KeyframeRequest(r) => self.keyframe_from_subscriber(key, r, now),
            Event::PeerStats(s) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.measured.update(&s);
                }
            }
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                if let Some(p) = self.peers.get_mut(&key) {
                    p.bwe = Some(estimate.as_u64());
                }
            }
            _ => {}
        }
    }

    fn media_added(&mut self, key: PeerKey, m: MediaAdded) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        if !m.direction.is_receiving() || !peer.claims.publish {
            return;
        }
        let layers = m
            .simulcast
            .map(|s| s.recv.iter().map(|l| Layer::new(l.rid)).collect())
            .unwrap_or_default();
        let track = TrackIn {
            mid: m.mid,
            kind: m.kind,
            layers,
        };
        let room = peer.room;
        let members = self
            .rooms
            .get(&room)
            .map(|r| r.members.clone())
            .unwrap_or_default();
        let Some(peer) = self.peers.get(&key) else {
            return;
        };
        let outs: Vec<(PeerKey, TrackOut)> = members
            .iter()
            .filter(|k| **k != key)
            .map(|k| (*k, new_track_out(peer, &track)))
            .collect();
        if let Some(peer) = self.peers.get_mut(&key) {
            peer.tracks_in.push(track);
        }
        for (k, out) in outs {
            if let Some(sub) = self.peers.get_mut(&k).filter(|s| s.claims.subscribe) {
                sub.tracks_out.insert((out.source, out.source_mid), out);
                sub.needs_negotiation = true;
                self.dirty.push(k);
            }
        }
    }

    fn channel_open(&mut self, key: PeerKey, id: str0m::channel::ChannelId) {
        let Some(room) = self.peers.get(&key).and_then(|p| self.rooms.get(&p.room)) else {
            return;
        };
        let participants = room
            .members
            .iter()
            .filter(|k| **k != key)
            .filter_map(|k| self.peers.get(k).map(|p| p.info()))
            .collect();
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        peer.channel_opened(id);
        let you = peer.info();
        let session = peer.session_token();
        peer.send(&ServerMessage::Welcome {
            you,
            participants,
            session,
        });
        peer.needs_negotiation = true;
    }

    fn channel_data(&mut self, key: PeerKey, data: &[u8], now: Instant) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        let msg = match serde_json::from_slice::<ClientMessage>(data) {
            Ok(m) => m,
            Err(e) => {
                peer.send(&ServerMessage::Error {
                    message: format!("bad message: {e}"),
                });
                return;
            }
        };
        match msg {
            ClientMessage::Answer { sdp } => match peer.accept_answer(&sdp) {
                Ok(opened) => {
                    peer.needs_negotiation = true;
                    self.request_for_opened(key, &opened, now);
                }
                Err(message) => peer.send(&ServerMessage::Error { message }),
            },
            ClientMessage::Mute { kind, muted } => {
                let msg = ServerMessage::Muted {
                    participant: peer.info(),
                    kind,
                    muted,
                };
                let room = peer.room;
                self.broadcast(room, Some(key), &msg);
            }
            ClientMessage::Leave => peer.closing = true,
            ClientMessage::Kick { participant } => self.kick(key, participant),
            ClientMessage::MuteRequest { participant, kind } => {
                self.mute_request(key, participant, kind);
            }
            ClientMessage::VideoQuality { stream, quality } => {
                self.video_quality(key, stream, quality, now);
            }
        }
    }

    /// Sends `msg` to every member of `room` but `except`.
    pub(crate) fn broadcast(&mut self, room: u64, except: Option<PeerKey>, msg: &ServerMessage) {
        let Some(r) = self.rooms.get(&room) else {
            return;
        };
        for k in &r.members {
            if Some(*k) == except {
                continue;
            }
            if let Some(p) = self.peers.get_mut(k) {
                p.send(msg);
                self.dirty.push(*k);
            }
        }
    }

    /// A participant leaves: the others stop receiving its tracks.
    pub fn remove_peer(&mut self, key: PeerKey, _now: Instant) {
        let Some(mut peer) = self.peers.remove(&key) else {
            return;
        };
        peer.rtc.disconnect();
        self.demux.remove_peer(key, &peer.ufrag);
        if let Some(at) = peer.timer {
            self.timers.remove(&(at, Timer::Peer(key)));
        }
        let room = peer.room;
        if let Some(r) = self.rooms.get_mut(&room) {
            r.members.retain(|k| *k != key);
            r.speaker.remove(key);
            r.gates.retain(|(k, _, _), _| *k != key);
            for k in &r.members {
                if let Some(p) = self.peers.get_mut(k) {
                    p.drop_source(key);
                    p.needs_negotiation = true;
                    self.dirty.push(*k);
                }
            }
        }
        self.broadcast(
            room,
            None,
            &ServerMessage::Left {
                participant: peer.info(),
            },
        );
        self.drop_room_if_empty(room);
    }

    fn room_tick(&mut self, room: u64, now: Instant) {
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        r.ticks = r.ticks.wrapping_add(1);
        let relayout = r.ticks % LAYER_EVERY == 0;
        if let Some(speaker) = r.speaker.evaluate(now)
            && let Some(p) = self.peers.get(&speaker)
        {
            let msg = ServerMessage::ActiveSpeaker {
                participant: p.info(),
            };
            self.broadcast(room, None, &msg);
        }
        self.flush_keyframe_gates(room, now);
        if relayout {
            self.choose_layers(room, now);
        }
        self.timers.insert((now + ROOM_TICK, Timer::Room(room)));
    }
}

/// A new outgoing track for a subscriber of `source`'s `track`.
pub(crate) fn new_track_out(source: &Peer, track: &TrackIn) -> TrackOut {
    TrackOut {
        source: source.key,
        source_mid: track.mid,
        stream: source.info().stream,
        kind: track.kind,
        state: OutState::ToOpen,
        rewriter: None,
        current: None,
        target: track.layers.first().map(|l| l.rid),
        has_keyframe: track.kind == MediaKind::Audio,
        pt_cache: None,
        off: false,
    }
}

impl Stats {
    /// The counters in OpenMetrics text (no `# EOF`), names prefixed
    /// `palaver_sfu_`.
    pub fn to_openmetrics(&self) -> String {
        let gauges = [
            ("rooms", "Rooms open", self.rooms as u64),
            (
                "participants",
                "Participants connected or connecting",
                self.participants as u64,
            ),
        ];
        let counters = [
            (
                "rtp_received",
                "RTP packets received from publishers",
                self.rtp_in,
            ),
            (
                "rtp_received_bytes",
                "RTP payload bytes received",
                self.rtp_bytes_in,
            ),
            (
                "rtp_forwarded",
                "RTP packets written to subscribers",
                self.rtp_forwarded,
            ),
            (
                "rtp_forwarded_bytes",
                "RTP payload bytes written to subscribers",
                self.rtp_bytes_forwarded,
            ),
            ("datagrams_sent", "UDP datagrams sent", self.datagrams_out),
            (
                "keyframe_requests_received",
                "PLI/FIR from subscribers",
                self.keyframe_requests_in,
            ),
            (
                "keyframe_requests_sent",
                "PLI/FIR sent to publishers after merging",
                self.keyframe_requests_sent,
            ),
            (
                "layer_switches",
                "Simulcast layer switches",
                self.layer_switches,
            ),
            (
                "ice_disconnects",
                "Participants whose ICE path stopped answering (kept for ice_timeout)",
                self.ice_disconnects,
            ),
            (
                "ice_restarts",
                "ICE restarts (a participant's network changed)",
                self.ice_restarts,
            ),
            (
                "publish_layer_updates",
                "Simulcast layers paused or resumed at publishers (dynacast)",
                self.publish_layer_updates,
            ),
            (
                "unknown_datagrams",
                "Datagrams from no known participant, dropped",
                self.unknown_datagrams,
            ),
            (
                "ice_timeouts",
                "Participants dropped for not completing ICE",
                self.ice_timeouts,
            ),
        ];
        let mut s = String::new();
        for (name, help, v) in gauges {
            s.push_str(&format!(
                "# HELP palaver_sfu_{name} {help}.\n# TYPE palaver_sfu_{name} gauge\npalaver_sfu_{name} {v}\n"
            ));
        }
        for (name, help, v) in counters {
            s.push_str(&format!(
                "# HELP palaver_sfu_{name} {help}.\n# TYPE palaver_sfu_{name} counter\npalaver_sfu_{name}_total {v}\n"
            ));
        }
        s
    }
}
