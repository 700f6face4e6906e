//! One WebSocket connection: a single task that reads frames, answers them
//! in order, and pushes the device's queue.

use crate::Gateway;
use crate::handlers::ReqError;
use crate::ratelimit::LocalBucket;
use crate::router::{CloseReason, Mailbox, Push, Transition};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::SinkExt;
use palaver_proto::codec::encode_server;
use palaver_proto::frames::{EnvelopeKind, ErrorFrame, ServerFrame};
use palaver_proto::{AccountId, DeviceId, ErrorCode, PROTOCOL_VERSION, RequestId, Seq};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Close codes the server uses besides the standard ones.
pub(crate) mod close_code {
    /// The server is going away (standard).
    pub(crate) const GOING_AWAY: u16 = 1001;
    /// A frame was larger than the limit (standard).
    pub(crate) const TOO_BIG: u16 = 1009;
    /// The connection did not authenticate in time, or went silent.
    pub(crate) const TIMEOUT: u16 = 4000;
    /// The same device connected again on another connection.
    pub(crate) const REPLACED: u16 = 4001;
    /// The device was unlinked.
    pub(crate) const REVOKED: u16 = 4003;
}

/// Longest time one write to a client may take before the connection is
/// dropped, so a client that stops reading cannot pin memory.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Envelopes read from the store at once when catching up.
const FETCH_PAGE: usize = 256;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// The authenticated identity of a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Identity {
    pub(crate) account: AccountId,
    pub(crate) device: DeviceId,
}

pub(crate) struct Conn {
    pub(crate) gw: Arc<Gateway>,
    pub(crate) ip: IpAddr,
    /// The TURN region the client asked for, if any.
    pub(crate) region: Option<String>,
    /// Unique per connection of this process.
    pub(crate) id: u64,
    pub(crate) mailbox: Arc<Mailbox>,
    pub(crate) me: Option<Identity>,
    /// Highest sequence number pushed on this connection.
    last_pushed: Seq,
    /// Pushed and not yet acknowledged.
    pub(crate) unacked: BTreeSet<Seq>,
    /// The queue holds envelopes that were not pushed live.
    need_fetch: bool,
    /// The in-flight window filled up; wait for acks before reading more.
    window_full: bool,
    /// The store numbers each queue 1, 2, 3...: a gap means a missed
    /// notification.
    dense: bool,
    pub(crate) typing: LocalBucket,
    pub(crate) watching: Vec<AccountId>,
    out: Vec<ServerFrame>,
    span: tracing::Span,
}

/// Serves one upgraded WebSocket until it closes.
/// `region`: the client's TURN region hint (`/v1/ws?region=...`).
pub async fn serve_socket(gw: Arc<Gateway>, socket: WebSocket, ip: IpAddr, region: Option<String>) {
    let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("conn", id, device = tracing::field::Empty);
    let conn = Conn {
        typing: LocalBucket::new(&gw.limits.typing, Instant::now()),
        dense: gw.store.dense_seqs(),
        gw,
        ip,
        region,
        id,
        mailbox: Arc::new(Mailbox::default()),
        me: None,
        last_pushed: Seq(0),
        unacked: BTreeSet::new(),
        need_fetch: false,
        window_full: false,
        watching: Vec::new(),
        out: Vec::new(),
        span: span.clone(),
    };
    conn.run(socket).instrument(span).await;
}

