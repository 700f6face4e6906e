//! A second WebRTC stack for Palaver's call tests: a call participant built
//! on webrtc-rs (the `webrtc` crate) that signals through Palaver with
//! [`palaver_client::Client`] and sends real media, a VP8 video track and an
//! Opus audio track read from files (see [`media::generate`]), while counting
//! the RTP it receives on its remote tracks.
//!
//! It follows docs/protocol.md, "1:1 calls": the caller creates its offer,
//! sends `call_offer`, applies the ICE servers of `call_started`, then sets
//! its local description (gathering starts there) and trickles every
//! candidate as `call_ice`; the callee answers a `call_incoming` with
//! `call_accept` and trickles its candidates once it has accepted.
//!
//! ```no_run
//! # async fn demo(client: palaver_client::Client, to: palaver_client::proto::AccountId) -> anyhow::Result<()> {
//! use palaver_webrtc_peer::{PeerConfig, media};
//! use std::time::Duration;
//! let dir = tempfile::tempdir()?;
//! let files = media::generate(dir.path())?;
//! let mut call = palaver_webrtc_peer::place_call(client, to, &files, &PeerConfig::default()).await?;
//! call.wait_connected(Duration::from_secs(20)).await?;
//! call.wait_received(Duration::from_secs(20), |r| r.video_packets > 0 && r.audio_packets > 0).await?;
//! let _client = call.hang_up().await?;
//! # Ok(()) }
//! ```

pub mod group;
pub mod media;

use anyhow::{Context, Result, anyhow, bail};
use media::Frame;
pub use media::MediaFiles;
use palaver_client::proto::frames::{EndReason, IceServer, Media, ServerFrame};
use palaver_client::proto::{AccountId, CallId, DeviceId};
use palaver_client::{Client, Event};
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};
use webrtc::media_stream::Track;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceServer, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, Registry, register_default_interceptors,
};
use webrtc::rtp_transceiver::RtpSender;

/// How the peer connection is set up.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The one local address the peer binds its UDP socket to (port 0),
    /// so its only host candidate is this address.
    pub bind: IpAddr,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            bind: IpAddr::from([127, 0, 0, 1]),
        }
    }
}

/// RTP received on the remote tracks, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    pub video_packets: u64,
    pub video_bytes: u64,
    pub audio_packets: u64,
    pub audio_bytes: u64,
}

impl Received {
    /// What arrived since `earlier`.
    pub fn since(&self, earlier: &Received) -> Received {
        Received {
            video_packets: self.video_packets - earlier.video_packets,
            video_bytes: self.video_bytes - earlier.video_bytes,
            audio_packets: self.audio_packets - earlier.audio_packets,
            audio_bytes: self.audio_bytes - earlier.audio_bytes,
        }
    }
}

/// Samples handed to the local tracks (video frames and Opus packets).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SentSamples {
    pub video_frames: u64,
    pub audio_packets: u64,
}

/// An incoming call, as `call_incoming` announced it.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub call: CallId,
    pub from: AccountId,
    pub from_device: DeviceId,
    pub media: Media,
    pub sdp: String,
    pub ice_servers: Vec<IceServer>,
}

/// Waits for the next `call_incoming` on `client`; other events before it
/// are skipped.
pub async fn wait_incoming(client: &mut Client, timeout: Duration) -> Result<Incoming> {
    tokio::time::timeout(timeout, async {
        loop {
            match client.next_event().await? {
                Event::Call(ServerFrame::CallIncoming {
                    call,
                    from,
                    from_device,
                    media,
                    sdp,
                    ice_servers,
                }) => {
                    return Ok(Incoming {
                        call,
                        from,
                        from_device,
                        media,
                        sdp,
                        ice_servers,
                    });
                }
                other => debug!(?other, "skipped while waiting for call_incoming"),
            }
        }
    })
    .await
    .map_err(|_| anyhow!("no call_incoming within {timeout:?}"))?
}

