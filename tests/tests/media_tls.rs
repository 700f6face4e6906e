//! HTTPS on the media listener (`media.tls_listen`, the `[tls]`
//! certificate), against the real binary: uploads (one request and tus),
//! downloads with ranges, ETags and conditional GETs, keep-alive, sealed
//! and server-encrypted objects, with a rustls client and with curl; a
//! wrong host name and an out-of-date certificate refused by both; the
//! plain listener and the main listener's media proxy still serving.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use palaver_client::Registration;
use palaver_client::media::{Response, parse_response};
use palaver_client::rustls::pki_types::ServerName;
use palaver_client::rustls::{self, ClientConfig};
use palaver_tests::pki::{Pki, wss_device};
use palaver_tests::{Server, http_get};
use sha2::{Digest, Sha256};
use std::process::Command;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MEDIA_TLS: &str = "[media]\ntls_listen = \"127.0.0.1:0\"\n";

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn auth(r: &Registration) -> String {
    format!("Bearer {}:{}", r.device.0, r.credential)
}

fn json(r: &Response) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("not JSON ({})", r.status))
}

/// The media store's HTTPS `IP:PORT`.
fn media_tls(s: &Server) -> String {
    s.media_tls_addr.clone().expect("media tls listener")
}

/// A TLS connection to `addr` presenting `name` (no resumption).
async fn connect(
    addr: &str,
    name: &str,
    config: &Arc<ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut config = (**config).clone();
    config.resumption = rustls::client::Resumption::disabled();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// One request over rustls (`Connection: close`), the whole response.
async fn https(
    s: &Server,
    config: &Arc<ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut tls = connect(&media_tls(s), "localhost", config).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw).await.unwrap();
    parse_response(&raw, method == "HEAD").unwrap()
}

/// The path (and query) of an absolute URL on `base`.
fn path_of(url: &str, base: &str) -> String {
    url.strip_prefix(base)
        .unwrap_or_else(|| panic!("{url} is not on {base}"))
        .to_owned()
}

#[tokio::test]
async fn https_downloads_and_uploads_with_rustls() {
    let pki = Pki::new();
    pki.issue(false);
    let s = Server::start_with(&pki.config(MEDIA_TLS));
    let config = pki.client_config();
    let (_a, alice) = wss_device(&s, &config).await;
    let a = auth(&alice);
    let base = format!("https://{}", media_tls(&s));

    // One-request upload of a sealed object larger than the inline limit:
    // the download takes the file path (pread + encrypt over TLS).
    let body = data(1_500_000, 1);
    let put = format!("/v1/media/sealed/{}", sha_hex(&body));
    let r = https(&s, &config, "PUT", &put, &[("Authorization", &a)], &body).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let url = json(&r)["url"].as_str().unwrap().to_owned();
    let path = path_of(&url, &base);

    let r = https(&s, &config, "GET", &path, &[], &[]).await;
    assert_eq!((r.status, r.body.len()), (200, body.len()));
    assert!(r.body == body, "the body arrived intact");
    let etag = r.header("etag").unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", sha_hex(&body)));

    let h = https(&s, &config, "HEAD", &path, &[], &[]).await;
    assert_eq!(h.header("content-length"), Some("1500000"));
    assert!(h.body.is_empty());
    let r = https(
        &s,
        &config,
        "GET",
        &path,
        &[("Range", "bytes=1000-1399999")],
        &[],
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some("bytes 1000-1399999/1500000")
    );
    assert!(r.body == body[1000..1_400_000]);
    let r = https(&s, &config, "GET", &path, &[("Range", "bytes=0-0,-3")], &[]).await;
    assert_eq!(r.status, 206);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("multipart/byteranges")
    );
    let r = https(&s, &config, "GET", &path, &[("If-None-Match", &etag)], &[]).await;
    assert_eq!((r.status, r.body.len()), (304, 0));

    keep_alive_over_tls(&s, &config, &path, &body).await;
    processed_over_tls(&s, &config, &a).await;
    tus_over_tls(&s, &config, &a).await;

    // The plain listener serves the same object (sendfile).
    let plain = format!("{}{}", s.media_url, path);
    let r = palaver_client::media::request(&plain, "GET", &[], &[])
        .await
        .unwrap();
    assert!(r.status == 200 && r.body == body);
}

