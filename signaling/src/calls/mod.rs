//! 1:1 call negotiation as a sans-IO state machine.
//!
//! [`Calls`] knows nothing of sockets, clocks or tasks. The driver feeds it
//! what happened (an offer, an accept, a device that dropped, ...) with the
//! current [`Instant`], then drains [`Calls::poll_output`] until it returns
//! `None`, and wakes it at [`Calls::poll_timeout`] with
//! [`Calls::handle_timeout`]. Poll order after every input: outputs first,
//! then the next timeout.
//!
//! Rules, modelled on WhatsApp and Signal:
//! - An offer rings every connected device of the callee; the caller is told
//!   the call is ringing. No connected device: the call ends `unavailable`.
//! - The first device to accept wins; the others stop ringing with
//!   "answered elsewhere". A device that accepts too late gets
//!   [`CallError::AlreadyAnswered`].
//! - Reject (from any ringing device), cancel (caller hangs up while
//!   ringing), no answer within `ring_timeout`: the call ends and the callee
//!   gets a missed-call record.
//! - Busy: a callee already in a call (ringing or talking) is busy; the
//!   caller's call ends `busy` and the callee's devices in the other call
//!   get a call-waiting notice.
//! - Glare: an offer to someone whose own offer to you is still ringing is
//!   refused with [`CallError::Glare`]; answer their call instead.
//! - A party whose device drops mid-call has `reconnect_grace` to come back
//!   (and restart ICE); otherwise the call ends `connection_lost`.
//! - Session descriptions and ICE candidates are relayed only between the
//!   two devices of the call (the caller's device and, before an answer,
//!   every ringing device); anyone else gets [`CallError::NotInCall`].

mod hub;
mod persist;
pub mod regions;
mod remote;
#[cfg(test)]
mod tests;
mod wake;

pub(crate) use hub::CallHub;
pub use hub::{IceConfig, turn_credentials};
pub use persist::{CallSnapshot, WallClock};
pub(crate) use remote::CallInput;

pub use palaver_proto::frames::{EndReason, Media, SdpKind};
use palaver_proto::{AccountId, CallId, DeviceId};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// One side of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Party {
    pub account: AccountId,
    pub device: DeviceId,
}

/// Settings of the call state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallConfig {
    /// How long a call rings before it ends `no_answer`.
    pub ring_timeout: Duration,
    /// How long a dropped party has to reconnect.
    pub reconnect_grace: Duration,
}

impl Default for CallConfig {
    fn default() -> Self {
        CallConfig {
            ring_timeout: Duration::from_secs(45),
            reconnect_grace: Duration::from_secs(20),
        }
    }
}

/// A request the state machine refuses. Nothing changes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum CallError {
    #[error("no such call, or this device is not part of it")]
    NotInCall,
    #[error("this device is already in a call")]
    AlreadyInCall,
    #[error("the call was already answered")]
    AlreadyAnswered,
    #[error("the callee is calling you: answer that call instead")]
    Glare,
    #[error("you cannot call your own account")]
    SelfCall,
    #[error("the call id is already in use")]
    DuplicateId,
    #[error("not possible in the call's current state")]
    WrongState,
}

/// What a device is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    Incoming {
        call: CallId,
        from: Party,
        media: Media,
        sdp: String,
    },
    Ringing {
        call: CallId,
    },
    Accepted {
        call: CallId,
        by: DeviceId,
        sdp: String,
    },
    AnsweredElsewhere {
        call: CallId,
    },
    Ended {
        call: CallId,
        reason: EndReason,
    },
    Sdp {
        call: CallId,
        from: DeviceId,
        kind: SdpKind,
        sdp: String,
    },
    Ice {
        call: CallId,
        from: DeviceId,
        candidate: String,
    },
    /// The callee is busy in another call; this one was refused.
    Waiting {
        call: CallId,
        from: AccountId,
    },
    /// The other party's device dropped (`false`) or came back (`true`).
    PeerConnection {
        call: CallId,
        connected: bool,
    },
}

