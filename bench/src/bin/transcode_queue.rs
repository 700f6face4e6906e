//! Throughput of the transcoding job queue with trivial jobs (a 64x64 PNG
//! each): starts `palaver serve` as the media role and, for the Redis
//! queue, `palaver transcoder` worker processes; uploads N pictures and
//! measures until the media role has committed every job.
//!
//! transcode-queue [--queue local|redis] [--jobs N] [--workers P]
//!                 [--palaver PATH]
//!
//! The Redis queue needs `PALAVER_TEST_REDIS_URL` (scripts/redis.sh).
//! Prints jobs/s and the machine's CPU use over the run (/proc/stat).

// The result line is the program's output.
#![allow(clippy::print_stdout)]

use anyhow::{Context, bail};
use clap::Parser;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// `local` (in process) or `redis` (separate worker processes).
    #[arg(long, default_value = "redis")]
    queue: String,
    #[arg(long, default_value_t = 200)]
    jobs: usize,
    /// `palaver transcoder` processes (Redis queue), each one job per core.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// The palaver binary; default: next to this one.
    #[arg(long)]
    palaver: Option<PathBuf>,
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `palaver ROLE` and returns it with the addresses it announced.
fn spawn(
    bin: &Path,
    cfg: &Path,
    role: &str,
    dir: &Path,
    want: &[&str],
) -> anyhow::Result<(Proc, Vec<String>)> {
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(cfg)
        .arg(role)
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--media-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .env("PALAVER__TURN__LISTEN_UDP", "\"127.0.0.1:0\"")
        .env("PALAVER__TURN__LISTEN_TCP", "\"127.0.0.1:0\"")
        .env("PALAVER__SERVE__SFU", "false")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut found = vec![String::new(); want.len()];
    while found.iter().any(String::is_empty) {
        let Some(Ok(line)) = lines.next() else {
            bail!("palaver {role} exited before listening");
        };
        for (i, w) in want.iter().enumerate() {
            if line.starts_with(&format!("palaver: {w} listening on")) {
                found[i] = line.rsplit(' ').next().unwrap_or("").to_owned();
            }
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Ok((Proc(child), found))
}

/// Busy and total jiffies of all CPUs.
fn cpu() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// A counter's value in Prometheus text.
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

async fn metric(admin: &str, name: &str) -> u64 {
    let url = format!("http://{admin}/metrics");
    match palaver_client::media::request(&url, "GET", &[], &[]).await {
        Ok(r) => counter(&String::from_utf8_lossy(&r.body), name),
        Err(_) => 0,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let bin = match a.palaver {
        Some(p) => p,
        None => std::env::current_exe()?.with_file_name("palaver"),
    };
    let tmp = tempfile::tempdir()?;
    let redis = a.queue == "redis";
    let mut cfg = String::from("[transcoder]\npoll_interval = \"100ms\"\n");
    if redis {
        let url = std::env::var("PALAVER_TEST_REDIS_URL")
            .context("PALAVER_TEST_REDIS_URL: start scripts/redis.sh")?;
        let name = format!("bench{:x}", std::process::id());
        cfg = format!(
            "[cluster]\nname = \"{name}\"\n[transcoder]\nqueue_backend = \"redis\"\n\
             redis_url = \"{url}\"\npoll_interval = \"100ms\"\n"
        );
    }
    let media_cfg = tmp.path().join("media.toml");
    let extra = if redis { "in_process = false\n" } else { "" };
    std::fs::write(&media_cfg, format!("{cfg}{extra}"))?;
    let (_media, addrs) = spawn(
        &bin,
        &media_cfg,
        "serve",
        &tmp.path().join("media"),
        &["media", "main", "admin"],
    )?;
    let (media_url, ws, admin) = (
        format!("http://{}", addrs[0]),
        format!("ws://{}/v1/ws", addrs[1]),
        addrs[2].clone(),
    );
    let mut workers = Vec::new();
    if redis {
        let wcfg = tmp.path().join("worker.toml");
        std::fs::write(&wcfg, &cfg)?;
        for i in 0..a.workers {
            let dir = tmp.path().join(format!("worker{i}"));
            workers.push(spawn(&bin, &wcfg, "transcoder", &dir, &["admin"])?.0);
        }
    }
    let reg =
        palaver_client::register_dev(&ws, &format!("http://{admin}"), "+4915112345678", "bench")
            .await?;
    let auth = format!("Bearer {}:{}", reg.device.0, reg.credential);
    let png = tmp.path().join("p.png");
    palaver_transcoder::corpus::picture(&png, 64, 64)?;
    let png = std::fs::read(&png)?;
    let (busy0, total0) = cpu();
    let start = Instant::now();
    for i in 0..a.jobs {
        // Trailing bytes after IEND make each upload distinct.
        let mut body = png.clone();
        body.extend_from_slice(format!("{i:08}").as_bytes());
        let r = palaver_client::media::request(
            &format!("{media_url}/v1/media"),
            "POST",
            &[("Authorization", &auth), ("Content-Type", "image/png")],
            &body,
        )
        .await?;
        if r.status != 201 {
            bail!("upload answered {}", r.status);
        }
    }
    let uploaded = start.elapsed();
    let name = "palaver_transcoder_jobs_completed_total";
    loop {
        let done = metric(&admin, name).await;
        let failed = metric(&admin, "palaver_transcoder_jobs_failed_total").await;
        if done + failed >= a.jobs as u64 {
            if failed > 0 {
                eprintln!("{failed} jobs failed");
            }
            break;
        }
        if start.elapsed() > Duration::from_secs(3600) {
            bail!("only {done} of {} jobs done after an hour", a.jobs);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wall = start.elapsed();
    let (busy1, total1) = cpu();
    let cpu_use = (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64;
    println!(
        "queue={} jobs={} worker_processes={} uploads={:.2}s wall={:.2}s throughput={:.1} jobs/s cpu={:.0}%",
        a.queue,
        a.jobs,
        if redis { a.workers } else { 0 },
        uploaded.as_secs_f64(),
        wall.as_secs_f64(),
        a.jobs as f64 / wall.as_secs_f64(),
        cpu_use * 100.0
    );
    drop(workers);
    Ok(())
}
