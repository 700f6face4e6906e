//! Any bytes from a client or a peer: the engine answers with parseable STUN
//! or nothing, and never panics.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use palaver_turn::{ClientAddr, Config, Engine, Output, PEER_HEADROOM, Secrets, Transport};

fuzz_target!(|data: &[u8]| {
    let config = Config { peer_allow: vec!["127.0.0.0/8".parse().unwrap()], ..Config::default() };
    let secrets = Secrets { rest_secret: Some("s".into()), static_users: vec![("u".into(), "p".into())] };
    let now = Instant::now();
    let mut engine = Engine::new(&config, &secrets, now, 1_800_000_000, [3; 32]).unwrap();
    let client = ClientAddr {
        transport: Transport::Udp,
        local: "127.0.0.1:3478".parse().unwrap(),
        remote: "127.0.0.1:5000".parse().unwrap(),
    };
    let _ = engine.handle_client(now, client, data);
    while let Some(out) = engine.poll_output() {
        if let Output::Transmit(t) = out {
            assert!(stun_types::message::Message::from_bytes(&t.data).is_ok());
        }
    }
    let mut buf = vec![0; PEER_HEADROOM + data.len()];
    buf[PEER_HEADROOM..].copy_from_slice(data);
    let relay = "127.0.0.1:50000".parse().unwrap();
    let _ = engine.handle_peer(now, relay, "127.0.0.1:9".parse().unwrap(), &mut buf, data.len());
});
