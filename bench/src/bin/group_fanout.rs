//! Group fan-out: one sender, a group of `--members` accounts (one device
//! each, all connected), `--messages` group messages. Reports the time from
//! each send to its last delivery and the deliveries per second, plus the
//! server's CPU time per delivery when `--server-pid` is given.

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use palaver_bench::{
    Creds, RegisterOptions, Ws, auth, call, connect, cpu_seconds, next_frame, now_us, percentile,
    register_all, require_loopback, send_frame, small_ws_config,
};
use palaver_proto::codec::encode_client;
use palaver_proto::frames::{ClientFrame, EnvelopeKind, Payload, ServerFrame};
use palaver_proto::{AccountId, ClientMsgId, GroupId, RequestId};
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Parser)]
#[command(about = "Measures group fan-out: time to last delivery and deliveries/s")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:28480")]
    server: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:29490")]
    admin: SocketAddr,
    /// Group size, the sender included (at most the server's
    /// max_group_members).
    #[arg(long, default_value_t = 1024)]
    members: usize,
    /// Messages sent one after the other (each waits for its last delivery).
    #[arg(long, default_value_t = 20)]
    messages: usize,
    /// Then this many more sent back to back, for deliveries/s.
    #[arg(long, default_value_t = 50)]
    burst: usize,
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    #[arg(long, default_value = "+49170")]
    phone_prefix: String,
    #[arg(long, default_value = "fanout-creds.txt")]
    cache: PathBuf,
    #[arg(long)]
    server_pid: Option<String>,
    #[arg(long, default_value = "")]
    label: String,
}

/// A member's connection: acks everything and reports when each group
/// message arrived.
async fn member(mut ws: Ws, tx: mpsc::UnboundedSender<(String, u64)>) -> anyhow::Result<()> {
    loop {
        let f = next_frame(&mut ws).await?;
        if let ServerFrame::Envelope {
            seq,
            kind,
            msg,
            group,
            ..
        } = f
        {
            let at = now_us();
            send_frame(&mut ws, &ClientFrame::Ack { seqs: vec![seq] }).await?;
            if kind == EnvelopeKind::Message && group.is_some() {
                let _ = tx.send((msg.as_str().to_owned(), at));
            }
        }
    }
}

async fn make_group(ws: &mut Ws, members: &[Creds]) -> anyhow::Result<GroupId> {
    let others: Vec<AccountId> = members.iter().map(|c| AccountId(c.account)).collect();
    let mut chunks = others.chunks(256);
    let first = chunks.next().unwrap_or_default().to_vec();
    let id = RequestId(10);
    let frame = ClientFrame::GroupCreate {
        id,
        name: "fan-out".into(),
        members: first,
    };
    let group = match call(ws, frame, id).await? {
        ServerFrame::Group { group, .. } => group.group,
        other => bail!("group_create: {other:?}"),
    };
    for (i, chunk) in chunks.enumerate() {
        let id = RequestId(11 + i as u64);
        let frame = ClientFrame::GroupAdd {
            id,
            group,
            accounts: chunk.to_vec(),
        };
        match call(ws, frame, id).await? {
            ServerFrame::Group { .. } => {}
            other => bail!("group_add: {other:?}"),
        }
    }
    Ok(group)
}

type Sink = futures_util::stream::SplitSink<Ws, Message>;

/// The id of the n-th message; unique per group, so reruns against the same
/// database are not taken for resends.
fn msg_id(group: GroupId, n: usize) -> String {
    format!("f{}.{n}", group.0)
}

async fn send(ws: &mut Sink, group: GroupId, n: usize, payload: usize) -> anyhow::Result<u64> {
    let id = RequestId(1000 + n as u64);
    let frame = ClientFrame::GroupSend {
        id,
        group,
        msg: ClientMsgId::new(msg_id(group, n)).context("msg id")?,
        payload: Payload(vec![7; payload]),
        edit_of: None,
    };
    let at = now_us();
    ws.send(Message::Text(encode_client(&frame).into())).await?;
    Ok(at)
}

