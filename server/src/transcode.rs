//! The transcoder role: a bounded in-process queue of jobs (one per
//! processed upload of a video, audio or image type), each run in a
//! worker child process (`palaver transcode-worker`, a hidden subcommand)
//! with resource limits and a wall-clock kill; the outputs go back to the
//! media store as variants, encrypted at rest.
//!
//! `palaver serve` / `palaver media` run the queue in-process
//! (`transcoder.in_process`); `palaver transcoder` runs the same queue in
//! its own process, finding jobs in the shared media database.

use crate::config::{Config, TranscoderSection};
use palaver_media_store::Media;
use palaver_media_store::id::ObjectId;
use palaver_media_store::service::{NewVariant, Processor, Ticket};
use palaver_transcoder::worker::{ProcessLimits, WorkerCommand};
use palaver_transcoder::{Job, JobError, MediaKind, Outcome, Request};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The hidden subcommand that runs one job (see `palaver_transcoder::worker`).
pub const WORKER_SUBCOMMAND: &str = "transcode-worker";

/// Which uploads get a job, and where to queue them.
#[derive(Debug)]
struct Queue {
    tx: Option<mpsc::Sender<ObjectId>>,
}

/// Whether a media type is one the transcoder handles.
pub(crate) fn kind_of(content_type: &str) -> Option<MediaKind> {
    MediaKind::from_content_type(content_type)
}

/// `video/*; clip=1` asks for a clip without its audio track.
pub(crate) fn wants_no_audio(content_type: &str) -> bool {
    content_type
        .split(';')
        .skip(1)
        .any(|p| p.trim().eq_ignore_ascii_case("clip=1"))
}

impl Processor for Queue {
    fn wants(&self, content_type: &str) -> bool {
        kind_of(content_type).is_some()
    }

    fn submit(&self, source: ObjectId) {
        // A full queue leaves the job queued in the database; the rescan
        // picks it up.
        if let Some(tx) = &self.tx {
            let _ = tx.try_send(source);
        }
    }
}

/// Job counters, exported as `palaver_transcoder_*`.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) completed: Counter,
    pub(crate) failed: Counter,
    pub(crate) retried: Counter,
    pub(crate) running: Gauge,
    /// Jobs put in the dead-letter stream (Redis queue).
    pub(crate) dead: Counter,
}

impl Stats {
    pub(crate) fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("palaver_transcoder");
        r.register(
            "jobs_completed",
            "Transcoding jobs done",
            self.completed.clone(),
        );
        r.register(
            "jobs_failed",
            "Transcoding jobs failed for good",
            self.failed.clone(),
        );
        r.register(
            "jobs_retried",
            "Job runs that will be retried",
            self.retried.clone(),
        );
        r.register("jobs_running", "Jobs running now", self.running.clone());
        r.register(
            "jobs_dead_lettered",
            "Jobs given up after max_attempts runs (Redis queue)",
            self.dead.clone(),
        );
    }
}

/// Everything a job run needs.
#[derive(Debug)]
struct Runner {
    media: Arc<Media>,
    cfg: TranscoderSection,
    max_input: u64,
    cmd: WorkerCommand,
    work_dir: PathBuf,
    /// Jobs running in this process (a job is never run twice at once).
    active: Mutex<HashSet<ObjectId>>,
    /// Jobs marked running before this Unix second are from a dead run.
    external: bool,
    started: u64,
    stats: Stats,
}

