//! TLS on the main listener, against the real binary: the SDK over wss,
//! a rustls client and curl over https; certificates for the wrong name or
//! out of date refused by the clients; TLS 1.1 refused by the server;
//! certificate reload on file change and on SIGHUP without a restart and
//! without dropping open connections; the redirect listener and HSTS; the
//! self-signed development certificate.

use palaver_client::proto::ClientMsgId;
use palaver_client::rustls::pki_types::pem::PemObject;
use palaver_client::rustls::pki_types::{CertificateDer, ServerName};
use palaver_client::rustls::{self, ClientConfig, RootCertStore};
use palaver_client::{Client, Registration, tls};
use palaver_tests::pki::{Pki, fingerprint, wss_device};
use palaver_tests::{PATIENCE, Server, next_envelope};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn port(server: &Server) -> u16 {
    server
        .main_addr
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A full TLS handshake with rustls to the main listener, presenting
/// `name`, then `GET /healthz`. Returns the served certificate's
/// fingerprint. No session resumption: a resumed session shows the
/// certificate of the session it resumes.
async fn probe(server: &Server, name: &str, config: Arc<ClientConfig>) -> std::io::Result<String> {
    let mut tls = handshake(&server.main_addr, name, config).await?;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("ok\n"),
        "{text}"
    );
    Ok(served(&tls))
}

