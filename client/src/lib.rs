//! The Palaver Rust SDK: a client for the `/v1/ws` protocol.
//!
//! [`Client`] is deliberately simple: one WebSocket, one request at a time.
//! Requests wait for their reply; frames that arrive meanwhile (envelopes,
//! typing, presence) are kept in order and returned by
//! [`Client::next_event`]. Payloads are opaque bytes: this SDK does not
//! encrypt them yet (end-to-end encryption arrives with the key directory).

mod chats;
mod dev;
pub mod e2e;
mod group_call;
mod groups;
mod keys;
pub mod media;
mod push;
pub mod tls;
pub use chats::ChatRef;
pub use rustls;
#[cfg(feature = "transcode")]
pub mod transcode;

pub use group_call::{GroupCallTicket, sfu_join};

pub use dev::dev_code;
pub use palaver_proto as proto;

use futures_util::{SinkExt, StreamExt};
use palaver_proto::codec::{decode_server, encode_client};
use palaver_proto::frames::{
    CallLogEntry, ClientFrame, EnvelopeKind, ErrorFrame, IceServer, LastSeenPrivacy, Media,
    OutEnvelope, Payload, PresenceInfo, SdpKind, ServerFrame,
};
use palaver_proto::groups::GroupEvent;
use palaver_proto::{AccountId, CallId, ClientMsgId, DeviceId, ErrorCode, GroupId, RequestId, Seq};
use std::collections::VecDeque;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// What can go wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error frame.
    #[error("server error {}: {}", .0.code.as_str(), .0.message)]
    Server(ErrorFrame),
    /// The connection closed (with the server's close frame, if any).
    #[error("connection closed{}", .0.as_ref().map(|c| format!(": {} {}", c.code, c.reason)).unwrap_or_default())]
    Closed(Option<CloseFrame>),
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The server sent something this client did not expect.
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("http: {0}")]
    Http(String),
    #[error("tls: {0}")]
    Tls(String),
}

impl Error {
    /// The error code, for server errors.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Server(e) => Some(e.code),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A frame the server pushed on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Envelope(Envelope),
    Typing {
        from: AccountId,
        from_device: DeviceId,
        typing: bool,
    },
    Presence(PresenceInfo),
    /// A `call_*` push (incoming call, ringing, accepted, ended, SDP, ICE...).
    Call(ServerFrame),
    /// An error frame that answers no request (for example `auth_timeout`).
    Error(ErrorFrame),
    /// This device's one-time keys are running low: upload more.
    KeysLow {
        one_time_keys: u32,
    },
    /// Another device of this account stored new settings.
    SettingsChanged {
        version: u64,
    },
}

/// A delivered envelope. Acknowledge it with [`Client::ack`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub seq: Seq,
    pub kind: EnvelopeKind,
    pub from: AccountId,
    pub from_device: DeviceId,
    pub msg: ClientMsgId,
    pub ts: u64,
    pub payload: Option<Vec<u8>>,
    /// The group of a group message or group event.
    pub group: Option<GroupId>,
    /// What changed, for `group_event` envelopes.
    pub event: Option<GroupEvent>,
    /// For edits: the message this one replaces.
    pub edit_of: Option<ClientMsgId>,
    /// For `timer` envelopes: the new timer, in seconds.
    pub timer: Option<u64>,
    /// For `timer` and `auto` envelopes: the chat is between `from` and `to`.
    pub to: Option<AccountId>,
}

/// The result of linking a device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Registration {
    pub account: AccountId,
    pub device: DeviceId,
    /// The device's secret. Store it safely; the server keeps only a hash.
    pub credential: String,
    pub new_account: bool,
}

/// The server's answer to a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub ts: u64,
    pub duplicate: bool,
}

/// The server's greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub protocol: u32,
    pub max_frame_bytes: u32,
    pub idle_timeout_ms: u64,
}

/// One connection to a Palaver server.
#[derive(Debug)]
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    events: VecDeque<Event>,
    hello: Hello,
    me: Option<(AccountId, DeviceId)>,
}

impl Client {
    /// Connects to a `ws://host:port/v1/ws` or `wss://` URL and reads the
    /// greeting. `wss://` trusts the system's root certificates.
    pub async fn connect(url: &str) -> Result<Client> {
        let tls = match url.starts_with("wss://") {
            true => Some(tls::default_config()?),
            false => None,
        };
        Self::connect_tls(url, tls).await
    }

