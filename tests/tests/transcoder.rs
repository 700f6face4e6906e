//! The transcoder end to end: real media made by the ffmpeg CLI uploaded
//! to the real `palaver serve` as processed objects, the job followed
//! through `GET /v1/media/{id}/job`, the variants downloaded and checked
//! with ffprobe; the hostile corpus fails job by job while the server
//! keeps serving.

use palaver_client::Registration;
use palaver_client::media::request;
use palaver_tests::{Backend, MediaServer, Server, phone};
use palaver_transcoder::MediaKind;
use palaver_transcoder::corpus::{self, VideoSpec};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// Jobs in debug builds on a busy 2-core machine can take a while; this
/// bounds a hang, it is not a speed requirement.
const JOB_PATIENCE: Duration = Duration::from_secs(300);

fn auth(r: &Registration) -> String {
    format!("Bearer {}:{}", r.device.0, r.credential)
}

async fn upload(s: &Server, r: &Registration, ct: &str, bytes: &[u8]) -> String {
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

async fn job(s: &Server, r: &Registration, id: &str) -> (u16, Value) {
    let res = request(
        &format!("{}/v1/media/{id}/job", s.media_url),
        "GET",
        &[("Authorization", &auth(r))],
        &[],
    )
    .await
    .unwrap();
    let v = serde_json::from_slice(&res.body).unwrap_or(Value::Null);
    (res.status, v)
}

/// Polls the job until it is done or failed.
async fn finished(s: &Server, r: &Registration, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let (status, j) = job(s, r, id).await;
        assert_eq!(status, 200, "{j}");
        let p = j["progress"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p), "{j}");
        if j["state"] == "done" || j["state"] == "failed" {
            return j;
        }
        assert!(start.elapsed() < JOB_PATIENCE, "job still {j}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn variant(j: &Value, name: &str, dir: &Path) -> (Value, std::path::PathBuf) {
    let v = j["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {j}"))
        .clone();
    let res = request(v["url"].as_str().unwrap(), "GET", &[], &[])
        .await
        .unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.body.len() as u64, v["size"].as_u64().unwrap());
    assert_eq!(res.header("content-type"), v["content_type"].as_str());
    let path = dir.join(name);
    std::fs::write(&path, &res.body).unwrap();
    (v, path)
}

fn stream<'a>(p: &'a Value, kind: &str) -> Option<&'a Value> {
    p["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_type"] == kind)
}

fn dims(s: &Value) -> (u64, u64) {
    (s["width"].as_u64().unwrap(), s["height"].as_u64().unwrap())
}

