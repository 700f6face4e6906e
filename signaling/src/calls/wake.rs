//! Ringing callee devices that have no connection: the driver names them
//! in the offer ([`Offer::pushed_devices`]), the state machine asks for a
//! ring push ([`Output::Push`]), keeps the offer and the caller's ICE
//! candidates, and rings a woken device as soon as it connects
//! ([`Calls::reconnected`]). Every pushed device gets a cancel push when
//! the call stops ringing (answered elsewhere, rejected, cancelled, timed
//! out), except the device that answered or rejected.

use super::*;

/// Most caller ICE candidates kept for devices that connect late.
const MAX_KEPT_CANDIDATES: usize = 64;

/// The pushed devices of one ringing call.
#[derive(Debug, Clone)]
pub(super) struct Wake {
    /// Pushed and not connected yet.
    awaiting: Vec<DeviceId>,
    /// Every device that got the ring push.
    pushed: Vec<DeviceId>,
    /// The caller's offer and candidates, for devices that connect late.
    sdp: String,
    candidates: Vec<String>,
}

impl Wake {
    /// Whether some pushed device may still connect and ring.
    pub(super) fn waiting(&self) -> bool {
        !self.awaiting.is_empty()
    }
}

impl Calls {
    /// The devices of `list` free to be pushed: in no call, not ringing.
    pub(super) fn free_devices(&self, list: &[DeviceId], ringing: &[DeviceId]) -> Vec<DeviceId> {
        let mut out: Vec<DeviceId> = list
            .iter()
            .copied()
            .filter(|d| {
                !self.by_device.contains_key(d)
                    && !self.awaiting.contains_key(d)
                    && !ringing.contains(d)
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Asks for the ring push to each of `pushed`.
    pub(super) fn push_ring(
        &mut self,
        call: CallId,
        c: &mut Call,
        pushed: Vec<DeviceId>,
        sdp: &str,
    ) {
        if pushed.is_empty() {
            return;
        }
        let event = PushEvent::Ring {
            call,
            from: c.caller.account,
            video: c.media == Media::Video,
        };
        for d in &pushed {
            self.out.push_back(Output::Push { to: *d, event });
            self.awaiting.insert(*d, call);
        }
        c.wake = Some(Box::new(Wake {
            awaiting: pushed.clone(),
            pushed,
            sdp: sdp.to_owned(),
            candidates: Vec::new(),
        }));
    }

    /// A pushed device connected while its call still rings: it rings now,
    /// with the offer and the caller's candidates so far.
    pub(super) fn woken(&mut self, device: DeviceId) -> Option<CallId> {
        let call = self.awaiting.remove(&device)?;
        let c = self.calls.get_mut(&call)?;
        let State::Ringing { devices } = &mut c.state else {
            return None;
        };
        let wake = c.wake.as_mut()?;
        wake.awaiting.retain(|d| *d != device);
        devices.push(device);
        c.rang.push(device);
        let (from, media) = (c.caller, c.media);
        let (sdp, candidates) = (wake.sdp.clone(), wake.candidates.clone());
        self.by_device.insert(device, call);
        let incoming = CallEvent::Incoming {
            call,
            from,
            media,
            sdp,
        };
        self.send(device, incoming);
        for candidate in candidates {
            let ice = CallEvent::Ice {
                call,
                from: from.device,
                candidate,
            };
            self.send(device, ice);
        }
        Some(call)
    }

    /// `device` answered: the other pushed devices stop ringing.
    pub(super) fn answered(&mut self, call: CallId, device: DeviceId) {
        let Some(wake) = self.calls.get_mut(&call).and_then(|c| c.wake.take()) else {
            return;
        };
        self.cancel(call, &wake, Some(device));
    }

    /// The call ended (`by` ended it).
    pub(super) fn cancel_pushes(&mut self, call: CallId, c: &Call, by: Option<DeviceId>) {
        if let Some(wake) = &c.wake {
            self.cancel(call, wake, by);
        }
    }

    fn cancel(&mut self, call: CallId, wake: &Wake, except: Option<DeviceId>) {
        for d in &wake.awaiting {
            self.awaiting.remove(d);
        }
        for d in wake.pushed.iter().filter(|d| Some(**d) != except) {
            self.out.push_back(Output::Push {
                to: *d,
                event: PushEvent::Cancel { call },
            });
        }
    }

    /// Keeps the caller's candidates for pushed devices still to connect.
    pub(super) fn keep_for_woken(&mut self, call: CallId, event: &CallEvent) {
        let CallEvent::Ice { candidate, .. } = event else {
            return;
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if !matches!(c.state, State::Ringing { .. }) {
            return;
        }
        if let Some(w) = c.wake.as_mut()
            && w.waiting()
            && w.candidates.len() < MAX_KEPT_CANDIDATES
        {
            w.candidates.push(candidate.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: AccountId = AccountId(1);
    const B: AccountId = AccountId(2);
    const A1: DeviceId = DeviceId(11);
    const B1: DeviceId = DeviceId(21);
    const B2: DeviceId = DeviceId(22);
    const X: CallId = CallId(100);

    fn offer(calls: &mut Calls, now: Instant, connected: &[DeviceId], pushed: &[DeviceId]) {
        let caller = Party {
            account: A,
            device: A1,
        };
        let offer = Offer {
            call: X,
            caller,
            callee: B,
            callee_devices: connected,
            pushed_devices: pushed,
            media: Media::Video,
            sdp: "offer".into(),
        };
        calls.offer(now, offer).unwrap();
    }

    fn drain(calls: &mut Calls) -> Vec<Output> {
        std::iter::from_fn(|| calls.poll_output()).collect()
    }

    fn pushes(out: &[Output]) -> Vec<(DeviceId, PushEvent)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Push { to, event } => Some((*to, *event)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_offline_device_is_pushed_rings_when_it_connects_and_can_answer() {
        let mut calls = Calls::new(CallConfig::default());
        let now = Instant::now();
        offer(&mut calls, now, &[], &[B1]);
        let ring = PushEvent::Ring {
            call: X,
            from: A,
            video: true,
        };
        assert_eq!(pushes(&drain(&mut calls)), vec![(B1, ring)]);
        calls.relay_ice(A1, X, "cand-1".into()).unwrap();
        drain(&mut calls);
        assert_eq!(calls.reconnected(B1), Some(X));
        let out = drain(&mut calls);
        assert!(matches!(
            &out[..],
            [
                Output::Send { to: B1, event: CallEvent::Incoming { sdp, .. } },
                Output::Send { to: B1, event: CallEvent::Ice { candidate, .. } },
            ] if sdp == "offer" && candidate == "cand-1"
        ));
        calls.accept(now, B1, X, "answer".into()).unwrap();
        assert!(
            pushes(&drain(&mut calls)).is_empty(),
            "no cancel to the answering device"
        );
    }

    #[test]
    fn every_way_a_ringing_call_ends_cancels_the_pushes() {
        let cancel = PushEvent::Cancel { call: X };
        // The caller hangs up.
        let mut calls = Calls::new(CallConfig::default());
        let now = Instant::now();
        offer(&mut calls, now, &[], &[B1, B2]);
        drain(&mut calls);
        calls.hangup(now, A1, X).unwrap();
        assert_eq!(pushes(&drain(&mut calls)), vec![(B1, cancel), (B2, cancel)]);
        assert!(calls.awaiting.is_empty());
        // Nobody answers in time.
        offer(&mut calls, now, &[], &[B1]);
        drain(&mut calls);
        calls.handle_timeout(now + CallConfig::default().ring_timeout);
        assert_eq!(pushes(&drain(&mut calls)), vec![(B1, cancel)]);
        // A connected device answers: the pushed one is cancelled.
        offer(&mut calls, now, &[B1], &[B2]);
        drain(&mut calls);
        calls.accept(now, B1, X, "answer".into()).unwrap();
        assert_eq!(pushes(&drain(&mut calls)), vec![(B2, cancel)]);
        assert_eq!(calls.reconnected(B2), None, "too late to ring");
    }

    #[test]
    fn a_ringing_device_leaving_keeps_the_call_while_a_pushed_one_may_come() {
        let mut calls = Calls::new(CallConfig::default());
        let now = Instant::now();
        offer(&mut calls, now, &[B1], &[B2]);
        drain(&mut calls);
        calls.disconnected(now, B1);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls.reconnected(B2), Some(X));
    }
}
