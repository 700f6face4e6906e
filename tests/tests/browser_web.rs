//! The web client (web/, served by `palaver serve` at `/`) in headless
//! Chromium: two users register, chat both ways end to end encrypted,
//! see typing, presence and read ticks, reload and log out
//! (tests/browser/web-chat.mjs). Needs the built client (`scripts/web.sh`),
//! Debian's `chromium` and `npm ci` in tests/browser; scripts/test.sh does
//! all three. Screenshots of each screen land in
//! `$CARGO_TARGET_DIR/tmp/web-screenshots/` (the path is printed).

use palaver_tests::{Server, phone};
use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn check_tools() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).is_file(),
        "{chromium} not found: apt-get install chromium (scripts/test.sh does)"
    );
    assert!(
        repo()
            .join("tests/browser/node_modules/playwright-core")
            .is_dir(),
        "playwright-core missing: run `npm ci` in tests/browser (scripts/test.sh does)"
    );
    assert!(
        repo().join("web/dist/index.html").is_file(),
        "the web client is not built: run scripts/web.sh (scripts/test.sh does)"
    );
}

/// Runs a driver script from tests/browser with `spec`; returns its JSON result.
fn drive(script: &str, spec: serde_json::Value) -> serde_json::Value {
    let out = Command::new("node")
        .arg(repo().join("tests/browser").join(script))
        .arg(spec.to_string())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or("");
    let result: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "no result from the browser driver\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success() && result["ok"] == true,
        "{script} failed: {result:#}"
    );
    result
}

fn http_base(server: &Server) -> String {
    server
        .ws_url
        .replace("ws://", "http://")
        .trim_end_matches("/v1/ws")
        .to_owned()
}

/// Tells where the screenshots are (shown with `--no-capture` or on failure).
#[allow(clippy::print_stdout)]
fn say_where(dir: &std::path::Path) {
    println!("screenshots of the web client: {}", dir.display());
}

fn screenshot_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("web-screenshots")
        .join(name)
}

#[tokio::test]
async fn two_users_register_and_chat_in_the_web_client() {
    check_tools();
    let web_dir = repo().join("web/dist");
    let server = Server::start_with(&format!(
        "[web]\ndir = {:?}\n",
        web_dir.display().to_string()
    ));
    let out_dir = screenshot_dir("chat");
    let spec = serde_json::json!({
        "baseUrl": http_base(&server),
        "adminUrl": server.admin_url,
        "phones": [phone(), phone()],
        "outDir": out_dir,
    });
    let result = tokio::task::spawn_blocking(move || drive("web-chat.mjs", spec))
        .await
        .unwrap();
    say_where(&out_dir);
    let shots = result["screenshots"].as_array().unwrap();
    assert!(shots.len() >= 8, "{result:#}");
    for s in shots {
        let len = std::fs::metadata(s.as_str().unwrap()).unwrap().len();
        assert!(len > 1000, "{s} is {len} bytes");
    }
}

/// A raw GET (the path is sent as written, not normalised): status, head, body.
async fn get(base: &str, path: &str) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hostport = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(hostport).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP head");
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    (status, head, buf[split + 4..].to_vec())
}

#[tokio::test]
async fn the_server_serves_the_client_with_types_caching_and_fallback() {
    check_tools();
    let web_dir = repo().join("web/dist");
    let server = Server::start_with(&format!(
        "[web]\ndir = {:?}\n",
        web_dir.display().to_string()
    ));
    let base = http_base(&server);
    let (status, head, body) = get(&base, "/some/chat/route").await;
    assert_eq!(status, 200);
    assert!(head.contains("cache-control: no-cache"), "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    let html = String::from_utf8(body).unwrap();
    let asset = html
        .split('"')
        .find(|s| s.starts_with("/assets/") && s.ends_with(".js"))
        .expect("index.html names a hashed script");
    let (status, head, _) = get(&base, asset).await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/javascript"), "{head}");
    assert!(head.contains("immutable"), "{head}");
    let wasm = std::fs::read_dir(web_dir.join("assets"))
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().ends_with(".wasm"))
        .expect("olm wasm in the build");
    let path = format!("/assets/{}", wasm.file_name().to_string_lossy());
    let (_, head, _) = get(&base, &path).await;
    assert!(head.contains("content-type: application/wasm"), "{head}");
    for bad in [
        "/assets/../../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/..%2fCargo.toml",
        "/.env",
    ] {
        let (status, _, body) = get(&base, bad).await;
        assert_eq!(status, 400, "{bad}");
        assert!(!String::from_utf8_lossy(&body).contains("[workspace]"));
    }
    assert_eq!(get(&base, "/assets/nope.js").await.0, 404);
    // The other routes of the main listener are untouched.
    assert_eq!(get(&base, "/healthz").await.0, 200);
}

