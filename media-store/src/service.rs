//! The media service: uploads (staging, checksum, encryption, commit),
//! object look-up for downloads, deletion, expiry and garbage collection.
//! HTTP lives in [`crate::http`]; this module knows nothing about it.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::blob::{Blob, BlobError, BlobStore};
use crate::capability::CapabilityKey;
use crate::conditional::unix_now;
use crate::crypto::{self, DataKey, MasterKeys, StagingKey};
use crate::id::{ObjectId, UploadId};
use crate::meta::{Kind, Meta, MetaError, ObjectInfo, Owner, Upload};

/// Limits and timings of the media service. Defaults are documented in
/// docs/configuration.md (`[media]`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest body of a one-request upload.
    pub max_single_upload: u64,
    /// Largest sealed object.
    pub max_sealed: u64,
    /// Largest processed object (plaintext).
    pub max_processed: u64,
    /// Bytes an account may have stored or reserved by open uploads.
    pub quota: u64,
    /// Unfinished uploads idle this long are deleted.
    pub upload_ttl: Duration,
    /// Lifetime of capability URLs handed out by the server.
    pub link_ttl: Duration,
    /// Most ranges in one Range header; more gets 416.
    pub max_ranges: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_single_upload: 16 << 20,
            max_sealed: 2 << 30,
            max_processed: 256 << 20,
            quota: 10 << 30,
            upload_ttl: Duration::from_secs(24 * 3600),
            link_ttl: Duration::from_secs(7 * 24 * 3600),
            max_ranges: 64,
        }
    }
}

/// Why an upload request failed. Each maps to one documented HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("no such upload")]
    NotFound,
    #[error("upload offset {expected} expected, {got} given")]
    OffsetMismatch { expected: u64, got: u64 },
    #[error("upload is longer than its declared length")]
    TooLong,
    #[error("object of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("quota of {quota} bytes exceeded")]
    OverQuota { quota: u64 },
    #[error("checksum mismatch")]
    ChecksumMismatch,
    #[error("sealed uploads need the SHA-256 of their bytes")]
    ChecksumRequired,
    #[error("the body ended after {received} of {expected} bytes")]
    Truncated { received: u64, expected: u64 },
    #[error("another request is writing to this upload")]
    Busy,
    #[error("the upload is already complete")]
    Complete,
    #[error("storage failure: {0}")]
    Storage(String),
}

impl From<MetaError> for UploadError {
    fn from(e: MetaError) -> Self {
        UploadError::Storage(e.to_string())
    }
}

impl From<BlobError> for UploadError {
    fn from(e: BlobError) -> Self {
        UploadError::Storage(e.to_string())
    }
}

impl From<std::io::Error> for UploadError {
    fn from(e: std::io::Error) -> Self {
        UploadError::Storage(e.to_string())
    }
}

/// A source of request-body bytes (the HTTP layer enforces timeouts).
pub trait BodySource: Send {
    /// Reads into `buf`; 0 means the body or the connection ended.
    fn read<'a>(
        &'a mut self,
        buf: &'a mut [u8],
    ) -> impl std::future::Future<Output = std::io::Result<usize>> + Send + 'a;
}

/// The checksum of one PATCH (tus `Upload-Checksum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkDigest {
    Sha1([u8; 20]),
    Sha256([u8; 32]),
}

enum Hasher {
    None,
    Sha1(sha1::Sha1),
    Sha256(Sha256),
}

impl Hasher {
    fn for_digest(d: Option<ChunkDigest>) -> Hasher {
        match d {
            None => Hasher::None,
            Some(ChunkDigest::Sha1(_)) => Hasher::Sha1(sha1::Sha1::new()),
            Some(ChunkDigest::Sha256(_)) => Hasher::Sha256(Sha256::new()),
        }
    }

    fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::None => {}
            Hasher::Sha1(h) => h.update(b),
            Hasher::Sha256(h) => h.update(b),
        }
    }

    fn matches(self, want: Option<ChunkDigest>) -> bool {
        match (self, want) {
            (Hasher::None, None) => true,
            (Hasher::Sha1(h), Some(ChunkDigest::Sha1(w))) => h.finalize().as_slice() == w,
            (Hasher::Sha256(h), Some(ChunkDigest::Sha256(w))) => h.finalize().as_slice() == w,
            _ => false,
        }
    }
}

