//! The minimal state of a call, as the call leader persists it (in Redis,
//! see `crate::cluster::call_store`) so that the next leader can take the
//! call over: parties, devices, state and deadlines.
//!
//! Sans-IO like the rest of the state machine: the driver passes a
//! [`WallClock`], the same moment as an [`Instant`] and as Unix
//! milliseconds; deadlines travel as Unix milliseconds because an `Instant`
//! means nothing on another machine.

use super::{Call, CallError, Calls, Party, State};
use palaver_proto::frames::Media;
use palaver_proto::{AccountId, CallId, DeviceId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One moment on both clocks.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    pub now: Instant,
    pub unix_ms: u64,
}

impl WallClock {
    fn to_ms(self, t: Instant) -> u64 {
        match t.checked_duration_since(self.now) {
            Some(ahead) => self.unix_ms.saturating_add(ahead.as_millis() as u64),
            None => {
                let behind = self.now.saturating_duration_since(t).as_millis() as u64;
                self.unix_ms.saturating_sub(behind)
            }
        }
    }

    /// A past moment that the `Instant` clock cannot express becomes `now`.
    fn to_instant(self, ms: u64) -> Instant {
        if ms >= self.unix_ms {
            self.now + Duration::from_millis(ms - self.unix_ms)
        } else {
            let behind = Duration::from_millis(self.unix_ms - ms);
            self.now.checked_sub(behind).unwrap_or(self.now)
        }
    }
}

/// A call ringing or in progress, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallSnapshot {
    pub call: CallId,
    pub caller: AccountId,
    pub caller_device: DeviceId,
    pub callee: AccountId,
    pub media: Media,
    /// The devices still ringing (`None`: answered).
    pub ringing: Option<Vec<DeviceId>>,
    /// The callee device that answered, and when.
    pub answered: Option<(DeviceId, u64)>,
    /// Every callee device that rang.
    pub rang: Vec<DeviceId>,
    pub started_ms: u64,
    /// Ring timeout while ringing.
    pub deadline_ms: Option<u64>,
    /// Devices that dropped, and when their grace ends.
    pub dropped: Vec<(DeviceId, u64)>,
}

impl Calls {
    /// Calls whose state changed (created, answered, a device dropped or
    /// came back, ended) since the last call; the driver persists them.
    pub fn take_changed(&mut self) -> Vec<CallId> {
        std::mem::take(&mut self.changed).into_iter().collect()
    }

    /// The call's state to persist; `None` once it ended.
    pub fn snapshot(&self, call: CallId, clock: WallClock) -> Option<CallSnapshot> {
        let c = self.calls.get(&call)?;
        let (ringing, answered) = match &c.state {
            State::Ringing { devices } => (Some(devices.clone()), None),
            State::Active {
                callee,
                answered_at,
            } => (None, Some((*callee, clock.to_ms(*answered_at)))),
        };
        Some(CallSnapshot {
            call,
            caller: c.caller.account,
            caller_device: c.caller.device,
            callee: c.callee,
            media: c.media,
            ringing,
            answered,
            rang: c.rang.clone(),
            started_ms: clock.to_ms(c.started),
            deadline_ms: c.deadline.map(|d| clock.to_ms(d)),
            dropped: c
                .dropped
                .iter()
                .map(|(d, t)| (*d, clock.to_ms(*t)))
                .collect(),
        })
    }

    /// Takes over a call another leader ran. Its timers go on from where
    /// they were (a deadline already past fires at the next
    /// [`Calls::handle_timeout`]). A call whose id or devices are taken
    /// here is refused.
    pub fn restore(&mut self, s: CallSnapshot, clock: WallClock) -> Result<(), CallError> {
        if self.calls.contains_key(&s.call) {
            return Err(CallError::DuplicateId);
        }
        let state = match (s.ringing, s.answered) {
            (Some(devices), _) => State::Ringing { devices },
            (None, Some((callee, at))) => State::Active {
                callee,
                answered_at: clock.to_instant(at),
            },
            (None, None) => return Err(CallError::WrongState),
        };
        let c = Call {
            caller: Party {
                account: s.caller,
                device: s.caller_device,
            },
            callee: s.callee,
            media: s.media,
            state,
            rang: s.rang,
            started: clock.to_instant(s.started_ms),
            deadline: s.deadline_ms.map(|d| clock.to_instant(d)),
            dropped: s
                .dropped
                .into_iter()
                .map(|(d, t)| (d, clock.to_instant(t)))
                .collect::<BTreeMap<_, _>>(),
            // Pushes to offline devices are not carried over: a device
            // woken by the old leader that connects now is not rung.
            wake: None,
        };
        let members = c.members();
        if members.iter().any(|d| self.by_device.contains_key(d)) {
            return Err(CallError::AlreadyInCall);
        }
        for d in members {
            self.by_device.insert(d, s.call);
        }
        for account in [s.caller, s.callee] {
            self.by_account.entry(account).or_default().push(s.call);
        }
        self.calls.insert(s.call, c);
        Ok(())
    }

