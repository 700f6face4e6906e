//! Failed logins per client address: a token bucket per IPv4 address or
//! IPv6 /64 (one subscriber usually holds a whole /64). A request that
//! presents device credentials is refused with 429 while its address has
//! no token left; only failures take a token. No I/O: the caller passes the
//! time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most `burst` failures at once, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AuthFailureRate {
    pub burst: u32,
    pub per_minute: f64,
}

impl Default for AuthFailureRate {
    fn default() -> Self {
        AuthFailureRate {
            burst: 20,
            per_minute: 10.0,
        }
    }
}

/// Addresses tracked before full buckets are forgotten.
const PRUNE_AT: usize = 65_536;

/// The key of an address: IPv4 as is, IPv6 by its /64 (IPv4-mapped IPv6
/// addresses count as IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    V4(u32),
    V6(u64),
}

fn key(ip: IpAddr) -> Key {
    match ip {
        IpAddr::V4(v4) => Key::V4(v4.into()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Key::V4(v4.into()),
            None => Key::V6((u128::from(v6) >> 64) as u64),
        },
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets of failed logins.
#[derive(Debug)]
pub(crate) struct FailedAuths {
    rate: AuthFailureRate,
    buckets: Mutex<HashMap<Key, Bucket>>,
}

impl FailedAuths {
    pub(crate) fn new(rate: AuthFailureRate) -> FailedAuths {
        FailedAuths {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let per_sec = self.rate.per_minute / 60.0;
        let dt = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + dt * per_sec).min(f64::from(self.rate.burst));
        b.at = now;
    }

    /// `Err(wait)` while `ip` may not try again (no token left).
    pub(crate) fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(b) = map.get_mut(&key(ip)) else {
            return Ok(());
        };
        self.refill(b, now);
        if b.tokens >= 1.0 {
            return Ok(());
        }
        let per_sec = self.rate.per_minute / 60.0;
        let secs = if per_sec > 0.0 {
            ((1.0 - b.tokens) / per_sec).min(86_400.0)
        } else {
            86_400.0
        };
        Err(Duration::from_secs_f64(secs))
    }

    /// Records a failed login from `ip`.
    pub(crate) fn failed(&self, ip: IpAddr, now: Instant) {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= PRUNE_AT {
            let burst = f64::from(self.rate.burst);
            map.retain(|_, b| {
                self.refill(b, now);
                b.tokens < burst
            });
        }
        let b = map.entry(key(ip)).or_insert(Bucket {
            tokens: f64::from(self.rate.burst),
            at: now,
        });
        self.refill(b, now);
        b.tokens = (b.tokens - 1.0).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_exhaust_the_bucket_per_address_and_refill() {
        let f = FailedAuths::new(AuthFailureRate {
            burst: 3,
            per_minute: 60.0,
        });
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(f.check(a, t0).is_ok());
            f.failed(a, t0);
        }
        let wait = f.check(a, t0).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert!(f.check(b, t0).is_ok(), "other addresses are not affected");
        // The mapped form of the same IPv4 address shares its bucket.
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert!(f.check(mapped, t0).is_err());
        assert!(f.check(a, t0 + Duration::from_secs(1)).is_ok(), "refilled");
    }

    #[test]
    fn ipv6_counts_per_64_prefix() {
        let f = FailedAuths::new(AuthFailureRate {
            burst: 1,
            per_minute: 1.0,
        });
        let t0 = Instant::now();
        f.failed("2001:db8:1:2::1".parse().unwrap(), t0);
        assert!(
            f.check("2001:db8:1:2:ffff::9".parse().unwrap(), t0)
                .is_err()
        );
        assert!(f.check("2001:db8:1:3::1".parse().unwrap(), t0).is_ok());
        // Not confused with an IPv4 address.
        f.failed("::1".parse().unwrap(), t0);
        assert!(f.check("0.0.0.1".parse().unwrap(), t0).is_ok());
    }
}