/// What a new upload will become.
#[derive(Debug, Clone)]
pub struct NewUpload {
    pub kind: Kind,
    pub length: u64,
    pub sha256: Option<[u8; 32]>,
    pub content_type: String,
    pub expires: Option<u64>,
}

/// An object ready to serve.
#[derive(Debug)]
pub struct Entry {
    pub info: ObjectInfo,
    pub blob: Blob,
    pub key: Option<DataKey>,
    /// Strong ETag with quotes.
    pub etag: String,
    /// Last-Modified, formatted.
    pub last_modified: String,
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub uploads_completed: Counter,
    pub uploads_failed: Counter,
    pub objects_deleted: Counter,
}

impl Stats {
    /// Registers the counters under `palaver_media_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("palaver_media");
        r.register(
            "uploads_completed",
            "Uploads checked and stored",
            self.uploads_completed.clone(),
        );
        r.register(
            "uploads_failed",
            "Complete uploads refused by their checks",
            self.uploads_failed.clone(),
        );
        r.register(
            "objects_deleted",
            "Blobs deleted (last reference deleted or expired)",
            self.objects_deleted.clone(),
        );
    }
}

/// Most cached objects (each holds an open file descriptor).
const CACHE_MAX: usize = 512;

/// The media service.
#[derive(Debug)]
pub struct Media {
    pub limits: Limits,
    pub caps: CapabilityKey,
    keys: MasterKeys,
    blobs: Arc<dyn BlobStore>,
    meta: Meta,
    staging: PathBuf,
    cache: Mutex<HashMap<ObjectId, Arc<Entry>>>,
    busy: Mutex<HashSet<UploadId>>,
    /// Held on a blob's path while it is put and committed, and while
    /// expiry or GC checks and deletes it, so neither deletes a blob being
    /// committed.
    commit_lock: locks::PathLocks,
    /// Unix seconds of the last orphan scan (0: never).
    last_orphan_scan: std::sync::atomic::AtomicU64,
    pub stats: Stats,
    /// The transcoder, when one is configured (see [`derived`]).
    processor: std::sync::OnceLock<Arc<dyn Processor>>,
}

/// Seconds between orphan scans in [`Media::maintain`].
const ORPHAN_SCAN_EVERY: u64 = 3600;

struct BusyGuard<'a>(&'a Mutex<HashSet<UploadId>>, UploadId);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

