//! Peer address policy: which addresses a client may relay to.
//!
//! The default refuses every address that is not a unicast address on the
//! public Internet, in every spelling an IPv4 address can take inside IPv6
//! (IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64, 6to4, Teredo). An
//! allow-list of CIDRs opens chosen ranges again (tests, lab networks).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::Cidr;

/// Why a peer address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// 0.0.0.0/8, `::`.
    Unspecified,
    /// 127.0.0.0/8, `::1`.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, fc00::/7.
    Private,
    /// 100.64.0.0/10 (carrier-grade NAT).
    SharedCgnat,
    /// 169.254/16, fe80::/10, fec0::/10.
    LinkLocal,
    /// Cloud instance metadata: 169.254.169.254, fd00:ec2::254, 168.63.129.16.
    CloudMetadata,
    /// 224/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20.
    Documentation,
    /// 198.18/15, 2001:2::/48.
    Benchmarking,
    /// Other special-purpose ranges (240/4, 192.0.0/24, 192.88.99/24,
    /// 100::/64, 64:ff9b:1::/48, ORCHID, 5f00::/16 ...).
    Reserved,
}

/// The peer policy: default deny list plus an allow-list.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    allow: Vec<Cidr>,
}

impl PeerPolicy {
    /// A policy that opens the given networks on top of the default.
    pub fn new(allow: Vec<Cidr>) -> Self {
        PeerPolicy { allow }
    }

