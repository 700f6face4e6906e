//! One transcoding job, run synchronously (in a worker process or a
//! blocking thread): probe, plan, then the pipeline of the plan.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::plan::{self, Limits, Plan, Probe, Rejection, Request, Settings};

/// What to transcode, where to write the results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub input: PathBuf,
    /// An existing empty directory for the outputs.
    pub out_dir: PathBuf,
    pub request: Request,
    pub settings: Settings,
    pub limits: Limits,
    /// Wall-clock budget; FFmpeg's reads are interrupted past it.
    pub timeout: Duration,
}

/// Why a job failed. The text is the reason shown to the uploader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum JobError {
    #[error("rejected: {0}")]
    Rejected(Rejection),
    #[error("not readable as media: {0}")]
    Unreadable(String),
    #[error("decoding failed: {0}")]
    Decode(String),
    #[error("encoding failed: {0}")]
    Encode(String),
    #[error("limit exceeded: {0}")]
    Limit(String),
    #[error("took longer than the time limit")]
    Timeout,
    #[error("the worker failed: {0}")]
    Worker(String),
    #[error("i/o: {0}")]
    Io(String),
}

/// One produced file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// Variant name: `video`, `voice`, `image`, `poster`, `thumb`.
    pub name: String,
    /// File name inside the job's output directory.
    pub file: String,
    pub content_type: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub duration_ms: Option<u64>,
}

/// What a successful job produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub probe: Probe,
    pub plan: Plan,
    pub outputs: Vec<Output>,
    /// Voice notes: amplitude buckets, 0 to 255.
    pub waveform: Option<Vec<u8>>,
    /// A tiny JPEG (base64) a client can show before downloading.
    pub preview: Option<String>,
}

/// Progress callback: fraction done, 0.0 to 1.0.
pub type Progress<'a> = &'a mut dyn FnMut(f32);

/// Runs a job to the end.
pub fn run(job: &Job, progress: Progress<'_>) -> Result<Outcome, JobError> {
    let deadline = Instant::now() + job.timeout;
    let size = std::fs::metadata(&job.input)
        .map_err(|e| JobError::Io(e.to_string()))?
        .len();
    if size == 0 {
        return Err(JobError::Unreadable("empty file".into()));
    }
    if size > job.limits.max_input_bytes {
        return Err(JobError::Rejected(Rejection::TooLarge {
            size,
            limit: job.limits.max_input_bytes,
        }));
    }
    let (ictx, probe) = crate::probe::open_and_probe(&job.input, deadline)?;
    let plan = plan::plan(job.request, size, &probe, &job.settings, &job.limits)
        .map_err(JobError::Rejected)?;
    let ctx = Ctx {
        job,
        deadline,
        probe: &probe,
    };
    let done = match &plan {
        Plan::Video(p) => crate::video::run(&ctx, ictx, p, progress)?,
        Plan::Voice(p) => crate::voice::run(&ctx, ictx, p, progress)?,
        Plan::Image(p) => crate::image::run(&ctx, ictx, p)?,
    };
    progress(1.0);
    Ok(Outcome {
        probe,
        plan,
        outputs: done.outputs,
        waveform: done.waveform,
        preview: done.preview,
    })
}

/// Shared by the pipelines.
pub(crate) struct Ctx<'a> {
    pub(crate) job: &'a Job,
    pub(crate) deadline: Instant,
    pub(crate) probe: &'a Probe,
}

impl Ctx<'_> {
    pub(crate) fn out(&self) -> &Path {
        &self.job.out_dir
    }

    pub(crate) fn check_time(&self) -> Result<(), JobError> {
        if Instant::now() > self.deadline {
            return Err(JobError::Timeout);
        }
        Ok(())
    }
}

/// What a pipeline produced.
#[derive(Debug, Default)]
pub(crate) struct Done {
    pub(crate) outputs: Vec<Output>,
    pub(crate) waveform: Option<Vec<u8>>,
    pub(crate) preview: Option<String>,
}

/// Encodes bytes as standard base64.
pub(crate) fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