/// Checks a media type: `type/subtype` from RFC 9110 token characters,
/// optionally with parameters, at most 127 bytes.
pub fn valid_content_type(s: &str) -> bool {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let main = s.split(';').next().unwrap_or("");
    let Some((t, st)) = main.split_once('/') else {
        return false;
    };
    s.len() < 128
        && !t.is_empty()
        && !st.trim_end().is_empty()
        && t.bytes().all(tchar)
        && st.trim_end().bytes().all(tchar)
        && s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

impl Media {
    /// Opens the service on `dir` (metadata database, staging folders).
    pub fn open(
        dir: &Path,
        blobs: Arc<dyn BlobStore>,
        keys: MasterKeys,
        caps: CapabilityKey,
        limits: Limits,
    ) -> Result<Media, UploadError> {
        use std::os::unix::fs::DirBuilderExt;
        for sub in ["uploads", "tmp"] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir.join(sub))?;
        }
        Ok(Media {
            limits,
            caps,
            keys,
            blobs,
            meta: Meta::open(&dir.join("media.db"))?,
            staging: dir.to_owned(),
            cache: Mutex::new(HashMap::new()),
            busy: Mutex::new(HashSet::new()),
            commit_lock: locks::PathLocks::default(),
            last_orphan_scan: std::sync::atomic::AtomicU64::new(0),
            stats: Stats::default(),
            processor: std::sync::OnceLock::new(),
        })
    }

    fn staged(&self, uid: UploadId) -> PathBuf {
        self.staging.join("uploads").join(uid.to_string())
    }

    /// Starts an upload, reserving its length against the quota.
    pub async fn create_upload(&self, owner: Owner, n: NewUpload) -> Result<Upload, UploadError> {
        let limit = match n.kind {
            Kind::Sealed => self.limits.max_sealed,
            Kind::Processed => self.limits.max_processed,
        };
        if n.length > limit {
            return Err(UploadError::TooLarge {
                size: n.length,
                limit,
            });
        }
        if n.kind == Kind::Sealed && n.sha256.is_none() {
            return Err(UploadError::ChecksumRequired);
        }
        let uid = UploadId::new();
        let staging_key = (n.kind == Kind::Processed).then(|| {
            let (_, raw) = StagingKey::random();
            self.keys.wrap(&ObjectId::Processed(uid.0), &raw)
        });
        let up = Upload {
            uid,
            owner,
            kind: n.kind,
            length: n.length,
            offset: 0,
            sha256: n.sha256,
            content_type: n.content_type,
            expires: n.expires,
            updated: unix_now(),
            result: None,
            staging_key,
        };
        tokio::fs::File::create(self.staged(up.uid)).await?;
        if !self
            .meta
            .create_upload(up.clone(), self.limits.quota)
            .await?
        {
            let _ = tokio::fs::remove_file(self.staged(up.uid)).await;
            return Err(UploadError::OverQuota {
                quota: self.limits.quota,
            });
        }
        Ok(up)
    }

    /// An upload of `owner` (others' uploads do not exist for them).
    pub async fn upload(&self, owner: Owner, uid: UploadId) -> Result<Upload, UploadError> {
        match self.meta.upload(uid).await? {
            Some(u) if u.owner == owner => Ok(u),
            _ => Err(UploadError::NotFound),
        }
    }

    /// Cancels an upload and deletes what was received.
    pub async fn cancel(&self, owner: Owner, uid: UploadId) -> Result<(), UploadError> {
        let up = self.upload(owner, uid).await?;
        self.meta.delete_upload(up.uid).await?;
        let _ = tokio::fs::remove_file(self.staged(uid)).await;
        Ok(())
    }

    fn staging_key(&self, up: &Upload) -> Result<Option<StagingKey>, UploadError> {
        up.staging_key
            .as_ref()
            .map(|w| {
                self.keys
                    .unwrap_raw(&ObjectId::Processed(up.uid.0), w)
                    .map(StagingKey::from_raw)
                    .map_err(|e| UploadError::Storage(e.to_string()))
            })
            .transpose()
    }

    fn lock_upload(&self, uid: UploadId) -> Result<BusyGuard<'_>, UploadError> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if !busy.insert(uid) {
            return Err(UploadError::Busy);
        }
        Ok(BusyGuard(&self.busy, uid))
    }

    /// Appends `len` bytes at `offset` from `body`. With `chunk_sha256`, the
    /// chunk is kept only if its digest matches (`chunk`); without, the bytes that
    /// arrived before a dropped connection are kept (so the upload resumes
    /// there). When the upload is complete, it is checked and committed,
    /// and the object id returned.
    pub async fn append<B: BodySource>(
        &self,
        owner: Owner,
        uid: UploadId,
        offset: u64,
        len: u64,
        body: &mut B,
        chunk: Option<ChunkDigest>,
    ) -> Result<(u64, Option<ObjectId>), UploadError> {
        let _guard = self.lock_upload(uid)?;
        let up = self.upload(owner, uid).await?;
        if up.result.is_some() {
            return Err(UploadError::Complete);
        }
        if offset != up.offset {
            return Err(UploadError::OffsetMismatch {
                expected: up.offset,
                got: offset,
            });
        }
        if offset.checked_add(len).is_none_or(|end| end > up.length) {
            return Err(UploadError::TooLong);
        }
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(self.staged(uid))
            .await?;
        // Drop anything past the recorded offset (an interrupted write).
        file.set_len(offset).await?;
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        let mut hasher = Hasher::for_digest(chunk);
        let sk = self.staging_key(&up)?;
        let received = copy_body(body, &mut file, (offset, len), &mut hasher, sk.as_ref()).await?;
        let keep = match chunk {
            Some(_) => received == len && hasher.matches(chunk),
            None => true,
        };
        let new_offset = if keep { offset + received } else { offset };
        file.set_len(new_offset).await?;
        file.sync_all().await?;
        drop(file);
        if new_offset != offset {
            self.meta.set_offset(uid, new_offset, unix_now()).await?;
        }
        if received < len {
            return Err(UploadError::Truncated {
                received,
                expected: len,
            });
        }
        if !keep {
            return Err(UploadError::ChecksumMismatch);
        }
        if new_offset < up.length {
            return Ok((new_offset, None));
        }
        let up = Upload {
            offset: new_offset,
            ..up
        };
        match self.finish(&up).await {
            Ok(id) => {
                self.stats.uploads_completed.inc();
                Ok((new_offset, Some(id)))
            }
            Err(e) => {
                self.stats.uploads_failed.inc();
                // A complete upload that fails its checks is discarded.
                let _ = self.meta.delete_upload(uid).await;
                let _ = tokio::fs::remove_file(self.staged(uid)).await;
                Err(e)
            }
        }
    }

    /// Checks a complete upload and makes it an object.
    async fn finish(&self, up: &Upload) -> Result<ObjectId, UploadError> {
        let staged = self.staged(up.uid);
        let sk = Arc::new(self.staging_key(up)?);
        let (p, k) = (staged.clone(), sk.clone());
        let digest = blocking(move || hash_file(&p, k.as_ref().as_ref())).await?;
        if up.sha256.is_some_and(|want| want != digest) {
            return Err(UploadError::ChecksumMismatch);
        }
        let (id, path, wrapped) = match up.kind {
            Kind::Sealed => (ObjectId::Sealed(digest), staged.clone(), None),
            Kind::Processed => {
                let id = ObjectId::new_processed();
                let (key, raw) = DataKey::random();
                let tmp = self.staging.join("tmp").join(up.uid.to_string());
                let (src, dst) = (staged.clone(), tmp.clone());
                let sk = sk.clone();
                blocking(move || encrypt_file(&key, &id, &src, &dst, sk.as_ref().as_ref())).await?;
                (id, tmp, Some(self.keys.wrap(&id, &raw)))
            }
        };
        let info = ObjectInfo {
            id,
            size: up.length,
            created: unix_now(),
            content_type: up.content_type.clone(),
            wrapped,
        };
        let _commit = self.commit_lock.lock(id.blob_path()).await;
        self.blobs.put(&id.blob_path(), &path).await?;
        self.meta
            .commit_object(info, up.owner, up.expires, up.uid)
            .await?;
        let _ = tokio::fs::remove_file(&staged).await;
        if up.kind == Kind::Processed {
            self.after_commit(id, up.owner, &up.content_type).await;
        }
        Ok(id)
    }

    /// Looks up an object for serving (cached: objects are immutable).
    pub async fn lookup(&self, id: ObjectId) -> Result<Option<Arc<Entry>>, UploadError> {
        if let Some(e) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Ok(Some(e.clone()));
        }
        let Some(info) = self.meta.object(id).await? else {
            return Ok(None);
        };
        let Some(blob) = self.blobs.open(&id.blob_path()).await? else {
            tracing::warn!(%id, "object row without a blob");
            return Ok(None);
        };
        let key = match &info.wrapped {
            Some(w) => Some(
                self.keys
                    .unwrap(&id, w)
                    .map_err(|e| UploadError::Storage(e.to_string()))?,
            ),
            None => None,
        };
        let etag = match id {
            ObjectId::Sealed(_) => format!("\"{id}\""),
            ObjectId::Processed(_) => format!("\"p-{id}\""),
        };
        let entry = Arc::new(Entry {
            last_modified: crate::conditional::format_date(info.created),
            etag,
            info,
            blob,
            key,
        });
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(id, entry.clone());
        Ok(Some(entry))
    }

    /// Whether `owner` holds a reference to `id`.
    pub async fn is_owner(&self, id: ObjectId, owner: Owner) -> Result<bool, UploadError> {
        Ok(self.meta.is_owner(id, owner).await?)
    }

    /// Bytes charged to `owner`.
    pub async fn usage(&self, owner: Owner) -> Result<u64, UploadError> {
        Ok(self.meta.usage(owner).await?)
    }

    /// A capability query string for `id`, valid for the configured time.
    pub fn link(&self, id: &ObjectId, name: Option<&str>) -> Option<(String, u64)> {
        let exp = unix_now() + self.limits.link_ttl.as_secs();
        self.caps.sign(id, exp, name).ok().map(|q| (q, exp))
    }

    /// Removes `owner`'s reference; the blob goes when no one references it.
    pub async fn delete(&self, owner: Owner, id: ObjectId) -> Result<bool, UploadError> {
        if !self.meta.delete_ref(id, owner).await? {
            return Ok(false);
        }
        self.drop_variant_refs(id, owner).await?;
        self.sweep(unix_now()).await?;
        Ok(true)
    }

    /// Expiry: drops expired references and deletes unreferenced blobs.
    pub async fn sweep(&self, now: u64) -> Result<usize, UploadError> {
        let gone = self.meta.expire(now).await?;
        for id in &gone {
            self.cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(id);
            // A new upload of the same (sealed) blob may have committed
            // since: then the blob stays.
            let _commit = self.commit_lock.lock(id.blob_path()).await;
            if !self.meta.has_blob(*id).await? {
                self.blobs.delete(&id.blob_path()).await?;
            }
        }
        self.stats.objects_deleted.inc_by(gone.len() as u64);
        Ok(gone.len())
    }

    /// Deletes uploads idle for longer than `upload_ttl`.
    pub async fn clean_uploads(&self, now: u64) -> Result<usize, UploadError> {
        let cutoff = now.saturating_sub(self.limits.upload_ttl.as_secs());
        let stale = self.meta.stale_uploads(cutoff).await?;
        for uid in &stale {
            let Ok(_guard) = self.lock_upload(*uid) else {
                continue;
            };
            self.meta.delete_upload(*uid).await?;
            let _ = tokio::fs::remove_file(self.staged(*uid)).await;
        }
        Ok(stale.len())
    }

    /// Deletes blobs that no metadata row names (left by a crash between
    /// storing a blob and committing its row).
    pub async fn collect_orphans(&self) -> Result<usize, UploadError> {
        let mut n = 0;
        for path in self.blobs.list().await? {
            let Some(name) = path.rsplit('/').next() else {
                continue;
            };
            let Ok(id) = ObjectId::parse(name.as_bytes()) else {
                continue;
            };
            let _commit = self.commit_lock.lock(path.clone()).await;
            if id.blob_path() == path && !self.meta.has_blob(id).await? {
                self.blobs.delete(&path).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Re-wraps data keys under the active master key, a batch at a time.
    pub async fn rotate_keys(&self) -> Result<usize, UploadError> {
        let todo = self
            .meta
            .keys_to_rewrap(self.keys.active_kid().to_owned(), 1000)
            .await?;
        let mut n = 0;
        for (id, w) in todo {
            match self.keys.rewrap(&id, &w) {
                Ok(Some(new)) => {
                    self.meta.set_wrapped(id, new).await?;
                    n += 1;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(%id, error = %e, "cannot re-wrap a data key"),
            }
        }
        Ok(n)
    }

    /// One maintenance pass: expiry, stale uploads, key rotation, and about
    /// once an hour orphan blobs (listing the whole store is not free).
    pub async fn maintain(&self) {
        let now = unix_now();
        let last = self
            .last_orphan_scan
            .load(std::sync::atomic::Ordering::Relaxed);
        if now >= last + ORPHAN_SCAN_EVERY {
            self.last_orphan_scan
                .store(now, std::sync::atomic::Ordering::Relaxed);
            match self.collect_orphans().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(n, "removed orphan media blobs"),
                Err(e) => tracing::warn!(error = %e, "orphan collection failed"),
            }
        }
        if let Err(e) = self.sweep(now).await {
            tracing::warn!(error = %e, "media expiry failed");
        }
        if let Err(e) = self.clean_uploads(now).await {
            tracing::warn!(error = %e, "cleaning stale uploads failed");
        }
        if let Err(e) = self.rotate_keys().await {
            tracing::warn!(error = %e, "re-wrapping data keys failed");
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, UploadError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| UploadError::Storage(e.to_string()))?
        .map_err(UploadError::from)
}

async fn copy_body<B: BodySource>(
    body: &mut B,
    file: &mut tokio::fs::File,
    (offset, len): (u64, u64),
    hasher: &mut Hasher,
    sk: Option<&StagingKey>,
) -> Result<u64, UploadError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut received = 0u64;
    while received < len {
        let want = (len - received).min(buf.len() as u64) as usize;
        let n = match body.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        hasher.update(&buf[..n]);
        if let Some(k) = sk {
            k.apply(offset + received, &mut buf[..n]);
        }
        file.write_all(&buf[..n]).await?;
        received += n as u64;
    }
    file.flush().await?;
    Ok(received)
}

fn hash_file(p: &Path, sk: Option<&StagingKey>) -> std::io::Result<[u8; 32]> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut at = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finalize().into());
        }
        if let Some(k) = sk {
            k.apply(at, &mut buf[..n]);
        }
        h.update(&buf[..n]);
        at += n as u64;
    }
}