#[tokio::test]
async fn a_missing_build_gets_a_page_that_says_how_to_build_it() {
    let empty = tempfile::tempdir().unwrap();
    let server = Server::start_with(&format!(
        "[web]\ndir = {:?}\n",
        empty.path().display().to_string()
    ));
    let (status, head, body) = get(&http_base(&server), "/").await;
    assert_eq!(status, 503);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("scripts/web.sh"));
}

/// The browser's libolm and the Rust SDK's vodozemac read each other's
/// messages (tests/browser/web-interop.mjs).
#[tokio::test]
async fn the_web_client_and_the_rust_sdk_chat_end_to_end_encrypted() {
    use palaver_client::Event;
    use palaver_client::e2e::{Crypto, Decrypted};
    use palaver_client::proto::ClientMsgId;
    check_tools();
    let web_dir = repo().join("web/dist");
    let server = Server::start_with(&format!(
        "[web]\ndir = {:?}\n",
        web_dir.display().to_string()
    ));
    let (web_phone, rust_phone) = (phone(), phone());
    let (mut rust, _reg) = server.device(&rust_phone).await;
    let mut crypto = Crypto::new();
    crypto.publish(&mut rust, 20).await.unwrap();
    let spec = serde_json::json!({
        "baseUrl": http_base(&server),
        "adminUrl": server.admin_url,
        "phone": web_phone,
        "peerPhone": rust_phone,
        "send": "hello from the browser",
        "expect": "hello from vodozemac",
        "outDir": screenshot_dir("interop"),
    });
    let browser = tokio::task::spawn_blocking(move || drive("web-interop.mjs", spec));
    // The browser starts, registers and sends; give it time, not a sleep.
    let env = loop {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(60), rust.next_event())
            .await
            .expect("no message from the browser within 60 s")
            .expect("connection failed");
        if let Event::Envelope(e) = ev {
            rust.ack(vec![e.seq]).await.unwrap();
            if e.kind == palaver_client::proto::frames::EnvelopeKind::Message {
                break e;
            }
        }
    };
    let Decrypted::Message(bytes) = crypto.decrypt(&env).unwrap() else {
        panic!("expected a message")
    };
    let content: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(content["text"], "hello from the browser");
    let web_account = rust.lookup(&web_phone).await.unwrap();
    assert_eq!(env.from, web_account);
    let id = ClientMsgId::new("rust-1".to_owned()).unwrap();
    crypto
        .send(&mut rust, web_account, &id, b"hello from vodozemac")
        .await
        .unwrap();
    browser.await.unwrap();
}

/// Makes a test image, a 6 s VP8 video and a document with ffmpeg.
fn media_files(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let image = dir.join("photo.png");
    let video = dir.join("clip.webm");
    let doc = dir.join("notes from the meeting.txt");
    let ffmpeg = |args: &[&str]| {
        let st = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(args)
            .status()
            .expect("ffmpeg (scripts/test.sh installs it)");
        assert!(st.success(), "ffmpeg {args:?}");
    };
    let (i, v) = (image.to_str().unwrap(), video.to_str().unwrap());
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=640x480",
        "-frames:v",
        "1",
        i,
    ]);
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=duration=6:size=320x240:rate=15",
        "-c:v",
        "libvpx",
        "-b:v",
        "300k",
        "-g",
        "15",
        v,
    ]);
    std::fs::write(&doc, "minutes: ship the web client\n".repeat(100)).unwrap();
    (image, video, doc)
}

