//! Virtual-time simulation: str0m clients (in RTP mode, with real ICE,
//! DTLS and SRTP) exchange media through the SFU core. No sockets and no
//! clock: datagrams are handed over in memory and time is advanced by hand.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use palaver_proto::join_token::JoinClaims;
use palaver_proto::{AccountId, DeviceId};
use palaver_sfu::messages::ServerMessage;
use palaver_sfu::{Worker, WorkerConfig};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{
    Direction, KeyframeRequestKind, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

const SFU: &str = "10.0.0.1:5000";

/// A received RTP packet, as a subscriber saw it.
#[derive(Debug, Clone)]
struct Got {
    mid: Mid,
    seq: u64,
    ts: u32,
    payload: Vec<u8>,
}

struct Client {
    name: String,
    addr: SocketAddr,
    rtc: Rtc,
    channel: Option<ChannelId>,
    pending: Option<SdpPendingOffer>,
    audio: Option<Mid>,
    video: Option<Mid>,
    got: Vec<Got>,
    messages: Vec<ServerMessage>,
    keyframe_requests: Vec<KeyframeRequestKind>,
    /// The layers keyframes were requested for (simulcast).
    keyframe_rids: Vec<Option<Rid>>,
    seq: u64,
    /// Drop everything this client would send (it went silent).
    mute_network: bool,
    /// ICE connection states seen, in order.
    ice_states: Vec<IceConnectionState>,
}

impl Client {
    fn pt(&self, codec: Codec) -> Pt {
        self.rtc
            .codec_config()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
            .expect("codec negotiated")
    }

    /// Sends one VP8 packet (a keyframe start when `key`).
    fn send_video(&mut self, now: Instant, key: bool) {
        let mid = self.video.expect("publishes video");
        let pt = self.pt(Codec::Vp8);
        // Descriptor: S=1, PID=0, no extensions; VP8 header P bit = !key.
        let payload = vec![0x10, if key { 0x00 } else { 0x01 }, 0xaa, 0xbb];
        let seq: SeqNo = self.seq.into();
        let ts = (self.seq * 3000) as u32;
        self.seq += 1;
        let mut api = self.rtc.direct_api();
        let tx = api.stream_tx_by_mid(mid, None).expect("video stream");
        tx.write_rtp(
            RtpWrite::new(pt, seq, ts, now, payload)
                .marker(true)
                .nackable(true),
        );
    }

    fn send_audio(&mut self, now: Instant, n: u32) {
        let mid = self.audio.expect("publishes audio");
        let pt = self.pt(Codec::Opus);
        let mut api = self.rtc.direct_api();
        let tx = api.stream_tx_by_mid(mid, None).expect("audio stream");
        let ext = str0m::rtp::ExtensionValues {
            audio_level: Some(-20),
            voice_activity: Some(true),
            ..Default::default()
        };
        tx.write_rtp(
            RtpWrite::new(pt, u64::from(n).into(), n * 960, now, vec![0xfc, 1, 2]).ext_vals(ext),
        );
    }

    fn videos_from_others(&self) -> usize {
        let mut mids: Vec<Mid> = self
            .got
            .iter()
            .filter(|g| g.payload.len() == 4)
            .map(|g| g.mid)
            .collect();
        mids.sort();
        mids.dedup();
        mids.len()
    }
}

struct Net {
    now: Instant,
    sfu: Worker,
    clients: Vec<Client>,
    /// Datagrams in flight: (from, to, bytes).
    wire: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
}

fn claims(room: &str, n: u64) -> JoinClaims {
    JoinClaims {
        room: room.into(),
        account: AccountId(n),
        device: DeviceId(100 + n),
        publish: true,
        subscribe: true,
        exp: u64::MAX,
        admin: n == 1,
    }
}

impl Net {
    fn new(room_limit: usize) -> Self {
        let now = Instant::now();
        let cfg = WorkerConfig {
            candidate_addr: SFU.parse().unwrap(),
            room_limit,
            ice_timeout: Duration::from_secs(5),
            keyframe_interval: Duration::from_millis(300),
        };
        Net {
            now,
            sfu: Worker::new(cfg, 42),
            clients: Vec::new(),
            wire: VecDeque::new(),
        }
    }

    /// A client that publishes audio and video and opens the data channel.
    fn join(&mut self, room: &str, n: u64) -> Result<usize, palaver_sfu::JoinError> {
        self.join_with(room, n, None)
    }

    fn join_with(
        &mut self,
        room: &str,
        n: u64,
        simulcast: Option<Simulcast>,
    ) -> Result<usize, palaver_sfu::JoinError> {
        let addr: SocketAddr = format!("10.0.1.{n}:6000").parse().unwrap();
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut change = rtc.sdp_api();
        let audio = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let video = change.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast);
        change.add_channel("palaver".into());
        let (offer, pending) = change.apply().unwrap();
        let (_, answer) = self
            .sfu
            .join(claims(room, n), &offer.to_sdp_string(), self.now)?;
        let answer = SdpAnswer::from_sdp_string(&answer).unwrap();
        rtc.sdp_api().accept_answer(pending, answer).unwrap();
        self.clients.push(Client {
            name: format!("c{n}"),
            addr,
            rtc,
            channel: None,
            pending: None,
            audio: Some(audio),
            video: Some(video),
            got: Vec::new(),
            messages: Vec::new(),
            keyframe_requests: Vec::new(),
            keyframe_rids: Vec::new(),
            seq: 0,
            mute_network: false,
            ice_states: Vec::new(),
        });
        self.collect_sfu();
        Ok(self.clients.len() - 1)
    }

    fn collect_sfu(&mut self) {
        let from: SocketAddr = SFU.parse().unwrap();
        while let Some(d) = self.sfu.poll_datagram() {
            self.wire.push_back((from, d.destination, d.contents));
        }
    }

    /// Polls every client, delivers everything in flight, repeats until
    /// the network is quiet.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            for i in 0..self.clients.len() {
                self.poll_client(i);
            }
            self.collect_sfu();
            if self.wire.is_empty() {
                return;
            }
            while let Some((from, to, bytes)) = self.wire.pop_front() {
                self.deliver(from, to, &bytes);
            }
            self.collect_sfu();
        }
        panic!("the network did not settle");
    }

    fn deliver(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        let now = self.now;
        if to == SFU.parse().unwrap() {
            self.sfu.handle_datagram(from, to, bytes, now);
            return;
        }
        let Some(i) = self.clients.iter().position(|c| c.addr == to) else {
            return;
        };
        let c = &mut self.clients[i];
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: from,
                destination: to,
                contents: bytes.try_into().unwrap(),
            },
        );
        c.rtc.handle_input(input).unwrap();
        // str0m keeps one received RTP packet for the next poll: poll
        // after every input.
        self.poll_client(i);
    }

    fn poll_client(&mut self, i: usize) {
        let now = self.now;
        loop {
            let c = &mut self.clients[i];
            match c.rtc.poll_output().unwrap() {
                Output::Timeout(_) => return,
                Output::Transmit(t) => {
                    if !c.mute_network {
                        self.wire
                            .push_back((t.source, t.destination, t.contents.into()));
                    }
                }
                Output::Event(e) => on_event(c, e, now),
            }
        }
    }

    /// Advances virtual time by `d`, in 1 ms steps, with `each` called at
    /// every step to produce media.
    fn run(&mut self, d: Duration, mut each: impl FnMut(&mut Net, u32)) {
        let steps = d.as_millis() as u32;
        for step in 0..steps {
            self.now += Duration::from_millis(1);
            let now = self.now;
            for c in &mut self.clients {
                c.rtc.handle_input(Input::Timeout(now)).unwrap();
            }
            self.sfu.handle_timeout(now);
            each(self, step);
            self.settle();
        }
    }

    fn connect(&mut self) {
        self.run(Duration::from_millis(500), |_, _| {});
        for c in &self.clients {
            assert!(c.rtc.is_connected(), "{} connected", c.name);
        }
    }
}

