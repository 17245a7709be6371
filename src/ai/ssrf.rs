//! The SSRF rule for providers an org brings (SPEC §11): in production their URL must be
//! https and must not reach a loopback, private or link-local address. The rule is applied
//! twice: when the URL is saved (so the admin hears about it) and on every connection,
//! through a resolver that drops such addresses (so a name that later resolves elsewhere —
//! DNS rebinding — still cannot reach the inside).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is an address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            // IPv4-mapped and -compatible forms reach the IPv4 address they carry.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            is_public_v6(v6)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        // 100.64.0.0/10: carrier-grade NAT, inside many clouds' networks.
        || (a == 100 && (64..128).contains(&b))
        // 0.0.0.0/8 and 240.0.0.0/4 (reserved; 0.x reaches the local host on Linux).
        || a == 0
        || a >= 240
        // 192.0.0.0/24 (protocol assignments) and 198.18.0.0/15 (benchmarking).
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (b == 18 || b == 19)))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // fc00::/7 unique local, fe80::/10 link-local, fec0::/10 old site-local.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
        // 2001:db8::/32 documentation.
        || (first == 0x2001 && ip.segments()[1] == 0x0db8)
        // ::/96 IPv4-compatible (deprecated) — treated as the IPv4 it names elsewhere.
        || ip.segments()[..6].iter().all(|s| *s == 0))
}

/// Why a URL breaks the rule, in words for the admin who typed it.
pub async fn check_url(url: &url::Url) -> Result<(), String> {
    if url.scheme() != "https" {
        return Err("must be an https URL".into());
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_owned(),
        Some(url::Host::Ipv4(ip)) => return check_ip(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => return check_ip(IpAddr::V6(ip)),
        None => return Err("must name a host".into()),
    };
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::lookup_host((host.as_str(), port)),
    )
    .await
    .map_err(|_| "its host name did not resolve in time".to_string())?
    .map_err(|_| "its host name does not resolve".to_string())?;
    let mut any = false;
    for addr in addrs {
        any = true;
        check_ip(addr.ip())?;
    }
    if any {
        Ok(())
    } else {
        Err("its host name does not resolve".into())
    }
}

fn check_ip(ip: IpAddr) -> Result<(), String> {
    if is_public(ip) {
        Ok(())
    } else {
        Err("must not point to a loopback, private or link-local address".into())
    }
}

/// The resolver of the client that calls org-supplied providers: the system's answers
/// without the non-public addresses (none left: the connection fails).
#[derive(Debug, Default, Clone, Copy)]
pub struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|addr| is_public(addr.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn inside_addresses_are_not_public() {
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!is_public(ip(s)), "{s} counted as public");
        }
        for s in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(ip(s)), "{s} counted as inside");
        }
    }

    #[tokio::test]
    async fn urls_are_checked_by_scheme_and_address() {
        let check = |s: &str| {
            let url = url::Url::parse(s).unwrap();
            async move { check_url(&url).await }
        };
        assert!(check("http://8.8.8.8/v1").await.is_err());
        assert!(check("https://127.0.0.1/v1").await.is_err());
        assert!(check("https://[::1]/v1").await.is_err());
        assert!(check("https://169.254.169.254/latest").await.is_err());
        assert!(check("https://localhost/v1").await.is_err());
        assert!(check("https://8.8.8.8/v1").await.is_ok());
    }
}
