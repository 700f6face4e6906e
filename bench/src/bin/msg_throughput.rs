//! 1:1 message throughput benchmark: `--pairs` sender/receiver connections
//! (one single-device account each) on loopback. Each sender sends to its
//! receiver; receivers acknowledge in batches; senders acknowledge the
//! `delivered` receipts the server queues in return. So every message costs
//! the server a `send` commit, a push, an `ack` commit (which queues the
//! receipt), a push, and the receipt's `ack`.
//!
//! Closed loop (`--rate 0`): each sender keeps `--window` sends outstanding,
//! which finds the maximum rate. Open loop (`--rate R`): messages are
//! scheduled at R/s in total and stamped with their scheduled time, so a
//! server (or client) that falls behind shows up in the latency.
//!
//! End-to-end latency = receive time at the recipient - send (or scheduled)
//! time, both from this process's clock, for messages sent inside the
//! measurement window. Runs `--warmup-secs` + `--secs` + `--drain-secs`,
//! then stops by itself.

// A benchmark prints its results on stdout.
#![allow(clippy::print_stdout)]

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::{FutureExt, SinkExt, StreamExt};
use palaver_bench::{Creds, RegisterOptions, Ws, auth, connect, now_us, percentile, register_all};
use palaver_proto::codec::{decode_server, encode_client};
use palaver_proto::frames::{ClientFrame, EnvelopeKind, OutEnvelope, Payload, ServerFrame};
use palaver_proto::{AccountId, ClientMsgId, DeviceId, RequestId, Seq};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
#[command(about = "Measures 1:1 message throughput and end-to-end latency")]
struct Args {
    /// Main listener of the server (loopback only).
    #[arg(long, default_value = "127.0.0.1:28480")]
    server: SocketAddr,
    /// Admin listener of the server (development code look-up).
    #[arg(long, default_value = "127.0.0.1:29490")]
    admin: SocketAddr,
    /// Sender/receiver pairs (2 connections each).
    #[arg(long, default_value_t = 200)]
    pairs: usize,
    /// Total target rate in messages/s; 0 = closed loop (maximum rate).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Closed loop: sends outstanding per sender.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Open loop: most sends outstanding per sender before it stalls.
    #[arg(long, default_value_t = 4096)]
    max_outstanding: usize,
    #[arg(long, default_value_t = 5)]
    warmup_secs: u64,
    /// Length of the measurement window.
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// Time after the window for replies and deliveries to arrive.
    #[arg(long, default_value_t = 5)]
    drain_secs: u64,
    /// Payload bytes per message (the first 8 carry the send time).
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// Phone prefix of the benchmark accounts (then 8 digits).
    #[arg(long, default_value = "+49160")]
    phone_prefix: String,
    /// Credentials cache (reused across runs with the same data dir).
    #[arg(long, default_value = "throughput-creds.txt")]
    cache: PathBuf,
    #[arg(long, default_value_t = 64)]
    register_concurrency: usize,
    /// PID of the server: report its CPU time per message (all threads, and
    /// the SQLite writer thread), which depends less on what else runs on
    /// the machine than the rates do.
    #[arg(long)]
    server_pid: Option<String>,
    /// A label printed in the result row (e.g. the durability setting).
    #[arg(long, default_value = "")]
    label: String,
}

/// Unix-µs boundaries of a run.
#[derive(Debug, Clone, Copy)]
struct Clock {
    start: u64,
    warm: u64,
    end: u64,
    stop: u64,
}

impl Clock {
    fn in_window(&self, t: u64) -> bool {
        t >= self.warm && t < self.end
    }
}

#[derive(Debug)]
struct Target {
    account: AccountId,
    device: DeviceId,
    /// Messages/s for this sender; 0 = closed loop.
    rate: f64,
}

#[derive(Debug, Default)]
struct Stats {
    e2e_us: Vec<u32>,
    commit_us: Vec<u32>,
    accepted: u64,
    delivered: u64,
    receipts: u64,
    errors: u64,
    first_error: Option<String>,
    sent: u64,
    behind: u64,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.e2e_us.extend(o.e2e_us);
        self.commit_us.extend(o.commit_us);
        self.accepted += o.accepted;
        self.delivered += o.delivered;
        self.receipts += o.receipts;
        self.errors += o.errors;
        self.sent += o.sent;
        self.behind += o.behind;
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }
}