fn on_event(c: &mut Client, e: Event, _now: Instant) {
    match e {
        Event::ChannelOpen(id, _) => c.channel = Some(id),
        Event::ChannelData(d) => {
            let msg: ServerMessage = serde_json::from_slice(&d.data).unwrap();
            if let ServerMessage::Offer { sdp } = &msg {
                let offer = SdpOffer::from_sdp_string(sdp).unwrap();
                let answer = c.rtc.sdp_api().accept_offer(offer).unwrap();
                let json = serde_json::json!({"type": "answer", "sdp": answer.to_sdp_string()});
                let mut ch = c.rtc.channel(c.channel.unwrap()).unwrap();
                ch.write(false, json.to_string().as_bytes()).unwrap();
            }
            c.messages.push(msg);
        }
        Event::RtpPacket(p) => {
            let mid = p.header.ext_vals.mid;
            let mut api = c.rtc.direct_api();
            let mid = mid.or_else(|| api.stream_rx(&p.header.ssrc).map(|s| s.mid()));
            c.got.push(Got {
                mid: mid.unwrap(),
                seq: *p.seq_no,
                ts: p.header.timestamp,
                payload: p.payload.to_vec(),
            });
        }
        Event::KeyframeRequest(r) => {
            c.keyframe_requests.push(r.kind);
            c.keyframe_rids.push(r.rid);
        }
        Event::IceConnectionStateChange(s) => c.ice_states.push(s),
        _ => {}
    }
    let _ = &c.pending;
}

