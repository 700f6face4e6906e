//! Simulcast layer choice: the best layer a subscriber's bandwidth
//! estimate allows, measured from what the publisher actually sends.

use std::time::{Duration, Instant};

/// How long a byte counter window lasts.
const WINDOW: Duration = Duration::from_secs(1);

/// Measures a layer's bitrate over one-second windows.
#[derive(Debug, Default)]
pub struct RateMeter {
    window_start: Option<Instant>,
    bytes: u64,
    /// Bits per second over the last complete window.
    rate: u64,
}

impl RateMeter {
    pub fn add(&mut self, bytes: usize, now: Instant) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed > 2 * WINDOW {
            // The first packet after a pause (the publisher stopped this
            // layer): what came before says nothing about the rate now.
            self.rate = 0;
            self.bytes = 0;
            self.window_start = Some(now);
        } else if elapsed >= WINDOW {
            self.rate = self.bytes * 8 * 1000 / elapsed.as_millis().max(1) as u64;
            self.bytes = 0;
            self.window_start = Some(now);
        }
        self.bytes += bytes as u64;
    }

    /// Bits per second, 0 before the first window completes, and 0 again
    /// once no packet came for two windows: a layer the publisher stopped
    /// sending (a browser drops its upper simulcast layers when short of
    /// CPU or bandwidth) must not be picked for anyone, or its subscribers
    /// would wait for packets that never come.
    pub fn bitrate(&self, now: Instant) -> u64 {
        match self.window_start {
            Some(start) if now.saturating_duration_since(start) <= 2 * WINDOW => self.rate,
            _ => 0,
        }
    }
}

/// Picks the index of the layer to forward from `rates` (bits per second,
/// lowest layer first; 0 = not measured yet) within `budget` bits per
/// second. `current` adds hysteresis both ways: going up needs 20 %
/// headroom, and the current layer is kept until the budget falls 20 %
/// below its rate (a bandwidth estimate wobbling around one layer's rate
/// does not flip between layers, each flip costing a keyframe).
pub fn choose_layer(rates: &[u64], budget: u64, current: Option<usize>) -> usize {
    let best = best_fit(rates, budget, current);
    match current {
        Some(c) if best < c && rates.get(c).is_some_and(|&r| r != 0 && r - r / 5 <= budget) => c,
        _ => best,
    }
}

fn best_fit(rates: &[u64], budget: u64, current: Option<usize>) -> usize {
    let mut best = 0;
    for (i, &rate) in rates.iter().enumerate() {
        if rate == 0 {
            continue;
        }
        let needed = if current.is_some_and(|c| i > c) {
            rate + rate / 5
        } else {
            rate
        };
        if needed <= budget {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_best_layer_that_fits() {
        let rates = [150_000, 500_000, 1_500_000];
        assert_eq!(
            choose_layer(&rates, 100_000, None),
            0,
            "lowest when nothing fits"
        );
        assert_eq!(choose_layer(&rates, 600_000, None), 1);
        assert_eq!(choose_layer(&rates, 3_000_000, None), 2);
        // Up from 1 to 2 needs 1.8 Mbit/s.
        assert_eq!(choose_layer(&rates, 1_600_000, Some(1)), 1);
        assert_eq!(choose_layer(&rates, 1_800_000, Some(1)), 2);
        // Staying on 2 needs only its own rate.
        assert_eq!(choose_layer(&rates, 1_600_000, Some(2)), 2);
        // Down from 2 only once the budget is 20 % below its rate.
        assert_eq!(choose_layer(&rates, 1_200_000, Some(2)), 2);
        assert_eq!(choose_layer(&rates, 1_199_999, Some(2)), 1);
        assert_eq!(choose_layer(&rates, 100_000, Some(2)), 0);
        // An unmeasured layer is never picked.
        assert_eq!(choose_layer(&[150_000, 0, 0], 9_000_000, None), 0);
    }

    #[test]
    fn meter_measures_per_second() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        for i in 0..=50 {
            m.add(1000, t0 + Duration::from_millis(20 * i));
        }
        assert_eq!(m.bitrate(t0 + Duration::from_millis(1500)), 400_000);
        // The publisher stopped sending this layer: it no longer counts.
        assert_eq!(m.bitrate(t0 + Duration::from_millis(3500)), 0);
        // It resumes: the gap is not averaged into the first window.
        let t1 = t0 + Duration::from_secs(20);
        for i in 0..=50 {
            m.add(1000, t1 + Duration::from_millis(20 * i));
        }
        assert_eq!(m.bitrate(t1 + Duration::from_millis(1500)), 400_000);
    }
}
