//! Where a webhook may be delivered. A webhook is a request the collector makes to an address a
//! customer chose, so it never goes to the collector's own machine, a link-local neighbour (the
//! cloud's metadata service at 169.254.169.254), a private or unique-local network, or anything
//! that is not one host, unless the operator allows that network (`webhook_allowed_networks`).
//! Checked when a recipient is added and again at each delivery, on the addresses its name
//! resolves to then; the delivery connects to an address checked, never to a name again.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnetwork::IpNetwork;

/// The networks a webhook may reach despite the rule (the operator's `webhook_allowed_networks`).
#[derive(Debug, Clone, Default)]
pub struct WebhookTargets {
    allowed: Arc<Vec<IpNetwork>>,
}

/// Turns a host name into addresses: the system's resolver, or a test's.
pub trait Resolve: Send + Sync {
    fn resolve(&self, host: &str, port: u16) -> impl Future<Output = std::io::Result<Vec<SocketAddr>>> + Send;
}

/// Why a webhook's host may not be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Vetting {
    /// It does not resolve now.
    #[error("{0}")]
    Unresolved(String),
    /// It is, or resolves to, an address webhooks never go to.
    #[error("{0}")]
    Refused(String),
}

/// The system's resolver.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

impl WebhookTargets {
    pub fn new(allowed: Vec<IpNetwork>) -> WebhookTargets {
        WebhookTargets { allowed: Arc::new(allowed) }
    }

    /// Why a webhook may not go to `ip`, if it may not.
    pub fn refusal(&self, ip: IpAddr) -> Option<String> {
        if self.allowed.iter().any(|network| network.contains(ip)) {
            return None;
        }
        forbidden(ip).map(|what| {
            format!("{ip} is {what}: webhooks are not sent there (the operator may allow a network: webhook_allowed_networks)")
        })
    }

    /// The addresses `host` resolves to with `resolve`, each one allowed; otherwise why not.
    pub async fn vet(&self, host: &str, port: u16, resolve: &impl Resolve) -> Result<Vec<SocketAddr>, Vetting> {
        let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
        let addresses = match literal {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => resolve
                .resolve(host, port)
                .await
                .map_err(|e| Vetting::Unresolved(format!("webhook host {host:?}: {e}")))?,
        };
        if addresses.is_empty() {
            return Err(Vetting::Unresolved(format!("webhook host {host:?} has no address")));
        }
        match addresses.iter().find_map(|a| self.refusal(a.ip())) {
            Some(refused) => Err(Vetting::Refused(format!("webhook host {host:?}: {refused}"))),
            None => Ok(addresses),
        }
    }
}

/// What kind of address `ip` is when webhooks never go there.
fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("a loopback address")
            } else if v4.is_link_local() {
                Some("link-local (the cloud's metadata address among them)")
            } else if v4.is_private() || (a == 100 && (64..128).contains(&b)) {
                Some("a private address")
            } else if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() || a == 0 {
                Some("not the address of one host")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("a loopback address")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if first & 0xfe00 == 0xfc00 {
                Some("a unique-local (private) address")
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some("not the address of one host")
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resolver that answers `addresses` for any name.
    struct Fixed(Vec<&'static str>);

    impl Resolve for Fixed {
        async fn resolve(&self, _host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
            Ok(self.0.iter().map(|a| SocketAddr::new(a.parse().unwrap(), port)).collect())
        }
    }

    #[test]
    fn this_machine_its_neighbours_and_private_networks_are_refused() {
        let targets = WebhookTargets::default();
        for refused in [
            "127.0.0.1",
            "169.254.169.254",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:169.254.169.254",
            "::",
        ] {
            assert!(targets.refusal(refused.parse().unwrap()).is_some(), "{refused}");
        }
        for allowed in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1", "100.128.0.1"] {
            assert_eq!(targets.refusal(allowed.parse().unwrap()), None, "{allowed}");
        }
        let loopback = WebhookTargets::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert_eq!(loopback.refusal("127.0.0.1".parse().unwrap()), None, "the operator allowed it");
        assert!(loopback.refusal("10.0.0.1".parse().unwrap()).is_some(), "only that network");
    }

    #[tokio::test]
    async fn a_name_is_judged_by_every_address_it_resolves_to() {
        let targets = WebhookTargets::default();
        let public = targets.vet("hooks.acme.example", 443, &Fixed(vec!["93.184.216.34"])).await.unwrap();
        assert_eq!(public, ["93.184.216.34:443".parse().unwrap()]);
        // A name that turns to the metadata service (DNS rebinding) is refused, even beside a public one.
        let rebound = targets.vet("hooks.acme.example", 80, &Fixed(vec!["93.184.216.34", "169.254.169.254"])).await;
        assert!(matches!(rebound, Err(Vetting::Refused(why)) if why.contains("169.254.169.254 is link-local")));
        let literal = targets.vet("[::1]", 80, &Fixed(vec![])).await;
        assert!(matches!(literal, Err(Vetting::Refused(why)) if why.contains("::1 is a loopback address")));
        let nowhere = targets.vet("nowhere.example", 80, &Fixed(vec![])).await;
        assert!(matches!(nowhere, Err(Vetting::Unresolved(why)) if why.contains("has no address")));
    }
}
