//! Turning WebSocket text into frames and back. These are the only places
//! the server parses client input, so they are fuzzed (`fuzz/`) and
//! property-tested.

use crate::error::ErrorCode;
use crate::frames::{ClientFrame, ServerFrame};
use crate::ids::RequestId;
use serde::Deserialize;

/// The `type` names of every client frame of protocol version 1.
pub const CLIENT_FRAME_TYPES: &[&str] = &[
    "request_code",
    "verify",
    "auth",
    "lookup",
    "devices",
    "send",
    "ack",
    "read",
    "typing",
    "presence_subscribe",
    "set_privacy",
    "revoke_device",
    "ping",
    "block",
    "unblock",
    "blocked_list",
    "call_offer",
    "call_accept",
    "call_reject",
    "call_hangup",
    "call_sdp",
    "call_ice",
    "call_history",
    "group_create",
    "group_get",
    "group_list",
    "group_update",
    "group_add",
    "group_remove",
    "group_promote",
    "group_demote",
    "group_leave",
    "group_invite",
    "group_join",
    "group_send",
    "keys_upload",
    "keys_claim",
    "keys_count",
    "revoke",
    "status_post",
    "business_set",
    "business_get",
    "report",
    "status_view",
    "set_timer",
    "settings_get",
    "settings_put",
    "link_code_create",
    "link",
];

/// A client frame that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// `malformed_frame` or `unknown_frame_type`.
    pub code: ErrorCode,
    /// The request id, if the frame had a readable one.
    pub id: Option<RequestId>,
    /// What was wrong, for humans.
    pub message: String,
}

/// Just enough of a frame to answer a broken one properly.
#[derive(Deserialize)]
struct Skeleton<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    id: Option<RequestId>,
}

/// Decodes one client frame from the text of a WebSocket message.
pub fn decode_client(text: &str) -> Result<ClientFrame, DecodeError> {
    match serde_json::from_str::<ClientFrame>(text) {
        Ok(frame) => Ok(frame),
        Err(err) => Err(explain(text, &err)),
    }
}

fn explain(text: &str, err: &serde_json::Error) -> DecodeError {
    let skeleton = serde_json::from_str::<Skeleton<'_>>(text).ok();
    let id = skeleton.as_ref().and_then(|s| s.id);
    let kind = skeleton.as_ref().and_then(|s| s.kind.as_deref());
    match kind {
        Some(kind) if !CLIENT_FRAME_TYPES.contains(&kind) => DecodeError {
            code: ErrorCode::UnknownFrameType,
            id,
            message: format!("unknown frame type {:?}", truncate(kind, 40)),
        },
        None if skeleton.is_some() => DecodeError {
            code: ErrorCode::MalformedFrame,
            id,
            message: "frame has no \"type\" field".into(),
        },
        _ => DecodeError {
            code: ErrorCode::MalformedFrame,
            id,
            message: format!("malformed frame: {}", strip_position(err)),
        },
    }
}