/// Calls `to` (a video call) and sends `files` once connected.
pub async fn place_call(
    mut client: Client,
    to: AccountId,
    files: &MediaFiles,
    config: &PeerConfig,
) -> Result<Call> {
    let peer = Peer::new(files, config, Vec::new()).await?;
    let offer = peer.pc.create_offer(None).await.context("create offer")?;
    let (call, ice_servers) = client
        .call_offer(to, Media::Video, &offer.sdp)
        .await
        .context("call_offer")?;
    // The servers come with `call_started`; gathering starts at
    // set_local_description, so they apply to every candidate.
    if !ice_servers.is_empty() {
        let configuration = RTCConfigurationBuilder::new()
            .with_ice_servers(rtc_ice_servers(&ice_servers))
            .build();
        peer.pc
            .set_configuration(configuration)
            .await
            .context("set ICE servers")?;
    }
    peer.pc
        .set_local_description(offer)
        .await
        .context("set local offer")?;
    Ok(peer.start(client, call, false))
}

/// Answers `incoming` on `client` and sends `files` once connected.
pub async fn answer_call(
    mut client: Client,
    incoming: Incoming,
    files: &MediaFiles,
    config: &PeerConfig,
) -> Result<Call> {
    let peer = Peer::new(files, config, rtc_ice_servers(&incoming.ice_servers)).await?;
    let offer = RTCSessionDescription::offer(incoming.sdp).context("parse offer")?;
    peer.pc
        .set_remote_description(offer)
        .await
        .context("set remote offer")?;
    let answer = peer.pc.create_answer(None).await.context("create answer")?;
    let sdp = answer.sdp.clone();
    peer.pc
        .set_local_description(answer)
        .await
        .context("set local answer")?;
    // Candidates gathered meanwhile wait in the channel: the callee may
    // trickle only once it has accepted.
    client
        .call_accept(incoming.call, &sdp)
        .await
        .context("call_accept")?;
    Ok(peer.start(client, incoming.call, true))
}

fn rtc_ice_servers(servers: &[IceServer]) -> Vec<RTCIceServer> {
    servers
        .iter()
        .map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone().unwrap_or_default(),
            credential: s.credential.clone().unwrap_or_default(),
        })
        .collect()
}

fn opus() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48_000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: 111,
    }
}

fn vp8() -> RTCRtpCodecParameters {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![
                fb("goog-remb", ""),
                fb("ccm", "fir"),
                fb("nack", ""),
                fb("nack", "pli"),
            ],
        },
        payload_type: 96,
    }
}

/// What the webrtc-rs callbacks report.
struct Handler {
    candidates: mpsc::UnboundedSender<RTCIceCandidateInit>,
    state: watch::Sender<RTCPeerConnectionState>,
    received: Arc<watch::Sender<Received>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) if !init.candidate.is_empty() => {
                debug!(candidate = %init.candidate, "local candidate");
                let _ = self.candidates.send(init);
            }
            Ok(_) => {}
            Err(e) => warn!("unusable local candidate: {e}"),
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        debug!(%state, "peer connection state");
        self.state.send_replace(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let received = self.received.clone();
        tokio::spawn(count_rtp(track, received));
    }
}