struct Peer {
    ws: Ws,
    clock: Clock,
    target: Option<Target>,
    window: usize,
    max_outstanding: usize,
    payload_bytes: usize,
    nonce: u64,
    /// Request id and send stamp of the sends waiting for `sent`, in order.
    outstanding: VecDeque<(u64, u64)>,
    next_id: u64,
    k: u64,
    acks: Vec<Seq>,
    stats: Stats,
}

impl Peer {
    async fn send_one(&mut self, stamp: u64) -> anyhow::Result<()> {
        let Some(t) = &self.target else {
            return Ok(());
        };
        self.next_id += 1;
        let id = self.next_id;
        let mut payload = vec![0u8; self.payload_bytes.max(8)];
        payload[..8].copy_from_slice(&stamp.to_le_bytes());
        let frame = ClientFrame::Send {
            id: RequestId(id),
            msg: ClientMsgId::new(format!("b{}-{}", self.nonce, self.k))
                .map_err(|_| anyhow::anyhow!("bad msg id"))?,
            to: t.account,
            envelopes: vec![OutEnvelope {
                device: t.device,
                payload: Payload(payload),
            }],
            edit_of: None,
        };
        self.k += 1;
        self.ws
            .feed(Message::Text(encode_client(&frame).into()))
            .await?;
        self.outstanding.push_back((id, stamp));
        self.stats.sent += 1;
        Ok(())
    }

    /// Sends what the schedule (or the window) allows; true if anything
    /// was written.
    async fn send_due(&mut self, now: u64) -> anyhow::Result<bool> {
        let Some(t) = &self.target else {
            return Ok(false);
        };
        if now >= self.clock.end {
            return Ok(false);
        }
        let rate = t.rate;
        let mut fed = false;
        if rate <= 0.0 {
            while self.outstanding.len() < self.window {
                self.send_one(now_us()).await?;
                fed = true;
            }
        } else {
            // Message k is due at start + k / rate.
            let due = ((now - self.clock.start) as f64 * rate / 1e6) as u64 + 1;
            while self.k < due {
                if self.outstanding.len() >= self.max_outstanding {
                    self.stats.behind += 1;
                    break;
                }
                let stamp = self.clock.start + (self.k as f64 * 1e6 / rate) as u64;
                self.send_one(stamp).await?;
                fed = true;
            }
        }
        Ok(fed)
    }

    /// Unix µs at which the next open-loop message is scheduled.
    fn next_due_us(&self) -> u64 {
        match &self.target {
            Some(t) if t.rate > 0.0 => self.clock.start + (self.k as f64 * 1e6 / t.rate) as u64,
            _ => self.clock.stop,
        }
    }

    fn handle(&mut self, msg: Message) -> anyhow::Result<()> {
        let Message::Text(text) = msg else {
            if let Message::Close(c) = msg {
                bail!("closed by the server: {c:?}");
            }
            return Ok(());
        };
        let now = now_us();
        match decode_server(text.as_str())? {
            ServerFrame::Sent { id, .. } => {
                let Some((want, stamp)) = self.outstanding.pop_front() else {
                    bail!("unexpected sent {id:?}");
                };
                if want != id.0 {
                    bail!("sent {} out of order (expected {want})", id.0);
                }
                if self.clock.in_window(stamp) {
                    self.stats.accepted += 1;
                    self.stats
                        .commit_us
                        .push(now.saturating_sub(stamp).min(u64::from(u32::MAX)) as u32);
                }
            }
            ServerFrame::Envelope {
                seq, kind, payload, ..
            } => {
                self.acks.push(seq);
                match kind {
                    EnvelopeKind::Message => {
                        let stamp = payload
                            .as_ref()
                            .and_then(|p| p.0.get(..8))
                            .and_then(|b| <[u8; 8]>::try_from(b).ok())
                            .map(u64::from_le_bytes)
                            .unwrap_or(0);
                        if self.clock.in_window(stamp) {
                            self.stats.delivered += 1;
                            self.stats
                                .e2e_us
                                .push(now.saturating_sub(stamp).min(u64::from(u32::MAX)) as u32);
                        }
                    }
                    _ => {
                        if self.clock.in_window(now) {
                            self.stats.receipts += 1;
                        }
                    }
                }
            }
            ServerFrame::Error(e) => {
                self.stats.errors += 1;
                if e.id.is_some() {
                    self.outstanding.pop_front();
                }
                self.stats
                    .first_error
                    .get_or_insert_with(|| format!("{}: {}", e.code.as_str(), e.message));
            }
            _ => {}
        }
        Ok(())
    }

