//! The media store on S3 only (a Garage node started per test): multipart
//! uploads of objects larger than the part size, resumed after a dropped
//! connection, ranges across part boundaries, and garbage collection of
//! orphan objects in the bucket. tests/tests/media.rs runs the other
//! storage tests on both backends.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use palaver_client::Registration;
use palaver_client::media::{Response, request};
use palaver_tests::{Backend, MediaServer, PATIENCE, Server, phone};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn auth(r: &Registration) -> String {
    format!("Bearer {}:{}", r.device.0, r.credential)
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

async fn tus(
    s: &Server,
    method: &str,
    path: &str,
    a: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut h = vec![("Authorization", a), ("Tus-Resumable", "1.0.0")];
    h.extend_from_slice(extra);
    request(&format!("{}{path}", s.media_url), method, &h, body)
        .await
        .unwrap()
}

async fn offset(s: &Server, loc: &str, a: &str) -> usize {
    let r = tus(s, "HEAD", loc, a, &[], &[]).await;
    assert_eq!(r.status, 200);
    r.header("upload-offset").unwrap().parse().unwrap()
}

/// Uploads `body` with tus: the first PATCH drops its connection after
/// `cut` bytes, the rest goes in a second PATCH from the server's offset.
/// Returns the completing PATCH's answer.
async fn upload_interrupted(
    s: &Server,
    a: &str,
    body: &[u8],
    metadata: &str,
    cut: usize,
) -> Response {
    let len = body.len().to_string();
    let r = tus(
        s,
        "POST",
        "/v1/uploads",
        a,
        &[("Upload-Length", &len), ("Upload-Metadata", metadata)],
        &[],
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let loc = r.header("location").unwrap().to_owned();
    let mut c = TcpStream::connect(s.media_url.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nAuthorization: {a}\r\nTus-Resumable: 1.0.0\r\n\
         Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: {len}\r\n\r\n"
    );
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(&body[..cut]).await.unwrap();
    c.flush().await.unwrap();
    drop(c);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while offset(s, &loc, a).await != cut {
        assert!(
            tokio::time::Instant::now() < deadline,
            "offset never reached {cut}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = tus(
        s,
        "PATCH",
        &loc,
        a,
        &[
            ("Content-Type", "application/offset+octet-stream"),
            ("Upload-Offset", &cut.to_string()),
        ],
        &body[cut..],
    )
    .await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    r
}

fn meta(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k} {}", STANDARD.encode(v)))
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test]
async fn large_objects_go_up_as_multipart_uploads_and_resume() {
    let s = MediaServer::start(Backend::S3, "");
    let g = s.garage.as_ref().unwrap();
    let (_a, alice) = s.device(&phone()).await;
    let a = auth(&alice);

    // Sealed, 11 MiB: three parts of 5 MiB (the test part size).
    let body = data(11 << 20, 7);
    let sha = hex::encode(Sha256::digest(&body));
    let r = upload_interrupted(
        &s,
        &a,
        &body,
        &meta(&[("kind", "sealed"), ("sha256", &sha)]),
        3 << 20,
    )
    .await;
    assert_eq!(r.header("palaver-media-id"), Some(sha.as_str()));
    let key = format!("s/{}/{sha}", &sha[..2]);
    let etag = g.etag(&key).expect("the object is in the bucket");
    assert!(
        etag.ends_with("-3\""),
        "a multipart upload of 3 parts: ETag {etag}"
    );
    let url = r.header("palaver-media-url").unwrap().to_owned();
    let got = request(&url, "GET", &[], &[]).await.unwrap();
    assert_eq!(got.status, 200);
    assert!(got.body == body, "sealed bytes come back unchanged");
    // A range across the first part boundary, streamed from S3.
    let edge = 5 << 20;
    let range = format!("bytes={}-{}", edge - 100, edge + 99);
    let r = request(&url, "GET", &[("Range", &range)], &[])
        .await
        .unwrap();
    assert_eq!(r.status, 206);
    assert!(r.body == body[edge - 100..edge + 100]);

    // Processed, 6 MiB: two parts of encrypted segments.
    let plain = data(6 << 20, 8);
    let m = meta(&[("kind", "processed"), ("content-type", "video/mp4")]);
    let r = upload_interrupted(&s, &a, &plain, &m, 1 << 20).await;
    let id = r.header("palaver-media-id").unwrap().to_owned();
    let key = format!("p/{}/{id}", &id[..2]);
    assert!(g.etag(&key).expect("in the bucket").ends_with("-2\""));
    let stored = g.get(&key).unwrap();
    assert_eq!(
        stored.len(),
        plain.len() + 96 * 16,
        "96 segments, each with its tag"
    );
    assert!(
        !stored.windows(64).any(|w| w == &plain[4096..4160]),
        "no plaintext at rest"
    );
    let url = r.header("palaver-media-url").unwrap().to_owned();
    let r = request(&url, "GET", &[], &[]).await.unwrap();
    assert_eq!(r.header("content-type"), Some("video/mp4"));
    assert!(r.body == plain, "processed bytes come back decrypted");
    // Ranges in the middle decrypt only the segments they touch.
    let r = request(&url, "GET", &[("Range", "bytes=5242000-5243000,-10")], &[])
        .await
        .unwrap();
    assert_eq!(r.status, 206);
    let want = &plain[5_242_000..5_243_001];
    assert!(r.body.windows(want.len()).any(|w| w == want));
    assert!(r.body.windows(10).any(|w| w == &plain[plain.len() - 10..]));

    // A small processed object (served from memory after the first read).
    let small = data(5000, 6);
    let r = request(
        &format!("{}/v1/media", s.media_url),
        "POST",
        &[
            ("Authorization", a.as_str()),
            ("Content-Type", "text/plain"),
        ],
        &small,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201);
    let j: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let url = j["url"].as_str().unwrap();
    for _ in 0..2 {
        let r = request(url, "GET", &[], &[]).await.unwrap();
        assert!(r.body == small);
        let r = request(url, "GET", &[("Range", "bytes=100-199,4990-")], &[])
            .await
            .unwrap();
        assert_eq!(r.status, 206);
        assert!(r.body.windows(100).any(|w| w == &small[100..200]));
        assert!(r.body.windows(10).any(|w| w == &small[4990..]));
    }

    // The three objects are in the bucket, nothing else (no parts left over).
    assert_eq!(s.blob_paths().len(), 3);
}

#[tokio::test]
async fn orphan_objects_in_the_bucket_are_collected() {
    let mut s = MediaServer::start(Backend::S3, "");
    let (_a, alice) = s.device(&phone()).await;
    let body = data(10_000, 9);
    let sha = hex::encode(Sha256::digest(&body));
    let r = request(
        &format!("{}/v1/media/sealed/{sha}", s.media_url),
        "PUT",
        &[("Authorization", &auth(&alice))],
        &body,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201);

    // What a crash between storing and committing leaves: blobs without
    // metadata. And an object that is not a blob of ours at all.
    let g = s.garage.as_ref().unwrap();
    let orphan_sha = hex::encode(Sha256::digest(b"orphan"));
    let orphan = format!("s/{}/{orphan_sha}", &orphan_sha[..2]);
    g.put(&orphan, b"orphan");
    let orphan_p = "p/ab/ab0123456789abcdef0123456789abcd";
    g.put(orphan_p, b"orphan processed");
    g.put("notes/readme.txt", b"not ours");

    // The orphan scan runs at start-up.
    s.server.kill();
    s.server.restart();
    let g = s.garage.as_ref().unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while g.get(&orphan).is_some() || g.get(orphan_p).is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "orphans not collected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut keys = g.keys();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "notes/readme.txt".to_owned(),
            format!("s/{}/{sha}", &sha[..2])
        ],
        "the committed object and foreign keys stay"
    );
    let r = request(
        &format!("{}/v1/media/{sha}", s.media_url),
        "GET",
        &[("Authorization", &auth(&alice))],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body == body);
}