/// Two requests on one TLS connection, sent together.
async fn keep_alive_over_tls(s: &Server, config: &Arc<ClientConfig>, path: &str, body: &[u8]) {
    let mut tls = connect(&media_tls(s), "localhost", config).await.unwrap();
    let two = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-99\r\n\r\n\
         GET {path} HTTP/1.1\r\nHost: x\r\nRange: bytes=100-199\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(two.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw).await.unwrap();
    let first_len = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4 + 100)
        .unwrap();
    let first = parse_response(&raw[..first_len], false).unwrap();
    let second = parse_response(&raw[first_len..], false).unwrap();
    assert!(first.status == 206 && first.body == body[..100]);
    assert!(second.status == 206 && second.body == body[100..200]);
}

/// A server-encrypted object over TLS: decrypted segments, re-encrypted
/// as TLS records.
async fn processed_over_tls(s: &Server, config: &Arc<ClientConfig>, a: &str) {
    let plain = data(300_000, 2);
    let digest = format!("sha-256=:{}:", STANDARD.encode(Sha256::digest(&plain)));
    let headers = [
        ("Authorization", a),
        ("Content-Type", "image/png"),
        ("Content-Digest", digest.as_str()),
    ];
    let r = https(s, config, "POST", "/v1/media", &headers, &plain).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let base = format!("https://{}", media_tls(s));
    let path = path_of(json(&r)["url"].as_str().unwrap(), &base);
    let r = https(s, config, "GET", &path, &[], &[]).await;
    assert!(r.status == 200 && r.body == plain);
    let r = https(
        s,
        config,
        "GET",
        &path,
        &[("Range", "bytes=65530-200000")],
        &[],
    )
    .await;
    assert!(r.status == 206 && r.body == plain[65530..200_001]);
}

/// A tus upload in two PATCHes over TLS.
async fn tus_over_tls(s: &Server, config: &Arc<ClientConfig>, a: &str) {
    let body = data(200_000, 3);
    let meta = format!(
        "kind {},sha256 {}",
        STANDARD.encode("sealed"),
        STANDARD.encode(sha_hex(&body))
    );
    let tus = [("Authorization", a), ("Tus-Resumable", "1.0.0")];
    let create = [
        tus[0],
        tus[1],
        ("Upload-Length", "200000"),
        ("Upload-Metadata", &meta),
    ];
    let r = https(s, config, "POST", "/v1/uploads", &create, &[]).await;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let loc = r.header("location").unwrap().to_owned();
    for (from, to) in [(0, 120_000), (120_000, 200_000)] {
        let off = from.to_string();
        let patch = [
            tus[0],
            tus[1],
            ("Content-Type", "application/offset+octet-stream"),
            ("Upload-Offset", off.as_str()),
        ];
        let r = https(s, config, "PATCH", &loc, &patch, &body[from..to]).await;
        assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("upload-offset"), Some(to.to_string().as_str()));
    }
    let by_id = format!("/v1/media/{}", sha_hex(&body));
    let r = https(s, config, "GET", &by_id, &[("Authorization", a)], &[]).await;
    assert!(r.status == 200 && r.body == body);
}

/// `curl` against the media store's HTTPS listener as `name`, trusting the
/// test CA; returns the exit status and stdout.
fn curl(s: &Server, pki: &Pki, name: &str, args: &[&str], path: &str) -> (i32, String) {
    let addr = media_tls(s);
    let port = addr.rsplit(':').next().unwrap();
    curl_at(pki, name, port, args, path)
}

