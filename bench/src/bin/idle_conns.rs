//! Idle-connection benchmark: opens up to N authenticated WebSocket
//! connections to one `palaver serve` on loopback and reports the server's
//! resident memory (and the kernel's socket memory) at several connection
//! counts. After `auth` each connection is parked as a bare socket: the
//! client keeps no WebSocket state and no task per connection, so its own
//! memory stays small.
//!
//! Stops by itself: after the last step (or when free memory falls under
//! `--min-free-gib`) it holds the connections for `--hold-secs`, prints the
//! table and exits, which closes every connection.

// A benchmark prints its results on stdout.
#![allow(clippy::print_stdout)]

use anyhow::bail;
use clap::Parser;
use palaver_bench::{Creds, RegisterOptions, auth, connect, register_all, small_ws_config};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(about = "Holds many authenticated idle connections and measures server memory")]
struct Args {
    /// Main listener of the server (loopback only).
    #[arg(long, default_value = "127.0.0.1:28480")]
    server: SocketAddr,
    /// Admin listener of the server (development code look-up).
    #[arg(long, default_value = "127.0.0.1:29490")]
    admin: SocketAddr,
    /// PID of the server, to read its VmRSS from /proc.
    #[arg(long)]
    server_pid: Option<String>,
    /// Connection counts at which to measure; the last is the target.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10000,100000,250000,500000,750000,1000000"
    )]
    steps: Vec<usize>,
    /// Devices per account (the server's `signaling.max_devices` must allow it).
    #[arg(long, default_value_t = 64)]
    devices_per_account: usize,
    /// Phone prefix of the benchmark accounts (then 8 digits).
    #[arg(long, default_value = "+49151")]
    phone_prefix: String,
    /// Credentials cache (reused across runs with the same data dir).
    #[arg(long, default_value = "idle-creds.txt")]
    cache: PathBuf,
    /// Register the devices (or complete the cache) and exit.
    #[arg(long)]
    register_only: bool,
    /// Accounts registered in parallel.
    #[arg(long, default_value_t = 128)]
    register_concurrency: usize,
    /// Connections being opened at the same time.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Connections per source address 127.B.x.y. Keep it well below half
    /// the ephemeral port range (28k ports by default): `bind` to port 0
    /// looks for free even ports first, and slows down sharply once they
    /// run out.
    #[arg(long, default_value_t = 10_000)]
    per_source: usize,
    /// Second octet of the source addresses: 127.B.x.y. Change it between
    /// runs so that client ports still in TIME_WAIT do not collide.
    #[arg(long, default_value_t = 1)]
    source_base: u8,
    /// Seconds to wait at each step before measuring.
    #[arg(long, default_value_t = 5)]
    settle_secs: u64,
    /// Seconds to hold all connections after the last step.
    #[arg(long, default_value_t = 5)]
    hold_secs: u64,
    /// Stop opening connections when MemAvailable falls under this.
    #[arg(long, default_value_t = 3.0)]
    min_free_gib: f64,
    /// Descriptors left for the server's own files when the open-files
    /// limit caps the connection count.
    /// (The server opens a SQLite reader per concurrent read, so leave
    /// room for `--concurrency` of them.)
    #[arg(long, default_value_t = 1000)]
    fd_reserve: u64,
    /// Give up after this many failed connections.
    #[arg(long, default_value_t = 2000)]
    max_failures: usize,
}

fn source_ip(base: u8, index: usize, per_source: usize) -> IpAddr {
    let s = index / per_source.max(1);
    IpAddr::V4(Ipv4Addr::new(
        127,
        base,
        (s / 250) as u8,
        (s % 250 + 1) as u8,
    ))
}

#[derive(Debug, Default, Clone)]
struct Snapshot {
    server_rss: u64,
    client_rss: u64,
    mem_available_kib: u64,
    slab_kib: u64,
    sockstat: String,
}

fn snapshot(server_pid: Option<&str>) -> Snapshot {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    Snapshot {
        server_rss: server_pid
            .and_then(palaver_bench::vm_rss)
            .unwrap_or_default(),
        client_rss: palaver_bench::vm_rss("self").unwrap_or_default(),
        mem_available_kib: palaver_bench::status_kib(&meminfo, "MemAvailable:").unwrap_or(0),
        slab_kib: palaver_bench::status_kib(&meminfo, "Slab:").unwrap_or(0),
        sockstat: sockstat
            .lines()
            .find(|l| l.starts_with("TCP:"))
            .unwrap_or("")
            .to_owned(),
    }
}

