//! Starts a TurnServer for benchmarks and manual tests. Configuration from
//! the environment:
//! - `TURN_LISTEN` (default `127.0.0.1:3478`, UDP and TCP),
//! - `TURN_USER` / `TURN_PASSWORD` (a static user) and/or `TURN_SECRET` (REST),
//! - `TURN_ALLOW` (comma-separated CIDRs, default `127.0.0.0/8,::1/128`),
//! - `TURN_RFC5766_CHANNELS=1` to accept uclient's channel numbers above 0x4FFF,
//! - `TURN_MAX_LIFETIME` (seconds, default 3600), `TURN_PORT_MIN` (default 49152), `TURN_RELAY_IPV6` (e.g. `::1`),
//! - `RUST_LOG` for logs.
//!
//! `cargo run --release -p palaver-turn --example bench-server`; stop with Ctrl-C.

use std::net::SocketAddr;

use palaver_turn::{Config, Secrets, TurnServer};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let listen: SocketAddr = env("TURN_LISTEN")
        .unwrap_or("127.0.0.1:3478".into())
        .parse()?;
    let allow = env("TURN_ALLOW").unwrap_or("127.0.0.0/8,::1/128".into());
    let config = Config {
        listen_udp: listen,
        listen_tcp: Some(listen),
        peer_allow: allow
            .split(',')
            .map(|c| c.trim().parse())
            .collect::<Result<_, _>>()?,
        accept_rfc5766_channels: env("TURN_RFC5766_CHANNELS").is_some_and(|v| v == "1"),
        max_lifetime_secs: env("TURN_MAX_LIFETIME").map_or(Ok(3600), |v| v.parse())?,
        relay_port_min: env("TURN_PORT_MIN").map_or(Ok(49152), |v| v.parse())?,
        relay_ipv6: env("TURN_RELAY_IPV6").map(|v| v.parse()).transpose()?,
        max_allocations_per_user: 1000,
        max_bandwidth_bytes_per_sec: 0,
        ..Config::default()
    };
    let mut secrets = Secrets {
        rest_secret: env("TURN_SECRET"),
        static_users: vec![],
    };
    if let (Some(u), Some(p)) = (env("TURN_USER"), env("TURN_PASSWORD")) {
        secrets.static_users.push((u, p));
    }
    let server = TurnServer::bind(config, secrets).await?;
    eprintln!(
        "bench-server: listening on {} pid {}",
        server.local_udp_addr(),
        std::process::id()
    );
    let stats = server.stats_handle();
    server
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    eprintln!("bench-server: stopped: {:?}", stats.get());
    Ok(())
}