/// A finished call, for the history of both accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub call: CallId,
    pub caller: Party,
    pub callee: AccountId,
    /// The callee device that answered, if any.
    pub answered_by: Option<DeviceId>,
    pub media: Media,
    pub reason: EndReason,
    /// From the offer to the end.
    pub total: Duration,
    /// From the answer to the end, for answered calls.
    pub talk: Option<Duration>,
}

/// Something for the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Tell a device.
    Send { to: DeviceId, event: CallEvent },
    /// Persist a finished call.
    Record(CallRecord),
    /// Wake an offline device (docs/push.md).
    Push { to: DeviceId, event: PushEvent },
}

/// A push about a call, for a device without a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushEvent {
    /// The call rings: connect to answer it.
    Ring {
        call: CallId,
        from: AccountId,
        video: bool,
    },
    /// The call stopped ringing.
    Cancel { call: CallId },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Ringing {
        devices: Vec<DeviceId>,
    },
    Active {
        callee: DeviceId,
        answered_at: Instant,
    },
}

#[derive(Debug, Clone)]
struct Call {
    caller: Party,
    callee: AccountId,
    media: Media,
    state: State,
    /// Every callee device that rang.
    rang: Vec<DeviceId>,
    started: Instant,
    /// Ring timeout while ringing.
    deadline: Option<Instant>,
    /// Devices of the call that dropped, and when their grace ends.
    dropped: BTreeMap<DeviceId, Instant>,
    /// Offline callee devices woken by a push, while it matters.
    wake: Option<Box<wake::Wake>>,
}

impl Call {
    fn members(&self) -> Vec<DeviceId> {
        let mut m = vec![self.caller.device];
        match &self.state {
            State::Ringing { devices } => m.extend(devices),
            State::Active { callee, .. } => m.push(*callee),
        }
        m
    }

    /// The devices of `account` taking part in this call.
    fn devices_of(&self, account: AccountId) -> Vec<DeviceId> {
        if self.caller.account == account {
            return vec![self.caller.device];
        }
        match &self.state {
            State::Ringing { devices } => devices.clone(),
            State::Active { callee, .. } => vec![*callee],
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.dropped.values().copied().chain(self.deadline).min()
    }
}

/// An offer of a call.
#[derive(Debug, Clone)]
pub struct Offer<'a> {
    /// A fresh, unguessable id chosen by the driver.
    pub call: CallId,
    pub caller: Party,
    pub callee: AccountId,
    /// The callee's devices connected now; they ring.
    pub callee_devices: &'a [DeviceId],
    /// Offline callee devices that can be woken by a push: they get an
    /// [`Output::Push`] and ring when they connect before the call ends.
    pub pushed_devices: &'a [DeviceId],
    pub media: Media,
    pub sdp: String,
}

/// Every 1:1 call of this node.
#[derive(Debug, Default)]
pub struct Calls {
    config: CallConfig,
    calls: HashMap<CallId, Call>,
    /// The call each device takes part in (ringing or talking).
    by_device: HashMap<DeviceId, CallId>,
    /// The calls each account takes part in, as caller or callee.
    by_account: HashMap<AccountId, Vec<CallId>>,
    /// Pushed devices that have not connected yet, and their call.
    awaiting: HashMap<DeviceId, CallId>,
    out: VecDeque<Output>,
    /// Calls whose persisted state is out of date (see `persist`).
    changed: BTreeSet<CallId>,
}

impl Calls {
    pub fn new(config: CallConfig) -> Self {
        Calls {
            config,
            ..Calls::default()
        }
    }

    /// Number of calls ringing or in progress.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// True when no call is ringing or in progress.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The call a device takes part in.
    pub fn call_of(&self, device: DeviceId) -> Option<CallId> {
        self.by_device.get(&device).copied()
    }

