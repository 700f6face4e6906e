//! Per-subscriber rewriting of RTP sequence numbers and timestamps.
//!
//! A subscriber sees one outgoing stream per subscribed track, whatever the
//! SFU feeds into it: simulcast layers of one publisher, or (for a shared
//! slot) different publishers. Each source has its own SSRC, sequence
//! numbers and timestamps; this module splices them into one continuous
//! stream.
//!
//! The outgoing sequence number is an extended (64-bit) counter that starts
//! below 65,536 for every subscriber: its upper bits are the SRTP rollover
//! counter, and a receiver that joins late starts at rollover 0. Passing a
//! long-running publisher's extended number straight through would make the
//! late receiver fail SRTP authentication (the str0m PR #1036 pitfall).

use std::time::Instant;

/// Identifies where forwarded packets come from (publisher and layer).
pub type SourceId = u64;

/// Sequence number and timestamp for one outgoing packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// Extended outgoing sequence number (rollover counter in the upper bits).
    pub seq: u64,
    /// Outgoing RTP timestamp.
    pub ts: u32,
}

/// The splicing state of one outgoing stream.
#[derive(Debug)]
pub struct Rewriter {
    clock_rate: u32,
    source: Option<SourceId>,
    /// Outgoing = incoming + offset, in the extended domain.
    seq_offset: i64,
    /// The first outgoing number given to the current source: older packets
    /// of that source (reordered across the switch) are dropped.
    source_first_out: u64,
    /// The next number to use after a switch.
    next_out: u64,
    ts_offset: u32,
    last_ts: u32,
    last_arrival: Option<Instant>,
}

impl Rewriter {
    /// `first_seq` is the first outgoing sequence number (keep it below
    /// 32,768 so that the stream starts at rollover 0 with room for
    /// reordering); `clock_rate` the codec's RTP clock rate.
    pub fn new(first_seq: u16, clock_rate: u32) -> Self {
        Self {
            clock_rate: clock_rate.max(1),
            source: None,
            seq_offset: 0,
            source_first_out: 0,
            next_out: u64::from(first_seq),
            ts_offset: 0,
            last_ts: 0,
            last_arrival: None,
        }
    }

    /// The current source, if any packet was forwarded yet.
    pub fn source(&self) -> Option<SourceId> {
        self.source
    }

    /// Rewrites one packet from `source` (extended sequence number `seq`,
    /// timestamp `ts`, arrival time `now`). A packet from a new source
    /// switches to it: the caller decides when (on a keyframe for video).
    /// Returns `None` for a packet too old to forward.
    pub fn rewrite(
        &mut self,
        source: SourceId,
        seq: u64,
        ts: u32,
        now: Instant,
    ) -> Option<Rewritten> {
        if self.source != Some(source) {
            self.switch(source, seq, ts, now);
        }
        let out = i64::try_from(seq).ok()?.checked_add(self.seq_offset)?;
        let out = u64::try_from(out).ok()?;
        if out < self.source_first_out {
            return None;
        }
        let ts = ts.wrapping_add(self.ts_offset);
        if out >= self.next_out {
            self.next_out = out + 1;
            self.last_ts = ts;
            self.last_arrival = Some(now);
        }
        Some(Rewritten { seq: out, ts })
    }

    fn switch(&mut self, source: SourceId, seq: u64, ts: u32, now: Instant) {
        let first_out = self.next_out;
        self.seq_offset = first_out as i64 - seq as i64;
        self.source_first_out = first_out;
        self.ts_offset = match self.last_arrival {
            // Keep the timestamp advancing by the real time elapsed since
            // the previous source's last packet (at least one tick).
            Some(at) => {
                let elapsed = now.saturating_duration_since(at);
                let ticks = (elapsed.as_micros() * u128::from(self.clock_rate) / 1_000_000) as u32;
                self.last_ts.wrapping_add(ticks.max(1)).wrapping_sub(ts)
            }
            None => 0,
        };
        self.source = Some(source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn continuous_across_65536_from_a_long_running_source() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(1000, 90_000);
        let start = 5 * 65_536 + 65_000;
        let mut prev = None;
        for i in 0..140_000u64 {
            let out = r.rewrite(1, start + i, (i * 3000) as u32, t0).unwrap();
            if let Some(p) = prev {
                assert_eq!(out.seq, p + 1);
            } else {
                assert_eq!(out.seq, 1000, "a new subscriber starts at rollover 0");
            }
            prev = Some(out.seq);
        }
        assert_eq!(prev.unwrap() >> 16, 2, "crossed 65,536 twice");
    }

    #[test]
    fn layer_switch_is_seamless() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(10, 90_000);
        for i in 0..5u64 {
            r.rewrite(
                1,
                500 + i,
                1_000 + 3000 * i as u32,
                t0 + Duration::from_millis(33 * i),
            )
            .unwrap();
        }
        // Layer 2: unrelated numbers, 33 ms after the last packet of layer 1.
        let at = t0 + Duration::from_millis(33 * 5);
        let a = r.rewrite(2, 60_000, 4_000_000_000, at).unwrap();
        assert_eq!(a.seq, 15);
        assert_eq!(a.ts, 1_000 + 4 * 3000 + 33 * 90);
        let b = r.rewrite(2, 60_001, 4_000_000_000 + 3000, at).unwrap();
        assert_eq!((b.seq, b.ts), (16, a.ts + 3000));
        // Back to layer 1: still continuous.
        let c = r.rewrite(1, 505, 1_000 + 5 * 3000, at).unwrap();
        assert_eq!(c.seq, 17);
        assert!(c.ts.wrapping_sub(b.ts) >= 1 && c.ts.wrapping_sub(b.ts) < 1 << 31);
    }

    #[test]
    fn reordered_packets_keep_their_gap_and_old_ones_are_dropped() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(100, 48_000);
        assert_eq!(r.rewrite(1, 10, 0, t0).unwrap().seq, 100);
        assert_eq!(r.rewrite(1, 12, 960, t0).unwrap().seq, 102);
        // The late packet fills the gap for the receiver.
        assert_eq!(r.rewrite(1, 11, 480, t0).unwrap().seq, 101);
        // Older than the switch point: dropped.
        assert_eq!(r.rewrite(1, 9, 0, t0), None);
        // Switch, then a straggler from the new source older than its first.
        assert_eq!(r.rewrite(2, 1000, 0, t0).unwrap().seq, 103);
        assert_eq!(r.rewrite(2, 999, 0, t0), None);
    }

    #[test]
    fn timestamp_wraps() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(1, 90_000);
        let a = r.rewrite(1, 1, u32::MAX - 10, t0).unwrap();
        let b = r.rewrite(1, 2, 20, t0).unwrap();
        assert_eq!(b.ts.wrapping_sub(a.ts), 31);
    }
}