/// A full TLS handshake to `addr`, presenting `name`.
async fn handshake(
    addr: &str,
    name: &str,
    config: Arc<ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut config = (*config).clone();
    config.resumption = rustls::client::Resumption::disabled();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

fn served(tls: &tokio_rustls::client::TlsStream<TcpStream>) -> String {
    let (_, conn) = tls.get_ref();
    fingerprint(&conn.peer_certificates().expect("a certificate")[0])
}

/// `curl` to `https://<name>:<port><path>` resolved to the server, trusting
/// `ca`; returns the exit status and the output with headers.
fn curl(server: &Server, name: &str, path: &str, ca: &Path) -> (i32, String) {
    let p = port(server);
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "20", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{name}:{p}:127.0.0.1"))
        .arg(format!("https://{name}:{p}{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), text)
}

async fn chat(from: &mut Client, to: (&mut Client, &Registration), text: &str) {
    let (client, reg) = to;
    let msg = ClientMsgId::new(format!("m-{}", rand::random::<u32>())).unwrap();
    from.send(
        reg.account,
        &msg,
        vec![(reg.device, text.as_bytes().to_vec())],
    )
    .await
    .unwrap();
    let env = next_envelope(client).await;
    assert_eq!(env.payload.as_deref(), Some(text.as_bytes()));
}

/// Polls `check` until it holds, for at most [`PATIENCE`].
async fn eventually<F, Fut>(server: &Server, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await {
        let log = server.log();
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn wss_and_https_with_a_trusted_certificate() {
    let pki = Pki::new();
    let fp = pki.issue(false);
    let server =
        Server::start_with(&pki.config("hsts = true\nredirect_listen = \"127.0.0.1:0\"\n"));
    assert_eq!(server.tls_sha256.as_deref(), Some(fp.as_str()));
    let config = pki.client_config();

    let (mut alice, _) = wss_device(&server, &config).await;
    let (mut bob, b) = wss_device(&server, &config).await;
    chat(&mut alice, (&mut bob, &b), "over wss").await;

    assert_eq!(
        probe(&server, "localhost", config.clone()).await.unwrap(),
        fp
    );
    assert_eq!(probe(&server, "127.0.0.1", config).await.unwrap(), fp);

    let (code, out) = curl(&server, "localhost", "/healthz", &pki.path("ca.pem"));
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000"),
        "{out}"
    );

    // Plain HTTP on the redirect listener: 308 to the same path over HTTPS.
    let redirect = server.redirect_addr.clone().expect("redirect listener");
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
        ])
        .arg(format!("http://{redirect}/healthz?x=1"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let want = format!("308 https://127.0.0.1:{}/healthz?x=1", port(&server));
    assert_eq!(text, want);

    // Plain HTTP on the TLS port gets no HTTP answer, and harms no one.
    let mut tcp = TcpStream::connect(&server.main_addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf).await;
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    chat(&mut alice, (&mut bob, &b), "still fine").await;
}

#[tokio::test]
async fn wrong_name_and_expired_certificates_are_refused_by_clients() {
    let pki = Pki::new();
    pki.issue(false);
    let server = Server::start_with(&pki.config(""));
    let config = pki.client_config();
    let e = probe(&server, "wrong.example", config.clone())
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("NotValidForName"), "{e:?}");
    let (code, out) = curl(&server, "wrong.example", "/healthz", &pki.path("ca.pem"));
    assert_eq!(code, 60, "curl refuses the name: {out}");
    let url = format!("wss://localhost:{}/v1/ws", port(&server));
    Client::connect_tls(&url, Some(config.clone()))
        .await
        .unwrap();

    let old = Pki::new();
    old.issue(true);
    let server = Server::start_with(&old.config(""));
    let e = probe(&server, "localhost", old.client_config())
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("Expired"), "{e:?}");
    let (code, out) = curl(&server, "localhost", "/healthz", &old.path("ca.pem"));
    assert_eq!(code, 60, "curl refuses the expired certificate: {out}");
    let url = format!("wss://localhost:{}/v1/ws", port(&server));
    let e = Client::connect_tls(&url, Some(old.client_config()))
        .await
        .unwrap_err();
    assert!(format!("{e:?}").contains("Expired"), "{e:?}");
}

/// A ClientHello that offers TLS 1.1 at most (no supported_versions
/// extension), with two suites TLS 1.1 servers take.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]);
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut hs = vec![0x01, 0, 0, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01, 0, hs.len() as u8];
    record.extend_from_slice(&hs);
    record
}

#[tokio::test]
async fn tls_1_1_is_refused_and_tls_1_2_accepted() {
    let pki = Pki::new();
    pki.issue(false);
    let server = Server::start_with(&pki.config(""));

    let mut tcp = TcpStream::connect(&server.main_addr).await.unwrap();
    tcp.write_all(&tls11_client_hello()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    assert!(!answer.is_empty(), "the server answers with an alert");
    assert_eq!(
        answer[0], 0x15,
        "an alert record, not a ServerHello: {answer:?}"
    );

    let mut roots = RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let only12 = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    probe(&server, "localhost", Arc::new(only12)).await.unwrap();
}

#[tokio::test]
async fn changed_files_are_served_without_a_restart_or_dropped_connections() {
    let pki = Pki::new();
    let first = pki.issue(false);
    let server = Server::start_with(&pki.config("reload_interval = \"200ms\"\n"));
    let config = pki.client_config();
    let (mut alice, _) = wss_device(&server, &config).await;
    let (mut bob, b) = wss_device(&server, &config).await;

    // A broken key: an error in the log, the old certificate stays.
    std::fs::write(pki.path("key.pem"), "not a key").unwrap();
    eventually(&server, "the reload error", || async {
        server.log().contains("tls certificate reload failed")
    })
    .await;
    assert_eq!(
        probe(&server, "localhost", config.clone()).await.unwrap(),
        first
    );

    let second = pki.issue(false);
    eventually(&server, "the new certificate", || {
        let config = config.clone();
        let (server, second) = (&server, &second);
        async move { probe(server, "localhost", config).await.ok().as_ref() == Some(second) }
    })
    .await;
    // Connections from before the reload carry on.
    chat(&mut alice, (&mut bob, &b), "after the reload").await;
}

#[tokio::test]
async fn sighup_reloads_at_once() {
    let pki = Pki::new();
    pki.issue(false);
    let server = Server::start_with(&pki.config("reload_interval = \"1h\"\n"));
    let config = pki.client_config();
    let second = pki.issue(false);
    let pid = server.pid().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    eventually(&server, "the new certificate", || {
        let config = config.clone();
        let (server, second) = (&server, &second);
        async move { probe(server, "localhost", config).await.ok().as_ref() == Some(second) }
    })
    .await;
    // SIGHUP did not end the process (its default action).
    probe(&server, "localhost", config).await.unwrap();
}

#[tokio::test]
async fn tls_self_signed_is_made_once_and_its_fingerprint_printed() {
    let mut server = Server::start_with_args("", &["--tls-self-signed"]);
    let printed = server.tls_sha256.clone().expect("fingerprint printed");
    let pem = std::fs::read(server.data_dir.join("tls/self-signed-cert.pem")).unwrap();
    let der = CertificateDer::from_pem_slice(&pem).unwrap();
    assert_eq!(fingerprint(&der), printed);

    let mut roots = RootCertStore::empty();
    roots.add(der).unwrap();
    let config = tls::client_config(roots).unwrap();
    let url = format!("wss://localhost:{}/v1/ws", port(&server));
    Client::connect_tls(&url, Some(config.clone()))
        .await
        .unwrap();
    let url = format!("wss://127.0.0.1:{}/v1/ws", port(&server));
    Client::connect_tls(&url, Some(config)).await.unwrap();

    assert!(server.terminate().success());
    server.restart();
    assert_eq!(server.tls_sha256.as_deref(), Some(printed.as_str()));
}

#[tokio::test]
async fn turn_tls_certificate_reloads_on_sighup() {
    let pki = Pki::new();
    let first = pki.issue(false);
    let config = format!(
        "[tls]\nreload_interval = \"1h\"\n[turn.tls]\nlisten = \"127.0.0.1:0\"\n\
         cert_path = {:?}\nkey_path = {:?}\n",
        pki.path("cert.pem"),
        pki.path("key.pem")
    );
    let server = Server::start_with(&config);
    let addr = server.turn_tls_addr.clone().expect("turn tls listener");
    let client = pki.client_config();
    let tls = handshake(&addr, "localhost", client.clone()).await.unwrap();
    assert_eq!(served(&tls), first);
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );

    let second = pki.issue(false);
    let pid = server.pid().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    eventually(&server, "the new TURN certificate", || {
        let (addr, client, second) = (&addr, client.clone(), &second);
        async move {
            let tls = handshake(addr, "localhost", client).await;
            tls.ok().map(|t| served(&t)).as_ref() == Some(second)
        }
    })
    .await;
}