#[tokio::test]
async fn an_unreachable_bucket_stops_the_start_with_a_clear_error() {
    let g = palaver_tests::garage::Garage::start();
    let mut env = g.env(5 << 20);
    for (k, v) in &mut env {
        if k == "PALAVER__MEDIA__S3__BUCKET" {
            *v = "no-such-bucket".into();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(palaver_tests::palaver_bin())
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--media-listen", "127.0.0.1:0"])
        .env("PALAVER__SERVE__TURN", "false")
        .envs(env)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("media.s3.bucket = no-such-bucket"), "{err}");
    assert!(
        !err.contains(palaver_tests::garage::SECRET),
        "the secret is never printed"
    );
}

/// A TCP proxy on 127.0.0.1 in front of Garage that closes the first
/// `drop_first` connections at once (a flaky network or a restarting
/// service) and forwards the others.
fn flaky_proxy(target: &str, drop_first: usize) -> String {
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let target = target.trim_start_matches("http://").to_owned();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(client) = conn else { return };
            if n < drop_first {
                drop(client);
                continue;
            }
            let Ok(server) = TcpStream::connect(&target) else {
                return;
            };
            let pipe = |mut from: TcpStream, mut to: TcpStream| {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(Shutdown::Write);
                });
            };
            pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
            pipe(server, client);
        }
    });
    format!("http://{addr}")
}

/// Runs `palaver serve` against `endpoint` with `max_attempts`; the server
/// if it started, else its error output.
fn serve_via(
    g: &palaver_tests::garage::Garage,
    endpoint: &str,
    max_attempts: u32,
) -> Result<Server, String> {
    let mut env = g.env(5 << 20);
    for (k, v) in &mut env {
        if k == "PALAVER__MEDIA__S3__ENDPOINT" {
            *v = endpoint.to_owned();
        }
    }
    env.push((
        "PALAVER__MEDIA__S3__MAX_ATTEMPTS".into(),
        max_attempts.to_string(),
    ));
    env.push(("PALAVER__MEDIA__S3__INITIAL_BACKOFF".into(), "50ms".into()));
    std::panic::catch_unwind(|| Server::start_with_env("", env))
        .map_err(|e| e.downcast_ref::<String>().cloned().unwrap_or_default())
}

#[tokio::test]
async fn failed_requests_are_retried_with_backoff() {
    let g = palaver_tests::garage::Garage::start();
    // Two connections fail, the third attempt gets through.
    let s = serve_via(&g, &flaky_proxy(&g.endpoint, 2), 3).expect("started after retries");
    let (_a, alice) = s.device(&phone()).await;
    let body = data(70_000, 5);
    let sha = hex::encode(Sha256::digest(&body));
    let r = request(
        &format!("{}/v1/media/sealed/{sha}", s.media_url),
        "PUT",
        &[("Authorization", &auth(&alice))],
        &body,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201);
    assert_eq!(g.get(&format!("s/{}/{sha}", &sha[..2])), Some(body));

    // Without retries the same failure stops the start, with the cause.
    let err = serve_via(&g, &flaky_proxy(&g.endpoint, 1), 1).expect_err("no retries");
    assert!(err.contains("HeadBucket"), "{err}");
}
