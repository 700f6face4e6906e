//! Group calls: tickets from signaling, and joining the SFU with one.

use crate::{Client, Error, Result, unexpected};
use palaver_proto::AccountId;
use palaver_proto::frames::{ClientFrame, IceServer, Media, ServerFrame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a device needs to join a group call on the SFU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCallTicket {
    pub room: String,
    /// The SFU's base URL.
    pub sfu_url: String,
    /// The join token (a bearer credential; keep it private).
    pub token: String,
    /// Unix seconds after which the token is refused.
    pub expires_at: u64,
    pub ice_servers: Vec<IceServer>,
}

fn ticket(f: ServerFrame) -> Result<GroupCallTicket> {
    match f {
        ServerFrame::GroupCallTicket {
            room,
            sfu_url,
            token,
            expires_at,
            ice_servers,
            ..
        } => Ok(GroupCallTicket {
            room,
            sfu_url,
            token,
            expires_at,
            ice_servers,
        }),
        f => Err(unexpected(f)),
    }
}

impl GroupCallTicket {
    /// The fresh ticket in a `group_call_moved` push (the room's SFU node
    /// died or is draining); `None` for any other frame. A device in the
    /// call closes its peer connection and joins again with it: see
    /// docs/sfu.md, "Failover".
    pub fn from_moved(f: &ServerFrame) -> Option<GroupCallTicket> {
        match f {
            ServerFrame::GroupCallMoved {
                room,
                sfu_url,
                token,
                expires_at,
                ice_servers,
            } => Some(GroupCallTicket {
                room: room.clone(),
                sfu_url: sfu_url.clone(),
                token: token.clone(),
                expires_at: *expires_at,
                ice_servers: ice_servers.clone(),
            }),
            _ => None,
        }
    }
}

impl Client {
    /// Starts an ad-hoc group call and invites `invite` (their devices get
    /// a `group_call_incoming` event).
    pub async fn group_call_start(
        &mut self,
        invite: Vec<AccountId>,
        media: Media,
    ) -> Result<GroupCallTicket> {
        let id = self.id();
        let frame = ClientFrame::GroupCallStart {
            id,
            invite,
            media,
            group: None,
        };
        ticket(self.call(frame).await?)
    }

    /// Starts a call in a chat group: every member is invited.
    pub async fn group_call_start_in_group(
        &mut self,
        group: palaver_proto::GroupId,
        media: Media,
    ) -> Result<GroupCallTicket> {
        let id = self.id();
        let frame = ClientFrame::GroupCallStart {
            id,
            invite: Vec::new(),
            media,
            group: Some(group),
        };
        ticket(self.call(frame).await?)
    }

    /// A ticket for a group call this account started or was invited to.
    pub async fn group_call_join(&mut self, room: &str) -> Result<GroupCallTicket> {
        let id = self.id();
        ticket(
            self.call(ClientFrame::GroupCallJoin {
                id,
                room: room.into(),
            })
            .await?,
        )
    }
}

/// POSTs `offer` (SDP) to the SFU named in `ticket` and returns the SDP
/// answer. Only `http://` SFU URLs (this client has no TLS for plain HTTP
/// requests); the answer's status codes are in docs/sfu.md.
pub async fn sfu_join(ticket: &GroupCallTicket, offer: &str) -> Result<String> {
    let host = ticket
        .sfu_url
        .strip_prefix("http://")
        .ok_or_else(|| Error::Http("only http:// SFU URLs are supported here".into()))?
        .trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| Error::Http(e.to_string()))?;
    let req = format!(
        "POST /v1/rooms/{}/join HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{offer}",
        ticket.room,
        ticket.token,
        offer.len()
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| Error::Http(e.to_string()))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .await
        .map_err(|e| Error::Http(e.to_string()))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| Error::Http("malformed response".into()))?;
    let status = head.get(9..12).unwrap_or("");
    if status != "200" {
        return Err(Error::Http(format!("join refused: {status} {body}")));
    }
    Ok(body.to_owned())
}