    async fn flush_acks(&mut self) -> anyhow::Result<()> {
        if self.acks.is_empty() {
            return Ok(());
        }
        let acks = std::mem::take(&mut self.acks);
        for chunk in acks.chunks(1024) {
            let f = ClientFrame::Ack {
                seqs: chunk.to_vec(),
            };
            self.ws
                .feed(Message::Text(encode_client(&f).into()))
                .await?;
        }
        Ok(())
    }

    async fn run(mut self) -> Stats {
        if let Err(e) = self.run_inner().await {
            self.stats.errors += 1;
            self.stats
                .first_error
                .get_or_insert_with(|| format!("{e:#}"));
        }
        self.stats
    }

    async fn run_inner(&mut self) -> anyhow::Result<()> {
        let open_loop = self.target.as_ref().is_some_and(|t| t.rate > 0.0);
        let stop_at = tokio::time::Instant::now()
            + Duration::from_micros(self.clock.stop.saturating_sub(now_us()));
        loop {
            let now = now_us();
            if now >= self.clock.stop {
                return Ok(());
            }
            if self.send_due(now).await? {
                self.ws.flush().await?;
            }
            let sending =
                open_loop && now < self.clock.end && self.outstanding.len() < self.max_outstanding;
            // Open loop: wake up when the next message is due (not on a
            // fixed tick, which would cost the generator CPU).
            let next_due = self.next_due_us().saturating_sub(now_us());
            let next_due = tokio::time::Instant::now() + Duration::from_micros(next_due);
            tokio::select! {
                m = self.ws.next() => {
                    let Some(m) = m else { bail!("connection closed") };
                    self.handle(m?)?;
                    // Take whatever else has already arrived before acking.
                    for _ in 0..1024 {
                        match self.ws.next().now_or_never() {
                            Some(Some(m)) => self.handle(m?)?,
                            Some(None) => bail!("connection closed"),
                            None => break,
                        }
                    }
                }
                _ = tokio::time::sleep_until(next_due), if sending => {}
                _ = tokio::time::sleep_until(stop_at) => return Ok(()),
            }
            if !self.acks.is_empty() {
                self.flush_acks().await?;
                self.ws.flush().await?;
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    palaver_bench::require_loopback(args.server)?;
    palaver_bench::require_loopback(args.admin)?;
    if args.pairs == 0 {
        bail!("--pairs must be at least 1");
    }
    let opts = RegisterOptions {
        server: args.server,
        admin: args.admin,
        prefix: args.phone_prefix.clone(),
        accounts: args.pairs * 2,
        devices_per_account: 1,
        concurrency: args.register_concurrency,
        cache: args.cache.clone(),
    };
    let accounts = register_all(&opts).await?;
    let creds: Vec<Creds> = accounts.into_iter().flatten().collect();
    // Connect and authenticate every peer.
    let mut conns: Vec<Option<Ws>> = (0..creds.len()).map(|_| None).collect();
    let mut set = tokio::task::JoinSet::new();
    for (i, c) in creds.iter().cloned().enumerate() {
        let server = args.server;
        set.spawn(async move {
            let mut ws = connect(
                server,
                None,
                tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default(),
            )
            .await?;
            auth(&mut ws, &c).await?;
            Ok::<_, anyhow::Error>((i, ws))
        });
    }
    while let Some(r) = set.join_next().await {
        let (i, ws) = r.context("connect task")??;
        conns[i] = Some(ws);
    }
    let start = now_us() + 200_000;
    let clock = Clock {
        start,
        warm: start + args.warmup_secs * 1_000_000,
        end: start + (args.warmup_secs + args.secs) * 1_000_000,
        stop: start + (args.warmup_secs + args.secs + args.drain_secs) * 1_000_000,
    };
    let per_sender_rate = args.rate / args.pairs as f64;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, ws) in conns.into_iter().enumerate() {
        let ws = ws.context("connected")?;
        // Even indexes send to the next odd one.
        let target = (i % 2 == 0).then(|| Target {
            account: AccountId(creds[i + 1].account),
            device: DeviceId(creds[i + 1].device),
            rate: per_sender_rate,
        });
        let peer = Peer {
            ws,
            clock,
            target,
            window: args.window.max(1),
            max_outstanding: args.max_outstanding.max(1),
            payload_bytes: args.payload_bytes,
            nonce: start / 1000 + i as u64,
            outstanding: VecDeque::new(),
            next_id: 1,
            k: 0,
            acks: Vec::new(),
            stats: Stats::default(),
        };
        tasks.spawn(async move {
            let wait = clock.start.saturating_sub(now_us());
            tokio::time::sleep(Duration::from_micros(wait)).await;
            peer.run().await
        });
    }
    // Server CPU time over the measurement window.
    let cpu = args.server_pid.clone().map(|pid| {
        tokio::spawn(async move {
            let at = |t: u64| Duration::from_micros(t.saturating_sub(now_us()));
            tokio::time::sleep(at(clock.warm)).await;
            let a = palaver_bench::cpu_seconds(&pid, "sqlite-writer");
            tokio::time::sleep(at(clock.end)).await;
            let b = palaver_bench::cpu_seconds(&pid, "sqlite-writer");
            a.zip(b).map(|(a, b)| (b.0 - a.0, b.1 - a.1))
        })
    });
    let mut total = Stats::default();
    while let Some(r) = tasks.join_next().await {
        total.merge(r.context("peer task")?);
    }
    total.e2e_us.sort_unstable();
    total.commit_us.sort_unstable();
    let secs = args.secs as f64;
    let ms = |v: u32| f64::from(v) / 1000.0;
    let mode = if args.rate > 0.0 {
        format!("open loop {:.0}/s", args.rate)
    } else {
        format!("closed loop, window {}", args.window)
    };
    println!(
        "pairs {} | {mode} | payload {} B | window {} s after {} s warm-up",
        args.pairs, args.payload_bytes, args.secs, args.warmup_secs
    );
    println!(
        "accepted {:.0}/s | delivered {:.0}/s | receipts {:.0}/s | e2e p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms max {:.2} ms | send->sent p50 {:.2} ms p99 {:.2} ms | errors {} | stalled {}",
        total.accepted as f64 / secs,
        total.delivered as f64 / secs,
        total.receipts as f64 / secs,
        ms(percentile(&total.e2e_us, 50.0)),
        ms(percentile(&total.e2e_us, 90.0)),
        ms(percentile(&total.e2e_us, 99.0)),
        ms(percentile(&total.e2e_us, 99.9)),
        ms(total.e2e_us.last().copied().unwrap_or(0)),
        ms(percentile(&total.commit_us, 50.0)),
        ms(percentile(&total.commit_us, 99.0)),
        total.errors,
        total.behind,
    );
    let mut cpu_note = String::new();
    if let Some(task) = cpu
        && let Ok(Some((all, writer))) = task.await
    {
        let n = total.accepted.max(1) as f64;
        cpu_note = format!("{:.0} | {:.0}", all * 1e6 / n, writer * 1e6 / n);
        println!(
            "server CPU in the window: {:.0}% of one core ({:.0} us per message), \
             sqlite-writer thread {:.0}% ({:.0} us per message)",
            all * 100.0 / secs,
            all * 1e6 / n,
            writer * 100.0 / secs,
            writer * 1e6 / n
        );
    }
    if total.delivered < total.accepted {
        // Latency percentiles cover delivered messages only.
        println!(
            "warning: {} messages accepted in the window were not delivered before the end \
             (raise --drain-secs); the latency percentiles leave them out",
            total.accepted - total.delivered
        );
    }
    if let Some(e) = &total.first_error {
        println!("first error: {e}");
    }
    println!(
        "ROW | {} | {} | {mode} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {cpu_note} |",
        args.label,
        args.pairs,
        total.accepted as f64 / secs,
        total.delivered as f64 / secs,
        ms(percentile(&total.e2e_us, 50.0)),
        ms(percentile(&total.e2e_us, 99.0)),
        ms(percentile(&total.commit_us, 99.0)),
        total.errors,
    );
    Ok(())
}