enum Step {
    Continue,
    Close(u16, &'static str),
    Gone,
}

impl Conn {
    async fn run(mut self, mut socket: WebSocket) {
        let gw = self.gw.clone();
        gw.metrics.connections.inc();
        gw.metrics.connections_total.inc();
        self.out.push(ServerFrame::Hello {
            protocol: PROTOCOL_VERSION,
            max_frame_bytes: gw.config.max_frame_bytes as u32,
            idle_timeout_ms: gw.config.idle_timeout.as_millis() as u64,
        });
        let mut deadline = tokio::time::Instant::now() + gw.config.auth_timeout;
        let mut catch_up = gw.config.catch_up_interval.map(|every| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut step = self.flush(&mut socket).await;
        while matches!(step, Step::Continue) {
            let authed = self.me.is_some();
            step = tokio::select! {
                biased;
                _ = gw.shutdown.cancelled() => {
                    self.error(None, ErrorCode::ShuttingDown, "the server is shutting down");
                    Step::Close(close_code::GOING_AWAY, "server shutting down")
                }
                _ = self.mailbox.wait(), if authed => self.on_mailbox().await,
                _ = tick(&mut catch_up), if authed => {
                    // Cheap insurance against notifications lost between
                    // nodes: one read of the queue.
                    self.need_fetch = true;
                    self.catch_up().await;
                    Step::Continue
                }
                msg = socket.recv() => {
                    if authed {
                        deadline = tokio::time::Instant::now() + gw.config.idle_timeout;
                    }
                    self.on_message(msg, &mut socket).await
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if authed {
                        Step::Close(close_code::TIMEOUT, "idle timeout")
                    } else {
                        self.error(None, ErrorCode::AuthTimeout, "authenticate sooner after connecting");
                        Step::Close(close_code::TIMEOUT, "auth timeout")
                    }
                }
            };
            if self.me.is_some() && !authed {
                // Just authenticated: the silence limit starts now.
                deadline = tokio::time::Instant::now() + gw.config.idle_timeout;
            }
            let flushed = self.flush(&mut socket).await;
            if matches!(step, Step::Continue) {
                step = flushed;
            }
        }
        if let Step::Close(code, reason) = step {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            let _ =
                tokio::time::timeout(WRITE_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
        }
        self.cleanup().await;
        gw.metrics.connections.dec();
    }

    /// Writes every queued frame, then flushes once.
    async fn flush(&mut self, socket: &mut WebSocket) -> Step {
        if self.out.is_empty() {
            return Step::Continue;
        }
        let frames = std::mem::take(&mut self.out);
        let write = async {
            for f in &frames {
                socket.feed(Message::Text(encode_server(f).into())).await?;
            }
            socket.flush().await
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(Ok(())) => {
                self.out = frames;
                self.out.clear();
                Step::Continue
            }
            Ok(Err(_)) => Step::Gone,
            Err(_) => {
                tracing::debug!("client too slow to read; dropping the connection");
                Step::Gone
            }
        }
    }

    async fn on_message(
        &mut self,
        msg: Option<Result<Message, axum::Error>>,
        socket: &mut WebSocket,
    ) -> Step {
        match msg {
            None | Some(Ok(Message::Close(_))) => Step::Gone,
            Some(Err(e)) => {
                if is_too_large(e) {
                    self.error(
                        None,
                        ErrorCode::FrameTooLarge,
                        format!(
                            "frames are limited to {} bytes",
                            self.gw.config.max_frame_bytes
                        ),
                    );
                    Step::Close(close_code::TOO_BIG, "frame too large")
                } else {
                    Step::Gone
                }
            }
            Some(Ok(Message::Text(text))) => {
                self.handle_text(text.as_str()).await;
                self.check_close()
            }
            Some(Ok(Message::Binary(_))) => {
                self.error(
                    None,
                    ErrorCode::UnsupportedFrame,
                    "protocol version 1 uses text frames only",
                );
                Step::Continue
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                // tungstenite queued the pong; make sure it leaves now.
                match socket.flush().await {
                    Ok(()) => Step::Continue,
                    Err(_) => Step::Gone,
                }
            }
        }
    }

    async fn on_mailbox(&mut self) -> Step {
        let mut items = Vec::new();
        self.mailbox.drain(&mut items);
        for item in items {
            match item {
                Push::Envelope(env) => {
                    if env.seq <= self.last_pushed {
                        continue;
                    }
                    if self.dense && env.seq.0 > self.last_pushed.0 + 1 {
                        // A notification before this one never came (it
                        // was lost between nodes, or is still on its way):
                        // the queue has it.
                        self.need_fetch = true;
                    }
                    if self.need_fetch || self.unacked.len() >= self.gw.config.inflight_window {
                        self.need_fetch = true;
                        continue;
                    }
                    self.push_envelope(&env);
                }
                Push::Typing {
                    from,
                    from_device,
                    typing,
                } => self.out.push(ServerFrame::Typing {
                    from,
                    from_device,
                    typing,
                }),
                Push::Presence(info) => self.out.push(ServerFrame::Presence(info)),
                Push::Frame(frame) => self.out.push((*frame).clone()),
            }
        }
        if self.mailbox.take_lagged() {
            self.need_fetch = true;
        }
        self.catch_up().await;
        self.check_close()
    }

    fn check_close(&self) -> Step {
        match self.mailbox.close_reason() {
            CloseReason::Open => Step::Continue,
            CloseReason::Revoked => Step::Close(close_code::REVOKED, "device unlinked"),
            CloseReason::Replaced => {
                Step::Close(close_code::REPLACED, "device connected elsewhere")
            }
        }
    }

    pub(crate) fn push_envelope(&mut self, env: &palaver_messaging::StoredEnvelope) {
        self.last_pushed = env.seq;
        self.unacked.insert(env.seq);
        self.gw.metrics.envelopes_pushed.inc();
        self.out.push(envelope_frame(env));
    }

    /// Reads the queue from the store while there is room in the window and
    /// envelopes that were not pushed live. Once the window has filled up,
    /// reading resumes only when half of it is acknowledged, so that a
    /// client acking one envelope at a time does not cause a read per ack.
    pub(crate) async fn catch_up(&mut self) {
        let Some(me) = self.me else { return };
        let window = self.gw.config.inflight_window;
        if self.window_full && self.unacked.len() > window / 2 {
            return;
        }
        self.window_full = false;
        while self.need_fetch {
            let room = window.saturating_sub(self.unacked.len()).min(FETCH_PAGE);
            if room == 0 {
                self.window_full = true;
                return;
            }
            self.gw.metrics.queue_refetches.inc();
            let page = match self
                .gw
                .store
                .fetch(me.device, self.last_pushed, room as u32)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the queue; will retry on the next ack");
                    return;
                }
            };
            if page.len() < room {
                self.need_fetch = false;
            }
            for env in &page {
                self.push_envelope(env);
            }
        }
    }

