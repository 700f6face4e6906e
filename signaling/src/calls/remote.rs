//! 1:1 calls across signaling nodes.
//!
//! The call state machine must see every call of both parties to decide
//! busy, glare and "first answer wins", so a cluster runs it on one node at
//! a time, the *call leader* (a Redis key each node tries to take, renewed
//! with the node's heartbeat). A node that is not the leader turns each call
//! request of its devices into a [`CallInput`], sends it to the leader's
//! inbox and waits for the verdict; the leader's outputs reach devices on
//! any node through the usual cross-node frame routing.
//!
//! If the leader dies, another node takes the key once it expires
//! (`cluster.registry_ttl`). The leader persists the state of every call
//! it changes in Redis (`crate::cluster::call_store`); the new leader loads
//! it before acting, so calls ringing or in progress go on (ring timeouts
//! keep their deadlines, hang-ups reach the peer), and devices that died
//! with the old leader's node get the reconnect grace (the leader also
//! sweeps every `registry_ttl` for call devices connected nowhere, twice
//! in a row, which covers a dead node that was not the leader). Requests made
//! before the handover fail with `internal` (retry). Not covered: a
//! leader that loses the key while alive (a stalled heartbeat) keeps the
//! calls it runs in memory; a call changed on it after the new leader
//! loaded the state is out of date there.

use super::{CallError, Calls, Offer, Party};
use palaver_proto::frames::{Media, SdpKind};
use palaver_proto::{AccountId, CallId, DeviceId};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// One input of the call state machine, as it travels between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum CallInput {
    Offer {
        call: CallId,
        caller: AccountId,
        caller_device: DeviceId,
        callee: AccountId,
        /// The callee's devices connected on any node, looked up by the
        /// node that took the request.
        callee_devices: Vec<DeviceId>,
        /// The callee's offline devices that a push can wake.
        #[serde(default)]
        pushed_devices: Vec<DeviceId>,
        media: Media,
        sdp: String,
    },
    Accept {
        device: DeviceId,
        call: CallId,
        sdp: String,
    },
    Reject {
        device: DeviceId,
        call: CallId,
    },
    Hangup {
        device: DeviceId,
        call: CallId,
    },
    Sdp {
        device: DeviceId,
        call: CallId,
        kind: SdpKind,
        sdp: String,
    },
    Ice {
        device: DeviceId,
        call: CallId,
        candidate: String,
    },
    /// A device's last connection dropped (no answer expected).
    Disconnected {
        device: DeviceId,
    },
    /// A device connected again (no answer expected).
    Reconnected {
        device: DeviceId,
    },
}

impl CallInput {
    /// Whether the sender waits for the verdict.
    pub(crate) fn wants_answer(&self) -> bool {
        !matches!(
            self,
            CallInput::Disconnected { .. } | CallInput::Reconnected { .. }
        )
    }

    /// Feeds the input to the state machine.
    pub(crate) fn apply(self, calls: &mut Calls, now: Instant) -> Result<(), CallError> {
        match self {
            CallInput::Offer {
                call,
                caller,
                caller_device,
                callee,
                callee_devices,
                pushed_devices,
                media,
                sdp,
            } => calls.offer(
                now,
                Offer {
                    call,
                    caller: Party {
                        account: caller,
                        device: caller_device,
                    },
                    callee,
                    callee_devices: &callee_devices,
                    pushed_devices: &pushed_devices,
                    media,
                    sdp,
                },
            ),
            CallInput::Accept { device, call, sdp } => calls.accept(now, device, call, sdp),
            CallInput::Reject { device, call } => calls.reject(now, device, call),
            CallInput::Hangup { device, call } => calls.hangup(now, device, call),
            CallInput::Sdp {
                device,
                call,
                kind,
                sdp,
            } => calls.relay_sdp(device, call, kind, sdp),
            CallInput::Ice {
                device,
                call,
                candidate,
            } => calls.relay_ice(device, call, candidate),
            CallInput::Disconnected { device } => {
                calls.disconnected(now, device);
                Ok(())
            }
            CallInput::Reconnected { device } => {
                if let Some(call) = calls.reconnected(device) {
                    tracing::info!(call = call.0, "device back in its call");
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::{CallConfig, CallEvent, Output};

    fn roundtrip(input: CallInput) -> CallInput {
        serde_json::from_slice(&serde_json::to_vec(&input).unwrap()).unwrap()
    }

    #[test]
    fn inputs_survive_the_wire_and_drive_the_machine() {
        let mut calls = Calls::new(CallConfig::default());
        let now = Instant::now();
        let offer = roundtrip(CallInput::Offer {
            call: CallId(7),
            caller: AccountId(1),
            caller_device: DeviceId(10),
            callee: AccountId(2),
            callee_devices: vec![DeviceId(20), DeviceId(21)],
            pushed_devices: vec![],
            media: Media::Video,
            sdp: "v=0".into(),
        });
        assert!(offer.wants_answer());
        offer.apply(&mut calls, now).unwrap();
        let rung: Vec<DeviceId> = std::iter::from_fn(|| calls.poll_output())
            .filter_map(|o| match o {
                Output::Send {
                    to,
                    event: CallEvent::Incoming { .. },
                } => Some(to),
                _ => None,
            })
            .collect();
        assert_eq!(rung, vec![DeviceId(20), DeviceId(21)]);
        let accept = roundtrip(CallInput::Accept {
            device: DeviceId(21),
            call: CallId(7),
            sdp: "v=0".into(),
        });
        accept.apply(&mut calls, now).unwrap();
        let late = roundtrip(CallInput::Accept {
            device: DeviceId(20),
            call: CallId(7),
            sdp: "v=0".into(),
        });
        assert_eq!(late.apply(&mut calls, now), Err(CallError::AlreadyAnswered));
        let gone = roundtrip(CallInput::Disconnected {
            device: DeviceId(21),
        });
        assert!(!gone.wants_answer());
        gone.apply(&mut calls, now).unwrap();
        assert_eq!(calls.call_of(DeviceId(21)), Some(CallId(7)));
    }
}
