//! Service tests against a real local store and SQLite file.

use super::*;
use crate::blob::LocalStore;
use crate::meta::Kind;
use proptest::prelude::*;

/// A body that yields `data` in chunks of `step`, then ends (possibly early).
struct Chunks {
    data: Vec<u8>,
    at: usize,
    step: usize,
}

impl BodySource for Chunks {
    fn read<'a>(
        &'a mut self,
        buf: &'a mut [u8],
    ) -> impl std::future::Future<Output = std::io::Result<usize>> + Send + 'a {
        let n = buf.len().min(self.step).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        std::future::ready(Ok(n))
    }
}

fn body(data: &[u8]) -> Chunks {
    Chunks {
        data: data.to_vec(),
        at: 0,
        step: 7000,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    media: Media,
    path: PathBuf,
}

fn fixture_with(keys: &str, limits: Limits, dir: Option<tempfile::TempDir>) -> Fixture {
    let dir = dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
    let path = dir.path().to_owned();
    let blobs = Arc::new(LocalStore::open(&path.join("blobs")).unwrap());
    let media = Media::open(
        &path,
        blobs,
        MasterKeys::parse(keys).unwrap(),
        CapabilityKey::new(b"test capability secret 32 bytes!"),
        limits,
    )
    .unwrap();
    Fixture {
        _dir: dir,
        media,
        path,
    }
}

fn fixture() -> Fixture {
    fixture_with(&MasterKeys::generate_text("k1"), Limits::default(), None)
}

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

async fn upload(m: &Media, owner: u64, kind: Kind, data: &[u8]) -> Result<ObjectId, UploadError> {
    let up = m
        .create_upload(
            owner,
            NewUpload {
                kind,
                length: data.len() as u64,
                sha256: Some(sha(data)),
                content_type: "image/jpeg".into(),
                expires: None,
            },
        )
        .await?;
    let (_, id) = m
        .append(owner, up.uid, 0, data.len() as u64, &mut body(data), None)
        .await?;
    Ok(id.expect("complete"))
}

fn read_all(e: &Entry) -> Vec<u8> {
    let mut out = Vec::new();
    match e.key {
        Some(_) => read_plain(e, 0, e.info.size, &mut out).unwrap(),
        None => {
            let Blob::File { file, .. } = &e.blob else {
                panic!("a local blob")
            };
            let mut f: &std::fs::File = file;
            f.read_to_end(&mut out).unwrap();
        }
    }
    out
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test]
async fn sealed_is_content_addressed_and_shared() {
    let f = fixture();
    let d = data(100_000);
    let id = upload(&f.media, 1, Kind::Sealed, &d).await.unwrap();
    assert_eq!(id, ObjectId::Sealed(sha(&d)));
    let again = upload(&f.media, 2, Kind::Sealed, &d).await.unwrap();
    assert_eq!(again, id, "a forward re-uses the blob");
    let e = f.media.lookup(id).await.unwrap().unwrap();
    assert_eq!(read_all(&e), d, "stored as sent");
    assert_eq!(f.media.usage(1).await.unwrap(), 100_000);
    assert_eq!(f.media.usage(2).await.unwrap(), 100_000);
    // Deleting one reference keeps the blob for the other owner.
    assert!(f.media.delete(1, id).await.unwrap());
    assert!(!f.media.delete(1, id).await.unwrap());
    assert!(f.media.lookup(id).await.unwrap().is_some());
    assert!(f.media.delete(2, id).await.unwrap());
    assert!(f.media.lookup(id).await.unwrap().is_none());
    assert!(f.media.blobs.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn processed_is_encrypted_at_rest_and_ranges_decrypt() {
    let f = fixture();
    let d = data(3 * crypto::SEGMENT as usize + 123);
    let id = upload(&f.media, 1, Kind::Processed, &d).await.unwrap();
    assert!(!id.is_sealed());
    let raw = std::fs::read(f.path.join("blobs").join(id.blob_path())).unwrap();
    assert_eq!(raw.len() as u64, crypto::stored_len(d.len() as u64));
    assert!(
        !raw.windows(64).any(|w| d.windows(64).next() == Some(w)),
        "no plaintext at rest"
    );
    let e = f.media.lookup(id).await.unwrap().unwrap();
    assert_eq!(read_all(&e), d);
    for (a, b) in [
        (0, 1),
        (65535, 65537),
        (100, 190_000),
        (d.len() - 1, d.len()),
    ] {
        let mut out = Vec::new();
        read_plain(&e, a as u64, b as u64, &mut out).unwrap();
        assert_eq!(out, &d[a..b], "{a}..{b}");
    }
    // Nothing plaintext stays in staging.
    assert_eq!(
        std::fs::read_dir(f.path.join("uploads")).unwrap().count(),
        0
    );
    assert_eq!(std::fs::read_dir(f.path.join("tmp")).unwrap().count(), 0);
}

#[tokio::test]
async fn tampering_is_detected() {
    let f = fixture();
    let d = data(1000);
    let id = upload(&f.media, 1, Kind::Processed, &d).await.unwrap();
    let p = f.path.join("blobs").join(id.blob_path());
    let mut raw = std::fs::read(&p).unwrap();
    raw[10] ^= 0x80;
    std::fs::write(&p, raw).unwrap();
    let e = f.media.lookup(id).await.unwrap().unwrap();
    assert!(read_plain(&e, 0, 10, &mut Vec::new()).is_err());
}

#[tokio::test]
async fn wrong_checksum_leaves_nothing() {
    let f = fixture();
    let d = data(5000);
    for kind in [Kind::Sealed, Kind::Processed] {
        let up = f
            .media
            .create_upload(
                1,
                NewUpload {
                    kind,
                    length: 5000,
                    sha256: Some([0; 32]),
                    content_type: "image/png".into(),
                    expires: None,
                },
            )
            .await
            .unwrap();
        let e = f
            .media
            .append(1, up.uid, 0, 5000, &mut body(&d), None)
            .await
            .unwrap_err();
        assert!(matches!(e, UploadError::ChecksumMismatch), "{e:?}");
        assert!(matches!(
            f.media.upload(1, up.uid).await,
            Err(UploadError::NotFound)
        ));
    }
    assert!(
        f.media
            .lookup(ObjectId::Sealed(sha(&d)))
            .await
            .unwrap()
            .is_none()
    );
    assert!(f.media.blobs.list().await.unwrap().is_empty());
    assert_eq!(f.media.usage(1).await.unwrap(), 0);
}

#[tokio::test]
async fn truncated_chunks_resume_and_chunk_checksums_guard() {
    let f = fixture();
    let d = data(50_000);
    let up = f
        .media
        .create_upload(
            1,
            NewUpload {
                kind: Kind::Sealed,
                length: 50_000,
                sha256: Some(sha(&d)),
                content_type: String::new(),
                expires: None,
            },
        )
        .await
        .unwrap();
    // The connection drops after 20,000 of 50,000 bytes.
    let mut cut = body(&d[..20_000]);
    let e = f
        .media
        .append(1, up.uid, 0, 50_000, &mut cut, None)
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        UploadError::Truncated {
            received: 20_000,
            ..
        }
    ));
    assert_eq!(f.media.upload(1, up.uid).await.unwrap().offset, 20_000);
    // Another owner cannot see or touch it.
    assert!(matches!(
        f.media.upload(2, up.uid).await,
        Err(UploadError::NotFound)
    ));
    // Wrong offset.
    let e = f
        .media
        .append(1, up.uid, 0, 10, &mut body(&d[..10]), None)
        .await
        .unwrap_err();
    assert!(matches!(
        e,
        UploadError::OffsetMismatch {
            expected: 20_000,
            got: 0
        }
    ));
    // A chunk with a wrong checksum is discarded.
    let e = f
        .media
        .append(
            1,
            up.uid,
            20_000,
            10_000,
            &mut body(&d[20_000..30_000]),
            Some(ChunkDigest::Sha256([1; 32])),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, UploadError::ChecksumMismatch));
    assert_eq!(f.media.upload(1, up.uid).await.unwrap().offset, 20_000);
    // A chunk with the right sha1 is kept; the rest completes the upload.
    let s1: [u8; 20] = sha1::Sha1::digest(&d[20_000..30_000]).into();
    let (off, done) = f
        .media
        .append(
            1,
            up.uid,
            20_000,
            10_000,
            &mut body(&d[20_000..30_000]),
            Some(ChunkDigest::Sha1(s1)),
        )
        .await
        .unwrap();
    assert_eq!((off, done), (30_000, None));
    let (_, done) = f
        .media
        .append(1, up.uid, 30_000, 20_000, &mut body(&d[30_000..]), None)
        .await
        .unwrap();
    let id = done.unwrap();
    assert_eq!(read_all(&f.media.lookup(id).await.unwrap().unwrap()), d);
    let u = f.media.upload(1, up.uid).await.unwrap();
    assert_eq!((u.offset, u.result), (50_000, Some(id)));
}

