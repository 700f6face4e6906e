//! Derived objects: a processed upload of a kind the transcoder handles
//! gets a job row; the transcoder (a [`Processor`] set by the server)
//! claims it, reads the plaintext with [`Media::export_plain`], and hands
//! back variants (transcoded file, poster, thumbnail) that become
//! processed objects of their own, encrypted at rest like any other and
//! referenced by the same owner with the same expiry.
//!
//! Job states: `queued` -> `running` -> `done` | `failed`. Committing the
//! variants and marking the job done is one transaction, and a job that
//! is already done is never committed twice, so a retried job (a crash, a
//! restart) is idempotent; blobs stored by a run that could not commit
//! are orphans the maintenance removes.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Media, UploadError, blocking, encrypt_file, read_plain_from};
use crate::blob::{Blob, RangeSource};
use crate::conditional::unix_now;
use crate::crypto::DataKey;
use crate::id::ObjectId;
use crate::meta::{ObjectInfo, Owner};

/// The transcoder, as the media store sees it.
pub trait Processor: Send + Sync + std::fmt::Debug {
    /// Whether uploads of this media type get a job.
    fn wants(&self, content_type: &str) -> bool;
    /// A job was created (or is still pending at start-up); must not block.
    fn submit(&self, source: ObjectId);
}

/// A job claimed by a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub source: ObjectId,
    pub owner: Owner,
    pub content_type: String,
    /// Runs so far, this one included.
    pub attempts: u32,
}

/// A produced file to store as a variant of its source.
#[derive(Debug, Clone)]
pub struct NewVariant {
    /// `video`, `voice`, `image`, `poster`, `thumb`.
    pub name: String,
    /// Plaintext file (the caller deletes it afterwards).
    pub path: PathBuf,
    pub content_type: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub duration_ms: Option<u64>,
}

/// A variant as the owner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VariantView {
    pub name: String,
    pub id: String,
    pub content_type: String,
    pub size: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub duration_ms: Option<u64>,
}

/// A job as the owner sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobView {
    pub state: String,
    /// 0.0 to 1.0.
    pub progress: f64,
    pub reason: Option<String>,
    pub attempts: u32,
    pub variants: Vec<VariantView>,
    /// What the transcoder found and computed (probe, waveform, preview).
    pub info: Option<serde_json::Value>,
}

/// The tables of jobs and variants (created with the rest of the schema).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    source TEXT PRIMARY KEY,
    owner INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    state TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    reason TEXT,
    info TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state) WHERE state IN ('queued', 'running');
CREATE TABLE IF NOT EXISTS variants (
    source TEXT NOT NULL,
    name TEXT NOT NULL,
    id TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    width INTEGER,
    height INTEGER,
    duration_ms INTEGER,
    PRIMARY KEY (source, name)
);
";

impl Media {
    /// Sets the transcoder. Uploads committed before this get no job.
    pub fn set_processor(&self, p: Arc<dyn Processor>) {
        let _ = self.processor.set(p);
    }

    /// After a processed object is committed: a job if the processor wants it.
    pub(super) async fn after_commit(&self, id: ObjectId, owner: Owner, content_type: &str) {
        let Some(p) = self.processor.get() else {
            return;
        };
        if !p.wants(content_type) {
            return;
        }
        let ct = content_type.to_owned();
        let created = self
            .meta
            .call(move |c| {
                c.execute(
                    "INSERT OR IGNORE INTO jobs (source, owner, content_type, state, updated)
                     VALUES (?1, ?2, ?3, 'queued', ?4)",
                    params![id.to_string(), owner, ct, unix_now()],
                )
            })
            .await;
        match created {
            Ok(_) => p.submit(id),
            Err(e) => tracing::warn!(%id, error = %e, "cannot create a transcoding job"),
        }
    }