fn strip_position(err: &serde_json::Error) -> String {
    // serde_json appends " at line L column C"; keep it, it helps humans.
    truncate(&err.to_string(), 200).to_owned()
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Encodes a server frame as JSON text.
pub fn encode_server(frame: &ServerFrame) -> String {
    serde_json::to_string(frame).expect("server frames always serialize")
}

/// Encodes a client frame as JSON text (used by the SDK).
pub fn encode_client(frame: &ClientFrame) -> String {
    serde_json::to_string(frame).expect("client frames always serialize")
}

/// Decodes a server frame (used by the SDK).
pub fn decode_server(text: &str) -> Result<ServerFrame, serde_json::Error> {
    serde_json::from_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::*;
    use crate::ids::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_a_send() {
        let f = decode_client(
            r#"{"type":"send","id":7,"msg":"m1","to":2,"envelopes":[{"device":3,"payload":"aGk="}]}"#,
        )
        .unwrap();
        assert_eq!(
            f,
            ClientFrame::Send {
                id: RequestId(7),
                msg: ClientMsgId::new("m1").unwrap(),
                to: AccountId(2),
                envelopes: vec![OutEnvelope {
                    device: DeviceId(3),
                    payload: Payload(b"hi".to_vec())
                }],
                edit_of: None,
            }
        );
    }

    #[test]
    fn classifies_errors() {
        let e = decode_client("{not json").unwrap_err();
        assert_eq!((e.code, e.id), (ErrorCode::MalformedFrame, None));
        let e = decode_client(r#"{"type":"launch_rockets","id":4}"#).unwrap_err();
        assert_eq!(
            (e.code, e.id),
            (ErrorCode::UnknownFrameType, Some(RequestId(4)))
        );
        let e = decode_client(r#"{"type":"ping","id":5,"extra":1}"#).unwrap_err();
        assert_eq!(
            (e.code, e.id),
            (ErrorCode::MalformedFrame, Some(RequestId(5)))
        );
        let e = decode_client(r#"{"id":6}"#).unwrap_err();
        assert_eq!(
            (e.code, e.id),
            (ErrorCode::MalformedFrame, Some(RequestId(6)))
        );
        let e = decode_client(r#"{"type":"send","id":8,"msg":"bad id","to":1,"envelopes":[]}"#)
            .unwrap_err();
        assert_eq!(
            (e.code, e.id),
            (ErrorCode::MalformedFrame, Some(RequestId(8)))
        );
        let e = decode_client(r#"[1,2]"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedFrame);
        // Flattened fields still refuse strangers.
        let e =
            decode_client(r#"{"type":"group_update","id":9,"group":1,"nmae":"x"}"#).unwrap_err();
        assert_eq!(
            (e.code, e.id),
            (ErrorCode::MalformedFrame, Some(RequestId(9)))
        );
        let f = decode_client(r#"{"type":"group_update","id":9,"group":1,"name":"x"}"#).unwrap();
        assert!(
            matches!(f, ClientFrame::GroupUpdate { edit, .. } if edit.name.as_deref() == Some("x"))
        );
    }

    #[test]
    fn every_frame_type_is_listed() {
        let samples = [
            ClientFrame::Ack { seqs: vec![] },
            ClientFrame::Ping { id: RequestId(1) },
        ];
        for s in samples {
            let v: serde_json::Value = serde_json::from_str(&encode_client(&s)).unwrap();
            assert!(CLIENT_FRAME_TYPES.contains(&v["type"].as_str().unwrap()));
        }
    }

    #[test]
    fn server_frames_round_trip() {
        let frames = [
            ServerFrame::Presence(PresenceInfo {
                account: AccountId(1),
                online: Some(true),
                last_seen: None,
            }),
            ServerFrame::Error(ErrorFrame::new(
                Some(RequestId(3)),
                ErrorCode::NotFound,
                "x",
            )),
            ServerFrame::Envelope {
                seq: Seq(9),
                kind: EnvelopeKind::Delivered,
                from: AccountId(1),
                from_device: DeviceId(2),
                msg: ClientMsgId::new("a").unwrap(),
                ts: 5,
                payload: None,
                group: None,
                event: None,
                edit_of: None,
                timer: None,
                to: None,
            },
        ];
        for f in frames {
            assert_eq!(decode_server(&encode_server(&f)).unwrap(), f);
        }
    }

    fn arb_msg_id() -> impl Strategy<Value = ClientMsgId> {
        "[A-Za-z0-9._:-]{1,64}".prop_map(|s| ClientMsgId::new(s).unwrap())
    }

    fn arb_client_frame() -> impl Strategy<Value = ClientFrame> {
        let id = any::<u64>().prop_map(RequestId);
        let env =
            (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(d, p)| {
                OutEnvelope {
                    device: DeviceId(d),
                    payload: Payload(p),
                }
            });
        prop_oneof![
            (id.clone(), ".{0,20}").prop_map(|(id, phone)| ClientFrame::RequestCode { id, phone }),
            (id.clone(), ".{0,20}", ".{0,8}", ".{0,20}").prop_map(|(id, phone, code, n)| {
                ClientFrame::Verify {
                    id,
                    phone,
                    code,
                    device_name: n,
                }
            }),
            (id.clone(), any::<u64>(), ".{0,50}").prop_map(|(id, d, c)| ClientFrame::Auth {
                id,
                device: DeviceId(d),
                credential: c
            }),
            (
                id.clone(),
                arb_msg_id(),
                any::<u64>(),
                proptest::collection::vec(env, 0..4)
            )
                .prop_map(|(id, msg, to, envelopes)| ClientFrame::Send {
                    id,
                    msg,
                    to: AccountId(to),
                    envelopes,
                    edit_of: None,
                }),
            proptest::collection::vec(any::<u64>().prop_map(Seq), 0..8)
                .prop_map(|seqs| ClientFrame::Ack { seqs }),
            (
                id.clone(),
                any::<u64>(),
                proptest::collection::vec(arb_msg_id(), 0..4)
            )
                .prop_map(|(id, to, msgs)| ClientFrame::Read {
                    id,
                    to: AccountId(to),
                    msgs
                }),
            (any::<u64>(), any::<bool>()).prop_map(|(to, typing)| ClientFrame::Typing {
                to: AccountId(to),
                typing
            }),
            (id.clone(), any::<bool>()).prop_map(|(id, b)| ClientFrame::SetPrivacy {
                id,
                last_seen: if b {
                    LastSeenPrivacy::Everyone
                } else {
                    LastSeenPrivacy::Nobody
                }
            }),
            id.prop_map(|id| ClientFrame::Ping { id }),
        ]
    }

    proptest! {
        #[test]
        fn client_frames_round_trip(frame in arb_client_frame()) {
            let text = encode_client(&frame);
            prop_assert_eq!(decode_client(&text).unwrap(), frame);
        }

        #[test]
        fn decoding_arbitrary_text_never_panics(text in ".{0,300}") {
            let _ = decode_client(&text);
        }

        #[test]
        fn decoding_mutated_frames_never_panics(frame in arb_client_frame(), pos in any::<usize>(), byte in any::<u8>()) {
            let mut bytes = encode_client(&frame).into_bytes();
            let i = pos % bytes.len();
            bytes[i] = byte;
            if let Ok(text) = std::str::from_utf8(&bytes)
                && let Err(e) = decode_client(text)
            {
                prop_assert!(matches!(e.code, ErrorCode::MalformedFrame | ErrorCode::UnknownFrameType));
            }
        }
    }
}