#[tokio::test]
async fn limits_and_quota() {
    let limits = Limits {
        quota: 10_000,
        max_sealed: 8_000,
        ..Limits::default()
    };
    let f = fixture_with(&MasterKeys::generate_text("k"), limits, None);
    let new = |n: u64| NewUpload {
        kind: Kind::Sealed,
        length: n,
        sha256: Some([0; 32]),
        content_type: String::new(),
        expires: None,
    };
    assert!(matches!(
        f.media.create_upload(1, new(9_000)).await,
        Err(UploadError::TooLarge { .. })
    ));
    let first = f.media.create_upload(1, new(6_000)).await.unwrap();
    assert!(matches!(
        f.media.create_upload(1, new(6_000)).await,
        Err(UploadError::OverQuota { .. })
    ));
    // Another account has its own quota; cancelling frees the reservation.
    f.media.create_upload(2, new(6_000)).await.unwrap();
    f.media.cancel(1, first.uid).await.unwrap();
    f.media.create_upload(1, new(6_000)).await.unwrap();
    let mut no_sha = new(10);
    no_sha.sha256 = None;
    assert!(matches!(
        f.media.create_upload(1, no_sha).await,
        Err(UploadError::ChecksumRequired)
    ));
}

#[tokio::test]
async fn expiry_stale_uploads_and_orphans() {
    let f = fixture();
    let d = data(10);
    let up = f
        .media
        .create_upload(
            1,
            NewUpload {
                kind: Kind::Processed,
                length: 10,
                sha256: None,
                content_type: "audio/ogg".into(),
                expires: Some(unix_now() + 100),
            },
        )
        .await
        .unwrap();
    let (_, id) = f
        .media
        .append(1, up.uid, 0, 10, &mut body(&d), None)
        .await
        .unwrap();
    let id = id.unwrap();
    assert_eq!(f.media.sweep(unix_now()).await.unwrap(), 0);
    assert!(f.media.lookup(id).await.unwrap().is_some());
    assert_eq!(f.media.sweep(unix_now() + 101).await.unwrap(), 1);
    assert!(f.media.lookup(id).await.unwrap().is_none());

    let stale = f
        .media
        .create_upload(
            1,
            NewUpload {
                kind: Kind::Sealed,
                length: 10,
                sha256: Some([0; 32]),
                content_type: String::new(),
                expires: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(f.media.clean_uploads(unix_now()).await.unwrap(), 0);
    let later = unix_now() + f.media.limits.upload_ttl.as_secs() + 10;
    assert!(f.media.clean_uploads(later).await.unwrap() >= 1);
    assert!(f.media.upload(1, stale.uid).await.is_err());
    assert!(!f.path.join("uploads").join(stale.uid.to_string()).exists());

    // A blob without a row (crash between put and commit) is collected.
    let orphan = ObjectId::Sealed([9; 32]);
    let staged = f.path.join("tmp/orphan");
    std::fs::write(&staged, b"x").unwrap();
    f.media
        .blobs
        .put(&orphan.blob_path(), &staged)
        .await
        .unwrap();
    assert_eq!(f.media.collect_orphans().await.unwrap(), 1);
    assert!(f.media.blobs.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn master_key_rotation_rewraps_without_rewriting_objects() {
    let k1 = MasterKeys::generate_text("k1");
    let f = fixture_with(&k1, Limits::default(), None);
    let d = data(70_000);
    let id = upload(&f.media, 1, Kind::Processed, &d).await.unwrap();
    let blob_path = f.path.join("blobs").join(id.blob_path());
    let before = std::fs::read(&blob_path).unwrap();
    let Fixture { _dir, media, .. } = f;
    drop(media);
    let rotated = format!("{}{k1}", MasterKeys::generate_text("k2"));
    let f = fixture_with(&rotated, Limits::default(), Some(_dir));
    assert_eq!(read_all(&f.media.lookup(id).await.unwrap().unwrap()), d);
    assert_eq!(f.media.rotate_keys().await.unwrap(), 1);
    assert_eq!(f.media.rotate_keys().await.unwrap(), 0);
    assert_eq!(
        std::fs::read(&blob_path).unwrap(),
        before,
        "object untouched"
    );
    // Now k1 can be retired.
    let Fixture { _dir, media, .. } = f;
    drop(media);
    let k2_only: String = rotated.lines().next().unwrap().to_owned();
    let f = fixture_with(&k2_only, Limits::default(), Some(_dir));
    assert_eq!(read_all(&f.media.lookup(id).await.unwrap().unwrap()), d);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn processed_ranges_match_plaintext(len in 0usize..200_000, a in 0usize..200_000, b in 0usize..200_000) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let f = fixture();
            let d = data(len);
            let id = upload(&f.media, 1, Kind::Processed, &d).await.unwrap();
            let e = f.media.lookup(id).await.unwrap().unwrap();
            let (s, t) = (a.min(b).min(len), a.max(b).min(len));
            let mut out = Vec::new();
            read_plain(&e, s as u64, t as u64, &mut out).unwrap();
            assert_eq!(out, &d[s..t]);
        });
    }
}

#[tokio::test]
async fn processed_uploads_are_encrypted_while_staged_and_resume() {
    let f = fixture();
    let d = data(150_000);
    let up = f
        .media
        .create_upload(
            1,
            NewUpload {
                kind: Kind::Processed,
                length: 150_000,
                sha256: Some(sha(&d)),
                content_type: "video/mp4".into(),
                expires: None,
            },
        )
        .await
        .unwrap();
    let mut cut = body(&d[..70_001]);
    assert!(
        f.media
            .append(1, up.uid, 0, 150_000, &mut cut, None)
            .await
            .is_err()
    );
    let staged = std::fs::read(f.path.join("uploads").join(up.uid.to_string())).unwrap();
    assert_eq!(staged.len(), 70_001);
    assert!(
        !staged.windows(64).any(|w| w == &d[1000..1064]),
        "no plaintext while staged"
    );
    let (_, id) = f
        .media
        .append(1, up.uid, 70_001, 79_999, &mut body(&d[70_001..]), None)
        .await
        .unwrap();
    let e = f.media.lookup(id.unwrap()).await.unwrap().unwrap();
    assert_eq!(read_all(&e), d);
}
