//! Command-line interface.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Palaver: a self-hostable communication backend (chat, calls, media).
///
/// `palaver serve` runs every role in one process with embedded defaults: a
/// SQLite database and a media folder under the data directory, an
/// in-process message bus, the WebSocket gateway on 127.0.0.1:8080 and the
/// admin listener (metrics, health) on 127.0.0.1:9090.
///
/// Settings come from, in increasing priority: built-in defaults, the TOML
/// file given with --config, environment variables named
/// PALAVER__SECTION__KEY (for example PALAVER__SERVER__LISTEN), and the
/// flags of the subcommand. See docs/configuration.md for every key.
#[derive(Debug, Parser)]
#[command(name = "palaver", version, max_term_width = 100)]
pub struct Cli {
    /// TOML configuration file. Unknown keys are an error.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "PALAVER_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every role in one process (the single-machine deployment).
    ///
    /// Today that is the signaling gateway with the messaging core and the
    /// STUN/TURN server; the other roles join as they are implemented (see
    /// README).
    Serve(ServeArgs),
    /// Run only the signaling gateway and messaging core.
    Signaling(ServeArgs),
    /// Run only the SFU for group calls: the HTTP join endpoint on
    /// sfu.listen and the media UDP sockets (config section `sfu`; needs
    /// `sfu.token_secret`, the secret shared with signaling).
    Sfu(ServeArgs),
    /// Run only the STUN/TURN server (config section `turn`; needs
    /// `calls.turn_secret`, the secret shared with signaling).
    Turn(ServeArgs),
    /// Run only the media store: uploads and downloads of attachments on
    /// media.listen (it reads device credentials from the same database).
    Media(ServeArgs),
    /// Run only transcoder workers: they take the jobs that the media role
    /// records when `transcoder.in_process = false`, from the media
    /// database under the same data_dir (config section `transcoder`).
    Transcoder(ServeArgs),
    /// One transcoding job in a resource-limited child process (internal:
    /// started by the transcoder, speaks JSON lines on stdin/stdout).
    #[command(hide = true)]
    TranscodeWorker,
    /// Check the configuration (file, environment, flags) and print it
    /// with secrets hidden, without starting anything.
    CheckConfig(ServeArgs),
}

/// Flags shared by the commands that start listeners. Each overrides the
/// matching key of the configuration file.
#[derive(Debug, Args, Clone, Default)]
pub struct ServeArgs {
    /// Directory for the SQLite database and media files [config: data_dir].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Main listener address, for WebSocket clients and health checks
    /// [config: server.listen, default 127.0.0.1:8080]. Port 0 picks a free
    /// port; the chosen address is printed on stdout.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Admin listener address: /metrics and development helpers
    /// [config: admin.listen, default 127.0.0.1:9090].
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Media listener address: attachment uploads and downloads
    /// [config: media.listen, default 127.0.0.1:8081].
    #[arg(long, value_name = "ADDR")]
    pub media_listen: Option<SocketAddr>,
    /// Serve HTTPS/WSS on the main listener with a self-signed development
    /// certificate, made once in <data_dir>/tls/; its SHA-256 fingerprint
    /// is printed [config: tls.self_signed].
    #[arg(long)]
    pub tls_self_signed: bool,
}
