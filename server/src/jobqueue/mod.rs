//! Transcoding jobs on Redis streams, for workers on other machines
//! (`transcoder.queue_backend = "redis"`).
//!
//! - The media role records a job in its SQLite database as before and
//!   XADDs it to `<cluster>:transcode:jobs` ([`dispatch`]).
//! - `palaver transcoder` workers read that stream with the consumer group
//!   `workers` (XREADGROUP), fetch the job's input from the media role's
//!   internal endpoint with the job's token, run it in a worker child
//!   process, PUT the outputs back to the endpoint, and XADD what happened
//!   to `<cluster>:transcode:results` ([`worker`]).
//! - The media role reads the results with the group `media` and commits
//!   each in its database (variants and `done` in one transaction, a job
//!   already finished is never committed again), then XACKs.
//! - A job whose worker died stays pending in the group; after
//!   `reclaim_after` another worker takes it over (XAUTOCLAIM). Runs are
//!   counted (the entry's `attempt` plus redeliveries); past
//!   `max_attempts` the job goes to `<cluster>:transcode:dead` and fails.
//!
//! This module holds the pure parts: stream names, entry encoding, reply
//! parsing, the attempt rule and job tokens.

pub mod dispatch;
pub mod internal;
pub mod redis_io;
pub mod roles;
pub mod worker;

use hmac::{Hmac, Mac};
use redis::Value;
use std::collections::HashMap;

/// Consumer group of the workers on the jobs stream.
pub const WORKERS_GROUP: &str = "workers";
/// Consumer group of the media role on the results stream.
pub const MEDIA_GROUP: &str = "media";

/// The streams of one cluster (`cluster.name`).
#[derive(Debug, Clone)]
pub struct Streams {
    pub jobs: String,
    pub results: String,
    pub dead: String,
}

impl Streams {
    pub fn new(cluster: &str) -> Streams {
        Streams {
            jobs: format!("{cluster}:transcode:jobs"),
            results: format!("{cluster}:transcode:results"),
            dead: format!("{cluster}:transcode:dead"),
        }
    }
}

/// A job as it travels on the jobs stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEntry {
    /// The source object's id.
    pub job: String,
    pub content_type: String,
    /// This run's number, from 1.
    pub attempt: u32,
    /// Base URL of the media role's internal endpoint.
    pub url: String,
    /// Grants this job's input and outputs, nothing else.
    pub token: String,
}

impl JobEntry {
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("job", self.job.clone()),
            ("ct", self.content_type.clone()),
            ("attempt", self.attempt.to_string()),
            ("url", self.url.clone()),
            ("token", self.token.clone()),
        ]
    }

    pub fn parse(f: &HashMap<String, String>) -> Option<JobEntry> {
        Some(JobEntry {
            job: f.get("job")?.clone(),
            content_type: f.get("ct")?.clone(),
            attempt: f.get("attempt")?.parse().ok()?,
            url: f.get("url")?.clone(),
            token: f.get("token")?.clone(),
        })
    }
}

/// What a worker reports on the results stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// A run began (`attempt` counts runs, this one included).
    Started { attempt: u32 },
    /// Fraction done, 0.0 to 1.0.
    Progress(f32),
    /// Outputs uploaded under `run`; the worker's outcome as JSON.
    Done { run: String, outcome: String },
    /// Failed for good (bad input, a limit, or dead-lettered).
    Failed { reason: String },
}

/// One entry of the results stream.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultEntry {
    pub job: String,
    pub report: Report,
}

impl ResultEntry {
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![("job", self.job.clone())];
        match &self.report {
            Report::Started { attempt } => {
                f.push(("kind", "started".into()));
                f.push(("attempt", attempt.to_string()));
            }
            Report::Progress(p) => {
                f.push(("kind", "progress".into()));
                f.push(("progress", p.to_string()));
            }
            Report::Done { run, outcome } => {
                f.push(("kind", "done".into()));
                f.push(("run", run.clone()));
                f.push(("outcome", outcome.clone()));
            }
            Report::Failed { reason } => {
                f.push(("kind", "failed".into()));
                f.push(("reason", reason.clone()));
            }
        }
        f
    }

    pub fn parse(f: &HashMap<String, String>) -> Option<ResultEntry> {
        let report = match f.get("kind")?.as_str() {
            "started" => Report::Started {
                attempt: f.get("attempt")?.parse().ok()?,
            },
            "progress" => {
                let p: f32 = f.get("progress")?.parse().ok()?;
                Report::Progress(p.clamp(0.0, 1.0))
            }
            "done" => Report::Done {
                run: f.get("run")?.clone(),
                outcome: f.get("outcome")?.clone(),
            },
            "failed" => Report::Failed {
                reason: f.get("reason")?.clone(),
            },
            _ => return None,
        };
        Some(ResultEntry {
            job: f.get("job")?.clone(),
            report,
        })
    }
}

