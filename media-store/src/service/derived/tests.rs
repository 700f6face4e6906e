//! Jobs and variants against a real local store and SQLite file.

use super::*;
use crate::blob::LocalStore;
use crate::capability::CapabilityKey;
use crate::crypto::MasterKeys;
use crate::meta::Kind;
use crate::service::{BodySource, Limits, NewUpload, read_plain};
use std::sync::Mutex;

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<ObjectId>>);

impl Processor for Recorder {
    fn wants(&self, content_type: &str) -> bool {
        content_type.starts_with("image/")
    }
    fn submit(&self, source: ObjectId) {
        self.0.lock().unwrap().push(source);
    }
}

struct Once(Vec<u8>, usize);

impl BodySource for Once {
    fn read<'a>(
        &'a mut self,
        buf: &'a mut [u8],
    ) -> impl std::future::Future<Output = std::io::Result<usize>> + Send + 'a {
        let n = buf.len().min(self.0.len() - self.1);
        buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
        self.1 += n;
        std::future::ready(Ok(n))
    }
}

async fn upload(m: &Media, owner: u64, ct: &str, data: &[u8]) -> ObjectId {
    let up = m
        .create_upload(
            owner,
            NewUpload {
                kind: Kind::Processed,
                length: data.len() as u64,
                sha256: None,
                content_type: ct.into(),
                expires: None,
            },
        )
        .await
        .unwrap();
    let (_, id) = m
        .append(
            owner,
            up.uid,
            0,
            data.len() as u64,
            &mut Once(data.to_vec(), 0),
            None,
        )
        .await
        .unwrap();
    id.unwrap()
}

fn media(dir: &Path) -> (Media, Arc<Recorder>) {
    let blobs = Arc::new(LocalStore::open(&dir.join("blobs")).unwrap());
    let m = Media::open(
        dir,
        blobs,
        MasterKeys::parse(&MasterKeys::generate_text("k1")).unwrap(),
        CapabilityKey::new(b"test capability secret 32 bytes!"),
        Limits::default(),
    )
    .unwrap();
    let rec = Arc::new(Recorder::default());
    m.set_processor(rec.clone());
    (m, rec)
}

#[tokio::test]
async fn jobs_are_recorded_claimed_and_committed_once() {
    let dir = tempfile::tempdir().unwrap();
    let (m, rec) = media(dir.path());
    let original = b"pretend this is a JPEG".repeat(5000);
    let id = upload(&m, 7, "image/jpeg", &original).await;
    let doc = upload(&m, 7, "application/pdf", b"%PDF").await;
    assert_eq!(
        *rec.0.lock().unwrap(),
        vec![id],
        "only media types get a job"
    );
    assert!(m.job_view(doc).await.unwrap().is_none());
    assert_eq!(m.pending_jobs().await.unwrap(), vec![id]);
    assert_eq!(m.job_view(id).await.unwrap().unwrap().state, "queued");

    let t = m.claim_job(id, 0).await.unwrap().unwrap();
    assert_eq!((t.owner, t.attempts), (7, 1));
    // Running and fresh: nobody else takes it; a dead run's job is taken over.
    assert!(m.claim_job(id, 0).await.unwrap().is_none());
    let t = m.claim_job(id, u64::MAX).await.unwrap().unwrap();
    assert_eq!(t.attempts, 2);
    m.job_progress(id, 0.5).await.unwrap();
    assert_eq!(m.job_view(id).await.unwrap().unwrap().progress, 0.5);

    let plain = dir.path().join("plain");
    m.export_plain(id, &plain).await.unwrap();
    assert_eq!(std::fs::read(&plain).unwrap(), original);

    let out = dir.path().join("thumb.jpg");
    std::fs::write(&out, b"a small thumbnail").unwrap();
    let v = NewVariant {
        name: "thumb".into(),
        path: out.clone(),
        content_type: "image/jpeg".into(),
        width: Some(320),
        height: Some(240),
        duration_ms: None,
    };
    let views = m
        .attach_variants(&t, vec![v.clone()], serde_json::json!({"k": 1}))
        .await
        .unwrap();
    let vid = ObjectId::parse(views[0].id.as_bytes()).unwrap();
    assert!(m.is_owner(vid, 7).await.unwrap());
    let e = m.lookup(vid).await.unwrap().unwrap();
    let mut got = Vec::new();
    read_plain(&e, 0, e.info.size, &mut got).unwrap();
    assert_eq!(got, b"a small thumbnail");

    // A retried run cannot commit a second set, and a late failure does
    // not undo the success.
    assert!(
        m.attach_variants(&t, vec![v], serde_json::json!({}))
            .await
            .is_err()
    );
    m.fail_job(id, "late", false).await.unwrap();
    let j = m.job_view(id).await.unwrap().unwrap();
    assert_eq!((j.state.as_str(), j.variants.len()), ("done", 1));
    assert_eq!(j.info, Some(serde_json::json!({"k": 1})));
    assert!(m.pending_jobs().await.unwrap().is_empty());
    assert!(m.claim_job(id, u64::MAX).await.unwrap().is_none());

    // Deleting the original drops the owner's variants with it.
    assert!(m.delete(7, id).await.unwrap());
    assert!(!m.is_owner(vid, 7).await.unwrap());
    assert!(m.lookup(vid).await.unwrap().is_none());
}

#[tokio::test]
async fn failed_and_retried_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _) = media(dir.path());
    let id = upload(&m, 1, "image/png", b"not a png").await;
    m.claim_job(id, 0).await.unwrap().unwrap();
    m.fail_job(id, "worker crashed", true).await.unwrap();
    let j = m.job_view(id).await.unwrap().unwrap();
    assert_eq!(
        (j.state.as_str(), j.reason.as_deref()),
        ("queued", Some("worker crashed"))
    );
    let t = m.claim_job(id, 0).await.unwrap().unwrap();
    assert_eq!(t.attempts, 2);
    m.fail_job(id, "not an image", false).await.unwrap();
    let j = m.job_view(id).await.unwrap().unwrap();
    assert_eq!(
        (j.state.as_str(), j.reason.as_deref()),
        ("failed", Some("not an image"))
    );
    assert!(m.claim_job(id, u64::MAX).await.unwrap().is_none());
}
