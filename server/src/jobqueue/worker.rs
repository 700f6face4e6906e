//! `palaver transcoder` on the Redis queue: takes jobs from the jobs
//! stream (new ones, and ones whose worker died), runs each in a worker
//! child process, and reports on the results stream. Needs no media
//! folder, database, blob-store credentials or keys: the input comes from
//! and the outputs go to the media role's internal endpoint, with the
//! job's token.

use super::redis_io::Queue;
use super::{JobEntry, NextStep, Report, ResultEntry, WORKERS_GROUP};
use crate::config::TranscoderSection;
use crate::transcode::{Stats, checked_output, kind_of, wants_no_audio};
use palaver_transcoder::worker::WorkerCommand;
use palaver_transcoder::{Job, JobError, Outcome, Request};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Everything the worker loop needs.
#[derive(Debug)]
pub struct WorkerSide {
    pub queue: Queue,
    pub cfg: TranscoderSection,
    /// `media.max_processed_bytes`: the largest input.
    pub max_input: u64,
    pub cmd: WorkerCommand,
    /// Per-run folders (input and outputs), wiped at start.
    pub work_dir: PathBuf,
    pub http: reqwest::Client,
    pub stats: Stats,
}

/// One delivered job entry.
#[derive(Debug)]
struct Task {
    /// The stream entry id: also the run id.
    id: String,
    entry: JobEntry,
}

/// Why a run ended without a result.
#[derive(Debug, thiserror::Error)]
enum RunError {
    /// Worth another run (crash, media role unreachable).
    #[error("{0}")]
    Retry(String),
    /// The job's input is at fault: fails for good.
    #[error("{0}")]
    Final(JobError),
    /// The job was finished elsewhere: nothing to report.
    #[error("the job is finished")]
    Gone,
}

/// Runs jobs until `stop`; running jobs are abandoned (their entries stay
/// pending and go to another worker after `reclaim_after`).
pub async fn run(side: Arc<WorkerSide>, stop: CancellationToken) -> anyhow::Result<()> {
    let q = &side.queue;
    q.ensure_group(&q.streams.jobs, WORKERS_GROUP).await?;
    let _ = std::fs::remove_dir_all(&side.work_dir);
    std::fs::create_dir_all(&side.work_dir)?;
    let slots = Arc::new(Semaphore::new(crate::transcode::workers(&side.cfg)));
    let mut jobs = tokio::task::JoinSet::new();
    let mut last_reclaim: Option<Instant> = None;
    loop {
        while jobs.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = slots.clone().acquire_owned() => p?,
        };
        let reclaim = last_reclaim.is_none_or(|t| t.elapsed() >= side.cfg.poll_interval);
        let task = tokio::select! {
            _ = stop.cancelled() => break,
            t = next_task(&side, reclaim) => t,
        };
        if reclaim {
            last_reclaim = Some(Instant::now());
        }
        if let Some(t) = task {
            let s = side.clone();
            jobs.spawn(async move {
                let _permit = permit;
                s.run_task(t).await;
            });
        }
    }
    jobs.shutdown().await;
    Ok(())
}

async fn next_task(side: &WorkerSide, reclaim: bool) -> Option<Task> {
    if reclaim && let Some(t) = side.reclaim_one().await {
        return Some(t);
    }
    let q = &side.queue;
    let got = q
        .read(
            &q.streams.jobs,
            WORKERS_GROUP,
            ">",
            1,
            side.cfg.poll_interval,
        )
        .await;
    match got {
        Ok(entries) => {
            let (id, fields) = entries.into_iter().next()?;
            side.task(id, &fields, 1).await
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read transcoding jobs from Redis");
            tokio::time::sleep(side.cfg.poll_interval).await;
            None
        }
    }
}