/// Every 33 ms each client sends a video packet (a keyframe every 30),
/// every 20 ms an audio packet.
fn media(net: &mut Net, step: u32) {
    for c in &mut net.clients {
        if c.mute_network {
            continue;
        }
        let now = net.now;
        if step.is_multiple_of(33) {
            let key = c.seq % 30 == 0 || !c.keyframe_requests.is_empty();
            c.keyframe_requests.clear();
            c.send_video(now, key);
        }
        if step.is_multiple_of(20) {
            c.send_audio(now, step / 20);
        }
    }
}

#[test]
fn three_participants_receive_each_other_and_one_leaves() {
    let mut net = Net::new(32);
    for n in 1..=3 {
        net.join("room", n).unwrap();
    }
    net.connect();
    net.run(Duration::from_secs(2), media);
    for c in &net.clients {
        assert_eq!(c.videos_from_others(), 2, "{} sees two videos", c.name);
        let audio = c.got.iter().filter(|g| g.payload.len() == 3).count();
        assert!(audio > 100, "{} hears the others: {audio}", c.name);
    }
    // Sequence numbers per received track are contiguous.
    for c in &net.clients {
        for mid in c
            .got
            .iter()
            .map(|g| g.mid)
            .collect::<std::collections::BTreeSet<_>>()
        {
            let gaps: Vec<_> = c
                .got
                .iter()
                .filter(|g| g.mid == mid)
                .collect::<Vec<_>>()
                .windows(2)
                .filter(|w| w[1].seq != w[0].seq + 1)
                .map(|w| (w[0].seq, w[0].ts, w[1].seq, w[1].ts, w[0].payload.len()))
                .collect();
            assert!(gaps.is_empty(), "{} {mid}: {gaps:?}", c.name);
        }
    }
    // c3 leaves; the others are told and keep receiving each other.
    net.clients[2].mute_network = true;
    let leave = serde_json::json!({"type": "leave"}).to_string();
    {
        let c = &mut net.clients[2];
        c.mute_network = false;
        let mut ch = c.rtc.channel(c.channel.unwrap()).unwrap();
        ch.write(false, leave.as_bytes()).unwrap();
    }
    net.settle();
    net.clients[2].mute_network = true;
    for c in &mut net.clients[..2] {
        c.got.clear();
    }
    net.run(Duration::from_secs(1), media);
    assert_eq!(net.sfu.room_size("room"), 2);
    for c in &net.clients[..2] {
        assert!(
            c.messages
                .iter()
                .any(|m| matches!(m, ServerMessage::Left { .. }))
        );
        assert_eq!(c.videos_from_others(), 1, "{} still gets the other", c.name);
    }
}

