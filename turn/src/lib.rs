//! Palaver's STUN/TURN server (RFC 8489, RFC 8656, RFC 6156).
//!
//! Two layers:
//! - [`Engine`], a sans-IO core: no sockets, clock, tasks or locks. Every
//!   input carries `now: Instant`; the engine answers with outputs and the next
//!   time it must be woken. It owns the allocations, permissions, channels,
//!   authentication (long-term and TURN REST credentials, stateless nonces),
//!   the peer policy ([`policy`]), quotas and the relay port pool.
//! - [`TurnServer`], the driver: it owns the UDP, TCP and TLS listeners and
//!   the relay sockets, and feeds the engine from one event loop on its own
//!   thread (see `docs/turn.md` for why it is an epoll loop, not tokio tasks).
//!
//! # Poll order
//! After every input the driver drains the engine before the next input:
//! 1. feed one input: [`Engine::handle_client`] (a client datagram or framed
//!    TCP message), [`Engine::handle_peer`] (a datagram on a relay socket),
//!    [`Engine::relay_bound`] (the outcome of an [`Output::BindRelay`]),
//!    [`Engine::client_closed`] (a TCP client went away) or
//!    [`Engine::handle_timeout`];
//! 2. send what the input returned right away (`handle_client` returns the
//!    payload for a peer, `handle_peer` the message for a client: the hot path
//!    allocates nothing and queues nothing);
//! 3. call [`Engine::poll_output`] until it returns `None`, carrying out each
//!    [`Output`] (a STUN answer to send, a relay socket to bind, whose result
//!    is one more input, or a relay socket to close);
//! 4. read [`Engine::poll_timeout`] and call [`Engine::handle_timeout`] no later
//!    than that instant.
//!
//! # Running the server
//! ```no_run
//! use palaver_turn::{Config, Secrets, TurnServer, rest_credentials};
//!
//! # async fn start() -> Result<(), palaver_turn::Error> {
//! let secrets = Secrets { rest_secret: Some("shared with signaling".into()), static_users: vec![] };
//! let server = TurnServer::bind(Config::default(), secrets).await?;
//! let stats = server.stats_handle();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let running = server.run(async {
//!     let _ = stopped.await;
//! });
//! // signaling hands each call fresh credentials:
//! let (username, password) = rest_credentials("shared with signaling", "user-42", 1_900_000_000);
//! # let _ = (username, password, stats, stop);
//! running.await
//! # }
//! ```

mod auth;
pub mod config;
mod driver;
pub mod engine;
pub mod policy;
mod ports;
mod stats;

pub use auth::rest_credentials;
pub use config::{Cidr, Config, ConfigError, Secrets, TlsConfig};
pub use driver::{Error, StatsHandle, TurnServer};

pub use engine::{
    BindRequest, ClientAddr, ClientSend, Engine, Output, PEER_HEADROOM, PeerSend, Transmit,
    Transport,
};
pub use stats::Stats;
