//! Palaver's selective forwarding unit for group calls, on str0m in RTP
//! mode.
//!
//! The core is sans-IO: [`Worker`] owns the rooms and participants behind
//! one UDP socket and is driven with datagrams and the time (see the poll
//! order in [`worker`]). The driver ([`server`]) runs one worker per thread,
//! each with its own UDP socket, and the HTTP join endpoint.
//!
//! Protocol and behaviour: `docs/sfu.md`.

pub mod config;
pub mod demux;
pub mod dynacast;
mod forward;
pub mod http;
pub mod keyframe;
pub mod kicks;
pub mod layers;
pub mod messages;
mod moderation;
pub mod participant_stats;
mod peer;
pub mod restart;
pub mod rewrite;
pub mod server;
pub mod speaker;
pub mod worker;

pub use config::Config;
pub use kicks::{Kick, KickLog};
pub use participant_stats::ParticipantStats;
pub use server::{JoinFailure, Sfu};
pub use worker::{Datagram, JoinError, Stats, Worker, WorkerConfig};