/// How this process starts a worker: itself, with the hidden subcommand.
pub(crate) fn worker_command() -> anyhow::Result<WorkerCommand> {
    Ok(WorkerCommand {
        program: std::env::current_exe()?,
        args: vec![WORKER_SUBCOMMAND.into()],
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Starts the queue for the media role. `None` when transcoding is off;
/// with `in_process = false` only the jobs are recorded.
pub async fn start_in_media(
    media: Arc<Media>,
    cfg: &Config,
    secrets: &crate::config::Secrets,
    registry: &mut Registry,
    stop: CancellationToken,
) -> anyhow::Result<Option<JoinHandle<()>>> {
    let t = &cfg.transcoder;
    if !t.enabled {
        return Ok(None);
    }
    if t.queue_backend == crate::config::QueueBackend::Redis {
        let h = crate::jobqueue::roles::start_media(media, cfg, secrets, registry, stop).await?;
        return Ok(Some(h));
    }
    if !t.in_process {
        media.set_processor(Arc::new(Queue { tx: None }));
        return Ok(None);
    }
    let runner = runner(media, cfg, registry, false)?;
    Ok(Some(tokio::spawn(run_queue(runner, stop))))
}

/// `palaver transcoder`: the queue alone, fed by polling the database.
pub async fn run_external(
    media: Arc<Media>,
    cfg: &Config,
    registry: &mut Registry,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let runner = runner(media, cfg, registry, true)?;
    run_queue(runner, stop).await;
    Ok(())
}

fn runner(
    media: Arc<Media>,
    cfg: &Config,
    registry: &mut Registry,
    external: bool,
) -> anyhow::Result<Arc<Runner>> {
    let work_dir = cfg.media_dir().join("tmp").join("jobs");
    if !external {
        // Left-overs of a previous run (plaintext copies): gone.
        let _ = std::fs::remove_dir_all(&work_dir);
    }
    std::fs::create_dir_all(&work_dir)?;
    let r = Runner {
        media,
        cfg: cfg.transcoder.clone(),
        max_input: cfg.media.max_processed_bytes,
        cmd: worker_command()?,
        work_dir,
        active: Mutex::new(HashSet::new()),
        external,
        started: unix_now(),
        stats: Stats::default(),
    };
    r.stats.register(registry);
    Ok(Arc::new(r))
}

pub(crate) fn workers(cfg: &TranscoderSection) -> usize {
    if cfg.workers > 0 {
        cfg.workers
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// Runs jobs until `stop`: from the channel (new uploads) and from the
/// database (pending at start-up, waiting behind a full queue, and in
/// external mode everything). Running jobs are abandoned at `stop` (their
/// workers are killed) and resumed by the next start.
async fn run_queue(runner: Arc<Runner>, stop: CancellationToken) {
    let (tx, mut rx) = mpsc::channel(runner.cfg.queue.max(1));
    if !runner.external {
        runner.media.set_processor(Arc::new(Queue {
            tx: Some(tx.clone()),
        }));
    }
    let slots = Arc::new(Semaphore::new(workers(&runner.cfg)));
    let mut jobs = tokio::task::JoinSet::new();
    let mut rescan = tokio::time::interval(runner.cfg.poll_interval);
    loop {
        let id = tokio::select! {
            _ = stop.cancelled() => break,
            Some(id) = rx.recv() => id,
            _ = rescan.tick() => {
                rescan_pending(&runner, &tx).await;
                continue;
            }
            Some(_) = jobs.join_next(), if !jobs.is_empty() => continue,
        };
        if !runner
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id)
        {
            continue;
        }
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = slots.clone().acquire_owned() => p,
        };
        let r = runner.clone();
        jobs.spawn(async move {
            let _permit = permit;
            r.run_one(id).await;
            r.active
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
        });
    }
    jobs.shutdown().await;
}

async fn rescan_pending(runner: &Runner, tx: &mpsc::Sender<ObjectId>) {
    let pending = match runner.media.pending_jobs().await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list pending transcoding jobs");
            return;
        }
    };
    for id in pending {
        if runner
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id)
        {
            continue;
        }
        if tx.try_send(id).is_err() {
            break;
        }
    }
}

impl Runner {
    fn stale_before(&self) -> u64 {
        if self.external {
            unix_now().saturating_sub(self.cfg.timeout.as_secs() + 60)
        } else {
            self.started
        }
    }

    async fn run_one(&self, id: ObjectId) {
        let ticket = match self.media.claim_job(id, self.stale_before()).await {
            Ok(Some(t)) => t,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(%id, error = %e, "cannot claim a transcoding job");
                return;
            }
        };
        if ticket.attempts > self.cfg.max_attempts {
            let why = format!("gave up after {} attempts", self.cfg.max_attempts);
            self.finish_failed(&ticket, &why, false).await;
            return;
        }
        self.stats.running.inc();
        let dir = self.work_dir.join(id.to_string());
        let result = self.attempt(&ticket, &dir).await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        self.stats.running.dec();
        match result {
            Ok(n) => {
                self.stats.completed.inc();
                tracing::info!(%id, variants = n, "transcoding job done");
            }
            Err(e) => {
                let retry =
                    matches!(e, JobError::Worker(_)) && ticket.attempts < self.cfg.max_attempts;
                self.finish_failed(&ticket, &e.to_string(), retry).await;
            }
        }
    }

    async fn finish_failed(&self, t: &Ticket, reason: &str, retry: bool) {
        tracing::info!(id = %t.source, reason, retry, "transcoding job failed");
        if retry {
            self.stats.retried.inc();
        } else {
            self.stats.failed.inc();
        }
        if let Err(e) = self.media.fail_job(t.source, reason, retry).await {
            tracing::warn!(id = %t.source, error = %e, "cannot record a failed job");
        }
    }

    /// One run: plaintext out of the store, the worker, variants back in.
    async fn attempt(&self, t: &Ticket, dir: &std::path::Path) -> Result<usize, JobError> {
        let io = |e: std::io::Error| JobError::Io(e.to_string());
        let _ = tokio::fs::remove_dir_all(dir).await;
        tokio::fs::create_dir_all(dir.join("out"))
            .await
            .map_err(io)?;
        let input = dir.join("input");
        self.media
            .export_plain(t.source, &input)
            .await
            .map_err(|e| JobError::Io(e.to_string()))?;
        let kind = kind_of(&t.content_type)
            .ok_or_else(|| JobError::Io(format!("no kind for {}", t.content_type)))?;
        let job = Job {
            input,
            out_dir: dir.join("out"),
            request: Request {
                kind,
                no_audio: wants_no_audio(&t.content_type),
            },
            settings: self.cfg.settings(),
            limits: self.cfg.limits(self.max_input),
            timeout: self.cfg.timeout,
        };
        let outcome = self.run_worker(t.source, &job).await?;
        let n = outcome.outputs.len();
        let variants = outcome
            .outputs
            .iter()
            .map(|o| checked_output(&job.out_dir, o))
            .collect::<Result<Vec<_>, _>>()?;
        let info = serde_json::json!({
            "probe": outcome.probe,
            "waveform": outcome.waveform,
            "preview": outcome.preview,
        });
        self.media
            .attach_variants(t, variants, info)
            .await
            .map_err(|e| JobError::Io(e.to_string()))?;
        Ok(n)
    }

    /// Runs the worker, writing its progress to the database as it comes.
    async fn run_worker(&self, id: ObjectId, job: &Job) -> Result<Outcome, JobError> {
        let (ptx, mut prx) = tokio::sync::watch::channel(0f32);
        let media = self.media.clone();
        let writer = tokio::spawn(async move {
            while prx.changed().await.is_ok() {
                let p = *prx.borrow_and_update();
                let _ = media.job_progress(id, p).await;
            }
        });
        let limits: ProcessLimits = self.cfg.process_limits();
        let r = palaver_transcoder::worker::run(&self.cmd, job, &limits, |p| {
            let _ = ptx.send(p);
        })
        .await;
        drop(ptx);
        let _ = writer.await;
        r
    }
}

