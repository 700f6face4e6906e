//! A relay-only WebRTC call between two headless Chromium pages through the
//! in-process TURN server (iceTransportPolicy 'relay', UDP and TCP to the
//! server). Needs Debian's `chromium` and `npm install` in
//! `turn/tests/browser` (playwright-core); fails with that hint otherwise.
//! Loopback peers are allowed in this test only.
#![allow(clippy::disallowed_methods)] // tests own the clock and the runtime

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palaver_turn::{Config, Secrets, TurnServer, rest_credentials};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const PAGE: &str = include_str!("browser/page.html");

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn check_tools() -> PathBuf {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or("/usr/bin/chromium".into());
    assert!(
        chromium.is_file(),
        "{} not found: apt-get install -y chromium (or set CHROMIUM)",
        chromium.display()
    );
    let module = browser_dir().join("node_modules/playwright-core");
    assert!(
        module.is_dir(),
        "playwright-core missing: run `npm ci` (or `npm install`) in {}",
        browser_dir().display()
    );
    chromium
}

/// Serves the test page on 127.0.0.1 (a secure context for getUserMedia).
async fn serve_page() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let (status, body) = if req.starts_with(b"GET / ") {
                    ("200 OK", PAGE)
                } else {
                    ("404 Not Found", "")
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(body.as_bytes()).await;
            });
        }
    });
    addr
}

async fn call(transport: &str) {
    let chromium = check_tools();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let config = Config {
        listen_udp: any,
        listen_tcp: Some(any),
        peer_allow: vec!["127.0.0.0/8".parse().unwrap()],
        ..Config::default()
    };
    let secret = "browser-secret";
    let secrets = Secrets {
        rest_secret: Some(secret.into()),
        static_users: vec![],
    };
    let server = TurnServer::bind(config, secrets).await.unwrap();
    let port = match transport {
        "udp" => server.local_udp_addr().port(),
        _ => server.local_tcp_addr().unwrap().port(),
    };
    let stats = server.stats_handle();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let page = serve_page().await;
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let (user, pass) = rest_credentials(secret, "browser-test", expiry);
    let url = format!("turn:127.0.0.1:{port}?transport={transport}");
    let out = tokio::process::Command::new("node")
        .arg("call.mjs")
        .arg(format!("http://{page}/"))
        .args([&url, &user, &pass])
        .env("CHROMIUM", chromium)
        .current_dir(browser_dir())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), out)
        .await
        .expect("call within 90 s")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "call over {transport} failed: {stdout}\n{stderr}"
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let s = stats.get();
    assert!(s.allocations_created >= 2, "{s:?}");
    assert!(
        s.packets_to_peer > 100 && s.packets_to_client > 100,
        "media went through the relay: {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_relay_call_over_udp() {
    call("udp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_relay_call_over_tcp() {
    call("tcp").await;
}
