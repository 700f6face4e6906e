//! Object metadata in SQLite (`<media dir>/media.db`): which blobs exist,
//! who references them (quota, deletion, expiry), and upload sessions.
//!
//! A blob becomes visible only when its row is committed, and the row is
//! committed only after the blob is durably in the backend.

use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::crypto::WrappedKey;
use crate::id::{ObjectId, UploadId};

/// A database failure.
#[derive(Debug, thiserror::Error)]
#[error("media database: {0}")]
pub struct MetaError(#[from] rusqlite::Error);

/// Owner of objects and uploads: an account id.
pub type Owner = u64;

/// A stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub id: ObjectId,
    /// Plaintext size for processed objects, stored size for sealed.
    pub size: u64,
    /// Unix seconds.
    pub created: u64,
    pub content_type: String,
    /// Processed objects only.
    pub wrapped: Option<WrappedKey>,
}

/// Kind of object an upload produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sealed,
    Processed,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Sealed => "sealed",
            Kind::Processed => "processed",
        }
    }
}

/// An upload session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub uid: UploadId,
    pub owner: Owner,
    pub kind: Kind,
    pub length: u64,
    pub offset: u64,
    /// Expected SHA-256 of the whole upload (required for sealed: it is the id).
    pub sha256: Option<[u8; 32]>,
    pub content_type: String,
    /// Expiry of the object it will become (Unix seconds).
    pub expires: Option<u64>,
    /// Unix seconds of the last progress.
    pub updated: u64,
    /// Set once the upload has become an object.
    pub result: Option<ObjectId>,
    /// Processed uploads: the staging key, wrapped.
    pub staging_key: Option<WrappedKey>,
}

/// The metadata database.
#[derive(Debug, Clone)]
pub struct Meta {
    conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS blobs (
    id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    created INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    kid TEXT,
    wrapped BLOB
);
CREATE TABLE IF NOT EXISTS refs (
    id TEXT NOT NULL,
    owner INTEGER NOT NULL,
    expires INTEGER,
    PRIMARY KEY (id, owner)
);
CREATE INDEX IF NOT EXISTS refs_owner ON refs(owner);
CREATE INDEX IF NOT EXISTS refs_expires ON refs(expires) WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS uploads (
    uid TEXT PRIMARY KEY,
    owner INTEGER NOT NULL,
    kind TEXT NOT NULL,
    length INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    sha256 TEXT,
    content_type TEXT NOT NULL,
    expires INTEGER,
    updated INTEGER NOT NULL,
    result TEXT,
    skid TEXT,
    skey BLOB
);
";

fn parse_id(s: String) -> rusqlite::Result<ObjectId> {
    ObjectId::parse(s.as_bytes()).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn row_to_info(r: &rusqlite::Row<'_>) -> rusqlite::Result<ObjectInfo> {
    let kid: Option<String> = r.get(4)?;
    let wrapped: Option<Vec<u8>> = r.get(5)?;
    Ok(ObjectInfo {
        id: parse_id(r.get(0)?)?,
        size: r.get(1)?,
        created: r.get(2)?,
        content_type: r.get(3)?,
        wrapped: kid
            .zip(wrapped)
            .map(|(kid, bytes)| WrappedKey { kid, bytes }),
    })
}

fn row_to_upload(r: &rusqlite::Row<'_>) -> rusqlite::Result<Upload> {
    let uid: String = r.get(0)?;
    let kind: String = r.get(2)?;
    let sha: Option<String> = r.get(5)?;
    let result: Option<String> = r.get(9)?;
    let skid: Option<String> = r.get(10)?;
    let skey: Option<Vec<u8>> = r.get(11)?;
    Ok(Upload {
        uid: UploadId::parse(uid.as_bytes()).unwrap_or(UploadId([0; 16])),
        owner: r.get(1)?,
        kind: if kind == "sealed" {
            Kind::Sealed
        } else {
            Kind::Processed
        },
        length: r.get(3)?,
        offset: r.get(4)?,
        sha256: sha.and_then(|s| {
            let mut b = [0u8; 32];
            hex::decode_to_slice(s, &mut b).ok().map(|_| b)
        }),
        content_type: r.get(6)?,
        expires: r.get(7)?,
        updated: r.get(8)?,
        result: result.map(parse_id).transpose()?,
        staging_key: skid.zip(skey).map(|(kid, bytes)| WrappedKey { kid, bytes }),
    })
}

const UPLOAD_COLS: &str =
    "uid, owner, kind, length, offset, sha256, content_type, expires, updated, result, skid, skey";

impl Meta {
    pub fn open(path: &Path) -> Result<Meta, MetaError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(crate::service::derived::SCHEMA)?;
        Ok(Meta {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection on the blocking pool.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, MetaError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut c)
        })
        .await
        .map_err(|_| MetaError(rusqlite::Error::InvalidQuery))?
        .map_err(MetaError)
    }