/// A stream entry: its id and fields.
pub type Entry = (String, HashMap<String, String>);

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// `[id, [field, value, ...]]`; a deleted entry (nil fields) is `None`.
fn entry(v: &Value) -> Option<Entry> {
    let Value::Array(parts) = v else { return None };
    let [id, fields] = parts.as_slice() else {
        return None;
    };
    let Value::Array(kv) = fields else {
        return None;
    };
    let map = kv
        .chunks(2)
        .filter_map(|c| Some((text(c.first()?)?, text(c.get(1)?)?)))
        .collect();
    Some((text(id)?, map))
}

fn entries(v: &Value) -> Vec<Entry> {
    match v {
        Value::Array(items) => items.iter().filter_map(entry).collect(),
        _ => Vec::new(),
    }
}

/// The entries of an XREADGROUP reply on one stream (nil: none).
pub fn read_reply(v: &Value) -> Vec<Entry> {
    let streams: Vec<&Value> = match v {
        Value::Array(s) => s.iter().collect(),
        Value::Map(m) => return m.iter().flat_map(|(_, e)| entries(e)).collect(),
        _ => return Vec::new(),
    };
    streams
        .into_iter()
        .filter_map(|s| match s {
            Value::Array(p) if p.len() == 2 => Some(entries(&p[1])),
            _ => None,
        })
        .flatten()
        .collect()
}

/// The claimed entries of an XAUTOCLAIM reply, and the ids it found
/// deleted (pending but gone from the stream).
pub fn autoclaim_reply(v: &Value) -> (Vec<Entry>, Vec<String>) {
    let Value::Array(parts) = v else {
        return (Vec::new(), Vec::new());
    };
    let claimed = parts.get(1).map(entries).unwrap_or_default();
    let deleted = match parts.get(2) {
        Some(Value::Array(ids)) => ids.iter().filter_map(text).collect(),
        _ => Vec::new(),
    };
    (claimed, deleted)
}

/// The delivery count in an XPENDING (extended form) reply for one id.
pub fn deliveries_reply(v: &Value) -> Option<u32> {
    let Value::Array(rows) = v else { return None };
    let Value::Array(row) = rows.first()? else {
        return None;
    };
    match row.get(3)? {
        Value::Int(n) => u32::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// What to do with a job a worker could not finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    /// Queue it again as run `attempt`.
    Retry { attempt: u32 },
    /// No runs left: dead-letter it and fail the job.
    Dead,
}

/// After run `attempt` ended without a result (a crash, a lost worker):
/// another run while `max_attempts` allows.
pub fn after_failed_run(attempt: u32, max_attempts: u32) -> NextStep {
    if attempt < max_attempts {
        NextStep::Retry {
            attempt: attempt + 1,
        }
    } else {
        NextStep::Dead
    }
}

/// The run number of an entry delivered `deliveries` times: each
/// redelivery (XAUTOCLAIM after a dead worker) is one more run.
pub fn run_number(entry_attempt: u32, deliveries: u32) -> u32 {
    entry_attempt.saturating_add(deliveries.saturating_sub(1))
}

/// Grants one job's input and outputs: HMAC-SHA256 of the job id under
/// the media role's transcoder key.
#[derive(Clone)]
pub struct TokenKey(Vec<u8>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey([redacted])")
    }
}

impl TokenKey {
    pub fn new(secret: &[u8]) -> TokenKey {
        TokenKey(secret.to_vec())
    }

    fn mac(&self, job: &str) -> Hmac<sha2::Sha256> {
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(&self.0).expect("any key length");
        m.update(b"palaver-transcode-job:");
        m.update(job.as_bytes());
        m
    }

    pub fn token(&self, job: &str) -> String {
        hex::encode(self.mac(job).finalize().into_bytes())
    }

    /// Constant-time check of a presented token.
    pub fn verify(&self, job: &str, token: &str) -> bool {
        let Ok(raw) = hex::decode(token) else {
            return false;
        };
        self.mac(job).verify_slice(&raw).is_ok()
    }
}

/// A run id (a stream entry id, `<ms>-<seq>`) safe to use in a path.
pub fn valid_run(run: &str) -> bool {
    !run.is_empty()
        && run.len() <= 41
        && run.bytes().all(|b| b.is_ascii_digit() || b == b'-')
        && !run.starts_with('-')
}

#[cfg(test)]
mod tests;
