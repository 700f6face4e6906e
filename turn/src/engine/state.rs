//! Per-allocation state of the engine.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stun_types::message::{IntegrityAlgorithm, MessageIntegrityCredentials, TransactionId};

use super::{BindRequest, CHANNEL_QUARANTINE, ClientAddr, PERMISSION_LIFETIME};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    V4,
    V6,
}

impl Family {
    pub(super) fn of(addr: &SocketAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

#[derive(Debug)]
pub(super) struct Bucket {
    pub(super) tokens: u64,
    pub(super) last: Instant,
}

impl Bucket {
    pub(super) fn new(now: Instant, rate: u64) -> Self {
        Bucket {
            tokens: rate,
            last: now,
        }
    }

    /// Takes `n` bytes worth of tokens; `false` when over the rate.
    pub(super) fn take(&mut self, now: Instant, rate: u64, n: usize) -> bool {
        if rate == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last);
        if elapsed >= Duration::from_millis(1) {
            let add = rate.saturating_mul(elapsed.as_micros() as u64) / 1_000_000;
            self.tokens = (self.tokens + add).min(rate);
            self.last = now;
        }
        let n = n as u64;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
pub(super) struct Channel {
    pub(super) number: u16,
    pub(super) peer: SocketAddr,
    pub(super) expires: Instant,
}

/// Authentication result of a request: the key that signs the answer.
pub(super) struct Auth {
    pub(super) creds: MessageIntegrityCredentials,
    pub(super) algo: IntegrityAlgorithm,
    pub(super) username: String,
}

pub(super) struct Allocation {
    pub(super) client: ClientAddr,
    pub(super) username: String,
    pub(super) creds: MessageIntegrityCredentials,
    pub(super) algo: IntegrityAlgorithm,
    pub(super) family: Family,
    /// The relay address being bound (pending) or bound.
    pub(super) relay: SocketAddr,
    pub(super) bound: bool,
    pub(super) bind_request: BindRequest,
    pub(super) bind_attempts: u8,
    pub(super) expires: Instant,
    pub(super) lifetime: u32,
    pub(super) txid: TransactionId,
    /// The Allocate success answer, kept for retransmitted Allocates.
    pub(super) success: Vec<u8>,
    pub(super) reserve_next: bool,
    /// Whether an ADDITIONAL-ADDRESS-FAMILY (IPv6) was asked and is refused.
    pub(super) refuse_additional: bool,
    pub(super) perms: Vec<(IpAddr, Instant)>,
    pub(super) channels: Vec<Channel>,
    pub(super) up: Bucket,
    pub(super) down: Bucket,
}

impl Allocation {
    pub(super) fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.perms.iter().any(|(p, exp)| *p == ip && *exp > now)
    }

    pub(super) fn permit(&mut self, ip: IpAddr, now: Instant) {
        let expires = now + PERMISSION_LIFETIME;
        match self.perms.iter_mut().find(|(p, _)| *p == ip) {
            Some(entry) => entry.1 = expires,
            None => self.perms.push((ip, expires)),
        }
    }

    /// The next instant something of this allocation changes (all after `now`
    /// once expired entries are pruned).
    pub(super) fn next_deadline(&self, now: Instant) -> Instant {
        let perms = self.perms.iter().map(|p| p.1);
        let chans = self.channels.iter().map(|c| {
            if c.expires > now {
                c.expires
            } else {
                c.expires + CHANNEL_QUARANTINE
            }
        });
        perms.chain(chans).fold(self.expires, Instant::min)
    }
}

pub(super) struct Reservation {
    pub(super) relay: SocketAddr,
    pub(super) expires: Instant,
}

/// Small deterministic generator (SplitMix64) seeded by the driver.
#[derive(Debug)]
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// What an Allocate asks for, once checked.
#[derive(Debug)]
pub(super) struct AllocPlan {
    pub(super) family: Family,
    pub(super) even: bool,
    pub(super) reserve_next: bool,
    pub(super) token: Option<u64>,
    pub(super) lifetime: u32,
    pub(super) refuse_additional: bool,
}
