//! Failed logins on the media listener are limited per client address:
//! past the burst, requests with credentials get 429 from that address
//! only, until the bucket refills.

use palaver_client::media::request;
use palaver_tests::{Server, phone};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A GET with credentials sent from a chosen loopback address; the status.
async fn get_from(s: &Server, from: &str, path: &str, bearer: &str) -> (u16, String) {
    let media = s.media_url.trim_start_matches("http://");
    get_via(media, from, path, bearer, "").await
}

/// A GET to `to` from the loopback address `from`, with extra header lines.
async fn get_via(to: &str, from: &str, path: &str, bearer: &str, extra: &str) -> (u16, String) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut c = sock.connect(to.parse().unwrap()).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bearer}\r\n{extra}Connection: close\r\n\r\n"
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    (text[9..12].parse().unwrap(), text)
}

#[tokio::test]
async fn failed_logins_are_rate_limited_per_address() {
    let s = Server::start_with("[media]\nauth_failures_per_ip = { burst = 3, per_minute = 1.0 }\n");
    let (_a, alice) = s.device(&phone()).await;
    let good = format!("{}:{}", alice.device.0, alice.credential);
    let bad = format!("{}:wrong", alice.device.0);
    let usage = "/v1/media/usage";

    // Successes cost nothing.
    for _ in 0..5 {
        assert_eq!(get_from(&s, "127.0.0.1", usage, &good).await.0, 200);
    }
    // Three failures are answered 401...
    for bearer in [bad.as_str(), "junk", "99999:nope"] {
        assert_eq!(get_from(&s, "127.0.0.1", usage, bearer).await.0, 401);
    }
    // ...then the address is refused, whatever it presents.
    let (status, text) = get_from(&s, "127.0.0.1", usage, &bad).await;
    assert_eq!(status, 429, "{text}");
    let retry: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Retry-After: "))
        .expect("Retry-After")
        .trim()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(get_from(&s, "127.0.0.1", usage, &good).await.0, 429);

    // Another address is not affected.
    assert_eq!(get_from(&s, "127.0.0.2", usage, &good).await.0, 200);
    assert_eq!(get_from(&s, "127.0.0.2", usage, &bad).await.0, 401);

    // Requests without credentials (capability links, health) still work.
    let r = request(&format!("{}/healthz", s.media_url), "GET", &[], &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    let m = s.metrics().await;
    let value = |name: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in\n{m}"))
    };
    assert_eq!(value("palaver_media_auth_failures_total "), 4);
    assert_eq!(value("palaver_media_auth_rate_limited_total "), 2);
    assert!(!s.log().contains("127.0.0.2"), "addresses are not logged");
}

/// The web client reaches the media store through the main listener's
/// proxy: failed logins still count per client address, and a client
/// cannot pass itself off as another address.
#[tokio::test]
async fn failed_logins_through_the_main_listener_count_per_client() {
    let s = Server::start_with("[media]\nauth_failures_per_ip = { burst = 2, per_minute = 1.0 }\n");
    let (_a, alice) = s.device(&phone()).await;
    let good = format!("{}:{}", alice.device.0, alice.credential);
    let main = s.main_addr.as_str();
    let usage = "/v1/media/usage";
    assert_eq!(get_via(main, "127.0.0.4", usage, &good, "").await.0, 200);
    // A stranger at 127.0.0.5 fails twice, claiming to be 127.0.0.6 and
    // forging the proxy's secret; then it is refused...
    let forged = "x-palaver-client-addr: 127.0.0.6\r\nx-palaver-proxy-secret: guess\r\n";
    for _ in 0..2 {
        assert_eq!(
            get_via(main, "127.0.0.5", usage, "1:nope", forged).await.0,
            401
        );
    }
    assert_eq!(get_via(main, "127.0.0.5", usage, &good, "").await.0, 429);
    // ...while other clients behind the same proxy are not, including the
    // address it claimed.
    assert_eq!(get_via(main, "127.0.0.4", usage, &good, "").await.0, 200);
    assert_eq!(get_via(main, "127.0.0.6", usage, &good, "").await.0, 200);
    // Straight to the media listener, the headers mean nothing either.
    let media = s.media_url.trim_start_matches("http://");
    for _ in 0..2 {
        assert_eq!(
            get_via(media, "127.0.0.7", usage, "1:nope", forged).await.0,
            401
        );
    }
    assert_eq!(get_via(media, "127.0.0.6", usage, &good, "").await.0, 200);
    assert_eq!(get_via(media, "127.0.0.7", usage, &good, "").await.0, 429);
}
