//! The transcoder's Redis queue (`transcoder.queue_backend = "redis"`)
//! with the real Redis of scripts/redis.sh and a Garage node: `palaver
//! serve` records and dispatches jobs, separate `palaver transcoder`
//! processes with their own empty data directories run them; a worker
//! killed mid-job is replaced by another; a job that kills its worker
//! every time ends in the dead-letter stream.

use palaver_client::Registration;
use palaver_client::media::request;
use palaver_tests::{Backend, MediaServer, phone, redis_url};
use palaver_transcoder::corpus::{self, VideoSpec};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Bounds a hang on a busy machine; not a speed requirement.
const JOB_PATIENCE: Duration = Duration::from_secs(300);

fn auth(r: &Registration) -> String {
    format!("Bearer {}:{}", r.device.0, r.credential)
}

/// Keys of one test in the shared Redis.
fn cluster() -> String {
    format!("tq{:012x}", rand::random::<u64>() >> 16)
}

/// The `[transcoder]`/`[cluster]` settings the media role and the workers
/// share; `extra` goes into `[transcoder]`.
fn queue_config(cluster: &str, extra: &str) -> String {
    format!(
        "[cluster]\nname = \"{cluster}\"\n\
         [media]\nmax_single_upload_bytes = 268435456\n\
         [transcoder]\nqueue_backend = \"redis\"\nredis_url = \"{}\"\n\
         poll_interval = \"200ms\"\n{extra}",
        redis_url()
    )
}

/// The media role: jobs recorded and queued, none run here.
fn media_role(backend: Backend, cluster: &str, extra: &str) -> MediaServer {
    let cfg = format!("{}in_process = false\n", queue_config(cluster, extra));
    MediaServer::start(backend, &cfg)
}

/// A `palaver transcoder` in its own process group (so that a SIGKILL
/// takes its job's child process too), with its own empty data dir.
struct Worker {
    child: Child,
    dir: tempfile::TempDir,
}