    /// `Ok(())` when relaying to `ip` is allowed, else the reason.
    pub fn check(&self, ip: IpAddr) -> Result<(), Denied> {
        if self.allowed(ip) {
            return Ok(());
        }
        match classify(ip) {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.allow
            .iter()
            .any(|c| c.contains(ip) || mapped.is_some_and(|m| c.contains(m)))
    }
}

/// The default verdict for an address: `None` when it is public unicast.
pub fn classify(ip: IpAddr) -> Option<Denied> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in4(ip: u32, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    ip & mask == u32::from_be_bytes(net) & mask
}

fn classify_v4(ip: Ipv4Addr) -> Option<Denied> {
    use Denied::*;
    let b = ip.to_bits();
    const TABLE: &[([u8; 4], u32, Denied)] = &[
        ([169, 254, 169, 254], 32, CloudMetadata),
        ([168, 63, 129, 16], 32, CloudMetadata),
        ([255, 255, 255, 255], 32, Broadcast),
        ([0, 0, 0, 0], 8, Unspecified),
        ([127, 0, 0, 0], 8, Loopback),
        ([10, 0, 0, 0], 8, Private),
        ([172, 16, 0, 0], 12, Private),
        ([192, 168, 0, 0], 16, Private),
        ([100, 64, 0, 0], 10, SharedCgnat),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([224, 0, 0, 0], 4, Multicast),
        ([192, 0, 2, 0], 24, Documentation),
        ([198, 51, 100, 0], 24, Documentation),
        ([203, 0, 113, 0], 24, Documentation),
        ([198, 18, 0, 0], 15, Benchmarking),
        ([192, 0, 0, 0], 24, Reserved),
        ([192, 88, 99, 0], 24, Reserved),
        ([240, 0, 0, 0], 4, Reserved),
    ];
    TABLE
        .iter()
        .find(|(net, prefix, _)| in4(b, *net, *prefix))
        .map(|(_, _, reason)| *reason)
}

fn in6(ip: u128, net: u128, prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    ip & mask == net & mask
}

/// IPv4 addresses embedded in an IPv6 address, in the transition spellings.
fn embedded_v4(ip: Ipv6Addr) -> [Option<Ipv4Addr>; 2] {
    let b = ip.to_bits();
    let low32 = Ipv4Addr::from_bits(b as u32);
    if in6(b, 0xffff << 32, 96) // ::ffff:a.b.c.d (mapped)
        || in6(b, 0xffff << 48, 96) // ::ffff:0:a.b.c.d (translated, RFC 2765)
        || in6(b, 0, 96) // ::a.b.c.d (compatible); :: and ::1 are caught before
        || in6(b, 0x0064_ff9b << 96, 96)
    // 64:ff9b::/96 NAT64
    {
        return [Some(low32), None];
    }
    if in6(b, 0x2002 << 112, 16) {
        // 6to4: 2002:AABB:CCDD::/48
        return [Some(Ipv4Addr::from_bits((b >> 80) as u32)), None];
    }
    if in6(b, 0x2001_0000 << 96, 32) {
        // Teredo: server at bits 32..64, client (inverted) in the low 32 bits
        let server = Ipv4Addr::from_bits((b >> 64) as u32);
        let client = Ipv4Addr::from_bits(!(b as u32));
        return [Some(server), Some(client)];
    }
    [None, None]
}

fn classify_v6(ip: Ipv6Addr) -> Option<Denied> {
    use Denied::*;
    let b = ip.to_bits();
    if b == 0 {
        return Some(Unspecified);
    }
    if b == 1 {
        return Some(Loopback);
    }
    if let Some(reason) = embedded_v4(ip).into_iter().flatten().find_map(classify_v4) {
        return Some(reason);
    }
    const TABLE: &[(u128, u32, Denied)] = &[
        (0xfd00_0ec2 << 96 | 0x254, 128, CloudMetadata),
        (0xfc00 << 112, 7, Private),
        (0xfe80 << 112, 10, LinkLocal),
        (0xfec0 << 112, 10, LinkLocal),
        (0xff00 << 112, 8, Multicast),
        (0x2001_0db8 << 96, 32, Documentation),
        (0x3fff << 112, 20, Documentation),
        (0x2001_0002 << 96, 48, Benchmarking),
        (0x0064_ff9b_0001 << 80, 48, Reserved),
        (0x0100 << 112, 64, Reserved),
        (0x2001_0010 << 96, 28, Reserved),
        (0x2001_0020 << 96, 28, Reserved),
        (0x5f00 << 112, 16, Reserved),
        // ::/96 left over (IPv4-compatible of a public address): deprecated
        (0, 96, Reserved),
    ];
    TABLE
        .iter()
        .find(|(net, prefix, _)| in6(b, *net, *prefix))
        .map(|(_, _, reason)| *reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Option<Denied> {
        classify(s.parse().unwrap())
    }

    #[test]
    fn ipv4_ranges() {
        use Denied::*;
        let cases = [
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.0.0.1", Private),
            ("10.255.255.255", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("100.64.0.1", SharedCgnat),
            ("100.127.255.255", SharedCgnat),
            ("100.100.100.200", SharedCgnat),
            ("169.254.1.1", LinkLocal),
            ("169.254.169.254", CloudMetadata),
            ("168.63.129.16", CloudMetadata),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("255.255.255.255", Broadcast),
            ("192.0.2.1", Documentation),
            ("198.51.100.7", Documentation),
            ("203.0.113.9", Documentation),
            ("198.18.0.1", Benchmarking),
            ("198.19.255.255", Benchmarking),
            ("192.0.0.8", Reserved),
            ("192.88.99.1", Reserved),
            ("240.0.0.1", Reserved),
            ("255.255.255.254", Reserved),
        ];
        for (ip, want) in cases {
            assert_eq!(v(ip), Some(want), "{ip}");
        }
        for ok in [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "198.20.0.0",
            "223.255.255.255",
            "11.0.0.1",
        ] {
            assert_eq!(v(ok), None, "{ok}");
        }
    }

    #[test]
    fn ipv6_ranges() {
        use Denied::*;
        let cases = [
            ("::", Unspecified),
            ("::1", Loopback),
            ("fc00::1", Private),
            ("fd12:3456::1", Private),
            ("fd00:ec2::254", CloudMetadata),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fec0::1", LinkLocal),
            ("ff02::1", Multicast),
            ("ff0e::1", Multicast),
            ("2001:db8::1", Documentation),
            ("3fff::1", Documentation),
            ("2001:2::1", Benchmarking),
            ("64:ff9b:1::1", Reserved),
            ("100::1", Reserved),
            ("2001:10::1", Reserved),
            ("2001:20::1", Reserved),
            ("5f00::1", Reserved),
            ("::8.8.8.8", Reserved),
        ];
        for (ip, want) in cases {
            assert_eq!(v(ip), Some(want), "{ip}");
        }
        for ok in [
            "2001:4860:4860::8888",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(v(ok), None, "{ok}");
        }
    }

    /// Every denied IPv4 range, in every IPv6 spelling, is denied for the same reason.
    #[test]
    fn embedded_ipv4_spellings() {
        let denied_v4 = [
            "0.0.0.0",
            "127.0.0.1",
            "10.1.2.3",
            "172.16.5.4",
            "192.168.0.1",
            "100.64.0.1",
            "169.254.1.1",
            "169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "198.18.0.1",
            "240.0.0.1",
            "192.0.0.1",
        ];
        for s in denied_v4 {
            let v4: Ipv4Addr = s.parse().unwrap();
            let want = classify_v4(v4).unwrap();
            let x = u128::from(v4.to_bits());
            let spellings = [
                ("mapped", 0xffff_u128 << 32 | x),
                ("translated", 0xffff_u128 << 48 | x),
                ("nat64", 0x0064_ff9b_u128 << 96 | x),
                ("6to4", 0x2002_u128 << 112 | x << 80 | 1),
                (
                    "teredo-server",
                    0x2001_0000_u128 << 96 | x << 64 | 0x0808_0808,
                ),
                (
                    "teredo-client",
                    0x2001_0000_u128 << 96 | 0x0808_0808 << 64 | u128::from(!v4.to_bits()),
                ),
            ];
            for (name, bits) in spellings {
                let ip = Ipv6Addr::from_bits(bits);
                assert_eq!(classify_v6(ip), Some(want), "{s} as {name} ({ip})");
            }
            // IPv4-compatible (::a.b.c.d): 0.0.0.0 and 0.0.0.1 are :: and ::1
            let compat = Ipv6Addr::from_bits(x);
            assert!(
                classify_v6(compat).is_some(),
                "{s} as compatible ({compat})"
            );
        }
    }

    #[test]
    fn allow_list_opens_ranges() {
        let p = PeerPolicy::new(vec![
            "127.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        assert_eq!(p.check("127.0.0.1".parse().unwrap()), Ok(()));
        assert_eq!(p.check("::1".parse().unwrap()), Ok(()));
        assert_eq!(p.check("::ffff:127.0.0.1".parse().unwrap()), Ok(()));
        assert_eq!(p.check("10.0.0.1".parse().unwrap()), Err(Denied::Private));
        assert_eq!(
            p.check("169.254.169.254".parse().unwrap()),
            Err(Denied::CloudMetadata)
        );
        let default = PeerPolicy::default();
        assert_eq!(
            default.check("127.0.0.1".parse().unwrap()),
            Err(Denied::Loopback)
        );
        assert_eq!(default.check("8.8.8.8".parse().unwrap()), Ok(()));
    }
}
