//! Palaver's media transcoder.
//!
//! - [`plan`]: pure decisions (what to produce from a probed input, with
//!   which limits), unit-tested without FFmpeg.
//! - [`probe`]: what an input holds, read by FFmpeg's demuxers under a
//!   white-list of formats and protocols.
//! - [`job::run`]: one job, synchronously: probe, plan, then the video,
//!   voice-note or image pipeline (ffmpeg-next over Debian's FFmpeg 5.1).
//! - [`worker`]: the same job in a child process with resource limits
//!   (address space, CPU time, file size) and a wall-clock kill, so a
//!   hostile file never takes the server down with it.
//!
//! No `unsafe` here: ffmpeg-next's safe API is enough, and the few
//! libjpeg-turbo calls live in the `palaver-turbojpeg` crate.

pub mod corpus;
mod ff;
pub mod image;
pub mod job;
pub mod jpeg;
pub mod plan;
pub mod probe;
mod video;
mod voice;
pub mod worker;

pub use job::{Job, JobError, Outcome, Output};
pub use plan::{Limits, MediaKind, Plan, Probe, Request, Settings};
pub use video::video_filters;
