//! Load generator for Palaver's SFU: many simulated participants in one
//! process, each a str0m peer with real ICE, DTLS and SRTP on its own UDP
//! socket. Publishers send pre-packetized RTP (Opus-sized audio every 20 ms,
//! or VP8-sized video frames at 30 fps); subscribers count what arrives and
//! the forwarding delay (the send time travels in the payload). The SFU's
//! CPU time is read from /proc/PID/stat around the measurement window.
//!
//! sfu-load --join-url http://127.0.0.1:PORT --secret-file DATA/sfu.secret \
//!          --sfu-pid PID --publishers 10 --subscribers 100 --media audio

use anyhow::{Context, Result, bail};
use clap::Parser;
use palaver_proto::join_token::{self, JoinClaims};
use palaver_proto::{AccountId, DeviceId};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::channel::ChannelId;
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Base URL of the SFU's join endpoint (loopback only).
    #[arg(long)]
    join_url: String,
    /// The SFU's join-token secret (palaver serve: DATA_DIR/sfu.secret).
    #[arg(long)]
    secret_file: std::path::PathBuf,
    /// PID of the SFU process, for its CPU time.
    #[arg(long)]
    sfu_pid: u32,
    #[arg(long, default_value_t = 10)]
    publishers: usize,
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// audio (Opus-sized packets every 20 ms) or video (30 fps, 4 packets
    /// of 1,100 bytes per frame, plus audio).
    #[arg(long, default_value = "audio")]
    media: String,
    /// Measurement window after everyone receives.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value = "bench")]
    room: String,
}

/// Counters shared by the simulated peers.
#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    received: AtomicU64,
    subscribed_tracks: AtomicU64,
    delays_us: std::sync::Mutex<Vec<u32>>,
    measuring: std::sync::atomic::AtomicBool,
}

fn epoch() -> Instant {
    static E: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *E.get_or_init(Instant::now)
}

