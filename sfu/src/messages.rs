//! Messages on the `palaver` data channel between a participant and the
//! SFU (JSON text). Documented in `docs/sfu.md`.

use palaver_proto::{AccountId, DeviceId};
use serde::{Deserialize, Serialize};

/// Who is in the room. `stream` is the MediaStream id of this participant's
/// tracks in the SDP the SFU sends (`a=msid`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    pub account: AccountId,
    pub device: DeviceId,
    pub stream: String,
}

/// From the SFU to a participant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First message once the channel opens: who you are, who is here.
    Welcome {
        you: ParticipantInfo,
        participants: Vec<ParticipantInfo>,
        /// Authenticates an ICE restart (`POST /v1/rooms/{room}/restart`).
        session: String,
    },
    /// A renegotiation offer; answer with [`ClientMessage::Answer`].
    Offer {
        sdp: String,
    },
    Joined {
        participant: ParticipantInfo,
    },
    Left {
        participant: ParticipantInfo,
    },
    Muted {
        participant: ParticipantInfo,
        kind: MediaKindName,
        muted: bool,
    },
    /// The loudest participant changed.
    ActiveSpeaker {
        participant: ParticipantInfo,
    },
    /// The simulcast layer forwarded to you for `stream`'s video changed.
    Layer {
        stream: String,
        rid: String,
    },
    /// The call's admin removed you from the room (sent just before the
    /// SFU drops your session; joining this room again is refused).
    Kicked {
        by: ParticipantInfo,
    },
    /// The call's admin asks you to mute `kind` (the SFU does not mute
    /// anyone itself: it cannot without decoding; the client decides).
    MuteRequest {
        from: ParticipantInfo,
        kind: MediaKindName,
    },
    /// To a publisher: keep sending only these simulcast layers (rids) of
    /// the track with this `mid` (of your own offer); pause the others
    /// (`encodings[i].active = false`). Nobody receives or wants them.
    PublishLayers {
        mid: String,
        active: Vec<String>,
    },
    /// A client message was not understood, or not allowed.
    Error {
        message: String,
    },
}

/// A participant named in a request: one device of one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub account: AccountId,
    pub device: DeviceId,
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKindName {
    Audio,
    Video,
}

/// From a participant to the SFU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// The answer to the SFU's last offer.
    Answer { sdp: String },
    /// Tell the others a track was muted or unmuted.
    Mute { kind: MediaKindName, muted: bool },
    /// Leave the room now (closing the peer connection also works, later).
    Leave,
    /// Admin only: remove `participant` from the room.
    Kick { participant: Target },
    /// Admin only: ask `participant` to mute `kind`.
    MuteRequest {
        participant: Target,
        kind: MediaKindName,
    },
    /// The most you want of `stream`'s video (a small tile: `low`; hidden:
    /// `off`). Default `high`.
    VideoQuality {
        stream: String,
        quality: crate::dynacast::Quality,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape() {
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"mute","kind":"audio","muted":true}"#).unwrap();
        assert_eq!(
            m,
            ClientMessage::Mute {
                kind: MediaKindName::Audio,
                muted: true
            }
        );
        let s = serde_json::to_string(&ServerMessage::Layer {
            stream: "a1d2".into(),
            rid: "h".into(),
        })
        .unwrap();
        assert_eq!(s, r#"{"type":"layer","stream":"a1d2","rid":"h"}"#);
    }
}
