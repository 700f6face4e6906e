//! Jobs in a child process: the parent writes one JSON request line on
//! the child's stdin; the child sets its resource limits (address space,
//! CPU seconds, file size) before it reads any media, runs the job and
//! writes progress lines and one result line on stdout. The parent kills
//! the child at the wall-clock limit. A crash, an out-of-memory abort or a
//! limit signal ends as a failed job with a reason; the server lives on.

use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::job::{Job, JobError, Outcome};

/// Resource limits of one worker process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessLimits {
    /// RLIMIT_AS: address space, bytes.
    pub memory_bytes: u64,
    /// RLIMIT_CPU: CPU seconds (all threads).
    pub cpu_secs: u64,
    /// RLIMIT_FSIZE: largest file the worker may write, bytes.
    pub file_bytes: u64,
}

impl Default for ProcessLimits {
    fn default() -> Self {
        ProcessLimits {
            memory_bytes: 2 << 30,
            cpu_secs: 600,
            file_bytes: 512 << 20,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct WorkerRequest {
    job: Job,
    limits: ProcessLimits,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum WorkerLine {
    Progress(f32),
    Result(Box<Result<Outcome, JobError>>),
}

/// How to start a worker: the program (usually the `palaver` binary
/// itself) and the arguments of its hidden worker subcommand.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// The child side: reads the request from `input`, applies the limits,
/// runs the job, reports on `output`. Returns the process exit code.
pub fn child_main(input: impl BufRead, mut output: impl Write) -> i32 {
    let mut line = String::new();
    let mut input = input;
    if input.read_line(&mut line).is_err() {
        return 2;
    }
    let req: WorkerRequest = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            let _ = send(
                &mut output,
                &WorkerLine::Result(Box::new(Err(JobError::Worker(e.to_string())))),
            );
            return 2;
        }
    };
    if let Err(e) = apply_limits(&req.limits) {
        let _ = send(
            &mut output,
            &WorkerLine::Result(Box::new(Err(JobError::Worker(e)))),
        );
        return 2;
    }
    let mut last = -1.0f32;
    let result = crate::job::run(&req.job, &mut |p| {
        // Report whole percents only.
        if (p - last) >= 0.01 {
            last = p;
            let _ = send(&mut output, &WorkerLine::Progress(p));
        }
    });
    match send(&mut output, &WorkerLine::Result(Box::new(result))) {
        Ok(()) => 0,
        Err(_) => 2,
    }
}

fn send(out: &mut impl Write, l: &WorkerLine) -> std::io::Result<()> {
    let mut s = serde_json::to_string(l).map_err(std::io::Error::other)?;
    s.push('\n');
    out.write_all(s.as_bytes())?;
    out.flush()
}

fn apply_limits(l: &ProcessLimits) -> Result<(), String> {
    use rustix::process::{Resource, Rlimit, setrlimit};
    for (res, v) in [
        (Resource::As, l.memory_bytes),
        (Resource::Cpu, l.cpu_secs),
        (Resource::Fsize, l.file_bytes),
    ] {
        let lim = Rlimit {
            current: Some(v),
            maximum: Some(v),
        };
        setrlimit(res, lim).map_err(|e| format!("setrlimit {res:?}: {e}"))?;
    }
    Ok(())
}

/// The parent side: runs `job` in a new worker process, reporting
/// progress, and kills it after `job.timeout` plus a grace second.
pub async fn run(
    cmd: &WorkerCommand,
    job: &Job,
    limits: &ProcessLimits,
    mut progress: impl FnMut(f32),
) -> Result<Outcome, JobError> {
    let mut child = tokio::process::Command::new(&cmd.program)
        .args(&cmd.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // glibc reserves 64 MiB of address space per malloc arena (up to
        // 8 per core): keep them few so RLIMIT_AS measures real use.
        .env("MALLOC_ARENA_MAX", "2")
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| JobError::Worker(format!("cannot start the worker: {e}")))?;
    let req = WorkerRequest {
        job: job.clone(),
        limits: limits.clone(),
    };
    let mut line = serde_json::to_string(&req).map_err(|e| JobError::Worker(e.to_string()))?;
    line.push('\n');
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| JobError::Worker(format!("cannot talk to the worker: {e}")))?;
    }
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| JobError::Worker("no worker output".into()))?;
    let read = read_result(BufReader::new(stdout), &mut progress);
    let wall = job.timeout + Duration::from_secs(1);
    match tokio::time::timeout(wall, read).await {
        Ok(Some(r)) => {
            let _ = child.wait().await;
            r
        }
        Ok(None) => {
            let status = child.wait().await.ok();
            Err(JobError::Worker(describe(status)))
        }
        Err(_) => {
            let _ = child.kill().await;
            Err(JobError::Timeout)
        }
    }
}

/// Longest line a worker may write (a result is a few KiB).
const MAX_LINE: u64 = 1 << 20;

async fn read_result<R: tokio::io::AsyncRead + Unpin>(
    mut out: BufReader<R>,
    progress: &mut impl FnMut(f32),
) -> Option<Result<Outcome, JobError>> {
    use tokio::io::AsyncReadExt;
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut out).take(MAX_LINE).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return None,
            Ok(_) if line.last() != Some(&b'\n') => {
                return Some(Err(JobError::Worker("worker output line too long".into())));
            }
            Ok(_) => {}
        }
        match serde_json::from_slice::<WorkerLine>(&line) {
            Ok(WorkerLine::Progress(p)) => progress(p),
            Ok(WorkerLine::Result(r)) => return Some(*r),
            Err(_) => return Some(Err(JobError::Worker("garbled worker output".into()))),
        }
    }
}

/// Why a worker ended without a result.
fn describe(status: Option<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    let Some(s) = status else {
        return "the worker vanished".into();
    };
    match s.signal() {
        Some(24) => "the CPU time limit was reached (SIGXCPU)".into(),
        Some(25) => "the output size limit was reached (SIGXFSZ)".into(),
        Some(6) => "the worker aborted (SIGABRT; out of memory under the limit?)".into(),
        Some(9) => "the worker was killed (SIGKILL)".into(),
        Some(11) => "the worker crashed (SIGSEGV)".into(),
        Some(n) => format!("the worker died of signal {n}"),
        None => format!(
            "the worker exited with {} and no result",
            s.code().unwrap_or(-1)
        ),
    }
}
