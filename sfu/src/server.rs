//! The thin driver: one thread per worker, each with a UDP socket and a
//! single-threaded tokio runtime feeding its [`Worker`]; and the HTTP join
//! endpoint that hands offers to the worker owning the room.

use std::hash::BuildHasher;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use palaver_proto::join_token::{self, JoinClaims, TokenError};
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::kicks::KickLog;
use crate::restart::RestartError;
use crate::worker::{JoinError, Stats, Worker, WorkerConfig};

/// Keyframe requests toward one publisher stream, at most this often.
const KEYFRAME_INTERVAL: Duration = Duration::from_millis(300);

enum Command {
    Join {
        claims: JoinClaims,
        offer: String,
        reply: oneshot::Sender<Result<String, JoinError>>,
    },
    Restart {
        room: String,
        token: String,
        offer: String,
        reply: oneshot::Sender<Result<String, RestartError>>,
    },
    Stats(oneshot::Sender<Stats>),
    Participants(oneshot::Sender<Vec<crate::ParticipantStats>>),
    Stop,
}

struct WorkerHandle {
    tx: mpsc::UnboundedSender<Command>,
    addr: SocketAddr,
}

/// Why a join over HTTP failed; each maps to one status code.
#[derive(Debug, thiserror::Error)]
pub enum JoinFailure {
    #[error("join token refused: {0}")]
    Token(#[from] TokenError),
    #[error("the token is for another room")]
    WrongRoom,
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error("the SFU is shutting down")]
    Unavailable,
}

/// Where the workers record kicks, once the driver's owner set it.
type SharedKickLog = Arc<OnceLock<Arc<dyn KickLog>>>;

/// A running SFU.
pub struct Sfu {
    workers: Vec<WorkerHandle>,
    secret: Vec<u8>,
    hasher: std::collections::hash_map::RandomState,
    kick_log: SharedKickLog,
}

impl std::fmt::Debug for Sfu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sfu")
            .field("workers", &self.udp_addrs())
            .finish_non_exhaustive()
    }
}

impl Sfu {
    /// Binds one UDP socket per worker and starts the worker threads.
    pub fn start(cfg: &Config, secret: Vec<u8>) -> std::io::Result<Arc<Sfu>> {
        let mut workers = Vec::new();
        let kick_log = SharedKickLog::default();
        for i in 0..cfg.workers.max(1) {
            let port = if cfg.udp_port == 0 {
                0
            } else {
                cfg.udp_port.saturating_add(i as u16)
            };
            let socket = UdpSocket::bind(SocketAddr::new(cfg.udp_ip, port))?;
            socket.set_nonblocking(true)?;
            let bound = socket.local_addr()?;
            let public = SocketAddr::new(cfg.public_ip.unwrap_or(bound.ip()), bound.port());
            let wcfg = WorkerConfig {
                candidate_addr: public,
                room_limit: cfg.room_limit,
                ice_timeout: cfg.ice_timeout,
                keyframe_interval: KEYFRAME_INTERVAL,
            };
            let (tx, rx) = mpsc::unbounded_channel();
            let log = kick_log.clone();
            std::thread::Builder::new()
                .name(format!("sfu-worker-{i}"))
                .spawn(move || run_thread(socket, wcfg, rx, log))?;
            workers.push(WorkerHandle { tx, addr: bound });
        }
        Ok(Arc::new(Sfu {
            workers,
            secret,
            hasher: Default::default(),
            kick_log,
        }))
    }

    /// Shares kicks with the other SFU nodes through `log` (once; later
    /// calls are ignored). Without one, a kick holds while the room is open
    /// on this node.
    pub fn set_kick_log(&self, log: Arc<dyn KickLog>) {
        let _ = self.kick_log.set(log);
    }