#[tokio::test]
async fn images_videos_documents_and_voice_notes_go_through_the_web_client() {
    check_tools();
    let files = tempfile::tempdir().unwrap();
    let (image, video, doc) = media_files(files.path());
    let web_dir = repo().join("web/dist");
    let server = Server::start_with(&format!(
        "[web]\ndir = {:?}\n",
        web_dir.display().to_string()
    ));
    let out_dir = screenshot_dir("media");
    let spec = serde_json::json!({
        "baseUrl": http_base(&server),
        "adminUrl": server.admin_url,
        "phones": [phone(), phone()],
        "outDir": out_dir,
        "image": image, "video": video, "document": doc,
        "seekTo": 4.0,
    });
    let r = tokio::task::spawn_blocking(move || drive("web-media.mjs", spec))
        .await
        .unwrap();
    say_where(&out_dir);
    assert_eq!(r["imageWidth"], 640, "{r:#}");
    assert!(r["thumbWidth"].as_u64().unwrap() <= 160, "{r:#}");
    assert!(r["seek"]["playedTo"].as_f64().unwrap() > 4.0, "{r:#}");
    assert_eq!(r["seek"]["width"], 320);
    assert_eq!(r["document"], "notes from the meeting.txt");
    assert_eq!(r["voice"]["bars"], 40, "{r:#}");
    assert!(
        r["voice"]["distinctHeights"].as_u64().unwrap() > 1,
        "a flat waveform: {r:#}"
    );
}

#[tokio::test]
async fn a_video_call_rings_every_device_and_both_sides_decode_frames() {
    check_tools();
    let web_dir = repo().join("web/dist");
    let server = Server::start_with(&format!(
        "[web]\ndir = {:?}\n",
        web_dir.display().to_string()
    ));
    let out_dir = screenshot_dir("call");
    let spec = serde_json::json!({
        "baseUrl": http_base(&server),
        "adminUrl": server.admin_url,
        "phones": [phone(), phone()],
        "outDir": out_dir,
    });
    let r = tokio::task::spawn_blocking(move || drive("web-call.mjs", spec))
        .await
        .unwrap();
    say_where(&out_dir);
    for side in ["alice", "bob"] {
        assert!(r[side]["width"].as_u64().unwrap() > 0, "{r:#}");
    }
}

#[tokio::test]
async fn three_people_share_a_group_call_with_a_grid() {
    check_tools();
    let web_dir = repo().join("web/dist");
    let server = Server::start_with(&format!(
        "[web]\ndir = {:?}\n",
        web_dir.display().to_string()
    ));
    let out_dir = screenshot_dir("group-call");
    let spec = serde_json::json!({
        "baseUrl": http_base(&server),
        "adminUrl": server.admin_url,
        "phones": [phone(), phone(), phone()],
        "outDir": out_dir,
    });
    let r = tokio::task::spawn_blocking(move || drive("web-group-call.mjs", spec))
        .await
        .unwrap();
    say_where(&out_dir);
    for who in ["alice", "bob", "carol"] {
        let widths = r["widths"][who].as_array().unwrap();
        assert_eq!(widths.len(), 2, "{r:#}");
        assert!(widths.iter().all(|w| w.as_u64().unwrap() > 0), "{r:#}");
    }
}