impl Worker {
    fn start(cluster: &str, extra: &str) -> Worker {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("worker.toml");
        std::fs::write(&cfg, queue_config(cluster, extra)).unwrap();
        let child = Command::new(palaver_tests::palaver_bin())
            .arg("--config")
            .arg(&cfg)
            .arg("transcoder")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--admin-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .process_group(0)
            .spawn()
            .unwrap();
        Worker { child, dir }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// SIGKILL to the worker and its job's child process.
    fn kill_all(&mut self) {
        let pgid = format!("-{}", self.child.id());
        let ok = Command::new("kill")
            .args(["-KILL", "--", &pgid])
            .status()
            .unwrap();
        assert!(ok.success());
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn upload(s: &MediaServer, r: &Registration, ct: &str, bytes: &[u8]) -> String {
    let res = request(
        &format!("{}/v1/media", s.media_url),
        "POST",
        &[("Authorization", &auth(r)), ("Content-Type", ct)],
        bytes,
    )
    .await
    .unwrap();
    assert_eq!(res.status, 201, "{}", String::from_utf8_lossy(&res.body));
    let j: Value = serde_json::from_slice(&res.body).unwrap();
    j["id"].as_str().unwrap().to_owned()
}

async fn job(s: &MediaServer, r: &Registration, id: &str) -> Value {
    let res = request(
        &format!("{}/v1/media/{id}/job", s.media_url),
        "GET",
        &[("Authorization", &auth(r))],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(res.status, 200);
    serde_json::from_slice(&res.body).unwrap()
}

/// Polls the job until `done(state)`.
async fn until(s: &MediaServer, r: &Registration, id: &str, done: fn(&str) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let j = job(s, r, id).await;
        if done(j["state"].as_str().unwrap()) {
            return j;
        }
        assert!(start.elapsed() < JOB_PATIENCE, "job still {j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn finished(state: &str) -> bool {
    state == "done" || state == "failed"
}

fn clip(dir: &Path, width: u32, height: u32, secs: u32) -> Vec<u8> {
    let path = dir.join(format!("in-{width}-{secs}.mp4"));
    let spec = VideoSpec {
        width,
        height,
        fps: 30,
        secs,
        ..Default::default()
    };
    corpus::video(&path, &spec).unwrap();
    std::fs::read(path).unwrap()
}

/// Downloads variant `name` and returns ffprobe's view of it.
async fn probe_variant(j: &Value, name: &str, dir: &Path) -> Value {
    let v = j["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {j}"));
    let res = request(v["url"].as_str().unwrap(), "GET", &[], &[])
        .await
        .unwrap();
    assert_eq!(res.status, 200);
    let path = dir.join(name);
    std::fs::write(&path, &res.body).unwrap();
    corpus::ffprobe(&path).unwrap()
}

fn codec_of(p: &Value, kind: &str) -> String {
    p["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_type"] == kind)
        .map(|s| s["codec_name"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn worker_with_its_own_data_dir_transcodes_an_upload_on_s3() {
    let c = cluster();
    let s = media_role(Backend::S3, &c, "");
    let w = Worker::start(&c, "");
    let (_c, alice) = s.device(&phone()).await;
    let dir = tempfile::tempdir().unwrap();
    let id = upload(&s, &alice, "video/mp4", &clip(dir.path(), 640, 360, 2)).await;
    let j = until(&s, &alice, &id, finished).await;
    assert_eq!(j["state"], "done", "{j}\nworker log:\n{}", w.log());
    assert_eq!(j["attempts"], 1, "{j}");
    let p = probe_variant(&j, "video", dir.path()).await;
    assert_eq!(codec_of(&p, "video"), "h264");
    assert_eq!(codec_of(&p, "audio"), "aac");
    assert_eq!(
        codec_of(&probe_variant(&j, "thumb", dir.path()).await, "video"),
        "mjpeg"
    );
    // The worker kept nothing of the media store: no folder, no keys.
    let kept: Vec<_> = walk(&w.data_dir());
    assert!(
        kept.iter()
            .all(|p| !p.contains("media") && !p.ends_with(".key")),
        "{kept:?}"
    );
    // The variants are objects in the bucket, encrypted like the rest.
    let blobs = s.blob_paths();
    assert!(blobs.len() >= 4, "{blobs:?}");
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        out.push(p.display().to_string());
        if p.is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

#[tokio::test]
async fn job_of_a_killed_worker_is_finished_by_another() {
    let c = cluster();
    // A job takes seconds (many on a loaded machine: the time limit is
    // generous); a taken job idle for longer than it is reclaimed.
    let extra = "timeout = \"45s\"\nreclaim_after = \"50s\"\n";
    let s = media_role(Backend::S3, &c, extra);
    let mut first = Worker::start(&c, extra);
    let (_c, alice) = s.device(&phone()).await;
    let dir = tempfile::tempdir().unwrap();
    let id = upload(&s, &alice, "video/mp4", &clip(dir.path(), 1280, 720, 5)).await;
    let j = until(&s, &alice, &id, |st| st != "queued").await;
    assert_eq!(j["state"], "running", "{j}");
    first.kill_all();
    let second = Worker::start(&c, extra);
    let j = until(&s, &alice, &id, finished).await;
    assert_eq!(j["state"], "done", "{j}\nworker log:\n{}", second.log());
    // The first run died; the second one's variants were committed.
    assert_eq!(j["attempts"], 2, "{j}");
    assert!(second.log().contains("took over a job"), "{}", second.log());
    let p = probe_variant(&j, "video", dir.path()).await;
    assert_eq!(codec_of(&p, "video"), "h264");
    let mut r = redis().await;
    let pending: i64 = redis::cmd("XLEN")
        .arg(format!("{c}:transcode:jobs"))
        .query_async(&mut r)
        .await
        .unwrap();
    assert_eq!(pending, 0, "the job entry is acknowledged and gone");
}

#[tokio::test]
async fn poison_job_lands_in_the_dead_letter_stream() {
    let c = cluster();
    // One CPU second is not enough for this clip: every run's worker
    // process dies of SIGXCPU, a crash worth retrying, twice.
    let extra = "max_attempts = 2\nmax_cpu_secs = 1\ntimeout = \"60s\"\nreclaim_after = \"90s\"\n";
    let s = media_role(Backend::Local, &c, extra);
    let w = Worker::start(&c, extra);
    let (_c, alice) = s.device(&phone()).await;
    let dir = tempfile::tempdir().unwrap();
    let id = upload(&s, &alice, "video/mp4", &clip(dir.path(), 1280, 720, 20)).await;
    let j = until(&s, &alice, &id, finished).await;
    assert_eq!(j["state"], "failed", "{j}\nworker log:\n{}", w.log());
    let reason = j["reason"].as_str().unwrap();
    assert!(reason.contains("gave up after 2 attempts"), "{j}");
    assert!(reason.contains("the worker failed"), "{j}");
    assert_eq!(j["attempts"], 2, "{j}");
    let mut r = redis().await;
    let dead: redis::Value = redis::cmd("XRANGE")
        .arg(format!("{c}:transcode:dead"))
        .arg("-")
        .arg("+")
        .query_async(&mut r)
        .await
        .unwrap();
    let text = format!("{dead:?}");
    assert!(text.contains(&id), "{text}");
    let (_, m) = palaver_tests::http_get(&worker_admin(&w), "/metrics").await;
    assert!(
        m.contains("palaver_transcoder_jobs_dead_lettered_total 1"),
        "{m}"
    );
    assert!(m.contains("palaver_transcoder_jobs_retried_total 1"), "{m}");
}

/// The worker's admin listener, from its log.
fn worker_admin(w: &Worker) -> String {
    let log = w.log();
    let addr = log
        .lines()
        .find_map(|l| {
            l.split("admin_addr=")
                .nth(1)
                .map(|a| a.split_whitespace().next().unwrap_or("").to_owned())
        })
        .unwrap_or_else(|| panic!("no admin address in {log}"));
    format!("http://{addr}")
}

/// The fields of the first entry of a stream.
async fn first_entry(stream: &str) -> HashMap<String, String> {
    let mut r = redis().await;
    let v: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut r)
        .await
        .unwrap();
    v.into_iter().next().expect("an entry").1
}

async fn internal(method: &str, url: &str, token: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let auth = format!("Bearer {token}");
    let r = request(url, method, &[("Authorization", &auth)], body)
        .await
        .unwrap();
    (r.status, r.body)
}

#[tokio::test]
async fn internal_endpoint_grants_one_unfinished_job_per_token() {
    let c = cluster();
    let s = media_role(Backend::Local, &c, "");
    let (_c, alice) = s.device(&phone()).await;
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("p.png");
    corpus::picture(&png, 64, 48).unwrap();
    let bytes = std::fs::read(&png).unwrap();
    let id = upload(&s, &alice, "image/png", &bytes).await;
    let other = upload(&s, &alice, "image/png", &bytes).await;
    // No worker yet: the job waits on the stream with its token.
    let e = first_entry(&format!("{c}:transcode:jobs")).await;
    let (job, token, url) = (&e["job"], &e["token"], &e["url"]);
    assert!(*job == id || *job == other);
    let input = format!("{url}/internal/transcode/{job}/input");
    assert_eq!(
        internal("GET", &input, token, &[]).await,
        (200, bytes.clone())
    );
    assert_eq!(internal("GET", &input, "00", &[]).await.0, 401);
    assert_eq!(internal("GET", &input, "", &[]).await.0, 401);
    let not_mine = if *job == id { &other } else { &id };
    let elsewhere = format!("{url}/internal/transcode/{not_mine}/input");
    assert_eq!(internal("GET", &elsewhere, token, &[]).await.0, 401);
    let put = |run: &str, file: &str| format!("{url}/internal/transcode/{job}/{run}/{file}");
    assert_eq!(internal("PUT", &put("1-0", ".x"), token, b"x").await.0, 400);
    assert_eq!(
        internal("PUT", &put("a-b", "x.jpg"), token, b"x").await.0,
        400
    );
    assert_eq!(
        internal("PUT", &put("1-0", "x.jpg"), "ab", b"x").await.0,
        401
    );
    // A worker finishes both jobs; the token opens nothing any more.
    let w = Worker::start(&c, "");
    for j in [&id, &other] {
        let done = until(&s, &alice, j, finished).await;
        assert_eq!(done["state"], "done", "{done}\n{}", w.log());
    }
    assert_eq!(internal("GET", &input, token, &[]).await.0, 410);
    assert_eq!(
        internal("PUT", &put("1-0", "x.jpg"), token, b"x").await.0,
        410
    );

    // A result replayed for a finished job (a worker that lost its ack,
    // a duplicate run) commits nothing: the job keeps its variants.
    let before = committed(&until(&s, &alice, job, finished).await);
    let mut r = redis().await;
    let results = format!("{c}:transcode:results");
    for (kind, extra) in [("done", ("outcome", "{}")), ("failed", ("reason", "late"))] {
        let _: String = redis::cmd("XADD")
            .arg(&results)
            .arg("*")
            .arg(&[("job", job.as_str()), ("kind", kind), ("run", "1-0"), extra])
            .query_async(&mut r)
            .await
            .unwrap();
    }
    // The media role consumes (and deletes) every result it applies.
    let start = Instant::now();
    loop {
        let left: i64 = redis::cmd("XLEN")
            .arg(&results)
            .query_async(&mut r)
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            start.elapsed() < JOB_PATIENCE,
            "{left} results not consumed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(committed(&until(&s, &alice, job, finished).await), before);
}

/// What a commit decides: state, reason, attempts, variant ids (not the
/// signed links, which carry the time).
fn committed(j: &Value) -> Value {
    let ids: Vec<&Value> = j["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["id"])
        .collect();
    serde_json::json!([j["state"], j["reason"], j["attempts"], ids])
}
