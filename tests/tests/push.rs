//! Web Push, the part that exists: the VAPID public key on the main
//! listener, made once in the data directory and kept across restarts.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use palaver_tests::{Server, http_get};

async fn key_of(server: &Server) -> String {
    let base = format!("http://{}", server.main_addr);
    let (status, body) = http_get(&base, "/v1/push/vapid-key").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["public_key"].as_str().expect("public_key").to_owned()
}

#[tokio::test]
async fn vapid_public_key_is_served_and_survives_a_restart() {
    let mut server = Server::start();
    let key = key_of(&server).await;
    let point = URL_SAFE_NO_PAD.decode(&key).unwrap();
    assert_eq!(point.len(), 65, "an uncompressed P-256 point");
    assert_eq!(point[0], 4);

    use std::os::unix::fs::PermissionsExt;
    let file = server.data_dir.join("push/vapid.key");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the private key is not readable by others");
    assert!(
        !server
            .log()
            .contains(std::fs::read_to_string(&file).unwrap().trim())
    );

    assert!(server.terminate().success());
    server.restart();
    assert_eq!(key_of(&server).await, key);
}
