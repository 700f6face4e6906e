//! The media store end to end: uploads (one request and tus), downloads with
//! every HTTP behaviour the issue lists, bad input, timeouts and the
//! connection cap, against the real `palaver` binary. The tests that touch
//! storage run twice: on the local folder (`_local`) and on S3 (`_s3`, a
//! Garage node started for the test; tests/tests/media_s3.rs has the
//! S3-only ones).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use palaver_client::Registration;
use palaver_client::media::{self as m, Response, request};
use palaver_tests::{Backend, MediaServer, PATIENCE, Server, phone};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CAP_SECRET: &str = "a capability secret for the tests, 40+ chars";

fn auth(r: &Registration) -> String {
    format!("Bearer {}:{}", r.device.0, r.credential)
}

fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

async fn put_sealed(s: &Server, r: &Registration, bytes: &[u8]) -> Response {
    let url = format!("{}/v1/media/sealed/{}", s.media_url, sha_hex(bytes));
    request(&url, "PUT", &[("Authorization", &auth(r))], bytes)
        .await
        .unwrap()
}

fn json(r: &Response) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|_| {
        panic!(
            "not JSON ({}): {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        )
    })
}

/// Sends raw bytes, reads until the server closes (or `PATIENCE`).
async fn raw(s: &Server, bytes: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(s.media_url.trim_start_matches("http://"))
        .await
        .unwrap();
    c.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, c.read_to_end(&mut out)).await;
    out
}

fn status_of(raw: &[u8]) -> u16 {
    std::str::from_utf8(&raw[9..12]).unwrap().parse().unwrap()
}

async fn get(url: &str, headers: &[(&str, &str)]) -> Response {
    request(url, "GET", headers, &[]).await.unwrap()
}

/// A test that runs on both backends.
macro_rules! both_backends {
    ($name:ident, $local:ident, $s3:ident) => {
        #[tokio::test]
        async fn $local() {
            $name(Backend::Local).await
        }
        #[tokio::test]
        async fn $s3() {
            $name(Backend::S3).await
        }
    };
}

both_backends!(
    sealed_round_trip,
    sealed_round_trip_local,
    sealed_round_trip_s3
);

/// Sealed round trip with the SDK, forwards and references; the blob leaves
/// the store with the last reference.
async fn sealed_round_trip(b: Backend) {
    let s = MediaServer::start(b, "");
    let (_a, alice) = s.device(&phone()).await;
    let (_b, bob) = s.device(&phone()).await;
    let plain = data(300_000, 1);
    let sealed = m::seal(&plain);
    let up = m::upload_sealed(&s.media_url, alice.device, &alice.credential, &sealed)
        .await
        .unwrap();
    assert_eq!(up.id, sealed.object_id(), "content-addressed");
    assert_eq!(up.size, sealed.bytes.len() as u64);
    assert_eq!(
        s.stored(&up.id).as_ref(),
        Some(&sealed.bytes),
        "stored as uploaded"
    );

    let got = m::download(&up.url).await.unwrap();
    let opened = m::open(
        &got,
        &sealed.media_key,
        &sealed.file_sha256,
        &sealed.file_enc_sha256,
    )
    .unwrap();
    assert_eq!(opened, plain);

    // Bob forwards it: the same blob, his own reference.
    let again = m::upload_sealed(&s.media_url, bob.device, &bob.credential, &sealed)
        .await
        .unwrap();
    assert_eq!(again.id, up.id);
    let by_id = format!("{}/v1/media/{}", s.media_url, up.id);
    let r = get(&by_id, &[("Authorization", &auth(&bob))]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, sealed.bytes);
    assert_eq!(
        get(&by_id, &[]).await.status,
        401,
        "no credentials, no link"
    );

    // Alice deletes her reference; Bob's keeps the blob.
    let del = |r: &Registration| {
        let a = auth(r);
        let url = by_id.clone();
        async move {
            request(&url, "DELETE", &[("Authorization", &a)], &[])
                .await
                .unwrap()
                .status
        }
    };
    assert_eq!(del(&alice).await, 204);
    assert_eq!(del(&alice).await, 404);
    assert_eq!(get(&up.url, &[]).await.status, 200);
    assert_eq!(s.blob_paths().len(), 1, "one blob for both references");
    assert_eq!(del(&bob).await, 204);
    assert_eq!(
        get(&up.url, &[]).await.status,
        404,
        "gone with the last reference"
    );
    assert!(s.blob_paths().is_empty(), "and deleted from the store");
}

