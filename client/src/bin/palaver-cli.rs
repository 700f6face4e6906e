//! `palaver-cli`: chat through a Palaver server from a terminal.
//!
//! Payloads are sent as plain UTF-8 bytes: this client does not encrypt end
//! to end yet, so use it for development and testing only.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use palaver_client::proto::ClientMsgId;
use palaver_client::{Client, Event, Registration, proto::frames::EnvelopeKind};
use std::io::{BufRead, Write};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "palaver-cli",
    version,
    about = "Chat through a Palaver server from a terminal"
)]
struct Cli {
    /// WebSocket URL of the server.
    #[arg(
        long,
        global = true,
        default_value = "ws://127.0.0.1:8080/v1/ws",
        env = "PALAVER_SERVER"
    )]
    server: String,
    /// Where this device's identity is kept (mode 0600).
    #[arg(
        long,
        global = true,
        env = "PALAVER_CLI_STATE",
        default_value = "palaver-cli.json"
    )]
    state: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Register this terminal as a device of the account of PHONE.
    Register {
        #[arg(long)]
        phone: String,
        /// The code; if absent, read from --admin (development verifier) or asked for.
        #[arg(long)]
        code: Option<String>,
        /// Admin listener of a server using the development verifier.
        #[arg(long)]
        admin: Option<String>,
        #[arg(long, default_value = "palaver-cli")]
        name: String,
    },
    /// Send one text message to the account of PHONE.
    Send { phone: String, text: String },
    /// Print incoming messages and receipts until interrupted.
    Listen,
    /// Read lines from stdin and send each to PHONE, printing what arrives.
    Chat { phone: String },
    /// List this account's devices.
    Devices,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct State {
    phone: String,
    registration: Registration,
}

fn save(path: &PathBuf, state: &State) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(serde_json::to_string_pretty(state)?.as_bytes())?;
    Ok(())
}

fn load(path: &PathBuf) -> anyhow::Result<State> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "no device state at {}; run `palaver-cli register` first",
            path.display()
        )
    })?;
    Ok(serde_json::from_str(&text)?)
}

async fn connect(cli: &Cli) -> anyhow::Result<Client> {
    let state = load(&cli.state)?;
    let mut c = Client::connect(&cli.server).await?;
    c.auth(state.registration.device, &state.registration.credential)
        .await?;
    Ok(c)
}

fn new_msg_id() -> ClientMsgId {
    let n: u128 = rand::random();
    ClientMsgId::new(format!("{n:032x}")).expect("hex is a valid id")
}

#[allow(clippy::print_stdout)]
fn show(event: &Event) {
    match event {
        Event::Envelope(e) => match e.kind {
            EnvelopeKind::Message => {
                let text = String::from_utf8_lossy(e.payload.as_deref().unwrap_or_default());
                match e.group {
                    Some(g) => println!("[group {g}] [{}] {}", e.from, text),
                    None => println!("[{}] {}", e.from, text),
                }
            }
            EnvelopeKind::GroupEvent => println!("  (group event {:?})", e.event),
            EnvelopeKind::Revoke => println!("  ({} deleted {} for everyone)", e.from, e.msg),
            EnvelopeKind::Timer => println!("  (disappearing timer {:?})", e.timer),
            EnvelopeKind::Status => println!("  (status {} from {})", e.msg, e.from),
            EnvelopeKind::StatusView => println!("  ({} viewed status {})", e.from, e.msg),
            EnvelopeKind::Auto => {
                let text = String::from_utf8_lossy(e.payload.as_deref().unwrap_or_default());
                println!("[{} (automatic)] {}", e.from, text);
            }
            EnvelopeKind::Delivered => println!("  (delivered {} to {})", e.msg, e.from),
            EnvelopeKind::Read => println!("  (read {} by {})", e.msg, e.from),
        },
        Event::Typing { from, typing, .. } => {
            println!(
                "  ({from} {})",
                if *typing {
                    "is typing"
                } else {
                    "stopped typing"
                }
            )
        }
        Event::Presence(p) => println!("  (presence {:?})", p),
        Event::Call(f) => println!("  (call {f:?})"),
        Event::Error(e) => println!("  (server error {}: {})", e.code.as_str(), e.message),
        Event::KeysLow { one_time_keys } => println!("  ({one_time_keys} one-time keys left)"),
        Event::SettingsChanged { version } => println!("  (settings now at version {version})"),
    }
}

#[tokio::main(flavor = "current_thread")]
#[allow(clippy::print_stdout)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Cmd::Register {
            phone,
            code,
            admin,
            name,
        } => {
            let mut c = Client::connect(&cli.server).await?;
            c.request_code(phone).await?;
            let code = match (code, admin) {
                (Some(code), _) => code.clone(),
                (None, Some(admin)) => palaver_client::dev_code(admin, phone).await?,
                (None, None) => {
                    print!("code sent to {phone}; enter it: ");
                    std::io::stdout().flush()?;
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    line.trim().to_owned()
                }
            };
            let registration = c.verify(phone, &code, name).await?;
            println!(
                "registered device {} of account {}",
                registration.device, registration.account
            );
            save(
                &cli.state,
                &State {
                    phone: phone.clone(),
                    registration,
                },
            )?;
        }
        Cmd::Send { phone, text } => {
            let mut c = connect(&cli).await?;
            let to = c.lookup(phone).await?;
            let sent = c
                .send_to_all(to, &new_msg_id(), |_| text.as_bytes().to_vec())
                .await?;
            println!("sent at {}", sent.ts);
        }
        Cmd::Listen => {
            let mut c = connect(&cli).await?;
            loop {
                let event = c.next_event().await?;
                show(&event);
                if let Event::Envelope(e) = event {
                    c.ack(vec![e.seq]).await?;
                }
            }
        }
        Cmd::Chat { phone } => {
            let mut c = connect(&cli).await?;
            let to = c.lookup(phone).await?;
            let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(16);
            std::thread::spawn(move || {
                for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                    if tx.blocking_send(line).is_err() {
                        break;
                    }
                }
            });
            loop {
                tokio::select! {
                    line = rx.recv() => {
                        let Some(line) = line else { break };
                        c.send_to_all(to, &new_msg_id(), |_| line.as_bytes().to_vec()).await?;
                    }
                    event = c.next_event() => {
                        let event = event?;
                        show(&event);
                        if let Event::Envelope(e) = event {
                            c.ack(vec![e.seq]).await?;
                        }
                    }
                }
            }
        }
        Cmd::Devices => {
            let mut c = connect(&cli).await?;
            let Some((account, _)) = c.me() else {
                bail!("not authenticated")
            };
            for d in c.devices(account).await? {
                println!("{d}");
            }
        }
    }
    Ok(())
}
