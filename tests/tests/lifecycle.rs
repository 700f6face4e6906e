//! Process lifecycle: graceful shutdown, configuration errors, the admin
//! listener and the webhook verifier.

use hmac::{Hmac, Mac};
use palaver_client::proto::{ClientMsgId, ErrorCode};
use palaver_client::{Error, Event};
use palaver_tests::{PATIENCE, Server, http_get, next_envelope, palaver_bin, phone};
use sha2::Sha256;
use std::collections::BTreeSet;
use std::process::Command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn sigterm_finishes_in_flight_sends_and_loses_nothing() {
    let mut server = Server::start();
    let (bob, b) = server.device(&phone()).await;
    bob.close().await.unwrap();
    let (mut alice, _) = server.device(&phone()).await;

    let mut acked = BTreeSet::new();
    let mut terminated = None;
    let mut closed_with = None;
    for i in 0.. {
        let id = format!("m{i}");
        match alice
            .send(
                b.account,
                &ClientMsgId::new(id.clone()).unwrap(),
                vec![(b.device, vec![7])],
            )
            .await
        {
            Ok(_) => {
                acked.insert(id);
            }
            Err(e) => {
                closed_with = Some(e);
                break;
            }
        }
        if i == 20 {
            // Ask the server to stop while Alice keeps sending.
            let pid = server_pid(&server);
            terminated = Some(std::thread::spawn(move || {
                Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .unwrap()
            }));
        }
        assert!(i < 100_000, "the server never stopped");
    }
    terminated.unwrap().join().unwrap();
    let e = closed_with.unwrap();
    assert!(
        matches!(&e, Error::Server(f) if f.code == ErrorCode::ShuttingDown)
            || matches!(&e, Error::Closed(_))
            || matches!(&e, Error::WebSocket(_)),
        "{e:?}"
    );
    let status = server.terminate_wait();
    assert!(status.success(), "graceful exit: {status:?}");
    assert!(server.log().contains("stopped"));

    server.restart();
    let mut bob = server.connect().await;
    bob.auth(b.device, &b.credential).await.unwrap();
    let mut got = BTreeSet::new();
    while got.len() < acked.len() {
        got.insert(next_envelope(&mut bob).await.msg.as_str().to_owned());
    }
    assert_eq!(got, acked);
}

fn server_pid(server: &Server) -> u32 {
    server.pid().expect("running")
}

#[tokio::test]
async fn clients_are_told_when_the_server_shuts_down() {
    let mut server = Server::start();
    let (mut alice, _) = server.device(&phone()).await;
    let pid = server_pid(&server);
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    match tokio::time::timeout(PATIENCE, alice.next_event())
        .await
        .unwrap()
    {
        Ok(Event::Error(e)) => assert_eq!(e.code, ErrorCode::ShuttingDown),
        other => panic!("expected shutting_down, got {other:?}"),
    }
    assert!(server.terminate_wait().success());
}

#[test]
fn config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[server]\nlisten = \"127.0.0.1:0\"\nlisn = 1\n").unwrap();
    let out = Command::new(palaver_bin())
        .arg("--config")
        .arg(&cfg)
        .args(["serve", "--admin-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lisn"), "{err}");

    let out = Command::new(palaver_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("PALAVER__SIGNALING__MAX_DEVICES", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("signaling.max_devices"), "{err}");

    // `palaver sfu` needs the join-token secret it shares with signaling.
    let out = Command::new(palaver_bin()).arg("sfu").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sfu.token_secret"));

    let out = Command::new(palaver_bin()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("serve") && help.contains("PALAVER__"),
        "{help}"
    );
}

#[tokio::test]
async fn admin_listener_serves_metrics_behind_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "test-admin-token-0123456789\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let server = Server::start_with(&format!("[admin]\ntoken_file = {:?}\n", token));
    let (status, _) = http_get(&server.admin_url, "/metrics").await;
    assert_eq!(status, 401);
    let (status, body) =
        get_with_token(&server.admin_url, "/metrics", "test-admin-token-0123456789").await;
    assert_eq!(status, 200);
    assert!(body.contains("palaver_signaling_connections"), "{body}");
    assert!(body.contains("process_resident_memory_bytes"));
    assert!(
        !server.log().contains("test-admin-token"),
        "secrets never logged"
    );
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let server = Server::start();
    let (mut alice, _) = server.device(&phone()).await;
    let (_bob, b) = server.device(&phone()).await;
    alice
        .send(
            b.account,
            &ClientMsgId::new("x").unwrap(),
            vec![(b.device, vec![1])],
        )
        .await
        .unwrap();
    let m = server.metrics().await;
    assert!(
        m.contains("palaver_signaling_messages_stored_total 1"),
        "{m}"
    );
    assert!(
        m.contains("palaver_signaling_authenticated_connections 2"),
        "{m}"
    );
    let (status, body) = http_get(
        &server
            .ws_url
            .replace("ws://", "http://")
            .replace("/v1/ws", ""),
        "/readyz",
    )
    .await;
    assert_eq!((status, body.trim()), (200, "ready"));
}

async fn get_with_token(base: &str, path: &str, token: &str) -> (u16, String) {
    let hostport = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(hostport).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    (text[9..12].parse().unwrap(), body)
}

/// An SMS gateway stand-in: checks the signature and hands the code over.
async fn fake_sms_gateway(
    secret: &'static str,
) -> (String, tokio::sync::mpsc::Receiver<(String, String)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sms", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body) = loop {
                let n = s.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break (head.to_owned(), body[..len].to_owned());
                    }
                }
                assert!(n > 0, "request cut short");
            };
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        (k.eq_ignore_ascii_case(name)).then(|| v.trim().to_owned())
                    })
                    .unwrap()
            };
            let ts = header("x-palaver-timestamp");
            let sig = header("x-palaver-signature");
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(format!("{ts}.{body}").as_bytes());
            let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            let ok = sig == expected;
            let status = if ok { "200 OK" } else { "401 Unauthorized" };
            s.write_all(
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
            if ok {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                tx.send((
                    v["phone"].as_str().unwrap().into(),
                    v["code"].as_str().unwrap().into(),
                ))
                .await
                .unwrap();
            }
        }
    });
    (url, rx)
}

#[tokio::test]
async fn webhook_verifier_delivers_signed_codes() {
    let (url, mut codes) = fake_sms_gateway("webhook-test-secret").await;
    let server = Server::start_with(&format!(
        "[verifier]\nkind = \"webhook\"\nwebhook_url = {url:?}\nwebhook_secret = \"webhook-test-secret\"\n"
    ));
    let p = phone();
    let mut c = server.connect().await;
    c.request_code(&p).await.unwrap();
    let (to, code) = tokio::time::timeout(PATIENCE, codes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(to, p);
    let reg = c.verify(&p, &code, "sms").await.unwrap();
    assert!(reg.new_account);
    // The development code endpoint is off with a real verifier.
    let (status, _) = http_get(&server.admin_url, &format!("/dev/codes/{p}")).await;
    assert_eq!(status, 404);
    assert!(
        !server.log().contains(&code),
        "codes are not logged by the webhook verifier"
    );
}

#[tokio::test]
async fn the_local_turn_secret_survives_restarts() {
    use std::os::unix::fs::PermissionsExt;
    let mut server = Server::start();
    let path = server.data_dir.join("turn.secret");
    let first = std::fs::read_to_string(&path).expect("serve keeps its TURN secret");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(first.trim().len() >= 40, "a 256-bit secret");
    assert!(!server.log().contains(first.trim()), "secrets never logged");
    server.kill();
    server.restart();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        first,
        "the same secret after a restart"
    );
}