#[test]
fn late_joiner_after_65536_packets_decrypts_and_gets_a_keyframe_at_once() {
    let mut net = Net::new(32);
    net.join("big", 1).unwrap();
    net.connect();
    // The publisher's sequence numbers pass 65,536 before anyone watches.
    net.clients[0].seq = 0;
    net.run(Duration::from_millis(200), |net, _| {
        let now = net.now;
        for _ in 0..400 {
            net.clients[0].send_video(now, false);
        }
    });
    assert!(net.clients[0].seq > 70_000, "{}", net.clients[0].seq);
    assert!(net.sfu.stats().rtp_in > 70_000);
    net.join("big", 2).unwrap();
    let start = net.now;
    let mut first_key = None;
    net.run(Duration::from_millis(1000), |net, step| {
        let now = net.now;
        let wants = !net.clients[0].keyframe_requests.is_empty();
        net.clients[0].keyframe_requests.clear();
        // No periodic keyframes: only a request makes one.
        if step % 33 == 0 || wants {
            net.clients[0].send_video(now, wants);
        }
        if first_key.is_none() && net.clients[1].got.iter().any(|g| g.payload[1] == 0) {
            first_key = Some(now - start);
        }
    });
    let sub = &net.clients[1];
    assert!(
        !sub.got.is_empty(),
        "the late joiner decrypts the forwarded packets"
    );
    assert_eq!(sub.got[0].payload[1], 0, "video starts with a keyframe");
    assert!(
        sub.got[0].seq < 65_536,
        "starts at rollover 0: {}",
        sub.got[0].seq
    );
    let t = first_key.expect("a keyframe arrived");
    assert!(t < Duration::from_secs(1), "keyframe after {t:?}");
}

#[test]
fn keyframe_requests_from_many_subscribers_are_merged() {
    let mut net = Net::new(32);
    for n in 1..=4 {
        net.join("kf", n).unwrap();
    }
    net.connect();
    net.run(Duration::from_secs(1), media);
    let before = net.sfu.stats().keyframe_requests_sent;
    // Subscribers 2, 3 and 4 all ask for c1's keyframe at the same moment.
    let mut publisher_requests = 0;
    for round in 0..3 {
        for i in 1..4 {
            let c = &mut net.clients[i];
            let mids: Vec<Mid> = c
                .got
                .iter()
                .filter(|g| g.payload.len() == 4)
                .map(|g| g.mid)
                .collect();
            // The first video mid this subscriber received is some publisher's;
            // ask on every video mid so c1's is among them.
            for mid in mids
                .iter()
                .copied()
                .collect::<std::collections::BTreeSet<_>>()
            {
                let mut api = c.rtc.direct_api();
                if let Some(rx) = api.stream_rx_by_mid(mid, None) {
                    rx.request_keyframe(KeyframeRequestKind::Pli);
                }
            }
        }
        net.clients[0].keyframe_requests.clear();
        net.run(Duration::from_millis(50), |_, _| {});
        publisher_requests += net.clients[0].keyframe_requests.len();
        let _ = round;
    }
    let sent = net.sfu.stats().keyframe_requests_sent - before;
    let received = net.sfu.stats().keyframe_requests_in;
    assert!(received >= 9, "subscribers asked: {received}");
    // Three rounds 50 ms apart fit in one 300 ms interval per publisher:
    // each of the four publishers gets at most 1 now plus 1 deferred.
    assert!(sent <= 8, "merged: {sent} sent for {received}");
    assert!(publisher_requests <= 2, "c1 saw {publisher_requests}");
}