    /// Jobs not finished (queued, or running when the process stopped).
    pub async fn pending_jobs(&self) -> Result<Vec<ObjectId>, UploadError> {
        let ids = self
            .meta
            .call(|c| {
                let mut st = c.prepare(
                    "SELECT source FROM jobs WHERE state IN ('queued', 'running') ORDER BY updated LIMIT 10000",
                )?;
                st.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        Ok(ids
            .into_iter()
            .filter_map(|s| ObjectId::parse(s.as_bytes()).ok())
            .collect())
    }

    /// Jobs in one state (`queued` or `running`), oldest first.
    pub async fn jobs_in_state(&self, state: &'static str) -> Result<Vec<ObjectId>, UploadError> {
        let ids = self
            .meta
            .call(move |c| {
                let mut st = c.prepare(
                    "SELECT source FROM jobs WHERE state = ?1 ORDER BY updated LIMIT 10000",
                )?;
                st.query_map([state], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        Ok(ids
            .into_iter()
            .filter_map(|s| ObjectId::parse(s.as_bytes()).ok())
            .collect())
    }

    /// An unfinished job (queued or running) as a ticket, without claiming
    /// it: for a run done elsewhere (the Redis queue).
    pub async fn open_job(&self, source: ObjectId) -> Result<Option<Ticket>, UploadError> {
        Ok(self
            .meta
            .call(move |c| {
                c.query_row(
                    "SELECT owner, content_type, attempts FROM jobs
                     WHERE source = ?1 AND state IN ('queued', 'running')",
                    [source.to_string()],
                    |r| {
                        Ok(Ticket {
                            source,
                            owner: r.get(0)?,
                            content_type: r.get(1)?,
                            attempts: r.get(2)?,
                        })
                    },
                )
                .optional()
            })
            .await?)
    }

    /// Marks an unfinished job running as run `attempt` (a worker took it).
    pub async fn job_started(&self, source: ObjectId, attempt: u32) -> Result<(), UploadError> {
        self.meta
            .call(move |c| {
                c.execute(
                    "UPDATE jobs SET state = 'running', attempts = MAX(attempts, ?2), progress = 0, updated = ?3
                     WHERE source = ?1 AND state IN ('queued', 'running')",
                    params![source.to_string(), attempt, unix_now()],
                )
            })
            .await?;
        Ok(())
    }

    /// Claims a job for a run: `queued`, or `running` but not updated
    /// since `stale_before` (Unix seconds: a run that died), becomes
    /// `running` with one more attempt. `None` if it is finished, unknown,
    /// or running elsewhere.
    pub async fn claim_job(
        &self,
        source: ObjectId,
        stale_before: u64,
    ) -> Result<Option<Ticket>, UploadError> {
        Ok(self
            .meta
            .call(move |c| {
                let tx = c.transaction()?;
                let t = tx
                    .query_row(
                        "UPDATE jobs SET state = 'running', attempts = attempts + 1, progress = 0, updated = ?2
                         WHERE source = ?1 AND (state = 'queued' OR (state = 'running' AND updated < ?3))
                         RETURNING owner, content_type, attempts",
                        params![source.to_string(), unix_now(), stale_before.min(i64::MAX as u64)],
                        |r| {
                            Ok(Ticket {
                                source,
                                owner: r.get(0)?,
                                content_type: r.get(1)?,
                                attempts: r.get(2)?,
                            })
                        },
                    )
                    .optional()?;
                tx.commit()?;
                Ok(t)
            })
            .await?)
    }

    /// Records progress (0.0 to 1.0) of a running job.
    pub async fn job_progress(&self, source: ObjectId, progress: f32) -> Result<(), UploadError> {
        self.meta
            .call(move |c| {
                c.execute(
                    "UPDATE jobs SET progress = ?2, updated = ?3 WHERE source = ?1 AND state = 'running'",
                    params![source.to_string(), f64::from(progress), unix_now()],
                )
            })
            .await?;
        Ok(())
    }

    /// Ends a job as failed (`retry`: back to `queued` instead).
    pub async fn fail_job(
        &self,
        source: ObjectId,
        reason: &str,
        retry: bool,
    ) -> Result<(), UploadError> {
        let reason = reason.to_owned();
        let state = if retry { "queued" } else { "failed" };
        self.meta
            .call(move |c| {
                c.execute(
                    "UPDATE jobs SET state = ?2, reason = ?3, updated = ?4 WHERE source = ?1 AND state != 'done'",
                    params![source.to_string(), state, reason, unix_now()],
                )
            })
            .await?;
        Ok(())
    }

    /// Decrypts a processed object into `dst` (mode 0600) for the transcoder.
    pub async fn export_plain(&self, source: ObjectId, dst: &Path) -> Result<u64, UploadError> {
        let entry = self
            .lookup(source)
            .await?
            .ok_or_else(|| UploadError::Storage(format!("no object {source}")))?;
        // A blob in object storage is fetched whole first (ciphertext, next
        // to the destination), then decrypted like a local one.
        let fetched = match &entry.blob {
            Blob::Remote {
                source, path, len, ..
            } => {
                let copy = dst.with_extension("sealed");
                fetch_remote(source.as_ref(), path, *len, &copy).await?;
                Some(copy)
            }
            Blob::File { .. } => None,
        };
        let dst = dst.to_owned();
        let local = fetched.clone();
        let result = blocking(move || {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let file = match &local {
                Some(p) => std::fs::File::open(p)?,
                None => match &entry.blob {
                    Blob::File { file, .. } => file.try_clone()?,
                    Blob::Remote { .. } => return Err(std::io::Error::other("remote blob")),
                },
            };
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&dst)?;
            let size = entry.info.size;
            let step = 16 * crate::crypto::SEGMENT;
            let mut buf = Vec::with_capacity(step as usize + 64);
            let mut at = 0;
            while at < size {
                buf.clear();
                read_plain_from(&entry, &file, at, (at + step).min(size), &mut buf)?;
                f.write_all(&buf)?;
                at += step;
            }
            f.sync_all()?;
            Ok(size)
        })
        .await;
        if let Some(p) = fetched {
            let _ = tokio::fs::remove_file(p).await;
        }
        result
    }

    /// Stores the variants of a job and marks it done, in one commit.
    /// A job already done keeps its first variants (idempotent retry).
    pub async fn attach_variants(
        &self,
        t: &Ticket,
        variants: Vec<NewVariant>,
        info: serde_json::Value,
    ) -> Result<Vec<VariantView>, UploadError> {
        let mut stored = Vec::new();
        for v in variants {
            stored.push(self.store_variant(v).await?);
        }
        // Each variant has its own fresh path; hold every path's lock (in
        // path order) so that expiry and orphan collection leave them alone
        // until the rows are committed.
        let mut paths: Vec<String> = stored.iter().map(|(i, _)| i.id.blob_path()).collect();
        paths.sort();
        let mut _commit = Vec::with_capacity(paths.len());
        for p in paths {
            _commit.push(self.commit_lock.lock(p).await);
        }
        for (info, _) in &stored {
            let tmp = self.tmp_of(&info.id);
            let put = self.blobs.put(&info.id.blob_path(), &tmp).await;
            let _ = tokio::fs::remove_file(&tmp).await;
            put?;
        }
        let (source, owner) = (t.source, t.owner);
        let rows: Vec<(ObjectInfo, NewVariant)> = stored;
        let views: Vec<VariantView> = rows.iter().map(|(i, v)| view(i, v)).collect();
        let info = info.to_string();
        let done = self
            .meta
            .call(move |c| commit_variants(c, source, owner, &rows, &info))
            .await?;
        if !done {
            return Err(UploadError::Storage(format!(
                "job {source} is finished or its object is gone"
            )));
        }
        Ok(views)
    }

    fn tmp_of(&self, id: &ObjectId) -> PathBuf {
        self.staging.join("tmp").join(format!("v-{id}"))
    }

    /// Encrypts one variant into tmp/ under a new object id.
    async fn store_variant(&self, v: NewVariant) -> Result<(ObjectInfo, NewVariant), UploadError> {
        let id = ObjectId::new_processed();
        let (key, raw) = DataKey::random();
        let (src, dst) = (v.path.clone(), self.tmp_of(&id));
        let size = blocking(move || {
            encrypt_file(&key, &id, &src, &dst, None)?;
            Ok(std::fs::metadata(&src)?.len())
        })
        .await?;
        let info = ObjectInfo {
            id,
            size,
            created: unix_now(),
            content_type: v.content_type.clone(),
            wrapped: Some(self.keys.wrap(&id, &raw)),
        };
        Ok((info, v))
    }

    /// The job of `source` with its variants, if there is one.
    pub async fn job_view(&self, source: ObjectId) -> Result<Option<JobView>, UploadError> {
        Ok(self.meta.call(move |c| job_view(c, source)).await?)
    }

    /// Removes `owner`'s references on the variants of `source` (when the
    /// owner deletes the source).
    pub(super) async fn drop_variant_refs(
        &self,
        source: ObjectId,
        owner: Owner,
    ) -> Result<(), UploadError> {
        self.meta
            .call(move |c| {
                c.execute(
                    "DELETE FROM refs WHERE owner = ?2 AND id IN (SELECT id FROM variants WHERE source = ?1)",
                    params![source.to_string(), owner],
                )
            })
            .await?;
        Ok(())
    }
}

fn view(i: &ObjectInfo, v: &NewVariant) -> VariantView {
    VariantView {
        name: v.name.clone(),
        id: i.id.to_string(),
        content_type: i.content_type.clone(),
        size: i.size,
        width: v.width,
        height: v.height,
        duration_ms: v.duration_ms,
    }
}

fn commit_variants(
    c: &mut rusqlite::Connection,
    source: ObjectId,
    owner: Owner,
    rows: &[(ObjectInfo, NewVariant)],
    info: &str,
) -> rusqlite::Result<bool> {
    let tx = c.transaction()?;
    let src = source.to_string();
    let state: Option<String> = tx
        .query_row("SELECT state FROM jobs WHERE source = ?1", [&src], |r| {
            r.get(0)
        })
        .optional()?;
    // The source reference carries the expiry the variants inherit.
    let expires: Option<Option<u64>> = tx
        .query_row(
            "SELECT expires FROM refs WHERE id = ?1 AND owner = ?2",
            params![src, owner],
            |r| r.get(0),
        )
        .optional()?;
    let (Some(state), Some(expires)) = (state, expires) else {
        return Ok(false);
    };
    if state == "done" {
        return Ok(false);
    }
    for (i, v) in rows {
        let id = i.id.to_string();
        tx.execute(
            "INSERT INTO blobs (id, size, created, content_type, kid, wrapped) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                id,
                i.size,
                i.created,
                i.content_type,
                i.wrapped.as_ref().map(|w| w.kid.clone()),
                i.wrapped.as_ref().map(|w| w.bytes.clone())
            ],
        )?;
        tx.execute(
            "INSERT INTO refs (id, owner, expires) VALUES (?1, ?2, ?3)",
            params![id, owner, expires],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO variants (source, name, id, content_type, size, width, height, duration_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![src, v.name, id, i.content_type, i.size, v.width, v.height, v.duration_ms],
        )?;
    }
    tx.execute(
        "UPDATE jobs SET state = 'done', progress = 1, reason = NULL, info = ?2, updated = ?3 WHERE source = ?1",
        params![src, info, unix_now()],
    )?;
    tx.commit()?;
    Ok(true)
}

fn job_view(c: &mut rusqlite::Connection, source: ObjectId) -> rusqlite::Result<Option<JobView>> {
    let src = source.to_string();
    let Some(mut job) = c
        .query_row(
            "SELECT state, progress, reason, attempts, info FROM jobs WHERE source = ?1",
            [&src],
            |r| {
                let info: Option<String> = r.get(4)?;
                Ok(JobView {
                    state: r.get(0)?,
                    progress: r.get(1)?,
                    reason: r.get(2)?,
                    attempts: r.get(3)?,
                    variants: Vec::new(),
                    info: info.and_then(|s| serde_json::from_str(&s).ok()),
                })
            },
        )
        .optional()?
    else {
        return Ok(None);
    };
    let mut st = c.prepare(
        "SELECT name, id, content_type, size, width, height, duration_ms FROM variants
         WHERE source = ?1 ORDER BY name",
    )?;
    job.variants = st
        .query_map([&src], |r| {
            Ok(VariantView {
                name: r.get(0)?,
                id: r.get(1)?,
                content_type: r.get(2)?,
                size: r.get(3)?,
                width: r.get(4)?,
                height: r.get(5)?,
                duration_ms: r.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(job))
}

#[cfg(test)]
mod tests;

/// Copies a remote blob into a new local file (mode 0600).
async fn fetch_remote(
    source: &dyn RangeSource,
    path: &str,
    len: u64,
    to: &Path,
) -> Result<(), UploadError> {
    use tokio::io::AsyncWriteExt;
    let storage = |e: crate::blob::BlobError| UploadError::Storage(e.to_string());
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .await?;
    let mut got = 0u64;
    if len > 0 {
        let mut chunks = source.read_range(path, 0, len).await.map_err(storage)?;
        while let Some(c) = chunks.next_chunk().await.map_err(storage)? {
            got += c.len() as u64;
            file.write_all(&c).await?;
        }
    }
    if got != len {
        return Err(UploadError::Storage(format!(
            "object storage returned {got} of {len} bytes of {path}"
        )));
    }
    file.flush().await?;
    Ok(())
}