    /// Next output for the driver.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Calls::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.calls.values().filter_map(Call::next_deadline).min()
    }

    fn send(&mut self, to: DeviceId, event: CallEvent) {
        self.out.push_back(Output::Send { to, event });
    }

    fn account_calls(&self, account: AccountId) -> impl Iterator<Item = (CallId, &Call)> {
        self.by_account
            .get(&account)
            .into_iter()
            .flatten()
            .filter_map(|id| self.calls.get(id).map(|c| (*id, c)))
    }

    /// A caller offers a call.
    pub fn offer(&mut self, now: Instant, offer: Offer<'_>) -> Result<(), CallError> {
        let Offer {
            call,
            caller,
            callee,
            callee_devices,
            pushed_devices,
            media,
            sdp,
        } = offer;
        if caller.account == callee {
            return Err(CallError::SelfCall);
        }
        if self.calls.contains_key(&call) {
            return Err(CallError::DuplicateId);
        }
        if self.by_device.contains_key(&caller.device) {
            return Err(CallError::AlreadyInCall);
        }
        let glare = self.account_calls(callee).any(|(_, c)| {
            c.caller.account == callee
                && c.callee == caller.account
                && matches!(c.state, State::Ringing { .. })
        });
        if glare {
            return Err(CallError::Glare);
        }
        let busy_devices: Vec<DeviceId> = self
            .account_calls(callee)
            .flat_map(|(_, c)| c.devices_of(callee))
            .collect();
        let busy = self.by_account.contains_key(&callee);
        let mut c = Call {
            caller,
            callee,
            media,
            state: State::Ringing {
                devices: Vec::new(),
            },
            rang: Vec::new(),
            started: now,
            deadline: None,
            dropped: BTreeMap::new(),
            wake: None,
        };
        if busy {
            for d in busy_devices {
                self.send(
                    d,
                    CallEvent::Waiting {
                        call,
                        from: caller.account,
                    },
                );
            }
            self.finish_unregistered(now, call, &c, EndReason::Busy);
            return Ok(());
        }
        let ringing: Vec<DeviceId> = callee_devices
            .iter()
            .copied()
            .filter(|d| !self.by_device.contains_key(d))
            .collect();
        let pushed = self.free_devices(pushed_devices, &ringing);
        if ringing.is_empty() && pushed.is_empty() {
            self.finish_unregistered(now, call, &c, EndReason::Unavailable);
            return Ok(());
        }
        self.push_ring(call, &mut c, pushed, &sdp);
        for d in &ringing {
            self.send(
                *d,
                CallEvent::Incoming {
                    call,
                    from: caller,
                    media,
                    sdp: sdp.clone(),
                },
            );
            self.by_device.insert(*d, call);
        }
        self.send(caller.device, CallEvent::Ringing { call });
        self.by_device.insert(caller.device, call);
        self.by_account
            .entry(caller.account)
            .or_default()
            .push(call);
        self.by_account.entry(callee).or_default().push(call);
        c.rang = ringing.clone();
        c.state = State::Ringing { devices: ringing };
        c.deadline = Some(now + self.config.ring_timeout);
        self.calls.insert(call, c);
        self.changed.insert(call);
        Ok(())
    }

    /// A call that never rang ends at once: the caller hears why.
    fn finish_unregistered(&mut self, now: Instant, call: CallId, c: &Call, reason: EndReason) {
        self.send(c.caller.device, CallEvent::Ended { call, reason });
        self.out.push_back(Output::Record(CallRecord {
            call,
            caller: c.caller,
            callee: c.callee,
            answered_by: None,
            media: c.media,
            reason,
            total: now.saturating_duration_since(c.started),
            talk: None,
        }));
    }

    fn member(&self, device: DeviceId, call: CallId) -> Result<&Call, CallError> {
        let c = self.calls.get(&call).ok_or(CallError::NotInCall)?;
        if !c.members().contains(&device) {
            return Err(CallError::NotInCall);
        }
        Ok(c)
    }

    /// A callee device answers.
    pub fn accept(
        &mut self,
        now: Instant,
        device: DeviceId,
        call: CallId,
        sdp: String,
    ) -> Result<(), CallError> {
        let c = self.calls.get(&call).ok_or(CallError::NotInCall)?;
        let devices = match &c.state {
            State::Ringing { devices } => devices.clone(),
            // Another device of the callee won the race.
            State::Active { .. } if c.rang.contains(&device) => {
                return Err(CallError::AlreadyAnswered);
            }
            State::Active { .. } => return Err(CallError::NotInCall),
        };
        if !devices.contains(&device) {
            return Err(CallError::NotInCall);
        }
        let caller = c.caller.device;
        self.answered(call, device);
        for d in devices.iter().filter(|d| **d != device) {
            self.by_device.remove(d);
            self.send(*d, CallEvent::AnsweredElsewhere { call });
        }
        self.send(
            caller,
            CallEvent::Accepted {
                call,
                by: device,
                sdp,
            },
        );
        let c = self.calls.get_mut(&call).expect("checked above");
        c.state = State::Active {
            callee: device,
            answered_at: now,
        };
        c.deadline = None;
        self.changed.insert(call);
        Ok(())
    }

    /// A ringing device declines: the call ends for everyone.
    pub fn reject(
        &mut self,
        now: Instant,
        device: DeviceId,
        call: CallId,
    ) -> Result<(), CallError> {
        let c = self.member(device, call)?;
        if device == c.caller.device || !matches!(c.state, State::Ringing { .. }) {
            return Err(CallError::WrongState);
        }
        self.end(now, call, EndReason::Rejected, Some(device));
        Ok(())
    }

    /// A party hangs up: a cancel while ringing, a hang-up once answered.
    pub fn hangup(
        &mut self,
        now: Instant,
        device: DeviceId,
        call: CallId,
    ) -> Result<(), CallError> {
        let c = self.member(device, call)?;
        match c.state {
            State::Ringing { .. } if device == c.caller.device => {
                self.end(now, call, EndReason::Cancelled, Some(device))
            }
            State::Ringing { .. } => return Err(CallError::WrongState),
            State::Active { .. } => self.end(now, call, EndReason::HungUp, Some(device)),
        }
        Ok(())
    }

    /// Relays a session description (renegotiation, ICE restart) to the
    /// other party of an answered call.
    pub fn relay_sdp(
        &mut self,
        device: DeviceId,
        call: CallId,
        kind: SdpKind,
        sdp: String,
    ) -> Result<(), CallError> {
        let event = CallEvent::Sdp {
            call,
            from: device,
            kind,
            sdp,
        };
        self.relay(device, call, false, event)
    }

    /// Relays an ICE candidate to the other party (while ringing, the
    /// caller's candidates go to every ringing device).
    pub fn relay_ice(
        &mut self,
        device: DeviceId,
        call: CallId,
        candidate: String,
    ) -> Result<(), CallError> {
        let event = CallEvent::Ice {
            call,
            from: device,
            candidate,
        };
        self.relay(device, call, true, event)
    }

    fn relay(
        &mut self,
        device: DeviceId,
        call: CallId,
        while_ringing: bool,
        event: CallEvent,
    ) -> Result<(), CallError> {
        for to in self.peers(device, call, while_ringing)? {
            self.send(to, event.clone());
        }
        self.keep_for_woken(call, &event);
        Ok(())
    }

    fn peers(
        &self,
        device: DeviceId,
        call: CallId,
        while_ringing: bool,
    ) -> Result<Vec<DeviceId>, CallError> {
        let c = self.calls.get(&call).ok_or(CallError::NotInCall)?;
        match &c.state {
            State::Active { callee, .. } if device == c.caller.device => Ok(vec![*callee]),
            State::Active { callee, .. } if device == *callee => Ok(vec![c.caller.device]),
            State::Ringing { devices } if device == c.caller.device => {
                if while_ringing {
                    Ok(devices.clone())
                } else {
                    Err(CallError::WrongState)
                }
            }
            State::Ringing { devices } if devices.contains(&device) => Err(CallError::WrongState),
            _ => Err(CallError::NotInCall),
        }
    }

    /// A device's connection dropped.
    pub fn disconnected(&mut self, now: Instant, device: DeviceId) {
        let Some(call) = self.by_device.get(&device).copied() else {
            return;
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        self.changed.insert(call);
        match &mut c.state {
            State::Ringing { devices } if device != c.caller.device => {
                // A ringing device that leaves simply stops ringing.
                devices.retain(|d| *d != device);
                self.by_device.remove(&device);
                if devices.is_empty() && !c.wake.as_ref().is_some_and(|w| w.waiting()) {
                    self.end(now, call, EndReason::Unavailable, None);
                }
            }
            // Already dropped: its grace runs from the first time.
            _ if c.dropped.contains_key(&device) => {}
            _ => {
                c.dropped.insert(device, now + self.config.reconnect_grace);
                let peers: Vec<DeviceId> =
                    c.members().into_iter().filter(|d| *d != device).collect();
                for p in peers {
                    self.send(
                        p,
                        CallEvent::PeerConnection {
                            call,
                            connected: false,
                        },
                    );
                }
            }
        }
    }

    /// A device reconnected; if it was in a call within its grace period, it
    /// is back in (and should restart ICE). Returns the call to resume.
    pub fn reconnected(&mut self, device: DeviceId) -> Option<CallId> {
        if let Some(call) = self.woken(device) {
            return Some(call);
        }
        let call = self.by_device.get(&device).copied()?;
        let c = self.calls.get_mut(&call)?;
        c.dropped.remove(&device)?;
        self.changed.insert(call);
        let peers: Vec<DeviceId> = c.members().into_iter().filter(|d| *d != device).collect();
        for p in peers {
            self.send(
                p,
                CallEvent::PeerConnection {
                    call,
                    connected: true,
                },
            );
        }
        Some(call)
    }

    /// Ends calls whose ring timeout or reconnect grace has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<(CallId, EndReason)> = self
            .calls
            .iter()
            .filter_map(|(id, c)| {
                if c.deadline.is_some_and(|d| d <= now) {
                    Some((*id, EndReason::NoAnswer))
                } else if c.dropped.values().any(|d| *d <= now) {
                    Some((*id, EndReason::ConnectionLost))
                } else {
                    None
                }
            })
            .collect();
        for (id, reason) in due {
            self.end(now, id, reason, None);
        }
    }

    /// Ends a call: tells every member but `by`, records it, forgets it.
    fn end(&mut self, now: Instant, call: CallId, reason: EndReason, by: Option<DeviceId>) {
        let Some(c) = self.calls.remove(&call) else {
            return;
        };
        self.cancel_pushes(call, &c, by);
        self.changed.insert(call);
        for d in c.members() {
            if self.by_device.get(&d) == Some(&call) {
                self.by_device.remove(&d);
            }
            if Some(d) != by && !c.dropped.contains_key(&d) {
                self.send(d, CallEvent::Ended { call, reason });
            }
        }
        for account in [c.caller.account, c.callee] {
            if let Some(list) = self.by_account.get_mut(&account) {
                list.retain(|id| *id != call);
                if list.is_empty() {
                    self.by_account.remove(&account);
                }
            }
        }
        let (answered_by, talk) = match c.state {
            State::Active {
                callee,
                answered_at,
            } => (
                Some(callee),
                Some(now.saturating_duration_since(answered_at)),
            ),
            State::Ringing { .. } => (None, None),
        };
        self.out.push_back(Output::Record(CallRecord {
            call,
            caller: c.caller,
            callee: c.callee,
            answered_by,
            media: c.media,
            reason,
            total: now.saturating_duration_since(c.started),
            talk,
        }));
    }
}