#[test]
fn full_room_garbage_and_silent_peers_do_not_disturb_others() {
    let mut net = Net::new(2);
    net.join("a", 1).unwrap();
    net.join("a", 2).unwrap();
    let full = net.join("a", 3);
    assert!(matches!(
        full,
        Err(palaver_sfu::JoinError::RoomFull { limit: 2 })
    ));
    assert!(matches!(
        net.sfu.join(claims("b", 9), "v=0 garbage", net.now),
        Err(palaver_sfu::JoinError::BadOffer(_))
    ));
    // A peer in another room that never does ICE.
    net.join("b", 4).unwrap();
    net.clients[2].mute_network = true;
    net.connect_some(&[0, 1]);
    let junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![0; 1],
        vec![0xff; 1500],
        vec![0x80; 12],
        b"\x00\x01\x00\x00garbage".to_vec(),
    ];
    net.run(Duration::from_secs(6), |net, step| {
        media(net, step);
        let to: SocketAddr = SFU.parse().unwrap();
        for j in &junk {
            net.sfu
                .handle_datagram("10.9.9.9:1".parse().unwrap(), to, j, net.now);
        }
        // Junk from a real participant's address too.
        net.sfu
            .handle_datagram(net.clients[0].addr, to, &[0x80, 0x60, 0, 1, 9, 9], net.now);
    });
    let stats = net.sfu.stats();
    assert_eq!(stats.ice_timeouts, 1, "the silent peer was dropped");
    assert_eq!(net.sfu.room_size("b"), 0);
    assert!(stats.unknown_datagrams > 1000);
    for c in &net.clients[..2] {
        assert_eq!(c.videos_from_others(), 1, "{} unaffected", c.name);
    }
}

impl Net {
    fn connect_some(&mut self, which: &[usize]) {
        self.run(Duration::from_millis(500), |_, _| {});
        for &i in which {
            assert!(self.clients[i].rtc.is_connected());
        }
    }
}

/// Sends one VP8 packet on simulcast layer `rid`: sequence numbers and
/// timestamps of each layer have their own unrelated base, as with real
/// simulcast. The payload's third byte names the layer.
fn send_layer(c: &mut Client, now: Instant, rid: &str, k: u64, key: bool, size: usize) {
    let mid = c.video.unwrap();
    let pt = c.pt(Codec::Vp8);
    let (seq_base, ts_base, tag) = if rid == "q" {
        (0, 0u32, 1u8)
    } else {
        (40_000, 2_000_000_000u32, 2u8)
    };
    let mut payload = vec![0x10, if key { 0x00 } else { 0x01 }, tag];
    payload.resize(size, 0xee);
    let mut api = c.rtc.direct_api();
    let tx = api
        .stream_tx_by_mid(mid, Some(rid.into()))
        .expect("layer stream");
    let ts = ts_base.wrapping_add((k * 3000) as u32);
    tx.write_rtp(
        RtpWrite::new(pt, (seq_base + k).into(), ts, now, payload)
            .marker(true)
            .nackable(true),
    );
}

#[test]
fn simulcast_layer_switch_is_seamless_and_starts_on_a_keyframe() {
    let mut net = Net::new(32);
    let mut sim = Simulcast::new();
    sim.add_send_layer(SimulcastLayer::new("q"));
    sim.add_send_layer(SimulcastLayer::new("h"));
    net.join_with("sim", 1, Some(sim)).unwrap();
    net.join("sim", 2).unwrap();
    net.connect();
    let mut k = 0;
    net.run(Duration::from_secs(5), |net, step| {
        if step % 33 != 0 {
            return;
        }
        let now = net.now;
        let c = &mut net.clients[0];
        let wanted: Vec<Option<Rid>> = std::mem::take(&mut c.keyframe_rids);
        c.keyframe_requests.clear();
        for (rid, size) in [("q", 300), ("h", 900)] {
            let key = k % 150 == 0
                || wanted
                    .iter()
                    .any(|w| w.is_none_or(|w| w.to_string() == rid));
            send_layer(c, now, rid, k, key, size);
        }
        k += 1;
    });
    let got: Vec<&Got> = net.clients[1]
        .got
        .iter()
        .filter(|g| g.payload.len() > 4)
        .collect();
    assert!(got.len() > 100, "{}", got.len());
    let layers: Vec<u8> = got.iter().map(|g| g.payload[2]).collect();
    assert_eq!(layers[0], 1, "starts on the first layer");
    assert!(layers.contains(&2), "switched up to h once it was measured");
    assert!(net.sfu.stats().layer_switches >= 1);
    for w in got.windows(2) {
        assert_eq!(
            w[1].seq,
            w[0].seq + 1,
            "sequence continuous across switches"
        );
        let dt = w[1].ts.wrapping_sub(w[0].ts);
        assert!(
            dt > 0 && dt < 1 << 31,
            "timestamp moves forward: {} -> {}",
            w[0].ts,
            w[1].ts
        );
        if w[1].payload[2] != w[0].payload[2] {
            assert_eq!(w[1].payload[1], 0, "a switch lands on a keyframe");
        }
    }
    assert!(
        net.clients[1]
            .messages
            .iter()
            .any(|m| matches!(m, ServerMessage::Layer { rid, .. } if rid == "h"))
    );
}