async fn count_rtp(track: Arc<dyn TrackRemote>, received: Arc<watch::Sender<Received>>) {
    let kind = track.kind().await;
    debug!(%kind, "remote track");
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnRtpPacket(pkt) => {
                let bytes = pkt.payload.len() as u64;
                received.send_modify(|r| match kind {
                    RtpCodecKind::Video => {
                        r.video_packets += 1;
                        r.video_bytes += bytes;
                    }
                    _ => {
                        r.audio_packets += 1;
                        r.audio_bytes += bytes;
                    }
                });
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
}

/// A peer connection with its two local tracks, before signalling starts.
struct Peer {
    pc: Arc<dyn PeerConnection>,
    video: (Arc<TrackLocalStaticSample>, Arc<dyn RtpSender>, Vec<Frame>),
    audio: (Arc<TrackLocalStaticSample>, Arc<dyn RtpSender>, Vec<Frame>),
    candidates: mpsc::UnboundedReceiver<RTCIceCandidateInit>,
    state: watch::Receiver<RTCPeerConnectionState>,
    received: Arc<watch::Sender<Received>>,
}

impl Peer {
    async fn new(
        files: &MediaFiles,
        config: &PeerConfig,
        ice_servers: Vec<RTCIceServer>,
    ) -> Result<Peer> {
        let video_frames = media::read_ivf(&files.video_ivf)?;
        let audio_frames = media::read_ogg(&files.audio_ogg)?;

        let mut engine = MediaEngine::default();
        engine.register_codec(opus(), RtpCodecKind::Audio)?;
        engine.register_codec(vp8(), RtpCodecKind::Video)?;
        let registry = register_default_interceptors(Registry::new(), &mut engine)?;

        let (cand_tx, candidates) = mpsc::unbounded_channel();
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let received = Arc::new(watch::channel(Received::default()).0);
        let handler = Handler {
            candidates: cand_tx,
            state: state_tx,
            received: received.clone(),
        };
        let pc = PeerConnectionBuilder::new()
            .with_configuration(
                RTCConfigurationBuilder::new()
                    .with_ice_servers(ice_servers)
                    .build(),
            )
            .with_media_engine(engine)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(handler))
            .with_udp_addrs(vec![std::net::SocketAddr::new(config.bind, 0)])
            .build()
            .await
            .context("build peer connection")?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);

        let video = add_track(&pc, RtpCodecKind::Video, vp8().rtp_codec).await?;
        let audio = add_track(&pc, RtpCodecKind::Audio, opus().rtp_codec).await?;
        Ok(Peer {
            pc,
            video: (video.0, video.1, video_frames),
            audio: (audio.0, audio.1, audio_frames),
            candidates,
            state,
            received,
        })
    }

    /// Starts signalling (trickle ICE, answer, end) and the media senders.
    fn start(self, client: Client, call: CallId, remote_set: bool) -> Call {
        let (cmd_tx, cmd_rx) = mpsc::channel(4);
        let (ended_tx, ended) = watch::channel(None);
        let (sent_tx, sent) = watch::channel(SentSamples::default());
        let sent_tx = Arc::new(sent_tx);
        let mut tasks = Vec::new();
        for (track, sender, frames) in [self.video, self.audio] {
            tasks.push(tokio::spawn(send_media(
                track,
                sender,
                frames,
                self.state.clone(),
                sent_tx.clone(),
            )));
        }
        let signalling = tokio::spawn(signal(Signal {
            client,
            call,
            pc: self.pc.clone(),
            remote_set,
            candidates: self.candidates,
            commands: cmd_rx,
            ended: ended_tx,
        }));
        Call {
            id: call,
            pc: self.pc,
            state: self.state,
            received: self.received.subscribe(),
            sent,
            ended,
            commands: cmd_tx,
            signalling: Some(signalling),
            tasks,
        }
    }
}

async fn add_track(
    pc: &Arc<dyn PeerConnection>,
    kind: RtpCodecKind,
    codec: RTCRtpCodec,
) -> Result<(Arc<TrackLocalStaticSample>, Arc<dyn RtpSender>)> {
    let track = Arc::new(TrackLocalStaticSample::new(
        Instant::now(),
        MediaStreamTrack::new(
            "palaver-webrtc-peer".to_owned(),
            format!("palaver-{kind}"),
            format!("palaver-{kind}"),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(rand::random::<u32>()),
                    ..Default::default()
                },
                active: true,
                codec,
                ..Default::default()
            }],
        ),
    )?);
    let sender = pc
        .add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .with_context(|| format!("add {kind} track"))?;
    Ok((track, sender))
}

/// Once connected, writes `frames` to `track` in real time, looping.
async fn send_media(
    track: Arc<TrackLocalStaticSample>,
    sender: Arc<dyn RtpSender>,
    frames: Vec<Frame>,
    mut state: watch::Receiver<RTCPeerConnectionState>,
    sent: Arc<watch::Sender<SentSamples>>,
) {
    if state
        .wait_for(|s| *s == RTCPeerConnectionState::Connected)
        .await
        .is_err()
    {
        return;
    }
    if let Err(e) = send_frames(&track, &sender, &frames, &sent).await {
        warn!("media sender stopped: {e:#}");
    }
}

