//! Active speaker detection from the RFC 6464 audio level header
//! extension: smoothed per participant, with hysteresis so that the
//! announced speaker does not flap.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Audio levels are -dBov from 0 (loudest) to 127 (silence). Levels above
/// this (quieter than -50 dBov) count as silence.
const SILENCE_DBOV: u8 = 50;
/// Weight of a new sample in the moving average.
const ALPHA: f32 = 0.15;
/// A participant must be this much louder (in dB) than the current speaker
/// to take over.
const MARGIN_DB: f32 = 6.0;
/// No audio packet for this long (DTX, muted) counts as silence.
const STALE: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
struct Level {
    /// Smoothed loudness in dB above the silence floor (0 = silent).
    loudness: f32,
    last: Option<Instant>,
}

/// Tracks loudness per participant `P` and names the active speaker.
#[derive(Debug)]
pub struct SpeakerDetector<P> {
    levels: HashMap<P, Level>,
    current: Option<P>,
}

impl<P: Copy + Eq + std::hash::Hash> Default for SpeakerDetector<P> {
    fn default() -> Self {
        Self {
            levels: HashMap::new(),
            current: None,
        }
    }
}

impl<P: Copy + Eq + std::hash::Hash> SpeakerDetector<P> {
    /// Records one audio packet's level (-dBov, 0..=127).
    pub fn record(&mut self, who: P, dbov: i8, now: Instant) {
        let dbov = dbov.unsigned_abs().min(127);
        let sample = f32::from(SILENCE_DBOV.saturating_sub(dbov));
        let l = self.levels.entry(who).or_default();
        l.loudness += ALPHA * (sample - l.loudness);
        l.last = Some(now);
    }

    /// Forgets a participant that left.
    pub fn remove(&mut self, who: P) {
        self.levels.remove(&who);
        if self.current == Some(who) {
            self.current = None;
        }
    }

    /// The current speaker.
    pub fn current(&self) -> Option<P> {
        self.current
    }

    /// Re-evaluates; returns the new speaker when it changed.
    pub fn evaluate(&mut self, now: Instant) -> Option<P> {
        let loud = |l: &Level| match l.last {
            Some(at) if now.saturating_duration_since(at) < STALE => l.loudness,
            _ => 0.0,
        };
        let (best, best_level) = self
            .levels
            .iter()
            .map(|(p, l)| (*p, loud(l)))
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        if best_level < 1.0 || self.current == Some(best) {
            return None;
        }
        let current_level = self
            .current
            .and_then(|c| self.levels.get(&c))
            .map_or(0.0, loud);
        if best_level < current_level + MARGIN_DB {
            return None;
        }
        self.current = Some(best);
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(d: &mut SpeakerDetector<u8>, who: u8, dbov: i8, from: Instant, n: u64) -> Instant {
        let mut at = from;
        for i in 0..n {
            at = from + Duration::from_millis(20 * i);
            d.record(who, dbov, at);
        }
        at
    }

    #[test]
    fn louder_speaker_wins_after_smoothing_and_quiet_one_does_not_steal() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::default();
        // One loud packet is not enough to be announced over silence... but
        // a talk spurt is.
        let t = feed(&mut d, 1, 20, t0, 50);
        feed(&mut d, 2, 45, t0, 50);
        assert_eq!(d.evaluate(t), Some(1));
        assert_eq!(d.evaluate(t), None, "no change, no event");
        // 2 gets a little louder than 1 was: not enough margin.
        let t = feed(&mut d, 2, 18, t, 3);
        d.record(1, 20, t);
        assert_eq!(d.evaluate(t), None);
        // 1 falls silent (DTX: no packets), 2 keeps talking.
        let t = feed(&mut d, 2, 15, t, 50);
        assert_eq!(d.evaluate(t), Some(2));
    }

    #[test]
    fn silence_names_nobody() {
        let t0 = Instant::now();
        let mut d = SpeakerDetector::default();
        let t = feed(&mut d, 1, 127, t0, 50);
        assert_eq!(d.evaluate(t), None);
        d.remove(1);
        assert_eq!(d.current(), None);
    }
}