    /// Called when the connection authenticated: start delivering.
    pub(crate) fn start_delivery(&mut self) {
        self.need_fetch = true;
        if let Some(me) = self.me {
            self.span.record("device", me.device.0);
        }
    }

    pub(crate) fn error(
        &mut self,
        id: Option<RequestId>,
        code: ErrorCode,
        message: impl Into<String>,
    ) {
        self.reply_error(id, ReqError::new(code, message));
    }

    pub(crate) fn reply_error(&mut self, id: Option<RequestId>, err: ReqError) {
        let label = crate::metrics::KindLabel {
            kind: err.code.as_str(),
        };
        self.gw.metrics.frame_errors.get_or_create(&label).inc();
        let mut frame = ErrorFrame::new(id, err.code, err.message);
        frame.retry_after_ms = err.retry_after_ms;
        frame.missing = err.missing;
        frame.extra = err.extra;
        self.out.push(ServerFrame::Error(frame));
    }

    pub(crate) fn reply(&mut self, frame: ServerFrame) {
        self.out.push(frame);
    }

    async fn cleanup(&mut self) {
        for account in std::mem::take(&mut self.watching) {
            self.gw.router.unwatch(account, &self.mailbox);
        }
        let Some(me) = self.me else { return };
        self.gw.metrics.authenticated.dec();
        // A replaced connection's device lives on in the newer connection.
        if self.mailbox.close_reason() != CloseReason::Replaced {
            let gone = crate::calls::CallInput::Disconnected { device: me.device };
            self.gw.call_input(gone).await;
        }
        let transition = self
            .gw
            .router
            .disconnect(me.account, me.device, &self.mailbox);
        let mut online_elsewhere = false;
        if let Some(c) = &self.gw.cluster {
            if self.mailbox.close_reason() != CloseReason::Replaced {
                c.unregister(me.account, me.device).await;
            }
            if transition == Transition::Changed {
                c.account_left(me.account).await;
            }
            online_elsewhere =
                transition == Transition::Changed && self.gw.is_online(me.account).await;
        }
        if transition == Transition::Changed && !online_elsewhere {
            self.gw.announce_offline(me.account, crate::now_ms()).await;
        }
        self.gw.clear_region_hint(me.device, self.id);
    }
}

/// The next tick of an optional interval; never, without one.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn is_too_large(e: axum::Error) -> bool {
    let inner = e.into_inner();
    matches!(
        inner.downcast_ref::<tungstenite::Error>(),
        Some(tungstenite::Error::Capacity(_))
    )
}

/// The frame of a queued envelope. The store keeps the details of group
/// events, timer changes and automatic messages as JSON in the payload;
/// they go out as fields.
fn envelope_frame(env: &palaver_messaging::StoredEnvelope) -> ServerFrame {
    use palaver_messaging::chats::{AutoNote, TimerNote};
    use palaver_proto::frames::Payload;
    let raw = env.payload.as_deref();
    let (mut payload, mut event, mut timer, mut to) = (None, None, None, None);
    match env.kind {
        EnvelopeKind::GroupEvent => {
            event = raw
                .and_then(|p| serde_json::from_slice(p).ok())
                .map(Box::new);
        }
        EnvelopeKind::Timer => {
            let note = raw.and_then(|p| serde_json::from_slice::<TimerNote>(p).ok());
            timer = note.map(|n| n.seconds);
            to = note.map(|n| n.to);
        }
        EnvelopeKind::Auto => {
            let note = raw.and_then(|p| serde_json::from_slice::<AutoNote>(p).ok());
            to = note.as_ref().map(|n| n.to);
            payload = note.map(|n| Payload(n.text.into_bytes()));
        }
        _ => payload = env.payload.clone().map(Payload),
    }
    ServerFrame::Envelope {
        seq: env.seq,
        kind: env.kind,
        from: env.from,
        from_device: env.from_device,
        msg: env.msg.clone(),
        ts: env.ts,
        payload,
        group: env.group,
        event,
        edit_of: env.ref_msg.clone(),
        timer,
        to,
    }
}
