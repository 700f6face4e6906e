//! A group-call participant on the SFU (docs/sfu.md): joins with a ticket
//! from signaling, sends the same VP8 and Opus tracks as a 1:1 call, answers
//! the SFU's renegotiation offers on the `palaver` data channel, and counts
//! the RTP of every remote track it is given.

use crate::{MediaFiles, Peer, PeerConfig, Received, SentSamples, rtc_ice_servers, send_media};
use anyhow::{Context, Result, bail};
use palaver_client::{GroupCallTicket, sfu_join};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{PeerConnection, RTCPeerConnectionState, RTCSessionDescription};

/// A participant in a group call.
pub struct GroupPeer {
    pc: Arc<dyn PeerConnection>,
    state: watch::Receiver<RTCPeerConnectionState>,
    received: watch::Receiver<Received>,
    sent: watch::Receiver<SentSamples>,
    /// Data channel messages from the SFU, as JSON.
    messages: watch::Receiver<Vec<serde_json::Value>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for GroupPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupPeer").finish_non_exhaustive()
    }
}

/// Joins the room of `ticket`, publishing `files`.
pub async fn join_group(
    ticket: &GroupCallTicket,
    files: &MediaFiles,
    config: &PeerConfig,
) -> Result<GroupPeer> {
    let peer = Peer::new(files, config, rtc_ice_servers(&ticket.ice_servers)).await?;
    let dc = peer
        .pc
        .create_data_channel("palaver", None)
        .await
        .context("data channel")?;
    let offer = peer.pc.create_offer(None).await.context("create offer")?;
    let sdp = offer.sdp.clone();
    peer.pc
        .set_local_description(offer)
        .await
        .context("set local offer")?;
    let answer = sfu_join(ticket, &sdp).await.context("join the SFU")?;
    let answer = RTCSessionDescription::answer(answer).context("parse answer")?;
    peer.pc
        .set_remote_description(answer)
        .await
        .context("set remote answer")?;
    let (sent_tx, sent) = watch::channel(SentSamples::default());
    let sent_tx = Arc::new(sent_tx);
    let mut tasks = Vec::new();
    for (track, sender, frames) in [peer.video, peer.audio] {
        tasks.push(tokio::spawn(send_media(
            track,
            sender,
            frames,
            peer.state.clone(),
            sent_tx.clone(),
        )));
    }
    let (msg_tx, messages) = watch::channel(Vec::new());
    tasks.push(tokio::spawn(channel_loop(peer.pc.clone(), dc, msg_tx)));
    Ok(GroupPeer {
        pc: peer.pc,
        state: peer.state,
        received: peer.received.subscribe(),
        sent,
        messages,
        tasks,
    })
}

/// Answers the SFU's offers; keeps every message it sends.
async fn channel_loop(
    pc: Arc<dyn PeerConnection>,
    dc: Arc<dyn DataChannel>,
    messages: watch::Sender<Vec<serde_json::Value>>,
) {
    while let Some(event) = dc.poll().await {
        let DataChannelEvent::OnMessage(msg) = event else {
            continue;
        };
        let Ok(m) = serde_json::from_slice::<serde_json::Value>(&msg.data) else {
            warn!("unreadable message from the SFU");
            continue;
        };
        if m["type"] == "offer" {
            let sdp = m["sdp"].as_str().unwrap_or_default().to_owned();
            match renegotiate(&pc, sdp).await {
                Ok(answer) => {
                    let json = serde_json::json!({ "type": "answer", "sdp": answer });
                    if let Err(e) = dc.send_text(&json.to_string()).await {
                        warn!("cannot send the answer: {e}");
                    }
                }
                Err(e) => warn!("renegotiation failed: {e:#}"),
            }
        }
        debug!(kind = %m["type"], "message from the SFU");
        messages.send_modify(|v| v.push(m));
    }
}

async fn renegotiate(pc: &Arc<dyn PeerConnection>, sdp: String) -> Result<String> {
    let offer = RTCSessionDescription::offer(sdp).context("parse offer")?;
    pc.set_remote_description(offer)
        .await
        .context("set offer")?;
    let answer = pc.create_answer(None).await.context("create answer")?;
    let sdp = answer.sdp.clone();
    pc.set_local_description(answer)
        .await
        .context("set answer")?;
    Ok(sdp)
}

impl GroupPeer {
    /// Waits until the peer connection is connected.
    pub async fn wait_connected(&mut self, timeout: Duration) -> Result<()> {
        let r = tokio::time::timeout(timeout, async {
            loop {
                match *self.state.borrow_and_update() {
                    RTCPeerConnectionState::Connected => return Ok(()),
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                        bail!("peer connection failed")
                    }
                    _ => {}
                }
                self.state.changed().await?;
            }
        })
        .await;
        r.context("not connected in time")?
    }

    /// Waits until what was received satisfies `done`.
    pub async fn wait_received(
        &mut self,
        timeout: Duration,
        done: impl Fn(&Received) -> bool,
    ) -> Result<Received> {
        let r = tokio::time::timeout(timeout, async {
            loop {
                let now = *self.received.borrow_and_update();
                if done(&now) {
                    return Ok(now);
                }
                self.received.changed().await?;
            }
        })
        .await;
        r.context("not received in time")?
    }

    /// RTP received so far.
    pub fn received(&self) -> Received {
        *self.received.borrow()
    }

    /// Samples handed to the local tracks so far.
    pub fn sent(&self) -> SentSamples {
        *self.sent.borrow()
    }

    /// Messages the SFU sent on the data channel.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        self.messages.borrow().clone()
    }

    /// Closes the peer connection.
    pub async fn leave(self) -> Result<()> {
        for t in &self.tasks {
            t.abort();
        }
        self.pc.close().await.context("close")?;
        Ok(())
    }
}
