//! The SFU inside `palaver serve`: the join endpoint's documented answers to
//! bad input, a full room, garbage on the media port, and participants that
//! never complete ICE. (Media itself: browser_sfu.rs and the simulation
//! tests in sfu/tests.)

use palaver_proto::join_token::{self, JoinClaims};
use palaver_proto::{AccountId, DeviceId};
use palaver_tests::Server;
use std::io::{Read, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn secret(server: &Server) -> Vec<u8> {
    std::fs::read_to_string(server.data_dir.join("sfu.secret"))
        .unwrap()
        .trim_end()
        .as_bytes()
        .to_vec()
}

fn claims(room: &str, n: u64, exp: u64) -> JoinClaims {
    JoinClaims {
        room: room.into(),
        account: AccountId(n),
        device: DeviceId(n),
        publish: true,
        subscribe: true,
        exp,
        admin: false,
    }
}

fn token(server: &Server, room: &str, n: u64) -> String {
    join_token::sign(&secret(server), &claims(room, n, now() + 60)).unwrap()
}

/// A real SDP offer (audio and the data channel), made by str0m.
fn offer() -> String {
    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    let mut change = rtc.sdp_api();
    change.add_media(
        str0m::media::MediaKind::Audio,
        str0m::media::Direction::SendOnly,
        None,
        None,
        None,
    );
    change.add_channel("palaver".into());
    change.apply().unwrap().0.to_sdp_string()
}

/// POSTs to the join endpoint; returns status and body.
fn join(server: &Server, room: &str, token: Option<&str>, body: &str) -> (u16, String) {
    post(server, &format!("/v1/rooms/{room}/join"), token, body)
}

fn post(server: &Server, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let host = server
        .ws_url
        .trim_start_matches("ws://")
        .trim_end_matches("/v1/ws");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn metric(server: &Server, name: &str) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let text = rt.block_on(server.metrics());
    text.lines()
        .find(|l| l.starts_with(name) && l.as_bytes().get(name.len()) == Some(&b' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in metrics"))
}

#[test]
fn tokens_are_checked() {
    let server = Server::start();
    let sdp = offer();
    let (status, body) = join(&server, "r1", None, &sdp);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"unauthorized\""));
    // Signed with another secret.
    let forged = join_token::sign(&[7; 32], &claims("r1", 1, now() + 60)).unwrap();
    assert_eq!(join(&server, "r1", Some(&forged), &sdp).0, 401);
    let expired = join_token::sign(&secret(&server), &claims("r1", 1, now() - 1)).unwrap();
    let (status, body) = join(&server, "r1", Some(&expired), &sdp);
    assert_eq!(status, 401);
    assert!(body.contains("expired"), "{body}");
    assert_eq!(join(&server, "r1", Some("garbage"), &sdp).0, 401);
    // A valid token for another room.
    let (status, body) = join(&server, "r2", Some(&token(&server, "r1", 1)), &sdp);
    assert_eq!(status, 403);
    assert!(body.contains("wrong_room"));
    // Malformed SDP.
    let (status, body) = join(
        &server,
        "r1",
        Some(&token(&server, "r1", 1)),
        "v=0\r\nnonsense",
    );
    assert_eq!(status, 400);
    assert!(body.contains("bad_sdp"));
    // A good join answers with SDP.
    let (status, body) = join(&server, "r1", Some(&token(&server, "r1", 1)), &sdp);
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("v=0"), "{body}");
    assert!(body.contains("a=ice-lite"));
    // ICE restarts need the session token of `welcome`: none, a guess, or
    // a join token are refused alike.
    let restart = "/v1/rooms/r1/restart";
    assert_eq!(post(&server, restart, None, &sdp).0, 401);
    let guess = format!("0.{}", "00".repeat(16));
    let join_token = token(&server, "r1", 1);
    for t in [guess.as_str(), join_token.as_str(), "1.x"] {
        let (status, body) = post(&server, restart, Some(t), &sdp);
        assert_eq!(status, 404, "{body}");
        assert!(body.contains("no_session"), "{body}");
    }
}

#[test]
fn full_rooms_garbage_and_peers_that_never_connect() {
    let server = Server::start_with("[sfu]\nroom_limit = 2\nice_timeout = \"2s\"\n");
    let sdp = offer();
    for n in 1..=2 {
        assert_eq!(
            join(&server, "small", Some(&token(&server, "small", n)), &sdp).0,
            200
        );
    }
    let (status, body) = join(&server, "small", Some(&token(&server, "small", 3)), &sdp);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("room_full"));
    // Another room is not affected by the full one.
    assert_eq!(
        join(&server, "other", Some(&token(&server, "other", 4)), &sdp).0,
        200
    );
    // Garbage on the media port is dropped and counted.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for junk in [
        &b""[..],
        b"\x00",
        &[0xff; 1200],
        b"\x80\x60\x00\x01garbage",
        b"\x00\x01\x00\x08\x21\x12\xa4\x42short",
    ] {
        udp.send_to(junk, &server.sfu_udp).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&server, "palaver_sfu_unknown_datagrams_total") < 4 {
        assert!(Instant::now() < deadline, "garbage not counted");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Nobody did ICE: after ice_timeout the peers are dropped, and the
    // room has space again.
    loop {
        let (status, _) = join(&server, "small", Some(&token(&server, "small", 5)), &sdp);
        if status == 200 {
            break;
        }
        assert_eq!(status, 409);
        assert!(Instant::now() < deadline, "silent peers were never dropped");
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = metric(&server, "palaver_sfu_ice_timeouts_total");
    assert!(t >= 1, "{t}");
}