    /// The devices taking part in `call` (caller, ringing or answering).
    pub fn members_of(&self, call: CallId) -> Vec<DeviceId> {
        self.calls.get(&call).map(Call::members).unwrap_or_default()
    }

    /// Every device taking part in a call.
    pub fn devices(&self) -> Vec<DeviceId> {
        let mut d: Vec<DeviceId> = self.by_device.keys().copied().collect();
        d.sort_unstable();
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::{CallConfig, CallEvent, EndReason, Offer, Output};

    fn clock(now: Instant, unix_ms: u64) -> WallClock {
        WallClock { now, unix_ms }
    }

    fn offer(calls: &mut Calls, now: Instant) {
        calls
            .offer(
                now,
                Offer {
                    call: CallId(7),
                    caller: Party {
                        account: AccountId(1),
                        device: DeviceId(10),
                    },
                    callee: AccountId(2),
                    callee_devices: &[DeviceId(20), DeviceId(21)],
                    media: Media::Audio,
                    sdp: "v=0".into(),
                    pushed_devices: &[],
                },
            )
            .unwrap();
    }

    fn ended(calls: &mut Calls) -> Vec<(DeviceId, EndReason)> {
        std::iter::from_fn(|| calls.poll_output())
            .filter_map(|o| match o {
                Output::Send {
                    to,
                    event: CallEvent::Ended { reason, .. },
                } => Some((to, reason)),
                _ => None,
            })
            .collect()
    }

    /// Moves call 7 from `old` to a fresh leader through JSON, `later`
    /// after the snapshot, on a machine whose `Instant` clock differs.
    fn hand_over(old: &Calls, at: WallClock, later: Duration) -> (Calls, Instant) {
        let json = serde_json::to_string(&old.snapshot(CallId(7), at).unwrap()).unwrap();
        let mut new = Calls::new(CallConfig::default());
        let now = Instant::now() + Duration::from_secs(1000);
        let unix = at.unix_ms + later.as_millis() as u64;
        new.restore(serde_json::from_str(&json).unwrap(), clock(now, unix))
            .unwrap();
        (new, now)
    }

    #[test]
    fn a_ringing_call_keeps_ringing_and_times_out_on_time() {
        let t0 = Instant::now();
        let mut old = Calls::new(CallConfig::default());
        offer(&mut old, t0);
        assert_eq!(old.take_changed(), vec![CallId(7)]);
        let (mut new, now) = hand_over(&old, clock(t0, 1_000_000), Duration::from_secs(5));
        assert_eq!(new.call_of(DeviceId(21)), Some(CallId(7)));
        // 45 s ring timeout, 5 s of it spent before the takeover.
        assert_eq!(new.poll_timeout(), Some(now + Duration::from_secs(40)));
        new.accept(now, DeviceId(21), CallId(7), "v=0".into())
            .unwrap();
        new.hangup(now, DeviceId(10), CallId(7)).unwrap();
        assert_eq!(
            ended(&mut new),
            vec![(DeviceId(21), EndReason::HungUp)],
            "the callee hears the hang-up"
        );
        assert!(new.is_empty());
    }

    #[test]
    fn an_answered_call_hangs_up_and_a_past_deadline_fires() {
        let t0 = Instant::now();
        let mut old = Calls::new(CallConfig::default());
        offer(&mut old, t0);
        old.accept(t0, DeviceId(20), CallId(7), "v=0".into())
            .unwrap();
        old.disconnected(t0, DeviceId(20));
        let changed = old.take_changed();
        assert_eq!(changed, vec![CallId(7)]);
        // Taken over after the dropped device's grace (20 s) ran out.
        let (mut new, now) = hand_over(&old, clock(t0, 1_000_000), Duration::from_secs(30));
        assert_eq!(new.members_of(CallId(7)), vec![DeviceId(10), DeviceId(20)]);
        assert!(new.poll_timeout().unwrap() <= now);
        new.handle_timeout(now);
        assert_eq!(
            ended(&mut new),
            vec![(DeviceId(10), EndReason::ConnectionLost)]
        );
        assert_eq!(new.take_changed(), vec![CallId(7)]);
        assert_eq!(new.snapshot(CallId(7), clock(now, 0)), None);
    }

    #[test]
    fn a_taken_device_refuses_the_restore() {
        let t0 = Instant::now();
        let mut old = Calls::new(CallConfig::default());
        offer(&mut old, t0);
        let snap = old.snapshot(CallId(7), clock(t0, 5000)).unwrap();
        assert_eq!(
            old.restore(snap.clone(), clock(t0, 5000)),
            Err(CallError::DuplicateId)
        );
        let mut other = snap;
        other.call = CallId(8);
        assert_eq!(
            old.restore(other, clock(t0, 5000)),
            Err(CallError::AlreadyInCall)
        );
    }
}
