//! A push built by this crate, checked by an implementation nobody here
//! wrote: Python's `cryptography` decrypts the body and verifies the
//! VAPID signature (push/tests/verify.py). Needs python3-cryptography
//! (scripts/test.sh installs it).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use palaver_push::ece::SubscriptionKeys;
use palaver_push::request::{PushOptions, Urgency, build};
use palaver_push::vapid::VapidKey;
use std::process::Command;

#[test]
fn python_cryptography_decrypts_and_verifies() {
    // The browser's side: a key pair and an auth secret.
    let ua = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let p256dh = URL_SAFE_NO_PAD.encode(ua.public_key().to_encoded_point(false).as_bytes());
    let auth = URL_SAFE_NO_PAD.encode([9u8; 16]);
    let keys = SubscriptionKeys::parse(&p256dh, &auth).unwrap();

    let vapid = VapidKey::generate();
    let payload = r#"{"kind":"wake","count":3}"#;
    let opts = PushOptions {
        ttl: 60,
        urgency: Urgency::Normal,
        topic: None,
        subject: "mailto:ops@example.com",
        now: 1_800_000_000,
    };
    let endpoint = "https://push.example:8443/wpush/v2/abc";
    let req = build(endpoint, &keys, &vapid, payload.as_bytes(), &opts).unwrap();
    let authz = req
        .headers
        .iter()
        .find(|(n, _)| *n == "Authorization")
        .unwrap()
        .1
        .clone();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/verify.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(URL_SAFE_NO_PAD.encode(ua.to_bytes()))
        .arg(URL_SAFE_NO_PAD.encode(&req.body))
        .arg(&auth)
        .arg(&authz)
        .arg("https://push.example:8443")
        .output()
        .expect("run python3 (apt install python3-cryptography)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["plaintext"], payload);
    assert_eq!(v["exp"], 1_800_000_000u64 + 12 * 3600);
    assert_eq!(v["sub"], "mailto:ops@example.com");

    // A tampered body does not decrypt there either.
    let mut bad = req.body.clone();
    *bad.last_mut().unwrap() ^= 1;
    let out = Command::new("python3")
        .arg(script)
        .arg(URL_SAFE_NO_PAD.encode(ua.to_bytes()))
        .arg(URL_SAFE_NO_PAD.encode(&bad))
        .arg(&auth)
        .arg(&authz)
        .arg("https://push.example:8443")
        .output()
        .unwrap();
    assert!(!out.status.success());
}
