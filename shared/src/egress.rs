//! Egress policy for destinations written by tenant tokens: which addresses a delivery may
//! reach. Loopback, link-local, private, CGNAT, unspecified, multicast and cloud-metadata
//! addresses (also in their IPv4-mapped, IPv4-compatible and NAT64 IPv6 forms) are refused.
//!
//! Checked twice: when a destination is written (`check_url`, `check_url_resolved`: setup-api
//! answers 422 naming `url`), and when the forwarder connects (`EgressResolver`, a
//! `reqwest::dns::Resolve` that refuses a name any of whose answers is forbidden), because a
//! name's answer can change between the two (DNS rebinding). An IP literal never reaches a
//! resolver, so `forbidden_literal` is checked at client construction too.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Host names of cloud metadata services, refused whatever they resolve to.
const METADATA_NAMES: &[&str] = &["metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"];

/// Why an address may not be reached (a stable, snake_case word).
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if [[169, 254, 169, 254], [100, 100, 100, 200], [192, 0, 0, 192]].contains(&o) {
        return Some("cloud_metadata");
    }
    if ip.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_link_local() {
        Some("link_local")
    } else if ip.is_private() {
        Some("private")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("cgnat")
    } else if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        Some("ietf_protocol")
    } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
        Some("benchmarking")
    } else if ip.is_multicast() || ip.is_broadcast() || o[0] >= 240 {
        Some("reserved")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
        return Some("cloud_metadata");
    }
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible, deprecated), 64:ff9b::a.b.c.d (NAT64).
    let embedded = |s: &[u16; 8]| Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..5] == [0, 0, 0, 0, 0] && (s[5] == 0xffff || s[5] == 0) {
        return forbidden_v4(embedded(&s));
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return forbidden_v4(embedded(&s));
    }
    if (s[0] & 0xffc0) == 0xfe80 {
        Some("link_local")
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Some("unique_local")
    } else if (s[0] & 0xffc0) == 0xfec0 {
        Some("site_local")
    } else if (s[0] & 0xff00) == 0xff00 {
        Some("reserved")
    } else {
        None
    }
}

/// Why a destination's URL was refused; the message names the host and the kind of address,
/// never a credential (user info is not shown).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EgressError {
    #[error("not a URL with a host")]
    NoHost,
    #[error("{host} is a {reason} address, which destinations written by tenant tokens may not reach")]
    Forbidden { host: String, reason: &'static str },
    #[error("{host} resolves to {addr}, a {reason} address, which destinations written by tenant tokens may not reach")]
    Resolved { host: String, addr: IpAddr, reason: &'static str },
    #[error("{host} is a cloud metadata service")]
    Metadata { host: String },
}

impl EgressError {
    /// A bounded label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            EgressError::NoHost => "no_host",
            EgressError::Forbidden { reason, .. } | EgressError::Resolved { reason, .. } => reason,
            EgressError::Metadata { .. } => "cloud_metadata",
        }
    }
}

/// What a URL's host is, once the literal checks passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlHost {
    /// An IP literal that may be reached.
    Ip(IpAddr),
    /// A name, to resolve (and check again) before use; with the port to resolve it with.
    Name(String, u16),
}

/// The checks that need no resolution: an IP literal's address, a metadata service's name.
pub fn check_url(raw: &str) -> Result<UrlHost, EgressError> {
    let url = url::Url::parse(raw).map_err(|_| EgressError::NoHost)?;
    let port = url.port_or_known_default().unwrap_or(443);
    match url.host() {
        None => Err(EgressError::NoHost),
        Some(url::Host::Ipv4(ip)) => check_ip(&ip.to_string(), IpAddr::V4(ip)).map(|_| UrlHost::Ip(IpAddr::V4(ip))),
        Some(url::Host::Ipv6(ip)) => check_ip(&format!("[{ip}]"), IpAddr::V6(ip)).map(|_| UrlHost::Ip(IpAddr::V6(ip))),
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if METADATA_NAMES.contains(&name.as_str()) {
                return Err(EgressError::Metadata { host: name });
            }
            if name == "localhost" || name.ends_with(".localhost") {
                return Err(EgressError::Forbidden { host: name, reason: "loopback" });
            }
            Ok(UrlHost::Name(name, port))
        }
    }
}

fn check_ip(host: &str, ip: IpAddr) -> Result<(), EgressError> {
    match forbidden(ip) {
        Some(reason) => Err(EgressError::Forbidden { host: host.to_string(), reason }),
        None => Ok(()),
    }
}

/// The first forbidden address among `addrs`, as the error for `host`.
pub fn check_addrs(host: &str, addrs: impl IntoIterator<Item = IpAddr>) -> Result<(), EgressError> {
    for addr in addrs {
        if let Some(reason) = forbidden(addr) {
            return Err(EgressError::Resolved { host: host.to_string(), addr, reason });
        }
    }
    Ok(())
}

