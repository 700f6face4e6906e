//! Where a Web Push endpoint may lead: a subscriber chooses the URL, so
//! the server must not be turned into a probe of its own network. The
//! endpoint's host is resolved once, by this resolver; addresses the
//! policy refuses (loopback, private, link-local, cloud metadata, ... —
//! `palaver_turn::policy`, unless `push.allow` opens them) are dropped,
//! and the HTTP client connects only to what is left. IP literals never
//! reach a resolver, so [`check_literal`] runs before each request.

use palaver_turn::policy::PeerPolicy;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Every address of the endpoint is refused by the policy.
#[derive(Debug, thiserror::Error)]
#[error("the push endpoint resolves only to addresses the policy refuses")]
pub(crate) struct Refused;

/// A resolver that keeps only the addresses the policy allows.
#[derive(Debug, Clone)]
pub(crate) struct CheckedResolver {
    pub(crate) policy: Arc<PeerPolicy>,
}

impl CheckedResolver {
    async fn lookup(policy: Arc<PeerPolicy>, host: String) -> Result<Vec<SocketAddr>, Refused> {
        let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
            .await
            .map_err(|_| Refused)?
            .collect();
        let allowed: Vec<SocketAddr> = all
            .into_iter()
            .filter(|a| policy.check(a.ip()).is_ok())
            .collect();
        if allowed.is_empty() {
            return Err(Refused);
        }
        Ok(allowed)
    }
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            match Self::lookup(policy, host).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                Err(e) => Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
            }
        })
    }
}

/// Checks an endpoint whose host is an IP literal.
pub(crate) fn check_literal(url: &reqwest::Url, policy: &PeerPolicy) -> Result<(), Refused> {
    let Some(host) = url.host_str() else {
        return Err(Refused);
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => policy.check(ip).map_err(|_| Refused),
        Err(_) => Ok(()),
    }
}

/// Whether `e` (or what caused it) is a refusal by this module.
pub(crate) fn is_refusal(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<Refused>() {
            return true;
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_names_and_literals_are_refused_unless_allowed() {
        let strict = Arc::new(PeerPolicy::default());
        let r = CheckedResolver {
            policy: strict.clone(),
        };
        let err = match r.resolve("localhost".parse().unwrap()).await {
            Err(e) => e,
            Ok(_) => panic!("localhost allowed"),
        };
        assert!(is_refusal(err.as_ref()));
        for url in [
            "http://127.0.0.1:9/x",
            "https://[::1]/x",
            "https://169.254.169.254/",
            "https://10.1.2.3/",
        ] {
            assert!(
                check_literal(&url.parse().unwrap(), &strict).is_err(),
                "{url}"
            );
        }
        assert!(check_literal(&"https://8.8.8.8/x".parse().unwrap(), &strict).is_ok());
        let open = Arc::new(PeerPolicy::new(vec!["127.0.0.1/32".parse().unwrap()]));
        assert!(check_literal(&"http://127.0.0.1:9/x".parse().unwrap(), &open).is_ok());
        assert!(check_literal(&"http://127.0.0.2:9/x".parse().unwrap(), &open).is_err());
        let r = CheckedResolver { policy: open };
        let addrs: Vec<SocketAddr> = r
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(
            addrs.iter().all(|a| a.ip() == IpAddr::from([127, 0, 0, 1])),
            "{addrs:?}"
        );
    }
}
