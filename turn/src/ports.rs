//! The relay port pool: which ports of the configured range are taken.

/// Ports `min..=max`, one bit each.
#[derive(Debug)]
pub(crate) struct PortPool {
    min: u16,
    max: u16,
    used: Vec<u64>,
}

impl PortPool {
    pub(crate) fn new(min: u16, max: u16) -> Self {
        let n = usize::from(max.saturating_sub(min)) + 1;
        PortPool {
            min,
            max,
            used: vec![0; n.div_ceil(64)],
        }
    }

    fn bit(&self, port: u16) -> Option<(usize, u64)> {
        if port < self.min || port > self.max {
            return None;
        }
        let i = usize::from(port - self.min);
        Some((i / 64, 1 << (i % 64)))
    }

    fn is_free(&self, port: u16) -> bool {
        self.bit(port).is_some_and(|(w, m)| self.used[w] & m == 0)
    }

    fn set(&mut self, port: u16, used: bool) {
        if let Some((w, m)) = self.bit(port) {
            if used {
                self.used[w] |= m;
            } else {
                self.used[w] &= !m;
            }
        }
    }

    /// Takes a free port, scanning from a position derived from `start`.
    /// `even` asks for an even port; `reserve_next` also takes port + 1.
    pub(crate) fn take(&mut self, start: u64, even: bool, reserve_next: bool) -> Option<u16> {
        let span = u64::from(self.max - self.min) + 1;
        let first = start % span;
        for i in 0..span {
            let port = self.min + ((first + i) % span) as u16;
            if even && !port.is_multiple_of(2) {
                continue;
            }
            if !self.is_free(port) {
                continue;
            }
            if reserve_next {
                if port == u16::MAX || !self.is_free(port + 1) {
                    continue;
                }
                self.set(port + 1, true);
            }
            self.set(port, true);
            return Some(port);
        }
        None
    }

    pub(crate) fn release(&mut self, port: u16) {
        self.set(port, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_every_port_once() {
        let mut p = PortPool::new(50000, 50009);
        let mut got: Vec<u16> = (0..10)
            .map(|i| p.take(i * 7, false, false).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, (50000..=50009).collect::<Vec<_>>());
        assert_eq!(p.take(0, false, false), None);
        p.release(50004);
        assert_eq!(p.take(3, false, false), Some(50004));
    }

    #[test]
    fn even_and_reserved_pairs() {
        let mut p = PortPool::new(50001, 50006);
        let port = p.take(0, true, true).unwrap();
        assert_eq!(port % 2, 0);
        assert!(!p.is_free(port + 1));
        let second = p.take(0, true, true).unwrap();
        assert_ne!(second, port);
        // 50006 is the last even port and 50007 is outside the range
        assert_eq!(p.take(0, true, true), None);
        assert_eq!(p.take(0, true, false), Some(50006));
    }
}
