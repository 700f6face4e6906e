//! A real S3-compatible server for the tests: a single Garage node on
//! 127.0.0.1, started per test in a temporary directory with a fresh
//! bucket, and stopped when dropped. The binary comes from
//! `scripts/garage.sh install` (or `$PALAVER_GARAGE_BIN`). The tests look
//! into the bucket with curl's SigV4 signing.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Garage's S3 region in these tests.
pub const REGION: &str = "garage";
/// The bucket the node creates at start.
pub const BUCKET: &str = "palaver-media";
/// Loopback-only credentials of a throwaway node.
pub const KEY_ID: &str = "GK0123456789abcdef01234567";
pub const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The Garage binary: `$PALAVER_GARAGE_BIN`, else where
/// `scripts/garage.sh install` puts it.
pub fn garage_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PALAVER_GARAGE_BIN") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let bin = PathBuf::from(home).join(".cache/palaver/garage-2.5.0/bin/garage");
    assert!(
        bin.exists(),
        "{} not found: run ./scripts/garage.sh install (or scripts/test.sh)",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A running Garage node.
#[derive(Debug)]
pub struct Garage {
    child: Child,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

impl Garage {
    /// Starts a node and waits until its bucket answers.
    pub fn start() -> Garage {
        // Ports are picked free and then bound by Garage: if another
        // process took one in between, start again on new ports.
        for _ in 0..3 {
            if let Some(g) = Self::try_start() {
                return g;
            }
        }
        panic!("Garage did not start (see the log printed above)");
    }

    fn try_start() -> Option<Garage> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (s3, rpc) = (free_port(), free_port());
        let d = dir.path().display();
        let cfg = format!(
            "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"lmdb\"\n\
             replication_factor = 1\nmetadata_fsync = false\ndata_fsync = false\n\
             rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_secret = \"{}\"\n\n[s3_api]\ns3_region = \"{REGION}\"\n\
             api_bind_addr = \"127.0.0.1:{s3}\"\n",
            hex::encode(rand::random::<[u8; 32]>())
        );
        let cfg_path = dir.path().join("garage.toml");
        std::fs::write(&cfg_path, cfg).expect("garage config");
        let log = std::fs::File::create(dir.path().join("garage.log")).expect("log");
        let child = Command::new(garage_bin())
            .arg("-c")
            .arg(&cfg_path)
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", KEY_ID)
            .env("GARAGE_DEFAULT_SECRET_KEY", SECRET)
            .env("GARAGE_DEFAULT_BUCKET", BUCKET)
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start garage");
        let mut g = Garage {
            child,
            dir,
            endpoint: format!("http://127.0.0.1:{s3}"),
        };
        g.wait_healthy().then_some(g)
    }

    /// Polls a signed HEAD on the bucket (200 once the layout, the key and
    /// the bucket exist); false if the process exits first.
    fn wait_healthy(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.curl(&["-I", "-o", "/dev/null"], "").0 {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                let log = std::fs::read_to_string(self.dir.path().join("garage.log"));
                eprintln!("garage exited:\n{}", log.unwrap_or_default());
                return false;
            }
            // The interval between health checks, not a synchronisation.
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("Garage is running but its bucket did not answer within 60 s");
    }

    /// Runs curl with SigV4 against `<endpoint>/<bucket>/<key>`:
    /// (success, body).
    fn curl(&self, args: &[&str], key: &str) -> (bool, Vec<u8>) {
        let out = Command::new("curl")
            .args(["-sS", "-f", "--max-time", "10"])
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
            .args(["--aws-sigv4", &format!("aws:amz:{REGION}:s3")])
            .args(["--user", &format!("{KEY_ID}:{SECRET}")])
            .args(args)
            .arg(format!("{}/{BUCKET}/{key}", self.endpoint))
            .output()
            .expect("run curl (apt-get install curl)");
        (out.status.success(), out.stdout)
    }

    /// Every object key in the bucket (first 1,000).
    pub fn keys(&self) -> Vec<String> {
        let (ok, body) = self.curl(&[], "?list-type=2");
        assert!(ok, "ListObjectsV2 failed");
        let xml = String::from_utf8(body).expect("XML");
        xml.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_owned()))
            .collect()
    }

    /// An object's bytes, `None` if there is none.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let (ok, body) = self.curl(&[], key);
        ok.then_some(body)
    }

    /// An object's ETag, `None` if there is none.
    pub fn etag(&self, key: &str) -> Option<String> {
        let (ok, head) = self.curl(&["-I"], key);
        let head = String::from_utf8_lossy(&head).into_owned();
        ok.then(|| {
            head.lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("etag").then(|| v.trim().to_owned())
                })
                .unwrap_or_default()
        })
    }

    /// Stores an object directly (not through Palaver).
    pub fn put(&self, key: &str, bytes: &[u8]) {
        let file = self.dir.path().join("upload.tmp");
        std::fs::write(&file, bytes).expect("write");
        let data = format!("@{}", file.display());
        let (ok, _) = self.curl(&["-X", "PUT", "--data-binary", &data], key);
        assert!(ok, "PutObject {key} failed");
    }

    /// `PALAVER__MEDIA__*` variables that point the media store at this
    /// node, with multipart uploads above `part_size` bytes.
    pub fn env(&self, part_size: u64) -> Vec<(String, String)> {
        [
            ("STORAGE", "s3".to_owned()),
            ("S3__ENDPOINT", self.endpoint.clone()),
            ("S3__REGION", REGION.to_owned()),
            ("S3__BUCKET", BUCKET.to_owned()),
            ("S3__PATH_STYLE", "true".to_owned()),
            ("S3__ACCESS_KEY_ID", KEY_ID.to_owned()),
            ("S3__SECRET_ACCESS_KEY", format!("\"{SECRET}\"")),
            ("S3__PART_SIZE_BYTES", part_size.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("PALAVER__MEDIA__{k}"), v))
        .collect()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
