//! Keyed token buckets.

use crate::config::{Rate, RateLimits};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const SHARDS: usize = 16;

/// Token buckets keyed by `K`. Buckets that have refilled are forgotten by
/// [`Limiter::cleanup`], so memory follows the number of recent callers.
#[derive(Debug)]
pub struct Limiter<K> {
    rate: Rate,
    shards: Vec<Mutex<HashMap<K, Bucket>>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(rate: Rate) -> Self {
        Limiter {
            rate,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, key: &K) -> &Mutex<HashMap<K, Bucket>> {
        // A fixed hasher only picks the shard; each map keeps its own
        // randomly keyed hasher.
        let mut hasher = std::hash::DefaultHasher::new();
        key.hash(&mut hasher);
        &self.shards[std::hash::Hasher::finish(&hasher) as usize % SHARDS]
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let per_sec = self.rate.per_minute / 60.0;
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_sec).min(f64::from(self.rate.burst));
        b.at = now;
    }

    /// Time until a bucket holding `tokens` has a whole token.
    fn wait(&self, tokens: f64) -> Duration {
        let per_sec = self.rate.per_minute / 60.0;
        let secs = if per_sec > 0.0 {
            ((1.0 - tokens) / per_sec).min(86_400.0)
        } else {
            86_400.0
        };
        Duration::from_secs_f64(secs)
    }

    /// Takes one token for `key`, or says how long until one is available.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut map = self.shard(key).lock();
        let burst = f64::from(self.rate.burst);
        let b = map.entry(key.clone()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        self.refill(b, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.wait(b.tokens))
        }
    }

    /// Says whether `key` has a token, without taking it.
    pub fn peek(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut map = self.shard(key).lock();
        let Some(b) = map.get_mut(key) else {
            return Ok(());
        };
        self.refill(b, now);
        if b.tokens >= 1.0 {
            Ok(())
        } else {
            Err(self.wait(b.tokens))
        }
    }

    /// Forgets buckets that are full again.
    pub fn cleanup(&self, now: Instant) {
        let burst = f64::from(self.rate.burst);
        for shard in &self.shards {
            let mut map = shard.lock();
            map.retain(|_, b| {
                self.refill(b, now);
                b.tokens < burst
            });
        }
    }
}

/// A single bucket for one connection, without a map.
#[derive(Debug, Clone, Copy)]
pub struct LocalBucket {
    bucket: Bucket,
}

impl LocalBucket {
    pub fn new(rate: &Rate, now: Instant) -> Self {
        LocalBucket {
            bucket: Bucket {
                tokens: f64::from(rate.burst),
                at: now,
            },
        }
    }

    pub fn check(&mut self, rate: &Rate, now: Instant) -> bool {
        let per_sec = rate.per_minute / 60.0;
        let elapsed = now.saturating_duration_since(self.bucket.at).as_secs_f64();
        self.bucket.tokens = (self.bucket.tokens + elapsed * per_sec).min(f64::from(rate.burst));
        self.bucket.at = now;
        if self.bucket.tokens >= 1.0 {
            self.bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Every limiter the gateway uses.
#[derive(Debug)]
pub struct Limits {
    pub code_per_phone: Limiter<String>,
    pub code_per_ip: Limiter<IpAddr>,
    pub verify_per_ip: Limiter<IpAddr>,
    pub auth_failures_per_ip: Limiter<IpAddr>,
    pub lookups: Limiter<u64>,
    pub sends: Limiter<u64>,
    pub call_offers: Limiter<u64>,
    pub key_claims: Limiter<u64>,
    pub typing: Rate,
}

impl Limits {
    pub fn new(cfg: &RateLimits) -> Self {
        Limits {
            code_per_phone: Limiter::new(cfg.code_requests_per_phone),
            code_per_ip: Limiter::new(cfg.code_requests_per_ip),
            verify_per_ip: Limiter::new(cfg.verify_per_ip),
            auth_failures_per_ip: Limiter::new(cfg.auth_failures_per_ip),
            lookups: Limiter::new(cfg.lookups_per_device),
            sends: Limiter::new(cfg.sends_per_device),
            call_offers: Limiter::new(cfg.call_offers_per_device),
            key_claims: Limiter::new(cfg.key_claims_per_device),
            typing: cfg.typing_per_connection,
        }
    }

    pub fn cleanup(&self) {
        let now = Instant::now();
        self.code_per_phone.cleanup(now);
        self.code_per_ip.cleanup(now);
        self.verify_per_ip.cleanup(now);
        self.auth_failures_per_ip.cleanup(now);
        self.lookups.cleanup(now);
        self.sends.cleanup(now);
        self.call_offers.cleanup(now);
        self.key_claims.cleanup(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills() {
        let l = Limiter::new(Rate {
            burst: 2,
            per_minute: 60.0,
        });
        let t0 = Instant::now();
        assert!(l.check(&"a", t0).is_ok());
        assert!(l.check(&"a", t0).is_ok());
        let wait = l.check(&"a", t0).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::from_millis(900));
        assert!(l.check(&"b", t0).is_ok(), "keys are independent");
        assert!(l.check(&"a", t0 + Duration::from_secs(1)).is_ok());
        l.cleanup(t0 + Duration::from_secs(10));
        assert!(l.shards.iter().all(|s| s.lock().is_empty()));
    }
}
