//! The blob-store trait and its local-folder backend.
//!
//! A backend stores immutable byte strings under relative paths that the
//! caller derives from [`crate::id::ObjectId::blob_path`] (hex only). Uploads
//! are staged as local files first; `put` moves a finished, checked file in,
//! atomically: a reader sees the whole blob or none of it.

use async_trait::async_trait;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::fmt;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A backend failure (logged; clients see 500 or 503).
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("blob {0} is not a regular file inside the store")]
    NotRegular(String),
    /// An object-storage request failed (after the configured retries).
    #[error("object storage, {op} {path}: {message}")]
    Remote {
        op: &'static str,
        path: String,
        message: String,
    },
}

fn io(path: &str) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.to_owned(),
        source,
    }
}

/// An open blob, ready to serve.
#[derive(Debug, Clone)]
pub enum Blob {
    /// A local file: served with `sendfile` (sealed) or `pread` (processed).
    File { file: Arc<std::fs::File>, len: u64 },
    /// A blob in a remote store, read a byte range at a time as a stream
    /// (object storage: one ranged GET per requested range).
    Remote {
        source: Arc<dyn RangeSource>,
        path: String,
        len: u64,
        /// The whole blob once read, for blobs of at most
        /// [`SMALL_REMOTE`] bytes (kept as long as the object's cache entry).
        small: Arc<std::sync::OnceLock<bytes::Bytes>>,
    },
}

/// Remote blobs up to this size are read whole once and then served from
/// memory (at most 512 cached objects, so at most 32 MiB).
pub const SMALL_REMOTE: u64 = 64 * 1024;

impl Blob {
    pub fn len(&self) -> u64 {
        match self {
            Blob::File { len, .. } | Blob::Remote { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A stream of bytes read from a remote blob.
#[async_trait]
pub trait Chunks: Send {
    /// The next piece; `None` at the end.
    async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>, BlobError>;
}

/// A backend whose blobs are read over the network, one range at a time.
#[async_trait]
pub trait RangeSource: Send + Sync + fmt::Debug + 'static {
    /// Streams bytes `start..end` (end exclusive, within the blob) of the
    /// blob at `path`. The stream may end early on a failure; readers
    /// count what they get.
    async fn read_range(
        &self,
        path: &str,
        start: u64,
        end: u64,
    ) -> Result<Box<dyn Chunks>, BlobError>;
}

/// Where blobs live.
#[async_trait]
pub trait BlobStore: Send + Sync + fmt::Debug + 'static {
    /// Moves the finished local file `staged` to `path`. If a blob already
    /// exists there (content-addressed duplicates), `staged` is removed and
    /// the existing blob kept.
    async fn put(&self, path: &str, staged: &Path) -> Result<(), BlobError>;
    /// Opens a blob; `None` if it does not exist.
    async fn open(&self, path: &str) -> Result<Option<Blob>, BlobError>;
    /// Removes a blob; removing a missing blob is not an error.
    async fn delete(&self, path: &str) -> Result<(), BlobError>;
    /// Every stored blob path (for garbage collection).
    async fn list(&self) -> Result<Vec<String>, BlobError>;
}

/// Blobs as files under one directory: `s/ab/<sha256>`, `p/ab/<id>`.
///
/// Reads open files relative to the root directory with `openat2`
/// (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`): a symlink anywhere in the
/// path, or a path leaving the root, fails instead of being followed.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    root_fd: Arc<OwnedFd>,
}

impl LocalStore {
    /// Opens (creating, mode 0700) the store directory.
    pub fn open(root: &Path) -> std::io::Result<LocalStore> {
        use std::os::unix::fs::DirBuilderExt;
        for sub in ["", "s", "p"] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root.join(sub))?;
        }
        let root_fd = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(LocalStore {
            root: root.to_owned(),
            root_fd: Arc::new(root_fd),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn open_sync(&self, path: &str) -> Result<Option<Blob>, BlobError> {
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let fd = match rustix::fs::openat2(&*self.root_fd, path, flags, Mode::empty(), resolve) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(rustix::io::Errno::NOSYS) => self.open_fallback(path)?,
            Err(e) if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::XDEV => {
                return Err(BlobError::NotRegular(path.to_owned()));
            }
            Err(e) => return Err(io(path)(e.into())),
        };
        let file = std::fs::File::from(fd);
        let meta = file.metadata().map_err(io(path))?;
        if !meta.is_file() {
            return Err(BlobError::NotRegular(path.to_owned()));
        }
        Ok(Some(Blob::File {
            file: Arc::new(file),
            len: meta.len(),
        }))
    }

    /// Kernels before 5.6 lack openat2: check every component with lstat
    /// and open the last one with O_NOFOLLOW.
    fn open_fallback(&self, path: &str) -> Result<OwnedFd, BlobError> {
        let mut p = self.root.clone();
        for comp in path.split('/') {
            if comp.is_empty() || comp == "." || comp == ".." {
                return Err(BlobError::NotRegular(path.to_owned()));
            }
            p.push(comp);
            let m = std::fs::symlink_metadata(&p).map_err(io(path))?;
            if m.file_type().is_symlink() {
                return Err(BlobError::NotRegular(path.to_owned()));
            }
        }
        rustix::fs::open(
            &p,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| io(path)(e.into()))
    }

    fn put_sync(&self, path: &str, staged: &Path) -> Result<(), BlobError> {
        let dest = self.root.join(path);
        let parent = dest.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(parent).map_err(io(path))?;
        if std::fs::symlink_metadata(&dest).is_ok() {
            std::fs::remove_file(staged).map_err(io(path))?;
            return Ok(());
        }
        std::fs::rename(staged, &dest).map_err(io(path))?;
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io(path))
    }