both_backends!(
    processed_round_trip,
    processed_round_trip_is_encrypted_at_rest_local,
    processed_round_trip_is_encrypted_at_rest_s3
);

async fn processed_round_trip(b: Backend) {
    let s = MediaServer::start(b, "");
    let (_a, alice) = s.device(&phone()).await;
    let (_b, bob) = s.device(&phone()).await;
    let plain = data(200_000, 2);
    let digest = format!("sha-256=:{}:", STANDARD.encode(Sha256::digest(&plain)));
    let r = request(
        &format!("{}/v1/media", s.media_url),
        "POST",
        &[
            ("Authorization", &auth(&alice)),
            ("Content-Type", "image/png"),
            ("Content-Digest", &digest),
        ],
        &plain,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let j = json(&r);
    let id = j["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    let url = j["url"].as_str().unwrap().to_owned();

    let r = get(&url, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, plain);
    assert_eq!(r.header("content-type"), Some("image/png"));

    // Across the first segment boundary (64 KiB).
    let r = get(&url, &[("Range", "bytes=65530-65545")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &plain[65530..65546]);
    let r = get(&url, &[("Range", "bytes=1000-150000")]).await;
    assert_eq!(r.body, &plain[1000..150_001]);
    // Several ranges over several segments.
    let r = get(&url, &[("Range", "bytes=0-0,70000-70009,-3")]).await;
    assert_eq!(r.status, 206);
    for (i, part) in [&plain[0..1], &plain[70000..70010], &plain[199_997..]]
        .iter()
        .enumerate()
    {
        assert!(
            r.body
                .windows(part.len() + 4)
                .any(|w| w.starts_with(b"\r\n\r\n") && &w[4..] == *part),
            "part {i}"
        );
    }

    // At rest: segments with tags, no plaintext.
    let stored = s.stored(&id).expect("stored");
    assert_eq!(stored.len(), 200_000 + 4 * 16);
    assert!(!stored.windows(32).any(|w| w == &plain[1000..1032]));

    // Processed objects are the owner's: others see nothing.
    let by_id = format!("{}/v1/media/{id}", s.media_url);
    assert_eq!(
        get(&by_id, &[("Authorization", &auth(&bob))]).await.status,
        404
    );
    assert_eq!(
        get(&by_id, &[("Authorization", &auth(&alice))])
            .await
            .status,
        200
    );

    // A wrong digest: 460, nothing stored.
    let r = request(
        &format!("{}/v1/media", s.media_url),
        "POST",
        &[
            ("Authorization", &auth(&alice)),
            ("Content-Type", "image/png"),
            ("Content-Digest", &digest),
        ],
        &plain[1..],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 460);
    let usage = get(
        &format!("{}/v1/media/usage", s.media_url),
        &[("Authorization", &auth(&alice))],
    )
    .await;
    assert_eq!(json(&usage)["used"], 200_000);
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

both_backends!(
    resumable_upload,
    resumable_upload_survives_a_dropped_connection_local,
    resumable_upload_survives_a_dropped_connection_s3
);

async fn resumable_upload(b: Backend) {
    let s = MediaServer::start(b, "[media]\nmax_single_upload_bytes = 100000\n");
    let (_a, alice) = s.device(&phone()).await;
    let a = auth(&alice);
    let body = data(300_000, 3);

    // Too big for one request: the documented 413 points to /v1/uploads.
    assert_eq!(put_sealed(&s, &alice, &body).await.status, 413);

    let r = request(&format!("{}/v1/uploads", s.media_url), "OPTIONS", &[], &[])
        .await
        .unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(r.header("tus-version"), Some("1.0.0"));
    assert_eq!(
        r.header("tus-extension"),
        Some("creation,termination,checksum")
    );

    let meta = format!(
        "kind {},sha256 {}",
        STANDARD.encode("sealed"),
        STANDARD.encode(sha_hex(&body))
    );
    let r = tus(
        &s,
        "POST",
        "/v1/uploads",
        &a,
        &[("Upload-Length", "300000"), ("Upload-Metadata", &meta)],
        &[],
    )
    .await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let loc = r.header("location").unwrap().to_owned();

    // Half the body, then the connection drops.
    let mut c = TcpStream::connect(s.media_url.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nAuthorization: {a}\r\nTus-Resumable: 1.0.0\r\n\
         Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: 300000\r\n\r\n"
    );
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(&body[..150_000]).await.unwrap();
    c.flush().await.unwrap();
    drop(c);

    // The server keeps what arrived; HEAD shows the progress.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let offset = loop {
        let r = tus(&s, "HEAD", &loc, &a, &[], &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(r.header("upload-length"), Some("300000"));
        let off: usize = r.header("upload-offset").unwrap().parse().unwrap();
        if off == 150_000 {
            break off;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "offset stuck at {off}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Not visible yet.
    let id = sha_hex(&body);
    let by_id = format!("{}/v1/media/{id}", s.media_url);
    assert_eq!(get(&by_id, &[("Authorization", &a)]).await.status, 404);

    // A chunk with a wrong checksum is refused and not kept.
    let rest = &body[offset..];
    let bad = format!("sha256 {}", STANDARD.encode([0u8; 32]));
    let patch = |sum: String, off: usize, bytes: &'static [u8]| {
        let (s, a, loc) = (&s, a.clone(), loc.clone());
        async move {
            tus(
                s,
                "PATCH",
                &loc,
                &a,
                &[
                    ("Content-Type", "application/offset+octet-stream"),
                    ("Upload-Offset", &off.to_string()),
                    ("Upload-Checksum", &sum),
                ],
                bytes,
            )
            .await
        }
    };
    let rest: &'static [u8] = Box::leak(rest.to_vec().into_boxed_slice());
    assert_eq!(patch(bad, offset, rest).await.status, 460);
    // A wrong offset is a conflict.
    let good = format!("sha256 {}", STANDARD.encode(Sha256::digest(rest)));
    assert_eq!(patch(good.clone(), 0, rest).await.status, 409);
    let r = patch(good, offset, rest).await;
    assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("upload-offset"), Some("300000"));
    assert_eq!(r.header("palaver-media-id"), Some(id.as_str()));
    let url = r.header("palaver-media-url").unwrap().to_owned();
    assert_eq!(get(&url, &[]).await.body, body);

    // Without Tus-Resumable: 412. Termination: 204, then 404.
    let r = request(
        &format!("{}{loc}", s.media_url),
        "HEAD",
        &[("Authorization", &a)],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 412);
    let r = tus(
        &s,
        "POST",
        "/v1/uploads",
        &a,
        &[("Upload-Length", "10"), ("Upload-Metadata", &meta)],
        &[],
    )
    .await;
    let loc2 = r.header("location").unwrap().to_owned();
    assert_eq!(tus(&s, "DELETE", &loc2, &a, &[], &[]).await.status, 204);
    assert_eq!(tus(&s, "HEAD", &loc2, &a, &[], &[]).await.status, 404);
}

/// Uploads `body` sealed and returns (capability URL, ETag, Last-Modified).
async fn sealed_object(s: &Server, r: &Registration, body: &[u8]) -> (String, String, String) {
    let up = put_sealed(s, r, body).await;
    assert_eq!(up.status, 201);
    let url = json(&up)["url"].as_str().unwrap().to_owned();
    let h = request(&url, "HEAD", &[], &[]).await.unwrap();
    (
        url,
        h.header("etag").unwrap().to_owned(),
        h.header("last-modified").unwrap().to_owned(),
    )
}

both_backends!(
    download_http_semantics,
    download_http_semantics_local,
    download_http_semantics_s3
);

async fn download_http_semantics(b: Backend) {
    let s = MediaServer::start(b, "");
    let (_a, alice) = s.device(&phone()).await;
    let body = data(200_000, 4);
    let (url, etag, lm) = sealed_object(&s, &alice, &body).await;
    assert_eq!(etag, format!("\"{}\"", sha_hex(&body)), "strong ETag");

    let h = request(&url, "HEAD", &[], &[]).await.unwrap();
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
    assert_eq!(h.header("content-length"), Some("200000"));
    assert_eq!(h.header("accept-ranges"), Some("bytes"));
    assert_eq!(h.header("content-type"), Some("application/octet-stream"));
    assert_eq!(h.header("x-content-type-options"), Some("nosniff"));
    let cc = h.header("cache-control").unwrap();
    assert!(
        cc.starts_with("public, max-age=") && cc.ends_with("immutable"),
        "{cc}"
    );
    assert!(h.header("date").is_some());

    let range = |r: &'static str| {
        let url = url.clone();
        async move { get(&url, &[("Range", r)]).await }
    };
    let r = range("bytes=0-9").await;
    assert_eq!(
        (r.status, r.header("content-range")),
        (206, Some("bytes 0-9/200000"))
    );
    assert_eq!(r.body, &body[..10]);
    let r = range("bytes=199990-").await;
    assert_eq!(
        r.header("content-range"),
        Some("bytes 199990-199999/200000")
    );
    assert_eq!(r.body, &body[199_990..]);
    let r = range("bytes=-5").await;
    assert_eq!(r.body, &body[199_995..]);
    let r = range("bytes=0-99999999").await;
    assert_eq!((r.status, r.body.len()), (206, 200_000));

    // Several ranges: multipart/byteranges, each part with its Content-Range.
    let r = range("bytes=0-0,100000-100004").await;
    assert_eq!(r.status, 206);
    let ct = r.header("content-type").unwrap();
    let boundary = ct.strip_prefix("multipart/byteranges; boundary=").unwrap();
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(text.matches(&format!("--{boundary}\r\n")).count(), 2);
    assert!(text.contains("Content-Range: bytes 0-0/200000"));
    assert!(text.contains("Content-Range: bytes 100000-100004/200000"));
    assert!(text.ends_with(&format!("--{boundary}--\r\n")));
    let p2 = r.body.windows(4).rposition(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(&r.body[p2..p2 + 5], &body[100_000..100_005]);
    assert_eq!(
        r.header("content-length").unwrap(),
        r.body.len().to_string()
    );

    // Unsatisfiable, and too many ranges: 416 with Content-Range: bytes */LEN
    // (lighttpd omits it).
    for h in [
        "bytes=200000-".to_string(),
        "bytes=-0".into(),
        format!(
            "bytes={}",
            (0..1000)
                .map(|i| format!("{i}-{i}"))
                .collect::<Vec<_>>()
                .join(",")
        ),
    ] {
        let r = get(&url, &[("Range", &h)]).await;
        assert_eq!(r.status, 416, "{}", &h[..20.min(h.len())]);
        assert_eq!(r.header("content-range"), Some("bytes */200000"));
        assert!(r.body.is_empty());
    }
    // An invalid Range is ignored: the whole object.
    let r = range("bytes=5-1").await;
    assert_eq!((r.status, r.body.len()), (200, 200_000));
    // HEAD ignores Range.
    let r = request(&url, "HEAD", &[("Range", "bytes=0-9")], &[])
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.header("content-length")),
        (200, Some("200000"))
    );

    // If-Range: the current strong ETag or date keeps the range; anything
    // else (another tag, a weak tag) sends everything with 200.
    let weak = format!("W/{etag}");
    for (ir, want) in [
        (etag.as_str(), 206),
        (lm.as_str(), 206),
        ("\"other\"", 200),
        (weak.as_str(), 200),
        ("Mon, 01 Jan 2001 00:00:00 GMT", 200),
    ] {
        let r = get(&url, &[("Range", "bytes=0-9"), ("If-Range", ir)]).await;
        assert_eq!(r.status, want, "If-Range {ir}");
        assert_eq!(r.body.len(), if want == 206 { 10 } else { 200_000 });
    }

    // Conditional GET.
    let r = get(&url, &[("If-None-Match", &etag)]).await;
    assert_eq!((r.status, r.body.len()), (304, 0));
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert!(r.header("cache-control").is_some());
    assert_eq!(get(&url, &[("If-None-Match", &weak)]).await.status, 304);
    assert_eq!(get(&url, &[("If-None-Match", "\"x\"")]).await.status, 200);
    assert_eq!(get(&url, &[("If-Modified-Since", &lm)]).await.status, 304);
    let old = "Mon, 01 Jan 2001 00:00:00 GMT";
    assert_eq!(get(&url, &[("If-Modified-Since", old)]).await.status, 200);
    assert_eq!(get(&url, &[("If-Match", "\"x\"")]).await.status, 412);
    assert_eq!(get(&url, &[("If-Match", &etag)]).await.status, 200);
    assert_eq!(get(&url, &[("If-Match", &weak)]).await.status, 412);
    assert_eq!(get(&url, &[("If-Unmodified-Since", old)]).await.status, 412);
    assert_eq!(get(&url, &[("If-Unmodified-Since", &lm)]).await.status, 200);

    // Content-Disposition when asked for (signed into the link).
    let id = sha_hex(&body);
    let r = request(
        &format!("{}/v1/media/{id}/link?dl=cat.jpg", s.media_url),
        "POST",
        &[("Authorization", &auth(&alice))],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let dl = json(&r)["url"].as_str().unwrap().to_owned();
    let r = get(&dl, &[]).await;
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"cat.jpg\"")
    );
    assert_eq!(
        get(&dl.replace("cat.jpg", "cat.htm"), &[]).await.status,
        403
    );

    // curl, a client nobody here wrote: a range, then a conditional request.
    if let Ok(out) = std::process::Command::new("curl")
        .args(["-s", "-r", "100-199", "-D", "-", &url])
        .output()
    {
        let text = out.stdout;
        let sep = text.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(String::from_utf8_lossy(&text[..sep]).starts_with("HTTP/1.1 206"));
        assert_eq!(&text[sep..], &body[100..200]);
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
            .arg(format!("If-None-Match: {etag}"))
            .arg(&url)
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"304");
    }
}