fn send_message(c: &mut Client, json: serde_json::Value) {
    let id = c.channel.expect("data channel open");
    let mut ch = c.rtc.channel(id).unwrap();
    ch.write(false, json.to_string().as_bytes()).unwrap();
}

fn target(n: u64) -> serde_json::Value {
    serde_json::json!({"account": n, "device": 100 + n})
}

#[test]
fn the_admin_kicks_and_asks_to_mute_and_nobody_else_may() {
    use palaver_sfu::messages::MediaKindName;
    // c1 holds the admin token (see `claims`).
    let mut net = Net::new(32);
    for n in 1..=3 {
        net.join("room", n).unwrap();
    }
    net.connect();
    net.run(Duration::from_millis(300), media);

    // Not the admin: refused, nothing happens.
    let kick3 = serde_json::json!({"type": "kick", "participant": target(3)});
    send_message(&mut net.clients[1], kick3.clone());
    net.run(Duration::from_millis(100), media);
    assert!(
        net.clients[1]
            .messages
            .iter()
            .any(|m| matches!(m, ServerMessage::Error { message } if message.contains("admin")))
    );
    assert_eq!(net.sfu.room_size("room"), 3);

    // The admin asks c2 to mute its audio: only c2 hears it.
    let mute =
        serde_json::json!({"type": "mute_request", "participant": target(2), "kind": "audio"});
    send_message(&mut net.clients[0], mute);
    net.run(Duration::from_millis(100), media);
    let asked = |c: &Client| {
        c.messages.iter().any(|m| {
            matches!(m, ServerMessage::MuteRequest { from, kind: MediaKindName::Audio }
                if from.account == AccountId(1))
        })
    };
    assert!(asked(&net.clients[1]));
    assert!(!asked(&net.clients[2]));

    // The admin kicks c3: c3 is told, the others see it leave.
    send_message(&mut net.clients[0], kick3);
    net.run(Duration::from_millis(300), media);
    assert!(
        net.clients[2]
            .messages
            .iter()
            .any(|m| matches!(m, ServerMessage::Kicked { by } if by.account == AccountId(1)))
    );
    assert_eq!(net.sfu.room_size("room"), 2);
    for c in &net.clients[..2] {
        assert!(c.messages.iter().any(
            |m| matches!(m, ServerMessage::Left { participant } if participant.account == AccountId(3))
        ));
    }
    // And may not come back while the room is open.
    assert!(matches!(
        net.join("room", 3),
        Err(palaver_sfu::JoinError::Kicked)
    ));
    // The two others keep receiving each other.
    let before: Vec<usize> = net.clients[..2].iter().map(|c| c.got.len()).collect();
    net.run(Duration::from_millis(300), media);
    for (c, b) in net.clients[..2].iter().zip(before) {
        assert!(c.got.len() > b, "{} still receives", c.name);
    }
}