/// Waits until `count` deliveries of message `msg` were reported; returns
/// the time of the last one.
async fn last_delivery(
    rx: &mut mpsc::UnboundedReceiver<(String, u64)>,
    pending: &mut std::collections::HashMap<String, (usize, u64)>,
    msg: &str,
    count: usize,
) -> anyhow::Result<u64> {
    loop {
        if let Some((n, last)) = pending.get(msg)
            && *n >= count
        {
            return Ok(*last);
        }
        let (m, at) = tokio::time::timeout(std::time::Duration::from_secs(60), rx.recv())
            .await
            .context("deliveries stopped")?
            .context("members gone")?;
        let e = pending.entry(m).or_insert((0, 0));
        e.0 += 1;
        e.1 = e.1.max(at);
    }
}

#[tokio::main]
#[allow(clippy::print_stdout)]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    require_loopback(a.server)?;
    require_loopback(a.admin)?;
    let creds = register_all(&RegisterOptions {
        server: a.server,
        admin: a.admin,
        prefix: a.phone_prefix.clone(),
        accounts: a.members,
        devices_per_account: 1,
        concurrency: 32,
        cache: a.cache.clone(),
    })
    .await?;
    let all: Vec<Creds> = creds.into_iter().map(|mut v| v.remove(0)).collect();
    let (sender, rest) = all.split_first().context("no accounts")?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    for c in rest {
        let mut ws = connect(a.server, None, small_ws_config(4096)).await?;
        auth(&mut ws, c).await?;
        tokio::spawn(member(ws, tx.clone()));
    }
    let mut ws = connect(a.server, None, small_ws_config(4096)).await?;
    auth(&mut ws, sender).await?;
    let group = make_group(&mut ws, rest).await?;
    let (mut ws, mut replies) = ws.split();
    // The sender only keeps its socket drained (replies and receipts).
    tokio::spawn(async move { while replies.next().await.is_some() {} });
    let mut pending = std::collections::HashMap::new();
    let fanout = rest.len();
    let cpu_before = a
        .server_pid
        .as_deref()
        .and_then(|p| cpu_seconds(p, "sqlite-writer"));
    let mut times = Vec::new();
    for n in 0..a.messages {
        let at = send(&mut ws, group, n, a.payload_bytes).await?;
        let last = last_delivery(&mut rx, &mut pending, &msg_id(group, n), fanout).await?;
        times.push(((last - at) / 1000) as u32);
    }
    let start = now_us();
    for n in a.messages..a.messages + a.burst {
        send(&mut ws, group, n, a.payload_bytes).await?;
    }
    let mut end = start;
    for n in a.messages..a.messages + a.burst {
        end = end.max(last_delivery(&mut rx, &mut pending, &msg_id(group, n), fanout).await?);
    }
    let cpu_after = a
        .server_pid
        .as_deref()
        .and_then(|p| cpu_seconds(p, "sqlite-writer"));
    times.sort_unstable();
    let deliveries = (a.burst * fanout) as f64;
    let secs = (end - start) as f64 / 1e6;
    let cpu = match (cpu_before, cpu_after) {
        (Some(b), Some(e)) => {
            let per = 1e6 / ((a.messages + a.burst) * fanout) as f64;
            format!(
                "{:.1} µs ({:.1} writer)",
                (e.0 - b.0) * per,
                (e.1 - b.1) * per
            )
        }
        _ => "-".into(),
    };
    println!(
        "| {} | {} | {} | {} ms | {} ms | {} ms | {:.0} | {} |",
        a.label,
        a.members,
        a.messages,
        percentile(&times, 50.0),
        percentile(&times, 99.0),
        times.last().copied().unwrap_or(0),
        deliveries / secs,
        cpu
    );
    Ok(())
}
