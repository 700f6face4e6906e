//! The `palaver` binary: reads the configuration, installs logging and
//! metrics, binds the listeners and runs the roles until SIGTERM/SIGINT.

// A binary has no public API: `pub` here only means "used by other modules".
#![allow(unreachable_pub)]

mod admin;
mod cli;
mod cluster;
mod config;
mod http;
mod jobqueue;
mod media;
mod media_proxy;
mod ops;
mod push;
mod run;
mod sfu;
mod sfu_kicks;
mod sfu_node;
mod telemetry;
mod tls;
mod transcode;
mod web;
mod webhook;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if matches!(cli.command, cli::Command::TranscodeWorker) {
        // No runtime, no logging: stdout carries the job protocol.
        return transcode::worker_main();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("palaver: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run::main(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("palaver: {e:#}");
            ExitCode::from(2)
        }
    }
}