fn sign(id: &str, exp: u64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(CAP_SECRET.as_bytes()).unwrap();
    mac.update(format!("palaver-media-cap-v1\0{id}\0{exp}\0").as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn bad_input_gets_documented_errors_and_nothing_partial() {
    let s = Server::start_with(&format!(
        "[media]\nquota_bytes = 100000\ncapability_secret = \"{CAP_SECRET}\"\n"
    ));
    let (_a, alice) = s.device(&phone()).await;
    let a = auth(&alice);
    let usage = || {
        let (a, url) = (a.clone(), format!("{}/v1/media/usage", s.media_url));
        async move { json(&get(&url, &[("Authorization", &a)]).await)["used"].as_u64() }
    };

    // Wrong checksum: the path names other bytes.
    let body = data(1000, 5);
    let wrong = sha_hex(b"something else");
    let r = request(
        &format!("{}/v1/media/sealed/{wrong}", s.media_url),
        "PUT",
        &[("Authorization", &a)],
        &body,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 460);
    for id in [&wrong, &sha_hex(&body)] {
        let r = get(
            &format!("{}/v1/media/{id}", s.media_url),
            &[("Authorization", &a)],
        )
        .await;
        assert_eq!(r.status, 404);
    }
    assert_eq!(usage().await, Some(0));

    // Over quota: 507, nothing stored.
    let big = data(150_000, 6);
    assert_eq!(put_sealed(&s, &alice, &big).await.status, 507);
    assert_eq!(usage().await, Some(0));

    // Credentials.
    let r = request(
        &format!("{}/v1/media/sealed/{}", s.media_url, sha_hex(&body)),
        "PUT",
        &[],
        &body,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 401);
    let forged = format!("Bearer {}:not-the-credential", alice.device.0);
    let r = request(
        &format!("{}/v1/media/usage", s.media_url),
        "GET",
        &[("Authorization", &forged)],
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 401);

    // Capability URLs: forged, moved to another object, expired.
    let up = put_sealed(&s, &alice, &body).await;
    assert_eq!(up.status, 201);
    let id = sha_hex(&body);
    let base = format!("{}/v1/media/{id}", s.media_url);
    let exp = 4_000_000_000u64;
    assert_eq!(
        get(&format!("{base}?exp={exp}&sig={}", sign(&id, exp)), &[])
            .await
            .status,
        200
    );
    let r = get(&format!("{base}?exp={exp}&sig={}", sign(&id, exp + 1)), &[]).await;
    assert_eq!(r.status, 403, "forged");
    let other = sha_hex(b"other");
    let r = get(
        &format!(
            "{}/v1/media/{other}?exp={exp}&sig={}",
            s.media_url,
            sign(&id, exp)
        ),
        &[],
    )
    .await;
    assert_eq!(r.status, 403, "bound to the object");
    let r = get(&format!("{base}?exp=1000&sig={}", sign(&id, 1000)), &[]).await;
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.body).contains("expired"));

    // Traversal, encoded traversal, NUL, over-long: refused, never served.
    let long = "a".repeat(3000);
    for (path, want) in [
        ("/v1/media/../../../../etc/passwd".to_string(), [404, 404]),
        ("/v1/media/..%2f..%2f..%2fetc%2fpasswd".into(), [400, 400]),
        (
            "/v1/media/%2e%2e%2f%2e%2e%2fetc%2fpasswd".into(),
            [400, 400],
        ),
        (format!("/v1/media/{}%00", &id[..62]), [400, 400]),
        (format!("/v1/media/{}/../../../etc/passwd", id), [404, 404]),
        (format!("/v1/media/{long}"), [414, 414]),
    ] {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {a}\r\nConnection: close\r\n\r\n"
        );
        let out = raw(&s, req.as_bytes()).await;
        let st = status_of(&out);
        assert!(want.contains(&st), "{path}: {st}");
        assert!(!String::from_utf8_lossy(&out).contains("root:"));
    }
    let out = raw(&s, b"GET /v1/media/ab\0cd HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status_of(&out), 400);

    // A symlink planted in the store is not followed out of it.
    std::fs::write(s.data_dir.join("outside.txt"), b"TOPSECRET").unwrap();
    let planted = data(500, 7);
    assert_eq!(put_sealed(&s, &alice, &planted).await.status, 201);
    let pid = sha_hex(&planted);
    let blob = s.data_dir.join("media/blobs/s").join(&pid[..2]).join(&pid);
    std::fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink(s.data_dir.join("outside.txt"), &blob).unwrap();
    let r = get(
        &format!("{}/v1/media/{pid}", s.media_url),
        &[("Authorization", &a)],
    )
    .await;
    assert_ne!(r.status, 200);
    assert!(!String::from_utf8_lossy(&r.body).contains("TOPSECRET"));

    // A truncated one-request upload leaves nothing behind.
    let used_before = usage().await;
    let t = data(1000, 8);
    let tid = sha_hex(&t);
    let mut c = TcpStream::connect(s.media_url.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "PUT /v1/media/sealed/{tid} HTTP/1.1\r\nHost: x\r\nAuthorization: {a}\r\nContent-Length: 1000\r\n\r\n"
    );
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(&t[..500]).await.unwrap();
    c.shutdown().await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, c.read_to_end(&mut out)).await;
    if !out.is_empty() {
        assert_eq!(status_of(&out), 400);
    }
    let r = get(
        &format!("{}/v1/media/{tid}", s.media_url),
        &[("Authorization", &a)],
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(usage().await, used_before);

    // Chunked bodies are refused (Content-Length is required).
    let out = raw(
        &s,
        format!("PUT /v1/media/sealed/{tid} HTTP/1.1\r\nHost: x\r\nAuthorization: {a}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(status_of(&out), 411);
}

async fn read_until_closed(c: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(PATIENCE, c.read_to_end(&mut out))
        .await
        .expect("the server closed the connection")
        .ok();
    out
}

#[tokio::test]
async fn slow_and_idle_clients_and_the_connection_cap() {
    let s = Server::start_with(
        "[media]\nheader_timeout = \"1s\"\nidle_timeout = \"2s\"\nmax_connections = 3\n",
    );
    let addr = s.media_url.trim_start_matches("http://").to_owned();

    // Slow headers: 408 and closed.
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let out = read_until_closed(&mut slow).await;
    assert_eq!(status_of(&out), 408);

    // Three keep-alive clients fill the cap and go idle.
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut c = TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = c.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        idle.push(c);
    }
    // A new client is still served: an idle connection makes room.
    let out = raw(
        &s,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&out), 200);
    // And the idle ones are closed by the idle timeout.
    for c in &mut idle {
        read_until_closed(c).await;
    }
}