    fn list_sync(&self) -> Result<Vec<String>, BlobError> {
        let mut out = Vec::new();
        for kind in ["s", "p"] {
            let dir = self.root.join(kind);
            for fan in std::fs::read_dir(&dir).map_err(io(kind))? {
                let fan = fan.map_err(io(kind))?;
                if !fan.file_type().map_err(io(kind))?.is_dir() {
                    continue;
                }
                for f in std::fs::read_dir(fan.path()).map_err(io(kind))? {
                    let f = f.map_err(io(kind))?;
                    out.push(format!(
                        "{kind}/{}/{}",
                        fan.file_name().to_string_lossy(),
                        f.file_name().to_string_lossy()
                    ));
                }
            }
        }
        Ok(out)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BlobError> + Send + 'static,
) -> Result<T, BlobError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io("(task)")(std::io::Error::other(e))))
}

#[async_trait]
impl BlobStore for LocalStore {
    async fn put(&self, path: &str, staged: &Path) -> Result<(), BlobError> {
        let (me, path, staged) = (self.clone(), path.to_owned(), staged.to_owned());
        blocking(move || me.put_sync(&path, &staged)).await
    }

    async fn open(&self, path: &str) -> Result<Option<Blob>, BlobError> {
        // Opening is a metadata operation on a cached inode: cheap enough
        // to do inline, and it keeps the download path off the blocking pool.
        self.open_sync(path)
    }

    async fn delete(&self, path: &str) -> Result<(), BlobError> {
        match std::fs::remove_file(self.root.join(path)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
            _ => Ok(()),
        }
    }

    async fn list(&self) -> Result<Vec<String>, BlobError> {
        let me = self.clone();
        blocking(move || me.list_sync()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_open_delete_and_no_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&dir.path().join("m")).unwrap();
        let staged = dir.path().join("m/staged");
        std::fs::write(&staged, b"hello").unwrap();
        store.put("s/ab/abcd", &staged).await.unwrap();
        assert!(!staged.exists());
        let blob = store.open("s/ab/abcd").await.unwrap().unwrap();
        assert_eq!(blob.len(), 5);
        // A duplicate put keeps the first blob.
        std::fs::write(&staged, b"other").unwrap();
        store.put("s/ab/abcd", &staged).await.unwrap();
        assert!(!staged.exists());
        assert_eq!(store.list().await.unwrap(), vec!["s/ab/abcd".to_string()]);

        // Symlinks out of the store are refused, not followed.
        std::fs::write(dir.path().join("secret"), b"secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), dir.path().join("m/s/ab/link"))
            .unwrap();
        assert!(store.open("s/ab/link").await.is_err());
        std::os::unix::fs::symlink(dir.path(), dir.path().join("m/p/zz")).unwrap();
        assert!(store.open("p/zz/secret").await.is_err());
        assert!(store.open("../secret").await.is_err());
        assert!(store.open("s/ab/missing").await.unwrap().is_none());

        store.delete("s/ab/abcd").await.unwrap();
        store.delete("s/ab/abcd").await.unwrap();
        assert!(store.open("s/ab/abcd").await.unwrap().is_none());
    }
}
