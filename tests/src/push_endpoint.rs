//! A push service for tests: a small HTTP/1.1 server on a loopback address
//! that records every request (path, headers, body) on a channel and
//! answers with scripted status codes (201 by default). Web Push bodies
//! are decrypted and VAPID tokens verified by Python's `cryptography`
//! (push/tests/verify.py), an implementation nobody here wrote.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// One request the endpoint received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

type Script = Arc<Mutex<HashMap<String, VecDeque<(u16, Option<u64>)>>>>;

/// The endpoint; requests arrive on `rx`.
#[derive(Debug)]
pub struct PushEndpoint {
    pub addr: SocketAddr,
    pub rx: mpsc::UnboundedReceiver<Received>,
    script: Script,
}

impl PushEndpoint {
    /// Listens on `ip` (a loopback address) on a free port.
    pub async fn start(ip: &str) -> PushEndpoint {
        let listener = TcpListener::bind((ip, 0)).await.expect("bind endpoint");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let script: Script = Arc::default();
        let s = script.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, tx.clone(), s.clone()));
            }
        });
        PushEndpoint { addr, rx, script }
    }

    /// The URL of `path` on this endpoint.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next answers for `path`: status and optional `Retry-After`.
    pub fn script(&self, path: &str, answers: &[(u16, Option<u64>)]) {
        self.script
            .lock()
            .unwrap()
            .entry(path.to_owned())
            .or_default()
            .extend(answers.iter().copied());
    }

    /// The next request, failing the test if none comes in time.
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(30), self.rx.recv())
            .await
            .expect("timed out waiting for a push request")
            .expect("endpoint stopped")
    }
}

async fn serve(sock: TcpStream, tx: mpsc::UnboundedSender<Received>, script: Script) {
    let mut r = BufReader::new(sock);
    while let Some((path, headers)) = read_head(&mut r).await {
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len.min(1 << 20)];
        if r.read_exact(&mut body).await.is_err() {
            return;
        }
        let answer = script
            .lock()
            .unwrap()
            .get_mut(&path)
            .and_then(VecDeque::pop_front);
        let _ = tx.send(Received {
            path,
            headers,
            body,
            at: Instant::now(),
        });
        let (status, after) = answer.unwrap_or((201, None));
        let extra = after.map_or(String::new(), |s| format!("Retry-After: {s}\r\n"));
        let head = format!("HTTP/1.1 {status} X\r\n{extra}Content-Length: 0\r\n\r\n");
        if r.get_mut().write_all(head.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn read_head(r: &mut BufReader<TcpStream>) -> Option<(String, HashMap<String, String>)> {
    let mut line = String::new();
    if r.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut headers = HashMap::new();
    loop {
        line.clear();
        r.read_line(&mut line).await.ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            return Some((path, headers));
        }
        let (k, v) = l.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
}

/// A browser's subscription keys, made by Python's `cryptography`.
#[derive(Debug, Clone)]
pub struct UaKeys {
    pub private: String,
    pub p256dh: String,
    pub auth: String,
}

const KEYGEN: &str = r#"
import base64, os
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
b = lambda x: base64.urlsafe_b64encode(x).rstrip(b"=").decode()
k = ec.generate_private_key(ec.SECP256R1())
pub = k.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
print(b(k.private_numbers().private_value.to_bytes(32, "big")), b(pub), b(os.urandom(16)))
"#;

fn python(args: &[&str]) -> std::process::Output {
    std::process::Command::new("python3")
        .args(args)
        .output()
        .expect("run python3 (apt install python3-cryptography)")
}

impl UaKeys {
    pub fn generate() -> UaKeys {
        let out = python(&["-c", KEYGEN]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let mut parts = text.split_whitespace().map(str::to_owned);
        UaKeys {
            private: parts.next().unwrap(),
            p256dh: parts.next().unwrap(),
            auth: parts.next().unwrap(),
        }
    }

    /// Decrypts a Web Push request and verifies its VAPID token for
    /// `audience`; returns the plaintext as JSON and the token's claims.
    pub fn open(&self, req: &Received, audience: &str) -> (serde_json::Value, serde_json::Value) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../push/tests/verify.py");
        let body = URL_SAFE_NO_PAD.encode(&req.body);
        let authz = req.header("authorization").expect("Authorization header");
        let out = python(&[script, &self.private, &body, &self.auth, authz, audience]);
        assert!(
            out.status.success(),
            "verify.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let plaintext = serde_json::from_str(v["plaintext"].as_str().unwrap()).unwrap();
        (plaintext, v)
    }
}

/// The hex HMAC-SHA256 of `timestamp.body`, computed by Python's `hmac`.
pub fn python_hmac(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let code = "import hmac, hashlib, sys; \
        print(hmac.new(sys.argv[1].encode(), sys.argv[2].encode() + b'.' + bytes.fromhex(sys.argv[3]), hashlib.sha256).hexdigest())";
    let out = python(&["-c", code, secret, timestamp, &hex::encode(body)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