async fn send_frames(
    track: &TrackLocalStaticSample,
    sender: &Arc<dyn RtpSender>,
    frames: &[Frame],
    sent: &watch::Sender<SentSamples>,
) -> Result<()> {
    let kind = track.kind().await;
    // write_sample stamps this on every packet; it must be the negotiated one.
    let payload_type = sender
        .get_parameters()
        .await?
        .rtp_parameters
        .codecs
        .first()
        .map(|c| c.payload_type)
        .context("sender has no negotiated codec")?;
    let ssrc = *track.ssrcs().await.first().context("track has no SSRC")?;
    debug!(%kind, payload_type, ssrc, "sending");
    // Pace by the media clock (no drift from time spent writing).
    let start = tokio::time::Instant::now();
    let mut at = Duration::ZERO;
    for frame in frames.iter().cycle() {
        tokio::time::sleep_until(start + at).await;
        track
            .sample_writer(ssrc, payload_type)
            .write_sample(&Sample {
                data: frame.data.clone(),
                duration: frame.duration,
                ..Sample::new(Instant::now())
            })
            .await?;
        sent.send_modify(|s| match kind {
            RtpCodecKind::Video => s.video_frames += 1,
            _ => s.audio_packets += 1,
        });
        at += frame.duration;
    }
    Ok(())
}

enum Command {
    HangUp(oneshot::Sender<palaver_client::Result<()>>),
}

struct Signal {
    client: Client,
    call: CallId,
    pc: Arc<dyn PeerConnection>,
    remote_set: bool,
    candidates: mpsc::UnboundedReceiver<RTCIceCandidateInit>,
    commands: mpsc::Receiver<Command>,
    ended: watch::Sender<Option<EndReason>>,
}

/// The mid the candidates are sent for: the first media section (the
/// transport is bundled), as browsers do.
fn first_mid(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .map(str::to_owned)
}

/// Owns the client for the rest of the call: relays local candidates out,
/// remote answers and candidates in, and reports the end of the call.
async fn signal(mut s: Signal) -> Result<Client> {
    let mut early: Vec<RTCIceCandidateInit> = Vec::new();
    let mut candidates_open = true;
    loop {
        tokio::select! {
            c = s.candidates.recv(), if candidates_open => {
                let Some(c) = c else {
                    candidates_open = false;
                    continue;
                };
                let mid = match s.pc.local_description().await {
                    Some(d) => first_mid(&d.sdp).unwrap_or_else(|| "0".to_owned()),
                    None => "0".to_owned(),
                };
                let json = serde_json::json!({
                    "candidate": c.candidate,
                    "sdpMid": mid,
                    "sdpMLineIndex": 0,
                });
                s.client.call_ice(s.call, &json.to_string()).await.context("call_ice")?;
            }
            cmd = s.commands.recv() => match cmd {
                Some(Command::HangUp(reply)) => {
                    let r = s.client.call_hangup(s.call).await;
                    let _ = reply.send(r);
                    return Ok(s.client);
                }
                None => return Ok(s.client),
            },
            ev = s.client.next_event() => match ev.context("signalling connection")? {
                Event::Call(ServerFrame::CallAccepted { call, sdp, .. }) if call == s.call => {
                    let answer = RTCSessionDescription::answer(sdp).context("parse answer")?;
                    s.pc.set_remote_description(answer).await.context("set remote answer")?;
                    s.remote_set = true;
                    for c in early.drain(..) {
                        add_remote_candidate(&s.pc, c).await;
                    }
                }
                Event::Call(ServerFrame::CallIce { call, candidate, .. }) if call == s.call => {
                    let init: RTCIceCandidateInit = match serde_json::from_str(&candidate) {
                        Ok(i) => i,
                        Err(e) => {
                            warn!("bad remote candidate {candidate}: {e}");
                            continue;
                        }
                    };
                    if init.candidate.is_empty() {
                        continue; // end of candidates
                    }
                    if s.remote_set {
                        add_remote_candidate(&s.pc, init).await;
                    } else {
                        early.push(init);
                    }
                }
                Event::Call(ServerFrame::CallEnded { call, reason }) if call == s.call => {
                    s.ended.send_replace(Some(reason));
                    return Ok(s.client);
                }
                other => debug!(?other, "event ignored during the call"),
            },
        }
    }
}

