//! `palaver sfu` processes for multi-node tests: SFU nodes that register in
//! the Redis of `scripts/redis.sh`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A running `palaver sfu` node.
#[derive(Debug)]
pub struct SfuNode {
    child: Option<Child>,
    /// Its join endpoint's base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its admin listener (metrics, `/sfu/participants`).
    pub admin_url: String,
    pub id: String,
    pub stderr_log: PathBuf,
    _tmp: tempfile::TempDir,
}

impl SfuNode {
    /// Starts node `id` of cluster `name` (the Redis key prefix), with the
    /// join-token `secret` shared with signaling, and `extra` environment.
    pub fn start(name: &str, id: &str, secret: &str, extra: &[(&str, &str)]) -> SfuNode {
        let tmp = tempfile::tempdir().expect("temp dir");
        let stderr_log = tmp.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_log).expect("log file");
        let mut child = Command::new(crate::palaver_bin())
            .arg("sfu")
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .args(["--admin-listen", "127.0.0.1:0"])
            // `cluster.redis_url` is accepted only with a shared database.
            .envs(crate::postgres_env(name))
            .env("PALAVER__CLUSTER__REDIS_URL", crate::redis_url())
            .env("PALAVER__CLUSTER__NAME", name)
            .env("PALAVER__CLUSTER__NODE_ID", id)
            .env("PALAVER__SFU__TOKEN_SECRET", secret)
            .env("PALAVER__SFU__LISTEN", "\"127.0.0.1:0\"")
            .env("PALAVER__SFU__UDP_PORT", "0")
            .envs(extra.iter().map(|(k, v)| (*k, *v)))
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start palaver sfu");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut admin_url = String::new();
        let url = loop {
            let Some(Ok(line)) = lines.next() else {
                let log = std::fs::read_to_string(&stderr_log).unwrap_or_default();
                panic!("palaver sfu exited before listening; stderr:\n{log}");
            };
            if let Some(addr) = line.strip_prefix("palaver: admin listening on ") {
                admin_url = format!("http://{addr}");
            }
            if let Some(addr) = line.strip_prefix("palaver: sfu listening on ") {
                break format!("http://{addr}");
            }
        };
        std::thread::spawn(move || for _ in lines {});
        SfuNode {
            child: Some(child),
            url,
            admin_url,
            id: id.to_owned(),
            stderr_log,
            _tmp: tmp,
        }
    }

    /// SIGKILL: no chance to deregister or drain.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("kill");
            c.wait().expect("wait");
        }
    }

    /// Sends SIGTERM (the node drains) without waiting.
    pub fn sigterm(&self) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// Waits for the process to exit; returns its status.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.take().expect("running").wait().expect("wait")
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }
}

impl Drop for SfuNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The logs of signaling and SFU nodes, for a failure message.
pub fn cluster_logs(sig: &[crate::Server], sfus: &[SfuNode]) -> String {
    let mut out = String::new();
    for (i, s) in sig.iter().enumerate() {
        out += &format!("--- signaling {i}\n{}\n", s.log());
    }
    for s in sfus {
        out += &format!("--- {}\n{}\n", s.id, s.log());
    }
    out
}

/// The index of the node in `sfus` that hosts the ticket's room.
pub fn host_of(sfus: &[SfuNode], t: &palaver_client::GroupCallTicket) -> usize {
    sfus.iter()
        .position(|s| s.url == t.sfu_url)
        .unwrap_or_else(|| panic!("{} is no SFU node", t.sfu_url))
}