/// Three browser users and a Rust SDK user in one group chat, Megolm end to
/// end (tests/browser/web-group.mjs): every member decrypts every other
/// member's messages, and alice's Megolm session rotates when she removes
/// carol, who gets nothing sent after her removal.
#[tokio::test]
async fn three_browsers_and_the_rust_sdk_share_a_megolm_group_chat() {
    use palaver_client::Event;
    use palaver_client::e2e::{Crypto, Decrypted};
    use palaver_client::proto::ClientMsgId;
    use palaver_client::proto::frames::EnvelopeKind;
    use std::collections::HashMap;
    check_tools();
    let web_dir = repo().join("web/dist");
    let server = Server::start_with(&format!(
        "[web]\ndir = {:?}\n",
        web_dir.display().to_string()
    ));
    let rust_phone = phone();
    let (mut rust, _reg) = server.device(&rust_phone).await;
    let mut crypto = Crypto::new();
    crypto.publish(&mut rust, 20).await.unwrap();
    let out_dir = screenshot_dir("group");
    let spec = serde_json::json!({
        "baseUrl": http_base(&server),
        "adminUrl": server.admin_url,
        "phones": [phone(), phone(), phone()],
        "rustPhone": rust_phone,
        "rustText": "hello group from Rust",
        "outDir": out_dir,
    });
    let browser = tokio::task::spawn_blocking(move || drive("web-group.mjs", spec));
    // Group text -> the Megolm session id it came with.
    let mut sessions: HashMap<String, String> = HashMap::new();
    while !sessions.contains_key("after removal") {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(120), rust.next_event())
            .await
            .expect("nothing from the browsers within 120 s")
            .expect("connection failed");
        let Event::Envelope(env) = ev else { continue };
        rust.ack(vec![env.seq]).await.unwrap();
        if env.kind != EnvelopeKind::Message {
            continue;
        }
        let decrypted = crypto.decrypt(&env);
        let (Some(group), Ok(Decrypted::Message(bytes))) = (env.group, &decrypted) else {
            assert!(decrypted.is_ok(), "cannot decrypt: {decrypted:?}");
            continue;
        };
        let content: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        let text = content["text"].as_str().unwrap().to_owned();
        let wire: serde_json::Value =
            serde_json::from_slice(env.payload.as_deref().unwrap()).unwrap();
        assert_eq!(wire["e2e"], "megolm");
        sessions.insert(text.clone(), wire["session_id"].as_str().unwrap().into());
        if text == "hello group from alice" {
            let id = ClientMsgId::new("rust-group-1".to_owned()).unwrap();
            crypto
                .group_send(&mut rust, group, &id, b"hello group from Rust")
                .await
                .unwrap();
        }
    }
    for text in ["hello group from alice", "bob is in", "carol too"] {
        assert!(
            sessions.contains_key(text),
            "{text:?} missing: {sessions:?}"
        );
    }
    assert_ne!(
        sessions["hello group from alice"], sessions["after removal"],
        "alice's Megolm session must change when carol is removed"
    );
    browser.await.unwrap();
    say_where(&out_dir);
}

/// Web Push (tests/browser/web-push.mjs): the service worker shows counts
/// and callers' names, never message text, and call_cancel closes a call's
/// notification; a browser or server without push gets a clear note.
#[tokio::test]
async fn the_service_worker_shows_push_notifications_without_content() {
    check_tools();
    let web_dir = repo().join("web/dist");
    let server = Server::start_with(&format!(
        "[web]\ndir = {:?}\n",
        web_dir.display().to_string()
    ));
    let bob_phone = phone();
    let (mut bob, reg) = server.device(&bob_phone).await;
    palaver_client::e2e::Crypto::new()
        .publish(&mut bob, 5)
        .await
        .unwrap();
    let out_dir = screenshot_dir("push");
    let spec = serde_json::json!({
        "baseUrl": http_base(&server),
        "adminUrl": server.admin_url,
        "phone": phone(),
        "bobPhone": bob_phone,
        "bobAccount": reg.account,
        "outDir": out_dir,
    });
    tokio::task::spawn_blocking(move || drive("web-push.mjs", spec))
        .await
        .unwrap();
    say_where(&out_dir);
}

/// An upload interrupted by a reload continues from the server's offset
/// (tests/browser/web-upload-resume.mjs).
#[tokio::test]
async fn an_upload_interrupted_by_a_reload_resumes_where_it_stopped() {
    check_tools();
    let web_dir = repo().join("web/dist");
    let server = Server::start_with(&format!(
        "[web]\ndir = {:?}\n",
        web_dir.display().to_string()
    ));
    let out_dir = screenshot_dir("upload-resume");
    let spec = serde_json::json!({
        "baseUrl": http_base(&server),
        "adminUrl": server.admin_url,
        "phones": [phone(), phone()],
        "outDir": out_dir,
    });
    let r = tokio::task::spawn_blocking(move || drive("web-upload-resume.mjs", spec))
        .await
        .unwrap();
    say_where(&out_dir);
    assert!(r["resumedAt"].as_u64().unwrap() > 0, "{r:#}");
}

/// A second browser joins an account with a link code shown as a QR code
/// (tests/browser/web-link.mjs).
#[tokio::test]
async fn a_browser_links_to_an_account_with_a_qr_code() {
    check_tools();
    let web_dir = repo().join("web/dist");
    let server = Server::start_with(&format!(
        "[web]\ndir = {:?}\n",
        web_dir.display().to_string()
    ));
    let out_dir = screenshot_dir("link");
    let spec = serde_json::json!({
        "baseUrl": http_base(&server),
        "adminUrl": server.admin_url,
        "phones": [phone(), phone()],
        "outDir": out_dir,
    });
    tokio::task::spawn_blocking(move || drive("web-link.mjs", spec))
        .await
        .unwrap();
    say_where(&out_dir);
}