#[test]
fn participant_stats_show_bitrates_both_ways() {
    let mut net = Net::new(32);
    for n in 1..=2 {
        net.join("room", n).unwrap();
    }
    net.connect();
    // str0m reports once a second; rates need two reports.
    net.run(Duration::from_millis(2500), media);
    let stats = net.sfu.participant_stats();
    assert_eq!(stats.len(), 2, "{stats:?}");
    for s in &stats {
        assert_eq!(s.room, "room");
        assert!(s.bitrate_in_bps > 0 && s.bitrate_out_bps > 0, "{s:?}");
    }
}

/// The layers a publisher was last told to keep (`publish_layers`).
fn active_layers(c: &Client) -> Option<Vec<String>> {
    c.messages.iter().rev().find_map(|m| match m {
        ServerMessage::PublishLayers { active, .. } => Some(active.clone()),
        _ => None,
    })
}

#[test]
fn dynacast_pauses_what_nobody_wants_and_resumes_on_demand() {
    let mut net = Net::new(32);
    let mut sim = Simulcast::new();
    sim.add_send_layer(SimulcastLayer::new("q"));
    sim.add_send_layer(SimulcastLayer::new("h"));
    net.join_with("dyn", 1, Some(sim)).unwrap();
    net.join("dyn", 2).unwrap();
    net.connect();
    let mut k = 0;
    // The publisher sends the layers it was not told to pause, with a
    // keyframe when asked and when a layer starts again.
    let mut publish = move |net: &mut Net, step: u32| {
        if !step.is_multiple_of(33) {
            return;
        }
        let now = net.now;
        let c = &mut net.clients[0];
        let wanted: Vec<Option<Rid>> = std::mem::take(&mut c.keyframe_rids);
        let active = active_layers(c).unwrap_or_else(|| vec!["q".into(), "h".into()]);
        for (rid, size) in [("q", 300), ("h", 900)] {
            if !active.iter().any(|a| a == rid) {
                continue;
            }
            let key = k % 150 == 0 || wanted.iter().any(|w| w.is_none_or(|w| w == rid.into()));
            send_layer(c, now, rid, k, key, size);
        }
        k += 1;
    };
    net.run(Duration::from_secs(5), &mut publish);
    let layer_of = |g: &Got| g.payload[2];
    let last = |net: &Net| {
        net.clients[1]
            .got
            .iter()
            .rev()
            .find(|g| g.payload.len() > 4)
            .map(layer_of)
    };
    assert_eq!(last(&net), Some(2), "on h before asking for less");
    assert_eq!(
        active_layers(&net.clients[0]),
        None,
        "nothing paused while h is watched"
    );

    let stream = format!("a{}d{}", 1, 101);
    send_message(
        &mut net.clients[1],
        serde_json::json!({"type": "video_quality", "stream": stream, "quality": "low"}),
    );
    net.run(Duration::from_secs(5), &mut publish);
    assert_eq!(active_layers(&net.clients[0]), Some(vec!["q".to_string()]));
    assert_eq!(last(&net), Some(1), "down to q");

    send_message(
        &mut net.clients[1],
        serde_json::json!({"type": "video_quality", "stream": stream, "quality": "high"}),
    );
    net.run(Duration::from_secs(4), &mut publish);
    assert_eq!(
        active_layers(&net.clients[0]),
        Some(vec!["q".to_string(), "h".to_string()]),
        "h resumed"
    );
    assert_eq!(last(&net), Some(2), "back on h");

    // Off: no video at all for this subscriber; the lowest layer keeps
    // running at the publisher.
    send_message(
        &mut net.clients[1],
        serde_json::json!({"type": "video_quality", "stream": stream, "quality": "off"}),
    );
    net.run(Duration::from_millis(500), &mut publish);
    let before = net.clients[1].got.len();
    net.run(Duration::from_secs(4), &mut publish);
    assert_eq!(net.clients[1].got.len(), before, "no video while off");
    assert_eq!(active_layers(&net.clients[0]), Some(vec!["q".to_string()]));
    assert!(net.sfu.stats().publish_layer_updates >= 3);

    // A bad preference is refused with an error, not a crash.
    send_message(
        &mut net.clients[1],
        serde_json::json!({"type": "video_quality", "stream": "", "quality": "low"}),
    );
    net.run(Duration::from_millis(100), &mut publish);
    assert!(net.clients[1].messages.iter().any(
        |m| matches!(m, ServerMessage::Error { message } if message.contains("video_quality"))
    ));
}