async fn open_one(
    server: SocketAddr,
    source: IpAddr,
    creds: Creds,
) -> anyhow::Result<std::net::TcpStream> {
    let mut ws = connect(server, Some(source), small_ws_config(256)).await?;
    auth(&mut ws, &creds).await?;
    // Park the bare socket: no task, no buffers in this process.
    let stream = ws.into_inner().into_std()?;
    Ok(stream)
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    palaver_bench::require_loopback(args.server)?;
    palaver_bench::require_loopback(args.admin)?;
    let mut steps = args.steps.clone();
    // Each connection is one descriptor in the server and one here; both
    // processes inherit the limit of the shell that started them.
    if let Some(limit) = palaver_bench::open_files_limit() {
        let cap = limit.saturating_sub(args.fd_reserve) as usize;
        if steps.iter().any(|&s| s > cap) {
            println!(
                "note: the open-files limit is {limit}: measuring at most {cap} connections \
                 (raise `ulimit -n` and fs.nr_open to go further)"
            );
            steps.retain(|&s| s < cap);
            steps.push(cap);
        }
    }
    let target = steps.iter().copied().max().unwrap_or(0);
    let per = args.devices_per_account.max(1);
    let opts = RegisterOptions {
        server: args.server,
        admin: args.admin,
        prefix: args.phone_prefix.clone(),
        accounts: target.div_ceil(per),
        devices_per_account: per,
        concurrency: args.register_concurrency,
        cache: args.cache.clone(),
    };
    let reg_started = Instant::now();
    let accounts = register_all(&opts).await?;
    println!(
        "credentials ready for {} devices on {} accounts ({:.1} s)",
        accounts.len() * per,
        accounts.len(),
        reg_started.elapsed().as_secs_f64()
    );
    if args.register_only {
        return Ok(());
    }
    let creds: Vec<Creds> = accounts.into_iter().flatten().take(target).collect();
    let creds = Arc::new(creds);
    let pid = args.server_pid.as_deref();

    let base = snapshot(pid);
    println!(
        "baseline: server VmRSS {:.1} MiB, MemAvailable {:.2} GiB, Slab {:.1} MiB, {}",
        base.server_rss as f64 / 1048576.0,
        base.mem_available_kib as f64 / 1048576.0,
        base.slab_kib as f64 / 1024.0,
        base.sockstat
    );
    println!();
    println!(
        "| connections | open rate (conn/s) | server VmRSS (MiB) | server bytes/conn | kernel Slab delta (MiB) | slab bytes/conn | client VmRSS (MiB) | MemAvailable (GiB) | sockstat |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");

    let mut parked: Vec<std::net::TcpStream> = Vec::with_capacity(target);
    let mut next = 0usize;
    let mut failures = 0usize;
    let mut first_error: Option<String> = None;
    let mut stop_reason = String::from("reached the last step");
    'steps: for &step in &steps {
        let step_started = Instant::now();
        let before = parked.len();
        let mut set = tokio::task::JoinSet::new();
        let mut last_mem_check = Instant::now();
        while parked.len() + set.len() < step || !set.is_empty() {
            if parked.len() + set.len() < step && set.len() < args.concurrency {
                if next >= creds.len() {
                    if set.is_empty() {
                        stop_reason = "ran out of registered devices".into();
                        break 'steps;
                    }
                } else {
                    let c = creds[next].clone();
                    let src = source_ip(args.source_base, next, args.per_source);
                    next += 1;
                    set.spawn(open_one(args.server, src, c));
                    continue;
                }
            }
            match set.join_next().await {
                Some(Ok(Ok(s))) => parked.push(s),
                Some(Ok(Err(e))) => {
                    failures += 1;
                    first_error.get_or_insert_with(|| format!("{e:#}"));
                    if failures >= args.max_failures {
                        stop_reason = format!("{failures} failed connections");
                        set.abort_all();
                        break 'steps;
                    }
                }
                Some(Err(e)) => bail!("connection task failed: {e}"),
                None => {}
            }
            if last_mem_check.elapsed() > Duration::from_secs(1) {
                last_mem_check = Instant::now();
                let s = snapshot(None);
                if (s.mem_available_kib as f64) * 1024.0 < args.min_free_gib * GIB {
                    stop_reason = format!(
                        "MemAvailable fell under {} GiB at {} connections",
                        args.min_free_gib,
                        parked.len()
                    );
                    set.abort_all();
                    while let Some(r) = set.join_next().await {
                        if let Ok(Ok(s)) = r {
                            parked.push(s);
                        }
                    }
                    break 'steps;
                }
            }
        }
        let rate = (parked.len() - before) as f64 / step_started.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
        print_row(&base, &snapshot(pid), parked.len(), rate);
    }
    if parked.len() < target {
        // Measure where we stopped too.
        tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
        print_row(&base, &snapshot(pid), parked.len(), f64::NAN);
    }
    println!();
    println!(
        "stopped: {stop_reason}; {} connections open, {failures} failed{}",
        parked.len(),
        first_error
            .map(|e| format!(" (first error: {e})"))
            .unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    // Check that the connections are still open: the server closes idle
    // ones after `idle_timeout`, which the benchmark config raises.
    let alive = parked
        .iter()
        .filter(|s| {
            let mut b = [0u8; 1];
            matches!(s.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count();
    println!(
        "after holding {} s: {alive} of {} connections still open",
        args.hold_secs,
        parked.len()
    );
    let closing = Instant::now();
    drop(parked);
    println!(
        "closed all connections in {:.1} s",
        closing.elapsed().as_secs_f64()
    );
    Ok(())
}

fn print_row(base: &Snapshot, s: &Snapshot, n: usize, rate: f64) {
    let n_f = n.max(1) as f64;
    let rss_delta = s.server_rss as f64 - base.server_rss as f64;
    let slab_delta = (s.slab_kib as f64 - base.slab_kib as f64) * 1024.0;
    println!(
        "| {n} | {rate:.0} | {:.1} | {:.0} | {:.1} | {:.0} | {:.1} | {:.2} | {} |",
        s.server_rss as f64 / 1048576.0,
        rss_delta / n_f,
        slab_delta / 1048576.0,
        slab_delta / n_f,
        s.client_rss as f64 / 1048576.0,
        s.mem_available_kib as f64 / 1048576.0,
        s.sockstat.trim_start_matches("TCP:").trim()
    );
}
