//! Interop with peers nobody here wrote: coturn's `turnutils_uclient` (TURN
//! client) and `turnutils_peer` (UDP echo peer), Debian package `coturn`,
//! against the in-process [`TurnServer`] on 127.0.0.1, over UDP and TCP, with
//! ChannelData and Send/Data indications, at a voice-call load
//! (10 clients x 50 packets/s x 160 bytes), and over TLS (self-signed
//! certificate made by rcgen). Every packet must come back.
//!
//! uclient 4.6.1 picks channel numbers in 0x4000-0x7FFF (RFC 5766); the
//! channel-mode runs therefore enable `accept_rfc5766_channels`. The
//! send-indication runs use the strict RFC 8656 default.
#![allow(clippy::disallowed_methods)] // tests own the clock and the runtime

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use palaver_turn::{Config, Secrets, TurnServer};
use tokio::process::{Child, Command};

const CLIENTS: u32 = 10;
const MESSAGES: u32 = 150;

fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found on PATH: install the Debian package `coturn` \
                 (apt-get install -y coturn) to run the TURN interop tests"
            )
        })
}

fn free_udp_port_on(host: &str) -> u16 {
    UdpSocket::bind((host, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    port: u16,
    tls_port: u16,
    _certs: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), palaver_turn::Error>>,
    stats: palaver_turn::StatsHandle,
}

/// A TurnServer on one port for UDP and TCP (uclient uses the same `-p` for both).
async fn start_server(rfc5766_channels: bool) -> Server {
    let certs = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    for _ in 0..20 {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        let tls = palaver_turn::TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert_path: cert_path.clone(),
            key_path: key_path.clone(),
        };
        let config = Config {
            listen_udp: addr,
            listen_tcp: Some(addr),
            tls: Some(tls),
            relay_ipv6: Some("::1".parse().unwrap()),
            peer_allow: vec!["127.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()],
            accept_rfc5766_channels: rfc5766_channels,
            max_allocations_per_user: 100,
            ..Config::default()
        };
        let secrets = Secrets {
            rest_secret: Some("interop-secret".into()),
            static_users: vec![("uclient".into(), "uclient-pw".into())],
        };
        let Ok(server) = TurnServer::bind(config, secrets).await else {
            continue;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tls_port = server.local_tls_addr().unwrap().port();
        let stats = server.stats_handle();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        return Server {
            port: addr.port(),
            tls_port,
            _certs: certs,
            stop: Some(tx),
            task,
            stats,
        };
    }
    panic!("no free port for the TURN server");
}

/// Starts turnutils_peer and waits until it echoes.
async fn start_peer(host: &str) -> (Child, u16) {
    let bin = tool("turnutils_peer");
    for _ in 0..10 {
        let port = free_udp_port_on(host);
        let child = Command::new(&bin)
            .args(["-L", host, "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start turnutils_peer");
        let probe = tokio::net::UdpSocket::bind((host, 0)).await.unwrap();
        for _ in 0..50 {
            probe
                .send_to(b"probe-probe-probe", (host, port))
                .await
                .unwrap();
            let mut buf = [0; 64];
            let r =
                tokio::time::timeout(Duration::from_millis(100), probe.recv_from(&mut buf)).await;
            if matches!(r, Ok(Ok(_))) {
                return (child, port);
            }
        }
    }
    panic!("turnutils_peer does not answer");
}

struct Outcome {
    sent: u64,
    recv: u64,
    lost: Option<u64>,
    log: String,
}

fn last_number_after(log: &str, key: &str) -> Option<u64> {
    log.rsplit(key)
        .next()
        .filter(|_| log.contains(key))
        .and_then(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()
        })
}

async fn uclient(server: u16, peer_host: &str, peer: u16, extra: &[&str]) -> Outcome {
    let mut cmd = Command::new(tool("turnutils_uclient"));
    cmd.args([
        "-p",
        &server.to_string(),
        "-e",
        peer_host,
        "-r",
        &peer.to_string(),
        "-c",
    ])
    .args([
        "-m",
        &CLIENTS.to_string(),
        "-n",
        &MESSAGES.to_string(),
        "-l",
        "160",
        "-z",
        "20",
    ])
    .args(extra)
    .arg("127.0.0.1")
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("turnutils_uclient finishes within 90 s")
        .expect("run turnutils_uclient");
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "turnutils_uclient failed ({}):\n{log}",
        out.status
    );
    let final_line = log
        .lines()
        .rev()
        .find(|l| l.contains("tot_send_msgs=") && !l.contains("msz="));
    let line = final_line.unwrap_or_else(|| panic!("no summary line in uclient output:\n{log}"));
    Outcome {
        sent: last_number_after(line, "tot_send_msgs=").unwrap(),
        recv: last_number_after(line, "tot_recv_msgs=").unwrap(),
        lost: last_number_after(&log, "Total lost packets "),
        log,
    }
}

async fn run(rfc5766_channels: bool, extra: &[&str]) {
    let mut server = start_server(rfc5766_channels).await;
    let peer_host = if extra.contains(&"-x") {
        "::1"
    } else {
        "127.0.0.1"
    };
    let (_peer, peer_port) = start_peer(peer_host).await;
    let port = if extra.contains(&"-S") {
        server.tls_port
    } else {
        server.port
    };
    let out = uclient(port, peer_host, peer_port, extra).await;
    let expected = u64::from(CLIENTS * MESSAGES);
    let tail: String = out
        .log
        .lines()
        .rev()
        .take(30)
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        out.sent, expected,
        "uclient sent {} of {expected}:\n{tail}",
        out.sent
    );
    assert_eq!(
        out.recv, out.sent,
        "loss through the relay ({extra:?}):\n{tail}"
    );
    assert_eq!(out.lost, Some(0), "uclient reports lost packets:\n{tail}");
    server.stop.take().unwrap().send(()).unwrap();
    server.task.await.unwrap().unwrap();
    let stats = server.stats.get();
    assert!(stats.packets_to_peer >= expected, "{stats:?}");
    assert!(stats.packets_to_client >= expected, "{stats:?}");
    assert!(stats.allocations_created >= u64::from(CLIENTS), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_udp_send_indications() {
    run(false, &["-s", "-u", "uclient", "-w", "uclient-pw"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_udp_channels_rest_credentials() {
    run(true, &["-u", "caller", "-W", "interop-secret"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_tcp_send_indications() {
    run(false, &["-t", "-s", "-u", "uclient", "-w", "uclient-pw"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_tcp_channels() {
    run(true, &["-t", "-u", "uclient", "-w", "uclient-pw"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_tls_send_indications() {
    run(
        false,
        &["-t", "-S", "-s", "-u", "uclient", "-w", "uclient-pw"],
    )
    .await;
}

/// RFC 6156: an IPv6 relay (uclient -x) to an IPv6 peer on ::1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_udp_ipv6_relay_channels() {
    run(true, &["-x", "-u", "uclient", "-w", "uclient-pw"]).await;
}
