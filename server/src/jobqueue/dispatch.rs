//! The media role's side of the Redis queue: new jobs go onto the jobs
//! stream, reports from the results stream are committed in the media
//! database, and the internal endpoint ([`super::internal`]) serves the
//! workers.

use super::redis_io::Queue;
use super::{JobEntry, MEDIA_GROUP, Report, ResultEntry, TokenKey, WORKERS_GROUP};
use crate::transcode::{Stats, checked_output};
use palaver_media_store::Media;
use palaver_media_store::id::ObjectId;
use palaver_media_store::service::Processor;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Hands new jobs to the dispatcher task (never blocks; a full channel
/// leaves the job to the rescan).
#[derive(Debug)]
struct Submit(mpsc::Sender<ObjectId>);

impl Processor for Submit {
    fn wants(&self, content_type: &str) -> bool {
        crate::transcode::kind_of(content_type).is_some()
    }

    fn submit(&self, source: ObjectId) {
        let _ = self.0.try_send(source);
    }
}

/// What the media role's queue tasks share.
#[derive(Debug)]
pub struct MediaSide {
    pub media: Arc<Media>,
    pub queue: Queue,
    pub key: TokenKey,
    /// The internal endpoint as workers reach it.
    pub url: String,
    /// Outputs uploaded by workers: `<dir>/<job>/<run>/<file>`.
    pub staging: PathBuf,
    pub poll_interval: Duration,
    pub stats: Stats,
    /// Jobs on the stream and not finished (not dispatched again).
    sent: Mutex<HashSet<ObjectId>>,
}

impl MediaSide {
    pub fn new(
        media: Arc<Media>,
        queue: Queue,
        key: TokenKey,
        url: String,
        staging: PathBuf,
        poll_interval: Duration,
    ) -> MediaSide {
        MediaSide {
            media,
            queue,
            key,
            url,
            staging,
            poll_interval,
            stats: Stats::default(),
            sent: Mutex::new(HashSet::new()),
        }
    }

    fn sent(&self) -> std::sync::MutexGuard<'_, HashSet<ObjectId>> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the outputs of `job` uploaded under `run` are kept.
    pub fn run_dir(&self, job: &str, run: &str) -> PathBuf {
        self.staging.join(job).join(run)
    }
}

/// Starts the dispatcher and the results consumer.
pub async fn start(
    side: Arc<MediaSide>,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let q = &side.queue;
    q.ensure_group(&q.streams.jobs, WORKERS_GROUP).await?;
    q.ensure_group(&q.streams.results, MEDIA_GROUP).await?;
    let _ = std::fs::remove_dir_all(&side.staging);
    std::fs::create_dir_all(&side.staging)?;
    let (tx, rx) = mpsc::channel(1024);
    side.media.set_processor(Arc::new(Submit(tx)));
    let d = tokio::spawn(dispatch_loop(side.clone(), rx, stop.clone()));
    let r = tokio::spawn(results_loop(side, stop));
    Ok(tokio::spawn(async move {
        let _ = d.await;
        let _ = r.await;
    }))
}

async fn dispatch_loop(
    side: Arc<MediaSide>,
    mut rx: mpsc::Receiver<ObjectId>,
    stop: CancellationToken,
) {
    let mut rescan = tokio::time::interval(side.poll_interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            Some(id) = rx.recv() => dispatch(&side, id).await,
            _ = rescan.tick() => dispatch_queued(&side).await,
        }
    }
}

/// Queued jobs not on the stream yet (pending at start-up, a full
/// channel, Redis unreachable when they came).
async fn dispatch_queued(side: &MediaSide) {
    let Ok(ids) = side.media.jobs_in_state("queued").await else {
        return;
    };
    for id in ids {
        if !side.sent().contains(&id) {
            dispatch(side, id).await;
        }
    }
}