/// How long the write-time check waits for DNS.
pub const WRITE_CHECK_DNS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// `check_url`, then the name's current answers (a name that does not resolve now, or not
/// within [`WRITE_CHECK_DNS_TIMEOUT`], passes: the forwarder checks it again at every
/// connection).
pub async fn check_url_resolved(raw: &str) -> Result<(), EgressError> {
    match check_url(raw)? {
        UrlHost::Ip(_) => Ok(()),
        UrlHost::Name(name, port) => {
            match tokio::time::timeout(WRITE_CHECK_DNS_TIMEOUT, tokio::net::lookup_host((name.as_str(), port))).await {
                Ok(Ok(addrs)) => check_addrs(&name, addrs.map(|a| a.ip())),
                _ => Ok(()),
            }
        }
    }
}

/// A `reqwest` resolver that refuses every name one of whose answers is forbidden. Resolves
/// through the system (`getaddrinfo`, via tokio), or through a fixed table (`with_table`, for
/// tests that need a name whose answer is loopback).
#[derive(Clone, Default)]
pub struct EgressResolver {
    table: Option<Arc<HashMap<String, Vec<IpAddr>>>>,
}

impl EgressResolver {
    pub fn system() -> Self {
        EgressResolver { table: None }
    }

    /// Answers only from `table` (name → addresses); other names do not resolve.
    pub fn with_table(table: HashMap<String, Vec<IpAddr>>) -> Self {
        EgressResolver { table: Some(Arc::new(table)) }
    }

    pub async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let addrs: Vec<IpAddr> = match &self.table {
            Some(table) => table.get(name).cloned().ok_or_else(|| format!("{name}: not in the resolver's table"))?,
            None => tokio::net::lookup_host((name, 0)).await?.map(|a| a.ip()).collect(),
        };
        check_addrs(name, addrs.iter().copied())?;
        Ok(addrs)
    }
}

impl reqwest::dns::Resolve for EgressResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        let name = name.as_str().to_string();
        Box::pin(async move {
            let addrs = this.lookup(&name).await?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// Whether `e` (or what caused it) is a refusal of this policy.
pub fn is_refusal<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a EgressError> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(refusal) = err.downcast_ref::<EgressError>() {
            return Some(refusal);
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_addresses() {
        for (addr, reason) in [
            ("127.0.0.1", "loopback"),
            ("127.8.9.1", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.1.1", "link_local"),
            ("169.254.169.254", "cloud_metadata"),
            ("100.64.0.1", "cgnat"),
            ("100.127.255.254", "cgnat"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link_local"),
            ("fc00::1", "unique_local"),
            ("fd12:3456::1", "unique_local"),
            ("fd00:ec2::254", "cloud_metadata"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "cloud_metadata"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::a00:1", "private"),
            ("224.0.0.1", "reserved"),
            ("255.255.255.255", "reserved"),
        ] {
            let ip: IpAddr = addr.parse().expect(addr);
            assert_eq!(forbidden(ip), Some(reason), "{addr}");
        }
        for ok in ["93.184.216.34", "8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert_eq!(forbidden(ok.parse().expect(ok)), None, "{ok}");
        }
    }

    #[test]
    fn urls_are_checked_before_resolution() {
        assert!(matches!(check_url("http://127.0.0.1:8080/x"), Err(EgressError::Forbidden { reason: "loopback", .. })));
        assert!(matches!(check_url("http://[::ffff:7f00:1]/"), Err(EgressError::Forbidden { reason: "loopback", .. })));
        assert!(matches!(check_url("http://0x7f000001/"), Err(EgressError::Forbidden { reason: "loopback", .. })));
        assert!(matches!(check_url("http://2130706433/"), Err(EgressError::Forbidden { reason: "loopback", .. })));
        assert!(matches!(check_url("http://metadata.google.internal/"), Err(EgressError::Metadata { .. })));
        assert!(matches!(check_url("http://LOCALHOST./"), Err(EgressError::Forbidden { .. })));
        assert_eq!(check_url("https://hooks.example.com/in"), Ok(UrlHost::Name("hooks.example.com".into(), 443)));
        assert_eq!(check_url("https://8.8.8.8/"), Ok(UrlHost::Ip("8.8.8.8".parse().expect("ip"))));
        let e = check_url("http://user:pw@10.0.0.1/").expect_err("private");
        assert!(!e.to_string().contains("pw"), "{e}");
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_answering_loopback() {
        let table = HashMap::from([
            ("rebind.test".to_string(), vec!["8.8.8.8".parse().expect("ip"), "127.0.0.1".parse().expect("ip")]),
            ("fine.test".to_string(), vec!["8.8.4.4".parse().expect("ip")]),
        ]);
        let r = EgressResolver::with_table(table);
        let e = r.lookup("rebind.test").await.expect_err("refused");
        assert!(e.to_string().contains("127.0.0.1") && e.to_string().contains("loopback"), "{e}");
        assert!(is_refusal(e.as_ref()).is_some());
        assert_eq!(r.lookup("fine.test").await.expect("ok").len(), 1);
        assert!(check_url_resolved("http://localhost:1/").await.is_err());
    }
}