fn encrypt_file(
    key: &DataKey,
    id: &ObjectId,
    src: &Path,
    dst: &Path,
    sk: Option<&StagingKey>,
) -> std::io::Result<()> {
    let mut input = std::fs::File::open(src)?;
    let len = input.metadata()?.len();
    let mut out = std::io::BufWriter::new(std::fs::File::create(dst)?);
    let n = crypto::segments(len);
    let mut buf = Vec::with_capacity((crypto::SEGMENT + crypto::TAG) as usize);
    for i in 0..n {
        let this = (len - i * crypto::SEGMENT).min(crypto::SEGMENT) as usize;
        buf.clear();
        buf.resize(this, 0);
        input.read_exact(&mut buf)?;
        if let Some(k) = sk {
            k.apply(i * crypto::SEGMENT, &mut buf);
        }
        key.seal(id, i, i + 1 == n, &mut buf);
        out.write_all(&buf)?;
    }
    let f = out.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()
}

/// Decrypts plaintext bytes `start..end` of a processed blob, appending
/// them to `out`. Only the segments that hold them are read; each is read
/// straight into `out` and decrypted in place (no extra copy).
pub fn read_plain(
    entry: &Entry,
    start: u64,
    end: u64,
    out: &mut Vec<u8>,
) -> Result<(), std::io::Error> {
    let Blob::File { file, .. } = &entry.blob else {
        return Err(std::io::Error::other("not a local blob"));
    };
    read_plain_from(entry, file, start, end, out)
}