#[tokio::test]
async fn video_is_transcoded_with_poster_and_thumbnail() {
    let s = Server::start();
    let (_c, alice) = s.device(&phone()).await;
    let (_d, bob) = s.device(&phone()).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.mp4");
    let spec = VideoSpec {
        width: 1920,
        height: 1080,
        fps: 60,
        secs: 2,
        ..Default::default()
    };
    corpus::video(&input, &spec).unwrap();
    let id = upload(&s, &alice, "video/mp4", &std::fs::read(&input).unwrap()).await;
    // The job belongs to the owner only.
    assert_eq!(job(&s, &bob, &id).await.0, 404);
    let j = finished(&s, &alice, &id).await;
    assert_eq!(j["state"], "done", "{j}");
    assert_eq!(j["progress"], 1.0);
    assert_eq!(j["info"]["probe"]["video"]["width"], 1920);

    let (v, mp4) = variant(&j, "video", dir.path()).await;
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(1280), Some(720))
    );
    let p = corpus::ffprobe(&mp4).unwrap();
    let vs = stream(&p, "video").unwrap();
    assert_eq!(vs["codec_name"], "h264");
    assert_eq!(dims(vs), (1280, 720));
    assert_eq!(vs["r_frame_rate"], "30/1");
    assert_eq!(stream(&p, "audio").unwrap()["codec_name"], "aac");
    let d: f64 = p["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((d - 2.0).abs() < 0.2, "duration {d}");
    assert!(
        corpus::moov_before_mdat(&std::fs::read(&mp4).unwrap()),
        "faststart"
    );

    let (_, thumb) = variant(&j, "thumb", dir.path()).await;
    let t = corpus::ffprobe(&thumb).unwrap();
    assert_eq!(dims(stream(&t, "video").unwrap()), (320, 180));
    let (_, poster) = variant(&j, "poster", dir.path()).await;
    assert_eq!(
        dims(stream(&corpus::ffprobe(&poster).unwrap(), "video").unwrap()),
        (1280, 720)
    );
    assert!(j["info"]["preview"].as_str().is_some_and(|p| !p.is_empty()));

    // Variants are encrypted at rest like every processed object.
    let vid = v["id"].as_str().unwrap();
    let stored = std::fs::read(s.data_dir.join("media/blobs/p").join(&vid[..2]).join(vid)).unwrap();
    assert!(!stored.windows(4).any(|w| w == b"ftyp"));
    // Deleting the source deletes the owner's variants too.
    let del = request(
        &format!("{}/v1/media/{id}", s.media_url),
        "DELETE",
        &[("Authorization", &auth(&alice))],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(del.status, 204);
    let gone = request(
        &format!("{}/v1/media/{vid}", s.media_url),
        "GET",
        &[("Authorization", &auth(&alice))],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(gone.status, 404);
}

#[tokio::test]
async fn rotated_clip_without_audio() {
    let s = Server::start();
    let (_c, alice) = s.device(&phone()).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.mp4");
    corpus::video(
        &input,
        &VideoSpec {
            rotate: Some(90),
            ..Default::default()
        },
    )
    .unwrap();
    let id = upload(
        &s,
        &alice,
        "video/mp4; clip=1",
        &std::fs::read(&input).unwrap(),
    )
    .await;
    let j = finished(&s, &alice, &id).await;
    assert_eq!(j["state"], "done", "{j}");
    let (_, mp4) = variant(&j, "video", dir.path()).await;
    let p = corpus::ffprobe(&mp4).unwrap();
    let vs = stream(&p, "video").unwrap();
    assert_eq!(dims(vs), (360, 640));
    assert!(
        vs.get("side_data_list").is_none(),
        "rotation applied, no matrix left"
    );
    assert!(stream(&p, "audio").is_none());
}

#[tokio::test]
async fn voice_note_becomes_opus_with_a_waveform() {
    voice_note(Backend::Local).await;
}

/// With blobs in object storage, the original is fetched from the bucket
/// for the job and the variants go back into it.
#[tokio::test]
async fn voice_note_on_s3_becomes_opus() {
    voice_note(Backend::S3).await;
}

async fn voice_note(backend: Backend) {
    let s = MediaServer::start(backend, "");
    let (_c, alice) = s.device(&phone()).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.wav");
    corpus::voice(&input, 3).unwrap();
    let id = upload(&s, &alice, "audio/wav", &std::fs::read(&input).unwrap()).await;
    let j = finished(&s, &alice, &id).await;
    assert_eq!(j["state"], "done", "{j}");
    let (_, ogg) = variant(&j, "voice", dir.path()).await;
    let p = corpus::ffprobe(&ogg).unwrap();
    let a = stream(&p, "audio").unwrap();
    assert_eq!(a["codec_name"], "opus");
    assert_eq!(a["channels"], 1);
    assert_eq!(a["sample_rate"], "48000");
    assert_eq!(j["info"]["waveform"].as_array().unwrap().len(), 64);
}

#[tokio::test]
async fn photo_is_turned_upright_and_loses_its_gps_position() {
    let s = Server::start();
    let (_c, alice) = s.device(&phone()).await;
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.jpg");
    corpus::picture(&plain, 2400, 1600).unwrap();
    let photo = corpus::with_exif(&std::fs::read(&plain).unwrap(), 6, true);
    let id = upload(&s, &alice, "image/jpeg", &photo).await;
    let j = finished(&s, &alice, &id).await;
    assert_eq!(j["state"], "done", "{j}");
    let (_, img) = variant(&j, "image", dir.path()).await;
    let p = corpus::ffprobe(&img).unwrap();
    assert_eq!(dims(stream(&p, "video").unwrap()), (1067, 1600));
    let bytes = std::fs::read(&img).unwrap();
    assert!(!bytes.windows(4).any(|w| w == b"Exif"), "metadata stripped");
    assert!(!p.to_string().contains("GPS"));
    let (_, thumb) = variant(&j, "thumb", dir.path()).await;
    assert_eq!(
        dims(stream(&corpus::ffprobe(&thumb).unwrap(), "video").unwrap()),
        (213, 320)
    );
}

#[tokio::test]
async fn hostile_files_fail_their_jobs_and_nothing_else() {
    let s = Server::start();
    let (_c, alice) = s.device(&phone()).await;
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus::hostile(dir.path()).unwrap();
    let mut ids = Vec::new();
    for h in &corpus {
        let bytes = std::fs::read(&h.path).unwrap();
        if bytes.is_empty() {
            continue; // an empty body is refused by the upload itself
        }
        let ct = match h.kind {
            MediaKind::Video => "video/mp4",
            MediaKind::Voice => "audio/ogg",
            MediaKind::Image => "image/jpeg",
        };
        ids.push((h.name, upload(&s, &alice, ct, &bytes).await));
    }
    // A good file uploaded behind them still gets through.
    let good = dir.path().join("ok.png");
    corpus::picture(&good, 64, 64).unwrap();
    let ok = upload(&s, &alice, "image/png", &std::fs::read(&good).unwrap()).await;
    for (name, id) in &ids {
        let j = finished(&s, &alice, id).await;
        assert_eq!(j["state"], "failed", "{name}: {j}");
        let reason = j["reason"].as_str().unwrap_or_default();
        assert!(!reason.is_empty(), "{name}: {j}");
        assert!(j["variants"].as_array().unwrap().is_empty());
    }
    assert_eq!(finished(&s, &alice, &ok).await["state"], "done");
    let (status, _) = palaver_tests::http_get(&s.media_url, "/healthz").await;
    assert_eq!(status, 200);
    let m = s.metrics().await;
    assert!(m.contains("palaver_transcoder_jobs_failed_total"), "{m}");
}

#[tokio::test]
async fn worker_limits_end_jobs_with_a_reason() {
    // A clip that cannot be transcoded in a second, then too little memory
    // for any decoder: both end as failed jobs, the server carries on.
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.mp4");
    let spec = VideoSpec {
        width: 1280,
        height: 720,
        fps: 60,
        secs: 20,
        ..Default::default()
    };
    corpus::video(&big, &spec).unwrap();
    let bytes = std::fs::read(&big).unwrap();
    let media = "[media]\nmax_single_upload_bytes = 268435456\n";

    let s = Server::start_with(&format!("{media}[transcoder]\ntimeout = \"1s\"\n"));
    let (_c, alice) = s.device(&phone()).await;
    let id = upload(&s, &alice, "video/mp4", &bytes).await;
    let j = finished(&s, &alice, &id).await;
    assert_eq!(j["state"], "failed", "{j}");
    assert!(j["reason"].as_str().unwrap().contains("time limit"), "{j}");
    drop(s);

    let s = Server::start_with(&format!(
        "{media}[transcoder]\nmax_memory_bytes = 67108864\nmax_attempts = 1\n"
    ));
    let (_c, alice) = s.device(&phone()).await;
    let id = upload(&s, &alice, "video/mp4", &bytes).await;
    let j = finished(&s, &alice, &id).await;
    assert_eq!(j["state"], "failed", "{j}");
    assert!(!j["reason"].as_str().unwrap().is_empty(), "{j}");
    let (status, _) = palaver_tests::http_get(&s.media_url, "/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn sdk_transcodes_locally_then_seals_and_uploads() {
    use palaver_client::media;
    use palaver_client::transcode;
    let s = Server::start();
    let (_c, alice) = s.device(&phone()).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.mp4");
    corpus::video(
        &input,
        &VideoSpec {
            width: 1920,
            height: 1080,
            ..Default::default()
        },
    )
    .unwrap();
    let (prepared, sent) = transcode::prepare_and_upload(
        &s.media_url,
        alice.device,
        &alice.credential,
        &input,
        MediaKind::Video,
    )
    .await
    .unwrap();
    assert!(prepared.preview.is_some());
    let names: Vec<&str> = sent.iter().map(|p| p.part.name.as_str()).collect();
    assert_eq!(names, ["video", "poster", "thumb"]);
    for p in &sent {
        // The server holds ciphertext only; the recipient opens it.
        let bytes = media::download(&p.uploaded.url).await.unwrap();
        assert_eq!(bytes, p.sealed.bytes);
        let plain = media::open(
            &bytes,
            &p.sealed.media_key,
            &p.sealed.file_sha256,
            &p.sealed.file_enc_sha256,
        )
        .unwrap();
        let path = dir.path().join(&p.part.name);
        std::fs::write(&path, &plain).unwrap();
        let probe = corpus::ffprobe(&path).unwrap();
        let v = stream(&probe, "video").unwrap();
        let want = match p.part.name.as_str() {
            "thumb" => (320, 180),
            _ => (1280, 720),
        };
        assert_eq!(dims(v), want, "{}", p.part.name);
    }
    // Sealed uploads get no server-side job.
    assert_eq!(job(&s, &alice, &sent[0].uploaded.id).await.0, 404);
}

#[tokio::test]
async fn separate_transcoder_process_takes_recorded_jobs() {
    let s = Server::start_with("[transcoder]\nin_process = false\npoll_interval = \"200ms\"\n");
    let (_c, alice) = s.device(&phone()).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    corpus::picture(&input, 640, 480).unwrap();
    let id = upload(&s, &alice, "image/png", &std::fs::read(&input).unwrap()).await;
    // Recorded, not run: the media role has no workers.
    let (status, j) = job(&s, &alice, &id).await;
    assert_eq!(status, 200);
    assert_eq!(j["state"], "queued", "{j}");
    let mut worker = std::process::Command::new(palaver_tests::palaver_bin())
        .arg("--config")
        .arg(s.config.as_ref().unwrap())
        .arg("transcoder")
        .arg("--data-dir")
        .arg(&s.data_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let j = finished(&s, &alice, &id).await;
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(j["state"], "done", "{j}");
    let (_, img) = variant(&j, "image", dir.path()).await;
    assert_eq!(
        dims(stream(&corpus::ffprobe(&img).unwrap(), "video").unwrap()),
        (640, 480)
    );
}
