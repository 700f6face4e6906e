//! TURN operations (issue 10): `palaver turn` alone answers `/readyz`,
//! `/healthz` and `/metrics` on its admin listener; TURN servers listed
//! per region reach call participants with the signaling node's region
//! first.

use palaver_client::Client;
use palaver_client::proto::frames::{Media, ServerFrame};
use palaver_tests::pki::Pki;
use palaver_tests::{Server, http_get, next_call, phone};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running `palaver turn`; killed when dropped.
struct Turn {
    child: Child,
    _dir: tempfile::TempDir,
    admin: String,
    tls: Option<String>,
}

impl Turn {
    fn start(config: &str) -> Turn {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("palaver.toml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut child = Command::new(palaver_tests::palaver_bin())
            .arg("--config")
            .arg(&cfg)
            .args(["turn", "--admin-listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .env("PALAVER__CALLS__TURN_SECRET", "a turn secret for the test")
            .env("PALAVER__TURN__LISTEN_UDP", "\"127.0.0.1:0\"")
            .env("PALAVER__TURN__LISTEN_TCP", "\"127.0.0.1:0\"")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut admin, mut tls) = (None, None);
        while admin.is_none() {
            let Some(Ok(line)) = lines.next() else {
                let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
                panic!("palaver turn exited before listening:\n{log}");
            };
            let addr = line.rsplit(' ').next().unwrap_or("").to_owned();
            if line.starts_with("palaver: admin listening on") {
                admin = Some(format!("http://{addr}"));
            } else if line.starts_with("palaver: turn tls listening on") {
                tls = Some(addr);
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Turn {
            child,
            _dir: dir,
            admin: admin.unwrap(),
            tls,
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn turn_alone_is_ready_with_health_and_metrics() {
    let t = Turn::start("");
    assert_eq!(http_get(&t.admin, "/readyz").await, (200, "ready\n".into()));
    assert_eq!(http_get(&t.admin, "/healthz").await.0, 200);
    let (status, metrics) = http_get(&t.admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("palaver_turn"), "{metrics}");
}

#[tokio::test]
async fn turn_with_tls_is_ready_once_its_certificate_is_loaded() {
    let pki = Pki::new();
    pki.issue(false);
    let config = format!(
        "[turn.tls]\nlisten = \"127.0.0.1:0\"\ncert_path = {:?}\nkey_path = {:?}\n",
        pki.path("cert.pem"),
        pki.path("key.pem")
    );
    let t = Turn::start(&config);
    assert!(t.tls.is_some(), "the TLS listener is up");
    assert_eq!(http_get(&t.admin, "/readyz").await, (200, "ready\n".into()));
}

#[tokio::test]
async fn call_participants_get_their_regions_turn_servers_first() {
    let server = Server::start_with(
        "[calls]\nregion = \"eu\"\nturn_secret = \"s3cret\"\n\
         turn_urls = [\"turn:anywhere.example:3478\"]\n\
         [[calls.turn_servers]]\nregion = \"us\"\n\
         urls = [\"turn:us1.example:3478\", \"turns:us1.example:5349\"]\n\
         [[calls.turn_servers]]\nregion = \"eu\"\nurls = [\"turn:eu1.example:3478\"]\n",
    );
    let (_, a) = server.device(&phone()).await;
    let (mut bob, b) = server.device(&phone()).await;
    // A client asking for a region that is not configured gets the node's.
    let url = format!("{}?region=mars", server.ws_url);
    let mut alice = Client::connect(&url).await.unwrap();
    alice.auth(a.device, &a.credential).await.unwrap();
    let (_, ice) = alice
        .call_offer(b.account, Media::Audio, "v=0 offer")
        .await
        .unwrap();
    let want = [
        vec!["turn:eu1.example:3478"],
        vec!["turn:us1.example:3478", "turns:us1.example:5349"],
        vec!["turn:anywhere.example:3478"],
    ];
    let urls: Vec<Vec<String>> = ice.iter().map(|s| s.urls.clone()).collect();
    assert_eq!(urls, want);
    assert!(ice.iter().all(|s| s.username == ice[0].username));
    assert!(ice[0].credential.is_some());
    match next_call(&mut bob).await {
        ServerFrame::CallIncoming { ice_servers, .. } => {
            let urls: Vec<Vec<String>> = ice_servers.iter().map(|s| s.urls.clone()).collect();
            assert_eq!(urls, want);
        }
        other => panic!("expected call_incoming, got {other:?}"),
    }

    // A client that asks for "us" (`/v1/ws?region=us`) gets it first.
    let url = format!("{}?region=us", server.ws_url);
    let mut carol = Client::connect(&url).await.unwrap();
    let (_, c) = server.device(&phone()).await;
    carol.auth(c.device, &c.credential).await.unwrap();
    let (_, ice) = carol
        .call_offer(b.account, Media::Audio, "v=0 offer")
        .await
        .unwrap();
    let urls: Vec<Vec<String>> = ice.iter().map(|s| s.urls.clone()).collect();
    assert_eq!(urls, [want[1].clone(), want[0].clone(), want[2].clone()]);
}