impl WorkerSide {
    /// A job whose worker died, if there is one; dead-letters it instead
    /// when it has used its runs.
    async fn reclaim_one(&self) -> Option<Task> {
        let q = &self.queue;
        let claimed = q
            .autoclaim(&q.streams.jobs, WORKERS_GROUP, self.cfg.reclaim_after, 1)
            .await;
        let (id, fields) = match claimed {
            Ok((entries, _)) => entries.into_iter().next()?,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reclaim transcoding jobs");
                return None;
            }
        };
        let n = q
            .deliveries(&q.streams.jobs, WORKERS_GROUP, &id)
            .await
            .unwrap_or(2);
        tracing::info!(entry = %id, deliveries = n, "took over a job whose worker was lost");
        self.task(id, &fields, n).await
    }

    /// The task of a delivered entry (run number counting redeliveries),
    /// or `None` after dropping a malformed entry or burying a job past
    /// its runs.
    async fn task(
        &self,
        id: String,
        fields: &std::collections::HashMap<String, String>,
        deliveries: u32,
    ) -> Option<Task> {
        let q = &self.queue;
        let Some(mut entry) = JobEntry::parse(fields) else {
            tracing::warn!(entry = %id, "malformed transcoding job entry dropped");
            let _ = q.ack(&q.streams.jobs, WORKERS_GROUP, &id).await;
            return None;
        };
        entry.attempt = super::run_number(entry.attempt, deliveries);
        if entry.attempt > self.cfg.max_attempts {
            entry.attempt -= 1;
            let why = "its worker was lost (killed, crashed or cut off)";
            self.bury(&id, &entry, why).await;
            return None;
        }
        Some(Task { id, entry })
    }

    async fn bury(&self, id: &str, e: &JobEntry, why: &str) {
        let reason = format!("gave up after {} attempts: {why}", e.attempt);
        tracing::info!(job = %e.job, reason, "transcoding job dead-lettered");
        self.stats.failed.inc();
        self.stats.dead.inc();
        let r = ResultEntry {
            job: e.job.clone(),
            report: Report::Failed { reason },
        };
        if let Err(err) = self.queue.bury(id, e, &r).await {
            tracing::warn!(error = %err, "cannot dead-letter a transcoding job");
        }
    }

    async fn run_task(&self, t: Task) {
        let q = &self.queue;
        let started = ResultEntry {
            job: t.entry.job.clone(),
            report: Report::Started {
                attempt: t.entry.attempt,
            },
        };
        let _ = q.report(&started).await;
        self.stats.running.inc();
        let dir = self.work_dir.join(&t.id);
        let result = self.attempt(&t, &dir).await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        self.stats.running.dec();
        let job = t.entry.job.clone();
        let done = match result {
            Ok(outcome) => {
                self.stats.completed.inc();
                let report = Report::Done {
                    run: t.id.clone(),
                    outcome,
                };
                q.finish(&t.id, &ResultEntry { job, report }).await
            }
            Err(RunError::Gone) => q.ack(&q.streams.jobs, WORKERS_GROUP, &t.id).await,
            Err(RunError::Final(e)) => {
                self.stats.failed.inc();
                let report = Report::Failed {
                    reason: e.to_string(),
                };
                q.finish(&t.id, &ResultEntry { job, report }).await
            }
            Err(RunError::Retry(why)) => {
                self.retry(&t, &why).await;
                Ok(())
            }
        };
        if let Err(e) = done {
            tracing::warn!(entry = %t.id, error = %e, "cannot report a transcoding run");
        }
    }

    async fn retry(&self, t: &Task, why: &str) {
        match super::after_failed_run(t.entry.attempt, self.cfg.max_attempts) {
            NextStep::Retry { attempt } => {
                tracing::info!(job = %t.entry.job, attempt, why, "transcoding run failed; queued again");
                self.stats.retried.inc();
                let next = JobEntry {
                    attempt,
                    ..t.entry.clone()
                };
                if let Err(e) = self.queue.requeue(&t.id, &next).await {
                    tracing::warn!(error = %e, "cannot queue a transcoding job again");
                }
            }
            NextStep::Dead => self.bury(&t.id, &t.entry, why).await,
        }
    }

    /// One run: input from the media role, the worker process, outputs
    /// back; the outcome as JSON.
    async fn attempt(&self, t: &Task, dir: &Path) -> Result<String, RunError> {
        let io = |e: std::io::Error| RunError::Retry(format!("local i/o: {e}"));
        let _ = tokio::fs::remove_dir_all(dir).await;
        tokio::fs::create_dir_all(dir.join("out"))
            .await
            .map_err(io)?;
        let input = dir.join("input");
        self.fetch(&t.entry, &input).await?;
        let kind = kind_of(&t.entry.content_type).ok_or_else(|| {
            RunError::Final(JobError::Unreadable(format!(
                "no transcoding for {}",
                t.entry.content_type
            )))
        })?;
        let job = Job {
            input,
            out_dir: dir.join("out"),
            request: Request {
                kind,
                no_audio: wants_no_audio(&t.entry.content_type),
            },
            settings: self.cfg.settings(),
            limits: self.cfg.limits(self.max_input),
            timeout: self.cfg.timeout,
        };
        let outcome = self.run_worker(&t.entry.job, &job).await?;
        for o in &outcome.outputs {
            let v = checked_output(&job.out_dir, o).map_err(|e| RunError::Retry(e.to_string()))?;
            self.upload(t, &o.file, &v.path).await?;
        }
        serde_json::to_string(&outcome).map_err(|e| RunError::Retry(e.to_string()))
    }

    async fn run_worker(&self, job_id: &str, job: &Job) -> Result<Outcome, RunError> {
        let (ptx, mut prx) = tokio::sync::watch::channel(0f32);
        let q = self.queue.clone();
        let job_id = job_id.to_owned();
        let reporter = tokio::spawn(async move {
            while prx.changed().await.is_ok() {
                let p = *prx.borrow_and_update();
                let r = ResultEntry {
                    job: job_id.clone(),
                    report: Report::Progress(p),
                };
                let _ = q.report(&r).await;
            }
        });
        let limits = self.cfg.process_limits();
        let r = palaver_transcoder::worker::run(&self.cmd, job, &limits, |p| {
            let _ = ptx.send(p);
        })
        .await;
        drop(ptx);
        let _ = reporter.await;
        match r {
            Ok(o) => Ok(o),
            Err(JobError::Worker(why)) => Err(RunError::Retry(format!("the worker failed: {why}"))),
            Err(e) => Err(RunError::Final(e)),
        }
    }

    async fn fetch(&self, e: &JobEntry, to: &Path) -> Result<(), RunError> {
        use tokio::io::AsyncWriteExt;
        let url = format!("{}/internal/transcode/{}/input", e.url, e.job);
        let mut res = self.send(self.http.get(url), &e.token).await?;
        let mut f = tokio::fs::File::create(to)
            .await
            .map_err(|x| RunError::Retry(x.to_string()))?;
        let mut got = 0u64;
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|x| RunError::Retry(format!("input download: {x}")))?
        {
            got += chunk.len() as u64;
            if got > self.max_input {
                return Err(RunError::Final(JobError::Limit("input too large".into())));
            }
            f.write_all(&chunk)
                .await
                .map_err(|x| RunError::Retry(x.to_string()))?;
        }
        f.flush().await.map_err(|x| RunError::Retry(x.to_string()))
    }

    async fn upload(&self, t: &Task, file: &str, path: &Path) -> Result<(), RunError> {
        let body = tokio::fs::read(path)
            .await
            .map_err(|x| RunError::Retry(x.to_string()))?;
        let e = &t.entry;
        let url = format!("{}/internal/transcode/{}/{}/{file}", e.url, e.job, t.id);
        self.send(self.http.put(url).body(body), &e.token).await?;
        Ok(())
    }

    /// Sends a request with the job's token; maps the answer.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        token: &str,
    ) -> Result<reqwest::Response, RunError> {
        let res = req
            .bearer_auth(token)
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .map_err(|e| RunError::Retry(format!("the media role is unreachable: {e}")))?;
        match res.status().as_u16() {
            200..=299 => Ok(res),
            410 => Err(RunError::Gone),
            401 | 400 => Err(RunError::Final(JobError::Worker(format!(
                "the media role refused the job ({})",
                res.status()
            )))),
            _ => Err(RunError::Retry(format!(
                "the media role answered {}",
                res.status()
            ))),
        }
    }
}