async fn dispatch(side: &MediaSide, id: ObjectId) {
    let ticket = match side.media.open_job(id).await {
        Ok(Some(t)) => t,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(%id, error = %e, "cannot read a transcoding job");
            return;
        }
    };
    if !side.sent().insert(id) {
        return;
    }
    let job = id.to_string();
    let entry = JobEntry {
        token: side.key.token(&job),
        job,
        content_type: ticket.content_type,
        attempt: 1,
        url: side.url.clone(),
    };
    if let Err(e) = side.queue.add_job(&entry).await {
        // Left queued: the rescan tries again.
        side.sent().remove(&id);
        tracing::warn!(%id, error = %e, "cannot queue a transcoding job on Redis");
    }
}

async fn results_loop(side: Arc<MediaSide>, stop: CancellationToken) {
    let q = side.queue.clone();
    // Entries read before a restart and not acknowledged come first.
    let mut from = "0";
    loop {
        let read = tokio::select! {
            _ = stop.cancelled() => return,
            r = q.read(&q.streams.results, MEDIA_GROUP, from, 64, side.poll_interval) => r,
        };
        let entries = match read {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read transcoding results from Redis");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(side.poll_interval) => continue,
                }
            }
        };
        if from == "0" && entries.is_empty() {
            from = ">";
        }
        for (id, fields) in entries {
            match ResultEntry::parse(&fields) {
                Some(r) => commit(&side, r).await,
                None => tracing::warn!(entry = %id, "malformed transcoding result dropped"),
            }
            if let Err(e) = q.ack(&q.streams.results, MEDIA_GROUP, &id).await {
                tracing::warn!(error = %e, "cannot acknowledge a transcoding result");
            }
        }
    }
}

/// Applies one report to the media database.
async fn commit(side: &MediaSide, r: ResultEntry) {
    let Ok(id) = ObjectId::parse(r.job.as_bytes()) else {
        tracing::warn!("transcoding result for a malformed job id dropped");
        return;
    };
    let m = &side.media;
    let outcome = match r.report {
        Report::Started { attempt } => m.job_started(id, attempt).await,
        Report::Progress(p) => m.job_progress(id, p).await,
        Report::Done { run, outcome } => {
            commit_done(side, id, &run, &outcome).await;
            finished(side, id, &r.job).await;
            Ok(())
        }
        Report::Failed { reason } => {
            tracing::info!(%id, reason, "transcoding job failed");
            side.stats.failed.inc();
            let f = m.fail_job(id, &reason, false).await;
            finished(side, id, &r.job).await;
            f
        }
    };
    if let Err(e) = outcome {
        tracing::warn!(%id, error = %e, "cannot record a transcoding result");
    }
}

async fn finished(side: &MediaSide, id: ObjectId, job: &str) {
    side.sent().remove(&id);
    let _ = tokio::fs::remove_dir_all(side.staging.join(job)).await;
}

/// Commits the variants a worker uploaded, once: a job already finished
/// keeps what it has.
async fn commit_done(side: &MediaSide, id: ObjectId, run: &str, outcome: &str) {
    let Some(ticket) = side.media.open_job(id).await.ok().flatten() else {
        tracing::info!(%id, "transcoding result for a finished job ignored");
        return;
    };
    let failed = |why: String| async move {
        tracing::warn!(%id, why, "transcoding result refused");
        side.stats.failed.inc();
        let _ = side.media.fail_job(id, &why, false).await;
    };
    if !super::valid_run(run) {
        return failed("malformed run id".into()).await;
    }
    let outcome: palaver_transcoder::Outcome = match serde_json::from_str(outcome) {
        Ok(o) => o,
        Err(e) => return failed(format!("the worker failed: garbled outcome: {e}")).await,
    };
    let dir = side.run_dir(&id.to_string(), run);
    let variants = outcome
        .outputs
        .iter()
        .map(|o| checked_output(&dir, o))
        .collect::<Result<Vec<_>, _>>();
    let variants = match variants {
        Ok(v) => v,
        Err(e) => return failed(e.to_string()).await,
    };
    let info = serde_json::json!({
        "probe": outcome.probe,
        "waveform": outcome.waveform,
        "preview": outcome.preview,
    });
    match side.media.attach_variants(&ticket, variants, info).await {
        Ok(v) => {
            side.stats.completed.inc();
            tracing::info!(%id, variants = v.len(), "transcoding job done");
        }
        Err(e) => tracing::warn!(%id, error = %e, "cannot commit a transcoding job"),
    }
}