    /// The media UDP addresses, one per worker.
    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        self.workers.iter().map(|w| w.addr).collect()
    }

    /// Checks `token` for `room` and joins with `offer`; returns the answer.
    pub async fn join(
        &self,
        room: &str,
        token: &str,
        offer: String,
    ) -> Result<String, JoinFailure> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = join_token::verify(&self.secret, token, now)?;
        if claims.room != room {
            return Err(JoinFailure::WrongRoom);
        }
        if let Some(log) = self.kick_log.get()
            && log.is_kicked(claims.room.clone(), claims.account).await
        {
            return Err(JoinFailure::Join(JoinError::Kicked));
        }
        let w = &self.workers[self.hasher.hash_one(room) as usize % self.workers.len()];
        let (reply, rx) = oneshot::channel();
        w.tx.send(Command::Join {
            claims,
            offer,
            reply,
        })
        .map_err(|_| JoinFailure::Unavailable)?;
        Ok(rx.await.map_err(|_| JoinFailure::Unavailable)??)
    }

    /// An ICE restart of the session `token` names in `room`; returns the
    /// answer. `None`: the SFU is shutting down.
    pub async fn restart(
        &self,
        room: &str,
        token: &str,
        offer: String,
    ) -> Option<Result<String, RestartError>> {
        let w = &self.workers[self.hasher.hash_one(room) as usize % self.workers.len()];
        let (reply, rx) = oneshot::channel();
        w.tx.send(Command::Restart {
            room: room.to_owned(),
            token: token.to_owned(),
            offer,
            reply,
        })
        .ok()?;
        rx.await.ok()
    }

    /// Counters summed over the workers.
    pub async fn stats(&self) -> Stats {
        let mut total = Stats::default();
        for w in &self.workers {
            let (tx, rx) = oneshot::channel();
            if w.tx.send(Command::Stats(tx)).is_err() {
                continue;
            }
            if let Ok(s) = rx.await {
                total.add(&s);
            }
        }
        total
    }

    /// Every participant's statistics, from all workers.
    pub async fn participants(&self) -> Vec<crate::ParticipantStats> {
        let mut all = Vec::new();
        for w in &self.workers {
            let (tx, rx) = oneshot::channel();
            if w.tx.send(Command::Participants(tx)).is_ok()
                && let Ok(list) = rx.await
            {
                all.extend(list);
            }
        }
        all
    }

    /// Stops the workers; their participants are dropped.
    pub fn shutdown(&self) {
        for w in &self.workers {
            let _ = w.tx.send(Command::Stop);
        }
    }
}

fn run_thread(
    socket: UdpSocket,
    cfg: WorkerConfig,
    rx: mpsc::UnboundedReceiver<Command>,
    kicks: SharedKickLog,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start an SFU worker runtime");
            return;
        }
    };
    rt.block_on(async move {
        match tokio::net::UdpSocket::from_std(socket) {
            Ok(s) => worker_loop(s, cfg, rx, kicks).await,
            Err(e) => tracing::error!(error = %e, "cannot register the SFU socket"),
        }
    });
}

async fn worker_loop(
    sock: tokio::net::UdpSocket,
    cfg: WorkerConfig,
    mut rx: mpsc::UnboundedReceiver<Command>,
    kicks: SharedKickLog,
) {
    let local = cfg.candidate_addr;
    let mut core = Worker::new(cfg, rand::random());
    let mut buf = vec![0u8; 2048];
    loop {
        let now = Instant::now();
        let deadline = core.next_timeout().unwrap_or(now + Duration::from_secs(1));
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                if let Ok((n, src)) = r {
                    // Drain what else is queued, then poll each touched
                    // subscriber once (handle_timeout below).
                    let now = Instant::now();
                    core.receive(src, local, &buf[..n], now);
                    for _ in 0..64 {
                        let Ok((n, src)) = sock.try_recv_from(&mut buf) else { break };
                        core.receive(src, local, &buf[..n], now);
                    }
                }
            }
            cmd = rx.recv() => match cmd {
                None | Some(Command::Stop) => break,
                Some(c) => command(&mut core, c),
            },
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        core.handle_timeout(Instant::now());
        // Queued for the log before the `kicked` message leaves.
        for kick in core.take_kicks() {
            if let Some(log) = kicks.get() {
                log.record(kick);
            }
        }
        send_all(&sock, &mut core).await;
    }
}

fn command(core: &mut Worker, c: Command) {
    match c {
        Command::Join {
            claims,
            offer,
            reply,
        } => {
            let r = core
                .join(claims, &offer, Instant::now())
                .map(|(_, answer)| answer);
            let _ = reply.send(r);
        }
        Command::Restart {
            room,
            token,
            offer,
            reply,
        } => {
            let _ = reply.send(core.restart(&room, &token, &offer, Instant::now()));
        }
        Command::Stats(reply) => {
            let _ = reply.send(core.stats());
        }
        Command::Participants(reply) => {
            let _ = reply.send(core.participant_stats());
        }
        Command::Stop => {}
    }
}

async fn send_all(sock: &tokio::net::UdpSocket, core: &mut Worker) {
    while let Some(d) = core.poll_datagram() {
        match sock.try_send_to(&d.contents, d.destination) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let _ = sock.send_to(&d.contents, d.destination).await;
            }
            Err(e) => tracing::debug!(error = %e, "UDP send failed"),
        }
    }
}
