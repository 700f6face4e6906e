//! The call state machine in virtual time: every transition and the races.

use super::*;

const A: AccountId = AccountId(1);
const B: AccountId = AccountId(2);
const C: AccountId = AccountId(3);
const A1: DeviceId = DeviceId(11);
const B1: DeviceId = DeviceId(21);
const B2: DeviceId = DeviceId(22);
const C1: DeviceId = DeviceId(31);
const X: CallId = CallId(100);
const Y: CallId = CallId(200);

fn alice() -> Party {
    Party {
        account: A,
        device: A1,
    }
}

fn carol() -> Party {
    Party {
        account: C,
        device: C1,
    }
}

struct Sim {
    calls: Calls,
    now: Instant,
}

impl Sim {
    fn new() -> Self {
        Sim {
            calls: Calls::new(CallConfig::default()),
            now: Instant::now(),
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        while let Some(t) = self.calls.poll_timeout() {
            if t > self.now {
                break;
            }
            self.calls.handle_timeout(self.now);
        }
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.calls.poll_output()).collect()
    }

    fn events_for(out: &[Output], device: DeviceId) -> Vec<CallEvent> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send { to, event } if *to == device => Some(event.clone()),
                _ => None,
            })
            .collect()
    }

    fn records(out: &[Output]) -> Vec<CallRecord> {
        out.iter()
            .filter_map(|o| match o {
                Output::Record(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    fn ring_b(&mut self) {
        self.calls
            .offer(
                self.now,
                Offer {
                    call: X,
                    caller: alice(),
                    callee: B,
                    callee_devices: &[B1, B2],
                    pushed_devices: &[],
                    media: Media::Video,
                    sdp: "offer-sdp".into(),
                },
            )
            .unwrap();
    }
}

#[test]
fn offer_rings_every_device_and_first_accept_wins() {
    let mut s = Sim::new();
    s.ring_b();
    let out = s.drain();
    for d in [B1, B2] {
        assert_eq!(
            Sim::events_for(&out, d),
            vec![CallEvent::Incoming {
                call: X,
                from: alice(),
                media: Media::Video,
                sdp: "offer-sdp".into()
            }]
        );
    }
    assert_eq!(
        Sim::events_for(&out, A1),
        vec![CallEvent::Ringing { call: X }]
    );

    s.advance(Duration::from_secs(3));
    s.calls.accept(s.now, B2, X, "answer".into()).unwrap();
    let out = s.drain();
    assert_eq!(
        Sim::events_for(&out, A1),
        vec![CallEvent::Accepted {
            call: X,
            by: B2,
            sdp: "answer".into()
        }]
    );
    assert_eq!(
        Sim::events_for(&out, B1),
        vec![CallEvent::AnsweredElsewhere { call: X }]
    );
    // Both accept at once: the second is told it lost.
    assert_eq!(
        s.calls.accept(s.now, B1, X, "late".into()),
        Err(CallError::AlreadyAnswered)
    );
    assert_eq!(s.calls.call_of(B1), None);

    s.advance(Duration::from_secs(60));
    s.calls.hangup(s.now, A1, X).unwrap();
    let out = s.drain();
    assert_eq!(
        Sim::events_for(&out, B2),
        vec![CallEvent::Ended {
            call: X,
            reason: EndReason::HungUp
        }]
    );
    assert!(
        Sim::events_for(&out, A1).is_empty(),
        "the one who hangs up is not told"
    );
    let r = &Sim::records(&out)[0];
    assert_eq!((r.reason, r.answered_by), (EndReason::HungUp, Some(B2)));
    assert_eq!(r.talk, Some(Duration::from_secs(60)));
    assert_eq!(r.total, Duration::from_secs(63));
    assert!(s.calls.is_empty());
}

#[test]
fn no_answer_times_out_into_a_missed_call() {
    let mut s = Sim::new();
    s.ring_b();
    s.drain();
    s.advance(Duration::from_secs(44));
    assert!(s.drain().is_empty());
    s.advance(Duration::from_secs(1));
    let out = s.drain();
    for d in [A1, B1, B2] {
        assert_eq!(
            Sim::events_for(&out, d),
            vec![CallEvent::Ended {
                call: X,
                reason: EndReason::NoAnswer
            }]
        );
    }
    let r = &Sim::records(&out)[0];
    assert!(r.reason.is_missed());
    assert_eq!(r.answered_by, None);
    assert_eq!(s.calls.poll_timeout(), None);
}

#[test]
fn reject_ends_the_call_for_every_device() {
    let mut s = Sim::new();
    s.ring_b();
    s.drain();
    assert_eq!(
        s.calls.reject(s.now, A1, X),
        Err(CallError::WrongState),
        "callers cancel, not reject"
    );
    s.calls.reject(s.now, B1, X).unwrap();
    let out = s.drain();
    let ended = CallEvent::Ended {
        call: X,
        reason: EndReason::Rejected,
    };
    assert_eq!(Sim::events_for(&out, A1), vec![ended.clone()]);
    assert_eq!(Sim::events_for(&out, B2), vec![ended]);
    assert!(!Sim::records(&out)[0].reason.is_missed());
}

#[test]
fn cancel_while_accepting_has_one_winner() {
    // Cancel first: the accept finds no call.
    let mut s = Sim::new();
    s.ring_b();
    s.calls.hangup(s.now, A1, X).unwrap();
    assert_eq!(
        s.calls.accept(s.now, B1, X, "a".into()),
        Err(CallError::NotInCall)
    );
    let out = s.drain();
    assert_eq!(Sim::records(&out)[0].reason, EndReason::Cancelled);
    assert!(Sim::records(&out)[0].reason.is_missed());

    // Accept first: the caller's hang-up ends an answered call.
    let mut s = Sim::new();
    s.ring_b();
    s.calls.accept(s.now, B1, X, "a".into()).unwrap();
    s.calls.hangup(s.now, A1, X).unwrap();
    let out = s.drain();
    assert_eq!(Sim::records(&out)[0].reason, EndReason::HungUp);
    assert!(Sim::events_for(&out, B1).contains(&CallEvent::Ended {
        call: X,
        reason: EndReason::HungUp
    }));
}

#[test]
fn busy_callee_gets_a_waiting_notice() {
    let mut s = Sim::new();
    s.ring_b();
    s.calls.accept(s.now, B1, X, "a".into()).unwrap();
    s.drain();
    s.calls
        .offer(
            s.now,
            Offer {
                call: Y,
                caller: carol(),
                callee: B,
                callee_devices: &[B1, B2],
                pushed_devices: &[],
                media: Media::Audio,
                sdp: "o".into(),
            },
        )
        .unwrap();
    let out = s.drain();
    assert_eq!(
        Sim::events_for(&out, C1),
        vec![CallEvent::Ended {
            call: Y,
            reason: EndReason::Busy
        }]
    );
    assert_eq!(
        Sim::events_for(&out, B1),
        vec![CallEvent::Waiting { call: Y, from: C }]
    );
    assert!(Sim::events_for(&out, B2).is_empty());
    let r = &Sim::records(&out)[0];
    assert_eq!((r.call, r.reason, r.callee), (Y, EndReason::Busy, B));
    assert_eq!(s.calls.len(), 1, "the first call goes on");
    assert_eq!(s.calls.call_of(C1), None);
}

#[test]
fn glare_is_refused() {
    let mut s = Sim::new();
    s.ring_b();
    let bob = Party {
        account: B,
        device: B1,
    };
    // B1 is ringing for X, so as a device it is busy...
    assert_eq!(
        s.calls.offer(
            s.now,
            Offer {
                call: Y,
                caller: bob,
                callee: A,
                callee_devices: &[A1],
                pushed_devices: &[],
                media: Media::Audio,
                sdp: "o".into()
            }
        ),
        Err(CallError::AlreadyInCall)
    );
    // ...and a device of B that is not ringing hits glare.
    let bob3 = Party {
        account: B,
        device: DeviceId(23),
    };
    assert_eq!(
        s.calls.offer(
            s.now,
            Offer {
                call: Y,
                caller: bob3,
                callee: A,
                callee_devices: &[A1],
                pushed_devices: &[],
                media: Media::Audio,
                sdp: "o".into()
            }
        ),
        Err(CallError::Glare)
    );
    assert_eq!(s.calls.len(), 1);
}

#[test]
fn refusals_change_nothing() {
    let mut s = Sim::new();
    assert_eq!(
        s.calls.offer(
            s.now,
            Offer {
                call: X,
                caller: alice(),
                callee: A,
                callee_devices: &[A1],
                pushed_devices: &[],
                media: Media::Audio,
                sdp: "o".into()
            }
        ),
        Err(CallError::SelfCall)
    );
    s.ring_b();
    s.drain();
    assert_eq!(
        s.calls.offer(
            s.now,
            Offer {
                call: X,
                caller: carol(),
                callee: B,
                callee_devices: &[B1],
                pushed_devices: &[],
                media: Media::Audio,
                sdp: "o".into()
            }
        ),
        Err(CallError::DuplicateId)
    );
    assert_eq!(
        s.calls.offer(
            s.now,
            Offer {
                call: Y,
                caller: alice(),
                callee: C,
                callee_devices: &[C1],
                pushed_devices: &[],
                media: Media::Audio,
                sdp: "o".into()
            }
        ),
        Err(CallError::AlreadyInCall)
    );
    // Nobody outside the call may inject or end it.
    assert_eq!(
        s.calls.relay_ice(C1, X, "c".into()),
        Err(CallError::NotInCall)
    );
    assert_eq!(
        s.calls.relay_sdp(C1, X, SdpKind::Offer, "s".into()),
        Err(CallError::NotInCall)
    );
    assert_eq!(s.calls.hangup(s.now, C1, X), Err(CallError::NotInCall));
    assert_eq!(s.calls.reject(s.now, C1, X), Err(CallError::NotInCall));
    assert_eq!(
        s.calls.accept(s.now, C1, X, "a".into()),
        Err(CallError::NotInCall)
    );
    assert_eq!(
        s.calls.accept(s.now, B1, Y, "a".into()),
        Err(CallError::NotInCall)
    );
    assert!(s.drain().is_empty());
    assert_eq!(s.calls.len(), 1);
}

#[test]
fn signalling_is_relayed_only_between_the_two_devices() {
    let mut s = Sim::new();
    s.ring_b();
    s.drain();
    // Early candidates from the caller reach every ringing device.
    s.calls.relay_ice(A1, X, "cand-a".into()).unwrap();
    let out = s.drain();
    assert_eq!(Sim::events_for(&out, B1).len(), 1);
    assert_eq!(Sim::events_for(&out, B2).len(), 1);
    assert_eq!(
        s.calls.relay_ice(B1, X, "too-early".into()),
        Err(CallError::WrongState)
    );
    assert_eq!(
        s.calls.relay_sdp(A1, X, SdpKind::Offer, "x".into()),
        Err(CallError::WrongState),
        "renegotiation waits for the answer"
    );

    s.calls.accept(s.now, B2, X, "a".into()).unwrap();
    s.drain();
    s.calls.relay_ice(B2, X, "cand-b".into()).unwrap();
    s.calls
        .relay_sdp(A1, X, SdpKind::Offer, "add video".into())
        .unwrap();
    let out = s.drain();
    assert_eq!(
        Sim::events_for(&out, A1),
        vec![CallEvent::Ice {
            call: X,
            from: B2,
            candidate: "cand-b".into()
        }]
    );
    assert_eq!(
        Sim::events_for(&out, B2),
        vec![CallEvent::Sdp {
            call: X,
            from: A1,
            kind: SdpKind::Offer,
            sdp: "add video".into()
        }]
    );
    assert!(
        Sim::events_for(&out, B1).is_empty(),
        "the device that lost the race hears nothing"
    );
    assert_eq!(
        s.calls.relay_ice(B1, X, "x".into()),
        Err(CallError::NotInCall)
    );
}

#[test]
fn a_dropped_device_may_rejoin_within_the_grace_period() {
    let mut s = Sim::new();
    s.ring_b();
    s.calls.accept(s.now, B1, X, "a".into()).unwrap();
    s.drain();
    s.calls.disconnected(s.now, B1);
    let out = s.drain();
    assert_eq!(
        Sim::events_for(&out, A1),
        vec![CallEvent::PeerConnection {
            call: X,
            connected: false
        }]
    );
    s.advance(Duration::from_secs(19));
    assert_eq!(s.calls.reconnected(B1), Some(X));
    let out = s.drain();
    assert_eq!(
        Sim::events_for(&out, A1),
        vec![CallEvent::PeerConnection {
            call: X,
            connected: true
        }]
    );
    s.calls
        .relay_sdp(B1, X, SdpKind::Offer, "ice restart".into())
        .unwrap();
    s.advance(Duration::from_secs(60));
    assert_eq!(s.calls.len(), 1, "the call survived");

    // Dropping again without coming back ends the call for both.
    s.calls.disconnected(s.now, A1);
    s.drain();
    s.advance(Duration::from_secs(20));
    let out = s.drain();
    assert_eq!(
        Sim::events_for(&out, B1),
        vec![CallEvent::Ended {
            call: X,
            reason: EndReason::ConnectionLost
        }]
    );
    assert!(
        Sim::events_for(&out, A1).is_empty(),
        "the dropped device is gone"
    );
    assert_eq!(Sim::records(&out)[0].reason, EndReason::ConnectionLost);
    assert_eq!(s.calls.reconnected(A1), None);
}

#[test]
fn ringing_devices_that_leave_stop_ringing() {
    let mut s = Sim::new();
    s.ring_b();
    s.drain();
    s.calls.disconnected(s.now, B1);
    assert!(s.drain().is_empty());
    assert_eq!(
        s.calls.accept(s.now, B1, X, "a".into()),
        Err(CallError::NotInCall)
    );
    s.calls.disconnected(s.now, B2);
    let out = s.drain();
    assert_eq!(
        Sim::events_for(&out, A1),
        vec![CallEvent::Ended {
            call: X,
            reason: EndReason::Unavailable
        }]
    );
}

#[test]
fn a_callee_with_no_connected_device_is_unavailable() {
    let mut s = Sim::new();
    s.calls
        .offer(
            s.now,
            Offer {
                call: X,
                caller: alice(),
                callee: B,
                callee_devices: &[],
                pushed_devices: &[],
                media: Media::Audio,
                sdp: "o".into(),
            },
        )
        .unwrap();
    let out = s.drain();
    assert_eq!(
        Sim::events_for(&out, A1),
        vec![CallEvent::Ended {
            call: X,
            reason: EndReason::Unavailable
        }]
    );
    assert!(Sim::records(&out)[0].reason.is_missed());
    assert!(s.calls.is_empty());
    assert_eq!(s.calls.call_of(A1), None);
}