both_backends!(
    expired_objects,
    expired_objects_are_removed_local,
    expired_objects_are_removed_s3
);

async fn expired_objects(b: Backend) {
    let s = MediaServer::start(b, "[media]\nmaintenance_interval = \"200ms\"\n");
    let (_a, alice) = s.device(&phone()).await;
    let body = data(5000, 9);
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3; // time for the checks below before it expires, even on a busy machine
    let url = format!("{}/v1/media/sealed/{}", s.media_url, sha_hex(&body));
    let r = request(
        &url,
        "PUT",
        &[
            ("Authorization", &auth(&alice)),
            ("Palaver-Expires", &soon.to_string()),
        ],
        &body,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201);
    let link = json(&r)["url"].as_str().unwrap().to_owned();
    assert_eq!(get(&link, &[]).await.status, 200);
    let id = sha_hex(&body);
    assert!(s.stored(&id).is_some());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while get(&link, &[]).await.status != 404 {
        assert!(tokio::time::Instant::now() < deadline, "not expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The blob goes right after the metadata (the same maintenance pass).
    while s.stored(&id).is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the blob is deleted from the store"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(s.blob_paths().is_empty());
}

#[tokio::test]
async fn pipelined_requests_and_http_1_0() {
    let s = Server::start();
    // Two requests in one write get two answers, in order, on one connection.
    let out = raw(
        &s,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    let first = text.find("HTTP/1.1 200").expect("first answer");
    let second = text.find("HTTP/1.1 404").expect("second answer");
    assert!(first < second);
    // HTTP/1.0 without keep-alive: answered, then closed.
    let out = raw(&s, b"GET /healthz HTTP/1.0\r\n\r\n").await;
    assert_eq!(status_of(&out), 200);
    assert!(String::from_utf8_lossy(&out).contains("Connection: close"));
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("palaver_media_connections_accepted_total 2"),
        "{metrics}"
    );
}