    pub async fn object(&self, id: ObjectId) -> Result<Option<ObjectInfo>, MetaError> {
        self.call(move |c| {
            c.query_row(
                "SELECT id, size, created, content_type, kid, wrapped FROM blobs WHERE id = ?1",
                [id.to_string()],
                row_to_info,
            )
            .optional()
        })
        .await
    }

    /// Whether `owner` references `id`.
    pub async fn is_owner(&self, id: ObjectId, owner: Owner) -> Result<bool, MetaError> {
        self.call(move |c| {
            c.query_row(
                "SELECT 1 FROM refs WHERE id = ?1 AND owner = ?2",
                params![id.to_string(), owner],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
        })
        .await
    }

    /// Bytes charged to `owner`: referenced objects plus reserved uploads.
    pub async fn usage(&self, owner: Owner) -> Result<u64, MetaError> {
        self.call(move |c| {
            let objects: i64 = c.query_row(
                "SELECT COALESCE(SUM(b.size), 0) FROM refs r JOIN blobs b ON b.id = r.id WHERE r.owner = ?1",
                [owner],
                |r| r.get(0),
            )?;
            let uploads: i64 = c.query_row(
                "SELECT COALESCE(SUM(length), 0) FROM uploads WHERE owner = ?1 AND result IS NULL",
                [owner],
                |r| r.get(0),
            )?;
            Ok((objects + uploads) as u64)
        })
        .await
    }

    /// Creates an upload session if `owner` stays within `quota`
    /// (checked and reserved in one transaction). False if over quota.
    pub async fn create_upload(&self, u: Upload, quota: u64) -> Result<bool, MetaError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let used: i64 = tx.query_row(
                "SELECT (SELECT COALESCE(SUM(b.size), 0) FROM refs r JOIN blobs b ON b.id = r.id WHERE r.owner = ?1)
                      + (SELECT COALESCE(SUM(length), 0) FROM uploads WHERE owner = ?1 AND result IS NULL)",
                [u.owner],
                |r| r.get(0),
            )?;
            if (used as u64).saturating_add(u.length) > quota {
                return Ok(false);
            }
            tx.execute(
                &format!("INSERT INTO uploads ({UPLOAD_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, NULL, ?10, ?11)"),
                params![
                    u.uid.to_string(),
                    u.owner,
                    u.kind.as_str(),
                    u.length,
                    u.offset,
                    u.sha256.map(hex::encode),
                    u.content_type,
                    u.expires,
                    u.updated,
                    u.staging_key.as_ref().map(|w| w.kid.clone()),
                    u.staging_key.as_ref().map(|w| w.bytes.clone())
                ],
            )?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    pub async fn upload(&self, uid: UploadId) -> Result<Option<Upload>, MetaError> {
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {UPLOAD_COLS} FROM uploads WHERE uid = ?1"),
                [uid.to_string()],
                row_to_upload,
            )
            .optional()
        })
        .await
    }

    pub async fn set_offset(&self, uid: UploadId, offset: u64, now: u64) -> Result<(), MetaError> {
        self.call(move |c| {
            c.execute(
                "UPDATE uploads SET offset = ?2, updated = ?3 WHERE uid = ?1",
                params![uid.to_string(), offset, now],
            )
            .map(drop)
        })
        .await
    }

    pub async fn delete_upload(&self, uid: UploadId) -> Result<(), MetaError> {
        self.call(move |c| {
            c.execute("DELETE FROM uploads WHERE uid = ?1", [uid.to_string()])
                .map(drop)
        })
        .await
    }

    /// Makes an object visible: the blob row (if new), the owner's
    /// reference (a later expiry, or none, wins), and the upload marked done.
    pub async fn commit_object(
        &self,
        info: ObjectInfo,
        owner: Owner,
        expires: Option<u64>,
        uid: UploadId,
    ) -> Result<(), MetaError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            let id = info.id.to_string();
            tx.execute(
                "INSERT OR IGNORE INTO blobs (id, size, created, content_type, kid, wrapped) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    id,
                    info.size,
                    info.created,
                    info.content_type,
                    info.wrapped.as_ref().map(|w| w.kid.clone()),
                    info.wrapped.as_ref().map(|w| w.bytes.clone())
                ],
            )?;
            tx.execute(
                "INSERT INTO refs (id, owner, expires) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id, owner) DO UPDATE SET expires =
                   CASE WHEN refs.expires IS NULL OR excluded.expires IS NULL THEN NULL
                        ELSE MAX(refs.expires, excluded.expires) END",
                params![id, owner, expires],
            )?;
            tx.execute(
                "UPDATE uploads SET result = ?2, offset = length WHERE uid = ?1",
                params![uid.to_string(), id],
            )?;
            tx.commit()
        })
        .await
    }

    /// Removes `owner`'s reference; true if there was one.
    pub async fn delete_ref(&self, id: ObjectId, owner: Owner) -> Result<bool, MetaError> {
        self.call(move |c| {
            c.execute(
                "DELETE FROM refs WHERE id = ?1 AND owner = ?2",
                params![id.to_string(), owner],
            )
            .map(|n| n > 0)
        })
        .await
    }

    /// Drops expired references and returns the blobs no reference holds
    /// any more (their rows are deleted; the caller deletes the blobs).
    pub async fn expire(&self, now: u64) -> Result<Vec<ObjectId>, MetaError> {
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "DELETE FROM refs WHERE expires IS NOT NULL AND expires <= ?1",
                [now],
            )?;
            let ids: Vec<ObjectId> = {
                let mut st = tx.prepare(
                    "SELECT id FROM blobs WHERE id NOT IN (SELECT id FROM refs) LIMIT 10000",
                )?;
                st.query_map([], |r| parse_id(r.get(0)?))?
                    .collect::<rusqlite::Result<_>>()?
            };
            for id in &ids {
                tx.execute("DELETE FROM blobs WHERE id = ?1", [id.to_string()])?;
            }
            tx.commit()?;
            Ok(ids)
        })
        .await
    }

    /// Uploads not finished and idle since before `cutoff`, and finished
    /// ones older than that (their records only serve HEAD after completion).
    pub async fn stale_uploads(&self, cutoff: u64) -> Result<Vec<UploadId>, MetaError> {
        self.call(move |c| {
            let mut st = c.prepare("SELECT uid FROM uploads WHERE updated < ?1 LIMIT 10000")?;
            let v = st
                .query_map([cutoff], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(v.into_iter()
                .filter_map(|s| UploadId::parse(s.as_bytes()).ok())
                .collect())
        })
        .await
    }

    /// Whether a blob row exists (garbage collection of orphan blobs).
    pub async fn has_blob(&self, id: ObjectId) -> Result<bool, MetaError> {
        Ok(self.object(id).await?.is_some())
    }

    /// Wrapped keys not under `active_kid` (rotation), at most `limit`.
    pub async fn keys_to_rewrap(
        &self,
        active_kid: String,
        limit: usize,
    ) -> Result<Vec<(ObjectId, WrappedKey)>, MetaError> {
        self.call(move |c| {
            let mut st = c.prepare(
                "SELECT id, kid, wrapped FROM blobs WHERE kid IS NOT NULL AND kid != ?1 LIMIT ?2",
            )?;
            st.query_map(params![active_kid, limit as i64], |r| {
                Ok((
                    parse_id(r.get(0)?)?,
                    WrappedKey {
                        kid: r.get(1)?,
                        bytes: r.get(2)?,
                    },
                ))
            })?
            .collect()
        })
        .await
    }

    pub async fn set_wrapped(&self, id: ObjectId, w: WrappedKey) -> Result<(), MetaError> {
        self.call(move |c| {
            c.execute(
                "UPDATE blobs SET kid = ?2, wrapped = ?3 WHERE id = ?1",
                params![id.to_string(), w.kid, w.bytes],
            )
            .map(drop)
        })
        .await
    }
}
