//! TURN servers per region: which ones a participant gets, in what order.
//!
//! A deployment lists its TURN servers with the region each runs in. A
//! participant gets every server, grouped by region: the preferred
//! region's servers first, then the other regions in configuration order
//! as fallback, then the servers without a region (`calls.turn_urls`).
//! The preference is the client's hint when it gave one that names a
//! configured region, else the signaling node's own region. Without
//! regions configured, the list is `calls.turn_urls` as before.

type HintMap = std::collections::HashMap<palaver_proto::DeviceId, (u64, String)>;

/// The region hints of the devices connected to this node, each with the
/// connection that gave it (a hint only orders the list; nothing else
/// depends on it).
#[derive(Debug, Default)]
pub struct Hints(parking_lot::Mutex<HintMap>);

impl Hints {
    /// A device authenticated on connection `conn` with `hint` (or none).
    pub fn set(&self, device: palaver_proto::DeviceId, conn: u64, hint: Option<String>) {
        let mut map = self.0.lock();
        match hint {
            Some(h) => map.insert(device, (conn, h)),
            None => map.remove(&device),
        };
    }

    /// Connection `conn` closed: its hint goes, not a newer connection's.
    pub fn clear(&self, device: palaver_proto::DeviceId, conn: u64) {
        let mut map = self.0.lock();
        if map.get(&device).is_some_and(|(c, _)| *c == conn) {
            map.remove(&device);
        }
    }

    pub fn get(&self, device: palaver_proto::DeviceId) -> Option<String> {
        self.0.lock().get(&device).map(|(_, h)| h.clone())
    }
}

/// Longest region hint accepted.
const MAX_HINT: usize = 64;

/// The `region` parameter of the WebSocket URL's query, if it is a plain
/// name (letters, digits, `-`, `_`, `.`; at most 64 bytes). Anything
/// else is ignored: a hint never makes a connection fail.
pub fn hint_from_query(query: Option<&str>) -> Option<String> {
    let value = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("region="))?;
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    (!value.is_empty() && value.len() <= MAX_HINT && value.bytes().all(plain))
        .then(|| value.to_owned())
}

/// TURN servers of one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionServers {
    /// A free-form name, e.g. `eu-west`; compared case-insensitively.
    pub region: String,
    /// `turn:`/`turns:` URLs of the region's servers.
    pub urls: Vec<String>,
}

/// The region to prefer: the client's `hint` if it names a configured
/// region, else the node's `region`.
pub fn preferred<'a>(
    servers: &[RegionServers],
    node: Option<&'a str>,
    hint: Option<&'a str>,
) -> Option<&'a str> {
    let known = |r: &str| servers.iter().any(|s| s.region.eq_ignore_ascii_case(r));
    hint.filter(|h| known(h)).or(node)
}

/// The URL groups handed out, in order: the `preferred` region's servers,
/// the other regions' (configuration order), then `unregioned` if any.
/// Empty groups are left out.
pub fn ordered(
    servers: &[RegionServers],
    preferred: Option<&str>,
    unregioned: &[String],
) -> Vec<Vec<String>> {
    let is_preferred =
        |s: &RegionServers| preferred.is_some_and(|p| s.region.eq_ignore_ascii_case(p));
    let first = servers.iter().filter(|s| is_preferred(s));
    let rest = servers.iter().filter(|s| !is_preferred(s));
    first
        .chain(rest)
        .map(|s| s.urls.clone())
        .chain(std::iter::once(unregioned.to_vec()))
        .filter(|urls| !urls.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers() -> Vec<RegionServers> {
        let r = |region: &str, url: &str| RegionServers {
            region: region.into(),
            urls: vec![url.into()],
        };
        vec![r("us", "turn:us"), r("eu", "turn:eu"), r("ap", "turn:ap")]
    }

    fn flat(groups: Vec<Vec<String>>) -> Vec<String> {
        groups.into_iter().flatten().collect()
    }

    #[test]
    fn the_preferred_region_comes_first_and_the_others_follow_in_order() {
        let got = flat(ordered(&servers(), Some("EU"), &[]));
        assert_eq!(got, ["turn:eu", "turn:us", "turn:ap"]);
    }

    #[test]
    fn no_preference_or_an_unknown_one_keeps_the_configured_order() {
        assert_eq!(
            flat(ordered(&servers(), None, &[])),
            ["turn:us", "turn:eu", "turn:ap"]
        );
        assert_eq!(
            flat(ordered(&servers(), Some("mars"), &[])),
            ["turn:us", "turn:eu", "turn:ap"]
        );
    }

    #[test]
    fn unregioned_servers_come_last_and_alone_when_nothing_is_configured() {
        let plain = vec!["turn:plain".to_owned()];
        let got = ordered(&servers(), Some("ap"), &plain);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0], ["turn:ap"]);
        assert_eq!(got[3], plain);
        assert_eq!(ordered(&[], Some("eu"), &plain), vec![plain]);
        assert!(ordered(&[], None, &[]).is_empty());
    }

    #[test]
    fn an_old_connection_closing_keeps_the_newer_ones_hint() {
        use palaver_proto::DeviceId;
        let hints = Hints::default();
        hints.set(DeviceId(1), 1, Some("eu".into()));
        hints.set(DeviceId(1), 2, Some("us".into()));
        hints.clear(DeviceId(1), 1);
        assert_eq!(hints.get(DeviceId(1)).as_deref(), Some("us"));
        hints.clear(DeviceId(1), 2);
        assert_eq!(hints.get(DeviceId(1)), None);
    }

    #[test]
    fn hints_come_from_the_query_and_odd_ones_are_ignored() {
        assert_eq!(
            hint_from_query(Some("region=eu-west")),
            Some("eu-west".into())
        );
        assert_eq!(hint_from_query(Some("a=1&region=us")), Some("us".into()));
        assert_eq!(hint_from_query(Some("region=")), None);
        assert_eq!(hint_from_query(Some("region=%20x")), None);
        assert_eq!(
            hint_from_query(Some(&format!("region={}", "a".repeat(65)))),
            None
        );
        assert_eq!(hint_from_query(Some("regions=eu")), None);
        assert_eq!(hint_from_query(None), None);
    }

    #[test]
    fn a_known_client_hint_wins_over_the_node_region() {
        let s = servers();
        assert_eq!(preferred(&s, Some("us"), Some("ap")), Some("ap"));
        assert_eq!(preferred(&s, Some("us"), Some("mars")), Some("us"));
        assert_eq!(preferred(&s, Some("us"), None), Some("us"));
        assert_eq!(preferred(&s, None, None), None);
    }
}