/// The session token `welcome` gave this client.
fn session_of(c: &Client) -> String {
    c.messages
        .iter()
        .find_map(|m| match m {
            ServerMessage::Welcome { session, .. } => Some(session.clone()),
            _ => None,
        })
        .expect("welcome")
}

#[test]
fn ice_restart_moves_a_participant_to_a_new_network_and_keeps_its_session() {
    let mut net = Net::new(32);
    net.join("r", 1).unwrap();
    net.join("r", 2).unwrap();
    net.connect();
    net.run(Duration::from_secs(1), media);
    let token = session_of(&net.clients[0]);

    // c1's network goes away: the SFU sees ICE disconnect, and keeps it.
    net.clients[0].mute_network = true;
    let mut waited = 0;
    while net.sfu.stats().ice_disconnects == 0 {
        net.run(Duration::from_millis(100), media);
        waited += 1;
        assert!(waited < 200, "ICE never noticed");
    }
    let silent = waited * 100;
    net.run(Duration::from_secs(1), media);
    assert_eq!(net.sfu.room_size("r"), 2, "kept through the disconnection");
    eprintln!("the SFU noticed after {silent} ms of silence");

    // Refused: no token, a wrong secret, another room, a bad offer.
    let c = &mut net.clients[0];
    let mut change = c.rtc.sdp_api();
    change.ice_restart(false);
    let (offer, pending) = change.apply().unwrap();
    let offer = offer.to_sdp_string();
    let now = net.now;
    let wrong = format!("{}0", &token[..token.len() - 1]);
    for (room, t, o) in [
        ("r", "", offer.as_str()),
        ("r", wrong.as_str(), offer.as_str()),
        ("other", token.as_str(), offer.as_str()),
    ] {
        assert_eq!(
            net.sfu.restart(room, t, o, now),
            Err(palaver_sfu::restart::RestartError::NoSession)
        );
    }
    assert!(matches!(
        net.sfu.restart("r", &token, "v=0 garbage", now),
        Err(palaver_sfu::restart::RestartError::BadOffer(_))
    ));

    // It comes back from another address with new ICE credentials.
    let answer = net.sfu.restart("r", &token, &offer, now).expect("restart");
    let c = &mut net.clients[0];
    c.rtc
        .sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
        .unwrap();
    let moved: SocketAddr = "10.0.9.1:7000".parse().unwrap();
    c.rtc
        .add_local_candidate(Candidate::host(moved, "udp").unwrap());
    c.addr = moved;
    c.mute_network = false;
    net.collect_sfu();
    for c in &mut net.clients {
        c.got.clear();
    }
    net.run(Duration::from_secs(2), media);
    assert_eq!(net.sfu.stats().ice_restarts, 1);
    for c in &net.clients {
        assert!(c.rtc.is_connected(), "{} connected", c.name);
        assert_eq!(c.videos_from_others(), 1, "{} receives again", c.name);
    }
    // The data channel survived too: a message goes through it.
    let n = net.clients[0].messages.len();
    send_message(
        &mut net.clients[0],
        serde_json::json!({"type": "video_quality", "stream": "", "quality": "low"}),
    );
    net.run(Duration::from_millis(200), media);
    assert!(
        net.clients[0].messages[n..]
            .iter()
            .any(|m| matches!(m, ServerMessage::Error { .. }))
    );

    // A participant that never comes back is dropped after the grace.
    net.clients[1].mute_network = true;
    net.run(Duration::from_secs(25), media);
    assert_eq!(net.sfu.room_size("r"), 1);
}
