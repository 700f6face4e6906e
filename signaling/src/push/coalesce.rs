//! One message push per device per burst, sans-IO.
//!
//! The first envelope queued for an offline device is pushed at once and
//! opens a window. Envelopes queued during the window are only counted.
//! When the window closes with envelopes counted, one more push goes out
//! (carrying the burst's total) and a new window opens; a window that
//! closes with nothing counted ends the burst. A device that connects ends
//! its burst too. Poll order: feed [`Coalescer::queued`] and
//! [`Coalescer::connected`] as they happen, sleep until
//! [`Coalescer::poll_timeout`], then call [`Coalescer::handle_timeout`].

use palaver_proto::DeviceId;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Burst {
    /// Envelopes queued since the burst began.
    total: u32,
    /// Envelopes queued since the last push.
    unsent: u32,
    /// When the current window closes.
    until: Instant,
}

/// The bursts of every offline device being pushed.
#[derive(Debug)]
pub struct Coalescer {
    window: Duration,
    bursts: HashMap<DeviceId, Burst>,
    /// Window ends, in order.
    due: BTreeSet<(Instant, DeviceId)>,
}

/// What a call of the coalescer decided about an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Push now with this count.
    Push(u32),
    /// Counted; a later push will carry it.
    Coalesced,
}

impl Coalescer {
    pub fn new(window: Duration) -> Self {
        Coalescer {
            window,
            bursts: HashMap::new(),
            due: BTreeSet::new(),
        }
    }

    /// `n` envelopes were queued for `device`, which has no connection.
    pub fn queued(&mut self, device: DeviceId, n: u32, now: Instant) -> Decision {
        if let Some(b) = self.bursts.get_mut(&device)
            && now < b.until
        {
            b.total = b.total.saturating_add(n);
            b.unsent = b.unsent.saturating_add(n);
            return Decision::Coalesced;
        }
        self.forget(device);
        self.open(device, n, now);
        Decision::Push(n)
    }

    fn open(&mut self, device: DeviceId, total: u32, now: Instant) {
        let until = now + self.window;
        self.bursts.insert(
            device,
            Burst {
                total,
                unsent: 0,
                until,
            },
        );
        self.due.insert((until, device));
    }

    fn forget(&mut self, device: DeviceId) {
        if let Some(b) = self.bursts.remove(&device) {
            self.due.remove(&(b.until, device));
        }
    }

    /// `device` connected: its burst is over.
    pub fn connected(&mut self, device: DeviceId) {
        self.forget(device);
    }

    /// When [`Coalescer::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.due.first().map(|(t, _)| *t)
    }

    /// Closes the windows due at `now`; returns the pushes to send (device
    /// and the burst's total so far).
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<(DeviceId, u32)> {
        let mut out = Vec::new();
        while let Some(&(until, device)) = self.due.first() {
            if until > now {
                break;
            }
            let burst = self.bursts.get(&device).copied();
            self.forget(device);
            if let Some(b) = burst.filter(|b| b.unsent > 0) {
                out.push((device, b.total));
                self.open(device, b.total, now);
            }
        }
        out
    }

    /// Devices with an open burst.
    pub fn len(&self) -> usize {
        self.bursts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bursts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: DeviceId = DeviceId(1);
    const E: DeviceId = DeviceId(2);
    const W: Duration = Duration::from_secs(60);

    #[test]
    fn first_envelope_pushes_at_once_then_one_push_per_window() {
        let mut c = Coalescer::new(W);
        let t0 = Instant::now();
        assert_eq!(c.queued(D, 1, t0), Decision::Push(1));
        for i in 1..5 {
            assert_eq!(
                c.queued(D, 1, t0 + Duration::from_secs(i)),
                Decision::Coalesced
            );
        }
        assert_eq!(c.poll_timeout(), Some(t0 + W));
        assert!(
            c.handle_timeout(t0 + W - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(c.handle_timeout(t0 + W), vec![(D, 5)]);
        // A quiet window ends the burst; the next envelope pushes at once.
        assert_eq!(c.poll_timeout(), Some(t0 + 2 * W));
        assert!(c.handle_timeout(t0 + 2 * W).is_empty());
        assert!(c.is_empty());
        assert_eq!(c.queued(D, 2, t0 + 3 * W), Decision::Push(2));
    }

    #[test]
    fn connecting_ends_the_burst_and_devices_are_independent() {
        let mut c = Coalescer::new(W);
        let t0 = Instant::now();
        assert_eq!(c.queued(D, 1, t0), Decision::Push(1));
        assert_eq!(c.queued(E, 3, t0), Decision::Push(3));
        assert_eq!(c.queued(D, 1, t0), Decision::Coalesced);
        c.connected(D);
        assert_eq!(c.len(), 1);
        assert_eq!(c.queued(D, 1, t0), Decision::Push(1), "a new burst");
        assert_eq!(c.queued(E, 1, t0), Decision::Coalesced);
        let mut due = c.handle_timeout(t0 + W);
        due.sort();
        assert_eq!(due, vec![(E, 4)]);
    }

    #[test]
    fn a_late_envelope_after_the_window_pushes_at_once() {
        let mut c = Coalescer::new(W);
        let t0 = Instant::now();
        c.queued(D, 1, t0);
        // The driver was late to handle the timeout.
        assert_eq!(c.queued(D, 1, t0 + W), Decision::Push(1));
        assert_eq!(c.poll_timeout(), Some(t0 + 2 * W));
    }

    /// Random envelopes and connects for a few devices in virtual time:
    /// pushes to a device are a window apart unless it connected in
    /// between, and every envelope queued while offline is pushed or
    /// dropped by a connect, never lost in a burst that stays open.
    #[test]
    fn random_schedules_keep_the_invariants() {
        use rand::{Rng, SeedableRng};
        for seed in 0..50u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut c = Coalescer::new(W);
            let t0 = Instant::now();
            let mut now = t0;
            let mut last_push: HashMap<DeviceId, Instant> = HashMap::new();
            let mut owed: HashMap<DeviceId, u32> = HashMap::new();
            for _ in 0..500 {
                now += Duration::from_secs(rng.random_range(0..30));
                for (d, _) in c.handle_timeout(now) {
                    check_gap(&mut last_push, d, now);
                    owed.insert(d, 0);
                }
                let d = DeviceId(rng.random_range(0..4));
                if rng.random_bool(0.1) {
                    c.connected(d);
                    last_push.remove(&d);
                    owed.insert(d, 0);
                    continue;
                }
                match c.queued(d, 1, now) {
                    Decision::Push(_) => {
                        check_gap(&mut last_push, d, now);
                        owed.insert(d, 0);
                    }
                    Decision::Coalesced => *owed.entry(d).or_default() += 1,
                }
            }
            // Long after the last envelope, every burst has closed.
            for _ in 0..3 {
                now += W;
                for (d, _) in c.handle_timeout(now) {
                    owed.insert(d, 0);
                }
            }
            assert!(owed.values().all(|n| *n == 0), "seed {seed}: {owed:?}");
            assert!(c.is_empty(), "seed {seed}");
        }
    }

    fn check_gap(last: &mut HashMap<DeviceId, Instant>, d: DeviceId, now: Instant) {
        if let Some(prev) = last.insert(d, now) {
            assert!(now - prev >= W, "two pushes to {d:?} within a window");
        }
    }
}