fn curl_at(pki: &Pki, name: &str, port: &str, args: &[&str], path: &str) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(pki.path("ca.pem"))
        .arg("--resolve")
        .arg(format!("{name}:{port}:127.0.0.1"))
        .args(args)
        .arg(format!("https://{name}:{port}{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn curl_over_https_and_the_media_proxy() {
    let pki = Pki::new();
    pki.issue(false);
    let s = Server::start_with(&pki.config(MEDIA_TLS));
    let config = pki.client_config();
    let (_a, alice) = wss_device(&s, &config).await;
    let a = format!("Authorization: {}", auth(&alice));
    let body = data(700_000, 4);
    let file = pki.path("upload.bin");
    std::fs::write(&file, &body).unwrap();
    let file = file.to_str().unwrap().to_owned();

    // Upload with tus: create, then one PATCH with the whole file.
    let meta = format!(
        "Upload-Metadata: kind {},sha256 {}",
        STANDARD.encode("sealed"),
        STANDARD.encode(sha_hex(&body))
    );
    let tus = ["-H", &a, "-H", "Tus-Resumable: 1.0.0"];
    let mut create = tus.to_vec();
    create.extend(["-X", "POST", "-H", "Upload-Length: 700000", "-H", &meta]);
    create.extend(["-o", "/dev/null", "-w", "%{http_code} %header{location}"]);
    let (code, out) = curl(&s, &pki, "localhost", &create, "/v1/uploads");
    assert_eq!(code, 0, "{out}");
    let loc = out.strip_prefix("201 ").expect("created").to_owned();
    let mut patch = tus.to_vec();
    let data_arg = format!("@{file}");
    patch.extend(["-X", "PATCH", "-H", "Upload-Offset: 0"]);
    patch.extend(["-H", "Content-Type: application/offset+octet-stream"]);
    patch.extend([
        "--data-binary",
        &data_arg,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
    ]);
    assert_eq!(curl(&s, &pki, "localhost", &patch, &loc), (0, "204".into()));

    // Download, a range, the ETag and a conditional GET.
    let by_id = format!("/v1/media/{}", sha_hex(&body));
    let out_file = pki.path("download.bin");
    let out_arg = out_file.to_str().unwrap();
    let get = ["-H", &a, "-o", out_arg, "-w", "%{http_code} %header{etag}"];
    let (code, out) = curl(&s, &pki, "localhost", &get, &by_id);
    assert_eq!(code, 0, "{out}");
    let etag = format!("\"{}\"", sha_hex(&body));
    assert_eq!(out, format!("200 {etag}"));
    assert!(std::fs::read(&out_file).unwrap() == body);
    let range = ["-H", &a, "-r", "500000-500009", "-w", " %{http_code}"];
    let (_, out) = curl(&s, &pki, "localhost", &range, &by_id);
    let want = format!("{} 206", String::from_utf8_lossy(&body[500_000..500_010]));
    assert!(out.as_bytes() == want.as_bytes(), "range over curl");
    let inm = format!("If-None-Match: {etag}");
    let cond = [
        "-H",
        &a,
        "-H",
        &inm,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
    ];
    assert_eq!(
        curl(&s, &pki, "localhost", &cond, &by_id),
        (0, "304".into())
    );

    // A name the certificate does not cover: curl refuses (60: peer
    // certificate cannot be authenticated).
    let (code, _) = curl(&s, &pki, "wrong.example", &["-o", "/dev/null"], "/healthz");
    assert_eq!(code, 60);
    let err = connect(&media_tls(&s), "wrong.example", &config).await;
    assert!(err.is_err(), "rustls refuses the wrong name");

    // The main listener's media proxy (HTTPS there too) reaches the store.
    let main_port = s.main_port().to_string();
    let via_proxy = [
        "-H",
        &a,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download}",
    ];
    let (code, out) = curl_at(&pki, "localhost", &main_port, &via_proxy, &by_id);
    assert_eq!((code, out.as_str()), (0, "200 700000"));
    let (status, _) = http_get(&s.media_url, "/healthz").await;
    assert_eq!(status, 200, "the plain listener still answers");
}

#[tokio::test]
async fn an_out_of_date_certificate_is_refused_by_clients() {
    let pki = Pki::new();
    pki.issue(true);
    let s = Server::start_with(&pki.config(MEDIA_TLS));
    let Err(err) = connect(&media_tls(&s), "localhost", &pki.client_config()).await else {
        panic!("rustls accepted an expired certificate");
    };
    assert!(err.to_string().to_lowercase().contains("expired"), "{err}");
    let (code, _) = curl(&s, &pki, "localhost", &["-o", "/dev/null"], "/healthz");
    assert_eq!(code, 60, "curl refuses it too");
}