/// Variant names and media types a worker may report.
const OUTPUTS: &[(&str, &[&str])] = &[
    ("video", &["video/mp4"]),
    ("voice", &["audio/ogg; codecs=opus"]),
    ("image", &["image/jpeg", "image/webp"]),
    ("poster", &["image/jpeg"]),
    ("thumb", &["image/jpeg"]),
];

/// A worker's output as a variant, if it is one the transcoder makes: the
/// worker handled hostile input, so what it reports is checked like input
/// (a known name and type, a plain file directly in its output folder,
/// not a symlink to something else).
pub(crate) fn checked_output(
    out_dir: &std::path::Path,
    o: &palaver_transcoder::Output,
) -> Result<NewVariant, JobError> {
    let bad = |why: &str| JobError::Worker(format!("unexpected output {:?}: {why}", o.name));
    let known = OUTPUTS
        .iter()
        .any(|(n, types)| *n == o.name && types.contains(&o.content_type.as_str()));
    if !known {
        return Err(bad("unknown name or type"));
    }
    let plain = !o.file.is_empty()
        && o.file.len() < 64
        && o.file
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        && !o.file.starts_with('.');
    if !plain {
        return Err(bad("file name"));
    }
    let path = out_dir.join(&o.file);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_file() => {}
        _ => return Err(bad("not a regular file")),
    }
    Ok(NewVariant {
        name: o.name.clone(),
        path,
        content_type: o.content_type.clone(),
        width: o.width,
        height: o.height,
        duration_ms: o.duration_ms,
    })
}

/// `palaver transcode-worker`: one job from stdin, results on stdout.
pub fn worker_main() -> std::process::ExitCode {
    let stdin = std::io::stdin().lock();
    let stdout = std::io::stdout().lock();
    let code = palaver_transcoder::worker::child_main(stdin, stdout);
    std::process::ExitCode::from(code as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_outputs_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("thumb.jpg"), b"jpeg").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("image.jpg")).unwrap();
        let out = |name: &str, file: &str, ct: &str| palaver_transcoder::Output {
            name: name.into(),
            file: file.into(),
            content_type: ct.into(),
            width: None,
            height: None,
            duration_ms: None,
        };
        assert!(checked_output(dir.path(), &out("thumb", "thumb.jpg", "image/jpeg")).is_ok());
        for bad in [
            out("thumb", "../thumb.jpg", "image/jpeg"),
            out("thumb", "/etc/passwd", "image/jpeg"),
            out("thumb", "thumb.jpg", "text/html"),
            out("secret", "thumb.jpg", "image/jpeg"),
            out("image", "image.jpg", "image/jpeg"),
            out("poster", "missing.jpg", "image/jpeg"),
        ] {
            assert!(checked_output(dir.path(), &bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kinds_and_clips() {
        assert_eq!(kind_of("video/mp4"), Some(MediaKind::Video));
        assert_eq!(kind_of("application/pdf"), None);
        assert!(wants_no_audio("video/mp4; clip=1"));
        assert!(!wants_no_audio("video/mp4"));
        assert!(!wants_no_audio("video/mp4; codecs=avc1"));
    }
}