#[allow(clippy::print_stdout)]
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    if !args.join_url.starts_with("http://127.") {
        bail!("loopback SFU URLs only");
    }
    str0m::crypto::from_feature_flags().install_process_default();
    let secret = std::fs::read_to_string(&args.secret_file)?
        .trim_end()
        .to_owned();
    let totals = Arc::new(Totals::default());
    epoch();
    let mut tasks = Vec::new();
    let video = args.media == "video";
    for i in 0..args.publishers + args.subscribers {
        let publisher = i < args.publishers;
        let token = token(&secret, &args.room, i as u64 + 1)?;
        let peer = Sim::join(&args, &token, publisher, video)
            .await
            .with_context(|| format!("peer {i}"))?;
        tasks.push(tokio::spawn(peer.run(totals.clone())));
    }
    let tracks_per_pub = if video { 2 } else { 1 };
    let want = (args.publishers * tracks_per_pub * (args.subscribers + args.publishers - 1)) as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while totals.subscribed_tracks.load(Ordering::Relaxed) < want {
        if Instant::now() > deadline {
            bail!(
                "only {} of {want} subscriptions receive media",
                totals.subscribed_tracks.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu0, t0) = (cpu_ticks(args.sfu_pid)?, Instant::now());
    let (sent0, recv0) = (
        totals.sent.load(Ordering::Relaxed),
        totals.received.load(Ordering::Relaxed),
    );
    let own0 = cpu_ticks(std::process::id())?;
    totals.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    totals.measuring.store(false, Ordering::Relaxed);
    let (cpu1, dt) = (cpu_ticks(args.sfu_pid)?, t0.elapsed().as_secs_f64());
    let own1 = cpu_ticks(std::process::id())?;
    let sent = totals.sent.load(Ordering::Relaxed) - sent0;
    let recv = totals.received.load(Ordering::Relaxed) - recv0;
    let cpu_s = (cpu1 - cpu0) as f64 / 100.0;
    let mut d = totals.delays_us.lock().unwrap().clone();
    d.sort_unstable();
    let pct = |p: f64| {
        d.get(((d.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    // Every participant subscribes to every other: a publisher hears the
    // other publishers too.
    let expected = sent * (args.subscribers + args.publishers - 1) as u64;
    let report = serde_json::json!({
        "media": args.media, "publishers": args.publishers, "subscribers": args.subscribers,
        "seconds": dt,
        "forwarded_pps": recv as f64 / dt,
        "sfu_cpu_seconds": cpu_s,
        "sfu_cores_used": cpu_s / dt,
        "forwarded_per_sfu_cpu_second": recv as f64 / cpu_s.max(0.001),
        "sfu_cpu_us_per_forwarded_packet": cpu_s * 1e6 / (recv.max(1) as f64),
        "loss": 1.0 - recv as f64 / (expected.max(1) as f64),
        "delay_ms_p50": pct(0.5), "delay_ms_p99": pct(0.99),
        "generator_cpu_seconds": (own1 - own0) as f64 / 100.0,
    });
    println!("{report}");
    for t in tasks {
        t.abort();
    }
    Ok(())
}

fn token(secret: &str, room: &str, n: u64) -> Result<String> {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 3600;
    let claims = JoinClaims {
        room: room.into(),
        account: AccountId(n),
        device: DeviceId(n),
        publish: true,
        subscribe: true,
        exp,
        admin: false,
    };
    Ok(join_token::sign(secret.as_bytes(), &claims)?)
}

/// utime + stime of a process, in clock ticks (100 per second).
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

struct Sim {
    rtc: Rtc,
    sock: UdpSocket,
    local: SocketAddr,
    publisher: bool,
    video: bool,
    audio_mid: Option<Mid>,
    video_mid: Option<Mid>,
    channel: Option<ChannelId>,
    seen: std::collections::HashSet<Mid>,
    /// A subscriber asked for a keyframe (through the SFU).
    want_keyframe: bool,
    frames: u64,
}

impl Sim {
    async fn join(args: &Args, token: &str, publisher: bool, video: bool) -> Result<Sim> {
        let sock = UdpSocket::bind("127.0.0.1:0").await?;
        let local = sock.local_addr()?;
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp")?);
        let mut change = rtc.sdp_api();
        let (mut audio_mid, mut video_mid) = (None, None);
        if publisher {
            audio_mid =
                Some(change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
            if video {
                video_mid =
                    Some(change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None));
            }
        }
        change.add_channel("palaver".into());
        let (offer, pending) = change.apply().context("offer")?;
        let url = format!(
            "{}/v1/rooms/{}/join",
            args.join_url.trim_end_matches('/'),
            args.room
        );
        let answer = post(&url, token, &offer.to_sdp_string()).await?;
        rtc.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer)?)?;
        Ok(Sim {
            rtc,
            sock,
            local,
            publisher,
            video,
            audio_mid,
            video_mid,
            channel: None,
            seen: Default::default(),
            want_keyframe: true,
            frames: 0,
        })
    }

    async fn run(mut self, totals: Arc<Totals>) {
        let mut buf = vec![0u8; 2000];
        let start = Instant::now();
        let mut next_audio = start + Duration::from_millis(500);
        let mut next_video = next_audio;
        let mut n: u64 = 0;
        loop {
            let timeout = match self.drain(&totals) {
                Some(t) => t,
                None => return,
            };
            let mut wake = timeout;
            if self.publisher && self.rtc.is_connected() {
                wake = wake.min(next_audio);
                if self.video {
                    wake = wake.min(next_video);
                }
            }
            tokio::select! {
                r = self.sock.recv_from(&mut buf) => {
                    let Ok((len, src)) = r else { continue };
                    let Ok(contents) = buf[..len].try_into() else { continue };
                    let input = Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source: src, destination: self.local, contents });
                    let _ = self.rtc.handle_input(input);
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    let _ = self.rtc.handle_input(Input::Timeout(now));
                    if self.publisher && self.rtc.is_connected() {
                        if now >= next_audio {
                            self.write(self.audio_mid, Codec::Opus, n, 80, 0, now, &totals);
                            next_audio += Duration::from_millis(20);
                        }
                        if self.video && now >= next_video {
                            // VP8 descriptor: S=1 on the frame's first packet;
                            // a keyframe every 30 frames or when asked.
                            let key = self.want_keyframe || self.frames.is_multiple_of(30);
                            self.want_keyframe = false;
                            self.frames += 1;
                            for i in 0..4u8 {
                                n += 1;
                                let head = match (i, key) { (0, true) => 1, (0, false) => 2, _ => 3 };
                                self.write(self.video_mid, Codec::Vp8, n, 1100, head, now, &totals);
                            }
                            next_video += Duration::from_micros(33_333);
                        }
                        n += 1;
                    }
                }
            }
        }
    }

    /// `head`: 0 audio, 1 first packet of a VP8 keyframe, 2 first packet of
    /// a delta frame, 3 a later packet of a frame. The send time is in
    /// payload bytes 2..10.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        mid: Option<Mid>,
        codec: Codec,
        n: u64,
        size: usize,
        head: u8,
        now: Instant,
        totals: &Totals,
    ) {
        let Some(mid) = mid else { return };
        let Some(pt) = self
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
        else {
            return;
        };
        let sent_us = now.duration_since(epoch()).as_micros() as u64;
        let mut payload = vec![0u8; size];
        let (b0, b1) = match head {
            1 => (0x10, 0x00),
            2 => (0x10, 0x01),
            3 => (0x00, 0x01),
            _ => (0xfc, 0x00),
        };
        payload[0] = b0;
        payload[1] = b1;
        payload[2..10].copy_from_slice(&sent_us.to_be_bytes());
        let marker = head == 0 || head == 3;
        let clock = if codec == Codec::Opus { 48 } else { 90 };
        let ts = (now.duration_since(epoch()).as_millis() as u64 * clock) as u32;
        let mut api = self.rtc.direct_api();
        if let Some(tx) = api.stream_tx_by_mid(mid, None) {
            tx.write_rtp(
                RtpWrite::new(pt, n.into(), ts, now, payload)
                    .marker(marker)
                    .nackable(codec != Codec::Opus),
            );
            if totals.measuring.load(Ordering::Relaxed) {
                totals.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Polls str0m until it wants time; sends what it produced.
    fn drain(&mut self, totals: &Totals) -> Option<Instant> {
        loop {
            match self.rtc.poll_output().ok()? {
                Output::Timeout(t) => return Some(t),
                Output::Transmit(t) => {
                    let _ = self.sock.try_send_to(&t.contents, t.destination);
                }
                Output::Event(e) => self.event(e, totals),
            }
        }
    }

    fn event(&mut self, e: Event, totals: &Totals) {
        match e {
            Event::ChannelOpen(id, _) => self.channel = Some(id),
            Event::ChannelData(d) => {
                let Ok(m) = serde_json::from_slice::<serde_json::Value>(&d.data) else {
                    return;
                };
                if m["type"] != "offer" {
                    return;
                }
                let Ok(offer) = SdpOffer::from_sdp_string(m["sdp"].as_str().unwrap_or("")) else {
                    return;
                };
                let Ok(answer) = self.rtc.sdp_api().accept_offer(offer) else {
                    return;
                };
                let json = serde_json::json!({"type": "answer", "sdp": answer.to_sdp_string()})
                    .to_string();
                if let Some(mut ch) = self.channel.and_then(|c| self.rtc.channel(c)) {
                    let _ = ch.write(false, json.as_bytes());
                }
            }
            Event::KeyframeRequest(_) => self.want_keyframe = true,
            Event::RtpPacket(p) => {
                let mid = {
                    let mut api = self.rtc.direct_api();
                    api.stream_rx(&p.header.ssrc).map(|s| s.mid())
                };
                if let Some(mid) = mid
                    && self.seen.insert(mid)
                {
                    totals.subscribed_tracks.fetch_add(1, Ordering::Relaxed);
                }
                if totals.measuring.load(Ordering::Relaxed) && p.payload.len() >= 10 {
                    totals.received.fetch_add(1, Ordering::Relaxed);
                    let sent = u64::from_be_bytes(p.payload[2..10].try_into().unwrap_or([0; 8]));
                    let now = Instant::now().duration_since(epoch()).as_micros() as u64;
                    totals
                        .delays_us
                        .lock()
                        .unwrap()
                        .push(now.saturating_sub(sent) as u32);
                }
            }
            _ => {}
        }
    }
}

/// POSTs an SDP offer; returns the answer.
async fn post(url: &str, token: &str, sdp: &str) -> Result<String> {
    let rest = url.strip_prefix("http://").context("http URL")?;
    let (host, path) = rest.split_once('/').context("path")?;
    let mut s = tokio::net::TcpStream::connect(host).await?;
    let req = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{sdp}",
        sdp.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").context("response")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("join refused: {head} {body}");
    }
    Ok(body.to_owned())
}