    /// Connects with a given TLS configuration for `wss://` URLs (see
    /// [`tls::client_config`]), and reads the greeting.
    pub async fn connect_tls(
        url: &str,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Result<Client> {
        let connector = tls.map(tokio_tungstenite::Connector::Rustls);
        let (ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(url, None, false, connector).await?;
        let mut client = Client {
            ws,
            next_id: 1,
            events: VecDeque::new(),
            hello: Hello {
                protocol: 0,
                max_frame_bytes: 0,
                idle_timeout_ms: 0,
            },
            me: None,
        };
        match client.next_frame().await? {
            ServerFrame::Hello {
                protocol,
                max_frame_bytes,
                idle_timeout_ms,
            } => {
                client.hello = Hello {
                    protocol,
                    max_frame_bytes,
                    idle_timeout_ms,
                }
            }
            other => return Err(Error::Protocol(format!("expected hello, got {other:?}"))),
        }
        Ok(client)
    }

    /// The server's greeting.
    pub fn hello(&self) -> Hello {
        self.hello
    }

    /// This connection's account and device, once authenticated.
    pub fn me(&self) -> Option<(AccountId, DeviceId)> {
        self.me
    }

    fn id(&mut self) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        id
    }

    /// Sends raw text as one frame (for tests of bad input).
    pub async fn send_raw(&mut self, text: impl Into<String>) -> Result<()> {
        self.ws.send(Message::Text(text.into().into())).await?;
        Ok(())
    }

    /// Sends raw bytes as one binary frame (for tests of bad input).
    pub async fn send_raw_binary(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.ws.send(Message::Binary(bytes.into())).await?;
        Ok(())
    }

    async fn send_frame(&mut self, frame: &ClientFrame) -> Result<()> {
        self.ws
            .send(Message::Text(encode_client(frame).into()))
            .await?;
        Ok(())
    }

    /// Reads the next frame from the server, whatever it is.
    pub async fn next_frame(&mut self) -> Result<ServerFrame> {
        loop {
            let msg = match self.ws.next().await {
                None => return Err(Error::Closed(None)),
                Some(m) => m?,
            };
            match msg {
                Message::Text(t) => {
                    return decode_server(t.as_str())
                        .map_err(|e| Error::Protocol(format!("bad frame from server: {e}")));
                }
                Message::Close(c) => return Err(Error::Closed(c)),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                Message::Binary(_) => {
                    return Err(Error::Protocol("unexpected binary frame".into()));
                }
            }
        }
    }

    /// Sends a request and waits for the frame answering it.
    async fn call(&mut self, frame: ClientFrame) -> Result<ServerFrame> {
        let id = frame.request_id().expect("requests carry ids");
        self.send_frame(&frame).await?;
        loop {
            let f = self.next_frame().await?;
            match reply_id(&f) {
                Some(rid) if rid == id => {
                    return match f {
                        ServerFrame::Error(e) => Err(Error::Server(e)),
                        other => Ok(other),
                    };
                }
                Some(_) => return Err(Error::Protocol(format!("reply to another request: {f:?}"))),
                None => self.buffer(f)?,
            }
        }
    }

    fn buffer(&mut self, f: ServerFrame) -> Result<()> {
        let event = match f {
            ServerFrame::Envelope {
                seq,
                kind,
                from,
                from_device,
                msg,
                ts,
                payload,
                group,
                event,
                edit_of,
                timer,
                to,
            } => Event::Envelope(Envelope {
                seq,
                kind,
                from,
                from_device,
                msg,
                ts,
                payload: payload.map(|p| p.0),
                group,
                event: event.map(|e| *e),
                edit_of,
                timer,
                to,
            }),
            ServerFrame::Typing {
                from,
                from_device,
                typing,
            } => Event::Typing {
                from,
                from_device,
                typing,
            },
            ServerFrame::Presence(p) => Event::Presence(p),
            ServerFrame::Error(e) => Event::Error(e),
            ServerFrame::KeysLow { one_time_keys } => Event::KeysLow { one_time_keys },
            ServerFrame::SettingsChanged { version } => Event::SettingsChanged { version },
            f @ (ServerFrame::CallIncoming { .. }
            | ServerFrame::CallRinging { .. }
            | ServerFrame::CallAccepted { .. }
            | ServerFrame::CallAnsweredElsewhere { .. }
            | ServerFrame::CallEnded { .. }
            | ServerFrame::CallSdp { .. }
            | ServerFrame::CallIce { .. }
            | ServerFrame::CallWaiting { .. }
            | ServerFrame::CallPeer { .. }
            | ServerFrame::GroupCallIncoming { .. }
            | ServerFrame::GroupCallMoved { .. }) => Event::Call(f),
            other => return Err(Error::Protocol(format!("unexpected frame {other:?}"))),
        };
        self.events.push_back(event);
        Ok(())
    }

    /// Events received and not yet returned by `next_event`.
    pub fn buffered_events(&self) -> usize {
        self.events.len()
    }

    /// The next pushed event, waiting for one if none is buffered.
    pub async fn next_event(&mut self) -> Result<Event> {
        if let Some(e) = self.events.pop_front() {
            return Ok(e);
        }
        let f = self.next_frame().await?;
        self.buffer(f)?;
        Ok(self.events.pop_front().expect("just buffered"))
    }

    /// Asks the server to send a verification code to `phone`.
    pub async fn request_code(&mut self, phone: &str) -> Result<u64> {
        let id = self.id();
        match self
            .call(ClientFrame::RequestCode {
                id,
                phone: phone.into(),
            })
            .await?
        {
            ServerFrame::CodeSent { expires_in_ms, .. } => Ok(expires_in_ms),
            f => Err(unexpected(f)),
        }
    }

    /// Proves the phone number with its code and links a new device.
    pub async fn verify(
        &mut self,
        phone: &str,
        code: &str,
        device_name: &str,
    ) -> Result<Registration> {
        let id = self.id();
        match self
            .call(ClientFrame::Verify {
                id,
                phone: phone.into(),
                code: code.into(),
                device_name: device_name.into(),
            })
            .await?
        {
            ServerFrame::Registered {
                account,
                device,
                credential,
                new_account,
                ..
            } => Ok(Registration {
                account,
                device,
                credential,
                new_account,
            }),
            f => Err(unexpected(f)),
        }
    }

    /// Authenticates this connection; the server then pushes the queue.
    pub async fn auth(&mut self, device: DeviceId, credential: &str) -> Result<AccountId> {
        let id = self.id();
        match self
            .call(ClientFrame::Auth {
                id,
                device,
                credential: credential.into(),
            })
            .await?
        {
            ServerFrame::Authed { account, .. } => {
                self.me = Some((account, device));
                Ok(account)
            }
            f => Err(unexpected(f)),
        }
    }

    /// The account of a phone number.
    pub async fn lookup(&mut self, phone: &str) -> Result<AccountId> {
        let id = self.id();
        match self
            .call(ClientFrame::Lookup {
                id,
                phone: phone.into(),
            })
            .await?
        {
            ServerFrame::Account { account, .. } => Ok(account),
            f => Err(unexpected(f)),
        }
    }

    /// The current devices of an account.
    pub async fn devices(&mut self, account: AccountId) -> Result<Vec<DeviceId>> {
        let id = self.id();
        match self.call(ClientFrame::Devices { id, account }).await? {
            ServerFrame::DeviceList { devices, .. } => Ok(devices),
            f => Err(unexpected(f)),
        }
    }

    /// Sends one envelope per device, as given.
    pub async fn send(
        &mut self,
        to: AccountId,
        msg: &ClientMsgId,
        envelopes: Vec<(DeviceId, Vec<u8>)>,
    ) -> Result<Sent> {
        self.send_edit(to, msg, envelopes, None).await
    }

    /// Like [`Client::send`]; with `edit_of`, the message replaces an earlier
    /// one of this account in the same chat (within the edit window).
    pub async fn send_edit(
        &mut self,
        to: AccountId,
        msg: &ClientMsgId,
        envelopes: Vec<(DeviceId, Vec<u8>)>,
        edit_of: Option<&ClientMsgId>,
    ) -> Result<Sent> {
        let id = self.id();
        let envelopes = envelopes
            .into_iter()
            .map(|(device, p)| OutEnvelope {
                device,
                payload: Payload(p),
            })
            .collect();
        match self
            .call(ClientFrame::Send {
                id,
                msg: msg.clone(),
                to,
                envelopes,
                edit_of: edit_of.cloned(),
            })
            .await?
        {
            ServerFrame::Sent { ts, duplicate, .. } => Ok(Sent { ts, duplicate }),
            f => Err(unexpected(f)),
        }
    }

    /// Sends `payload(device)` to every current device of `to` and every
    /// other device of this account, refreshing the device lists once if
    /// the server says they changed.
    pub async fn send_to_all(
        &mut self,
        to: AccountId,
        msg: &ClientMsgId,
        payload: impl Fn(DeviceId) -> Vec<u8>,
    ) -> Result<Sent> {
        let (me, my_device) = self
            .me
            .ok_or_else(|| Error::Protocol("not authenticated".into()))?;
        let mut targets = self.devices(to).await?;
        if to != me {
            targets.extend(self.devices(me).await?);
        }
        targets.retain(|d| *d != my_device);
        for attempt in 0..2 {
            let envs = targets.iter().map(|d| (*d, payload(*d))).collect();
            match self.send(to, msg, envs).await {
                Err(Error::Server(e)) if e.code == ErrorCode::MismatchedDevices && attempt == 0 => {
                    targets.retain(|d| !e.extra.contains(d));
                    targets.extend(e.missing);
                }
                other => return other,
            }
        }
        Err(Error::Protocol("device list kept changing".into()))
    }

    /// Acknowledges envelopes so the server deletes them.
    pub async fn ack(&mut self, seqs: Vec<Seq>) -> Result<()> {
        self.send_frame(&ClientFrame::Ack { seqs }).await
    }

    /// Tells the sender of `msgs` they were read.
    pub async fn read(&mut self, to: AccountId, msgs: Vec<ClientMsgId>) -> Result<()> {
        let id = self.id();
        self.call_done(ClientFrame::Read { id, to, msgs }).await
    }

    /// Sends a typing indicator.
    pub async fn typing(&mut self, to: AccountId, typing: bool) -> Result<()> {
        self.send_frame(&ClientFrame::Typing { to, typing }).await
    }

    /// Follows the presence of accounts; returns their current presence.
    pub async fn subscribe_presence(
        &mut self,
        accounts: Vec<AccountId>,
    ) -> Result<Vec<PresenceInfo>> {
        let id = self.id();
        match self
            .call(ClientFrame::PresenceSubscribe { id, accounts })
            .await?
        {
            ServerFrame::PresenceList { presence, .. } => Ok(presence),
            f => Err(unexpected(f)),
        }
    }

    /// Sets who may see this account's presence.
    pub async fn set_privacy(&mut self, last_seen: LastSeenPrivacy) -> Result<()> {
        let id = self.id();
        self.call_done(ClientFrame::SetPrivacy { id, last_seen })
            .await
    }

    /// Unlinks a device of this account.
    pub async fn revoke_device(&mut self, device: DeviceId) -> Result<()> {
        let id = self.id();
        self.call_done(ClientFrame::RevokeDevice { id, device })
            .await
    }

    /// Round trip to the server.
    pub async fn ping(&mut self) -> Result<()> {
        let id = self.id();
        match self.call(ClientFrame::Ping { id }).await? {
            ServerFrame::Pong { .. } => Ok(()),
            f => Err(unexpected(f)),
        }
    }

    /// Blocks (`true`) or unblocks an account.
    pub async fn block(&mut self, account: AccountId, block: bool) -> Result<()> {
        let id = self.id();
        let frame = if block {
            ClientFrame::Block { id, account }
        } else {
            ClientFrame::Unblock { id, account }
        };
        self.call_done(frame).await
    }

    /// The accounts this account blocks.
    pub async fn blocked_list(&mut self) -> Result<Vec<AccountId>> {
        let id = self.id();
        match self.call(ClientFrame::BlockedList { id }).await? {
            ServerFrame::BlockedList { accounts, .. } => Ok(accounts),
            f => Err(unexpected(f)),
        }
    }

    /// Calls `to`; returns the call id and the ICE servers to use.
    pub async fn call_offer(
        &mut self,
        to: AccountId,
        media: Media,
        sdp: &str,
    ) -> Result<(CallId, Vec<IceServer>)> {
        let id = self.id();
        match self
            .call(ClientFrame::CallOffer {
                id,
                to,
                media,
                sdp: sdp.into(),
            })
            .await?
        {
            ServerFrame::CallStarted {
                call, ice_servers, ..
            } => Ok((call, ice_servers)),
            f => Err(unexpected(f)),
        }
    }

    /// Sends a request whose success reply is `done`.
    async fn call_done(&mut self, frame: ClientFrame) -> Result<()> {
        match self.call(frame).await? {
            ServerFrame::Done { .. } => Ok(()),
            f => Err(unexpected(f)),
        }
    }

    /// Answers a ringing call on this device.
    pub async fn call_accept(&mut self, call: CallId, sdp: &str) -> Result<()> {
        let id = self.id();
        self.call_done(ClientFrame::CallAccept {
            id,
            call,
            sdp: sdp.into(),
        })
        .await
    }

    /// Declines a ringing call.
    pub async fn call_reject(&mut self, call: CallId) -> Result<()> {
        let id = self.id();
        self.call_done(ClientFrame::CallReject { id, call }).await
    }

    /// Cancels or hangs up a call.
    pub async fn call_hangup(&mut self, call: CallId) -> Result<()> {
        let id = self.id();
        self.call_done(ClientFrame::CallHangup { id, call }).await
    }

    /// Sends a new session description to the other party.
    pub async fn call_sdp(&mut self, call: CallId, kind: SdpKind, sdp: &str) -> Result<()> {
        let id = self.id();
        self.call_done(ClientFrame::CallSdp {
            id,
            call,
            kind,
            sdp: sdp.into(),
        })
        .await
    }

    /// Sends an ICE candidate to the other party.
    pub async fn call_ice(&mut self, call: CallId, candidate: &str) -> Result<()> {
        let id = self.id();
        self.call_done(ClientFrame::CallIce {
            id,
            call,
            candidate: candidate.into(),
        })
        .await
    }

    /// This account's call history, newest first.
    pub async fn call_history(&mut self, limit: u32) -> Result<Vec<CallLogEntry>> {
        let id = self.id();
        match self
            .call(ClientFrame::CallHistory {
                id,
                before: None,
                limit: Some(limit),
            })
            .await?
        {
            ServerFrame::CallLog { calls, .. } => Ok(calls),
            f => Err(unexpected(f)),
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) -> Result<()> {
        self.ws.close(None).await?;
        Ok(())
    }
}

fn reply_id(f: &ServerFrame) -> Option<RequestId> {
    use ServerFrame::*;
    match f {
        CodeSent { id, .. }
        | Registered { id, .. }
        | Authed { id, .. }
        | Account { id, .. }
        | DeviceList { id, .. }
        | Sent { id, .. }
        | Done { id }
        | PresenceList { id, .. }
        | Pong { id }
        | CallStarted { id, .. }
        | BlockedList { id, .. }
        | CallLog { id, .. }
        | Group { id, .. }
        | GroupList { id, .. }
        | GroupInvite { id, .. }
        | KeysStock { id, .. }
        | KeyBundles { id, .. }
        | Settings { id, .. }
        | Business { id, .. }
        | LinkCode { id, .. }
        | GroupCallTicket { id, .. } => Some(*id),
        Error(e) => e.id,
        Hello { .. }
        | Envelope { .. }
        | Typing { .. }
        | Presence(_)
        | CallIncoming { .. }
        | CallRinging { .. }
        | CallAccepted { .. }
        | CallAnsweredElsewhere { .. }
        | CallEnded { .. }
        | CallSdp { .. }
        | CallIce { .. }
        | CallWaiting { .. }
        | CallPeer { .. }
        | KeysLow { .. }
        | SettingsChanged { .. }
        | GroupCallIncoming { .. }
        | GroupCallMoved { .. } => None,
    }
}

fn unexpected(f: ServerFrame) -> Error {
    Error::Protocol(format!("unexpected reply {f:?}"))
}

/// Registers a new device with the development verifier: asks for a code,
/// reads it from the admin listener, and verifies it.
pub async fn register_dev(
    ws_url: &str,
    admin_url: &str,
    phone: &str,
    device_name: &str,
) -> Result<Registration> {
    let mut c = Client::connect(ws_url).await?;
    c.request_code(phone).await?;
    let code = dev_code(admin_url, phone).await?;
    c.verify(phone, &code, device_name).await
}