async fn add_remote_candidate(pc: &Arc<dyn PeerConnection>, init: RTCIceCandidateInit) {
    debug!(candidate = %init.candidate, "remote candidate");
    // A candidate this stack cannot use (TCP, another address family) is
    // not an error for the call.
    if let Err(e) = pc.add_ice_candidate(init.clone()).await {
        warn!(candidate = %init.candidate, "remote candidate not added: {e}");
    }
}

/// A call in progress: its media flows until it ends or is hung up.
pub struct Call {
    id: CallId,
    pc: Arc<dyn PeerConnection>,
    state: watch::Receiver<RTCPeerConnectionState>,
    received: watch::Receiver<Received>,
    sent: watch::Receiver<SentSamples>,
    ended: watch::Receiver<Option<EndReason>>,
    commands: mpsc::Sender<Command>,
    signalling: Option<JoinHandle<Result<Client>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("id", &self.id)
            .field("state", &*self.state.borrow())
            .field("received", &*self.received.borrow())
            .field("sent", &*self.sent.borrow())
            .finish_non_exhaustive()
    }
}

impl Call {
    pub fn id(&self) -> CallId {
        self.id
    }

    /// The peer connection's current state.
    pub fn state(&self) -> RTCPeerConnectionState {
        *self.state.borrow()
    }

    /// RTP received so far on the remote tracks.
    pub fn received(&self) -> Received {
        *self.received.borrow()
    }

    /// Samples written to the local tracks so far.
    pub fn sent(&self) -> SentSamples {
        *self.sent.borrow()
    }

    /// Waits until ICE and DTLS are up; fails if the connection fails first.
    pub async fn wait_connected(&mut self, timeout: Duration) -> Result<()> {
        let r = tokio::time::timeout(
            timeout,
            self.state.wait_for(|s| {
                matches!(
                    s,
                    RTCPeerConnectionState::Connected
                        | RTCPeerConnectionState::Failed
                        | RTCPeerConnectionState::Closed
                )
            }),
        )
        .await
        .map(|r| r.map(|s| *s));
        match r {
            Err(_) => bail!("not connected within {timeout:?} (state {})", self.state()),
            Ok(Err(_)) => bail!("peer connection gone"),
            Ok(Ok(RTCPeerConnectionState::Connected)) => Ok(()),
            Ok(Ok(s)) => bail!("peer connection {s}"),
        }
    }

    /// Waits until the received counters satisfy `until`.
    pub async fn wait_received(
        &mut self,
        timeout: Duration,
        until: impl FnMut(&Received) -> bool,
    ) -> Result<Received> {
        let r = tokio::time::timeout(timeout, self.received.wait_for(until))
            .await
            .map(|r| r.map(|r| *r));
        match r {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => bail!("peer connection gone"),
            Err(_) => bail!(
                "media did not arrive within {timeout:?}: received {:?}, sent {:?}, state {}",
                self.received(),
                self.sent(),
                self.state()
            ),
        }
    }

    /// Waits for the other side to end the call (`call_ended`), then closes
    /// the peer connection; returns the reason and the client.
    pub async fn wait_ended(mut self, timeout: Duration) -> Result<(EndReason, Client)> {
        let r = tokio::time::timeout(timeout, self.ended.wait_for(Option::is_some))
            .await
            .map(|r| r.map(|r| *r));
        let reason = match r {
            Ok(Ok(Some(reason))) => reason,
            Ok(_) => {
                // The signalling task ended without call_ended: report why.
                self.finish().await?;
                bail!("signalling stopped before call_ended");
            }
            Err(_) => bail!("no call_ended within {timeout:?}"),
        };
        let client = self.finish().await?;
        Ok((reason, client))
    }

    /// Hangs up (`call_hangup`), closes the peer connection and returns the
    /// client.
    pub async fn hang_up(mut self) -> Result<Client> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::HangUp(tx))
            .await
            .map_err(|_| anyhow!("signalling already stopped"))?;
        rx.await
            .map_err(|_| anyhow!("signalling stopped before hanging up"))?
            .context("call_hangup")?;
        self.finish().await
    }

    async fn finish(&mut self) -> Result<Client> {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let _ = self.pc.close().await;
        let handle = self.signalling.take().context("already finished")?;
        handle.await.context("signalling task panicked")?
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(s) = &self.signalling {
            s.abort();
        }
    }
}