/// [`read_plain`] from a local copy `file` of the entry's blob (a remote
/// blob fetched first).
pub fn read_plain_from(
    entry: &Entry,
    file: &std::fs::File,
    start: u64,
    end: u64,
    out: &mut Vec<u8>,
) -> Result<(), std::io::Error> {
    use std::os::unix::fs::FileExt;
    let key = entry
        .key
        .as_ref()
        .ok_or_else(|| std::io::Error::other("no key"))?;
    let size = entry.info.size;
    let nseg = crypto::segments(size);
    let mut i = start / crypto::SEGMENT;
    while i * crypto::SEGMENT < end.min(size) {
        let seg_start = i * crypto::SEGMENT;
        let plain_len = (size - seg_start).min(crypto::SEGMENT) as usize;
        let at = out.len();
        out.resize(at + plain_len + crypto::TAG as usize, 0);
        file.read_exact_at(&mut out[at..], i * (crypto::SEGMENT + crypto::TAG))?;
        key.open_slice(&entry.info.id, i, i + 1 == nseg, &mut out[at..])
            .map_err(|_| std::io::Error::other("segment failed authentication"))?;
        let from = (start.max(seg_start) - seg_start) as usize;
        let to = (end.min(seg_start + plain_len as u64) - seg_start) as usize;
        out.truncate(at + to);
        if from > 0 {
            out.copy_within(at + from.., at);
            out.truncate(at + to - from);
        }
        i += 1;
    }
    Ok(())
}

pub mod derived;
pub use derived::{JobView, NewVariant, Processor, Ticket, VariantView};

mod locks;
#[cfg(test)]
mod tests;
