//! Seeds from names, resolved again on every join attempt (a record that changed is seen at
//! the next attempt): `host:port` takes every A and AAAA record of `host` through the system
//! resolver (`/etc/hosts`, then DNS), `ip:port` and `[v6]:port` are taken as they are, and
//! `srv:NAME` takes every SRV record of `NAME`, each target's addresses at the record's port
//! (hickory's resolver, reading `/etc/resolv.conf` on each attempt, so nothing is cached
//! between attempts).

use std::net::SocketAddr;

/// The `srv:` prefix of an SRV seed.
pub const SRV_PREFIX: &str = "srv:";

/// Addresses one resolution keeps at most (all seeds together), and SRV records one seed
/// follows at most: a DNS answer comes from the network too, and a join asks each address.
pub const SEED_ADDRS_MAX: usize = 64;

/// Whether `seed` is written as a seed can be: `srv:NAME`, or `host:port` with a port.
pub fn check_seed(seed: &str) -> Result<(), String> {
    if let Some(name) = seed.strip_prefix(SRV_PREFIX) {
        return if name.is_empty() || name.contains(char::is_whitespace) {
            Err(format!("{seed:?}: use srv:_service._proto.domain"))
        } else {
            Ok(())
        };
    }
    match seed.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!(
            "{seed:?}: use host:port, [v6]:port or srv:_service._proto.domain"
        )),
    }
}

/// What one resolution found: every address (in seed order, without repeats) and, per seed
/// that gave none, why.
#[derive(Debug, Default)]
pub struct Resolved {
    /// The addresses.
    pub addrs: Vec<SocketAddr>,
    /// `(seed, reason)` for the seeds that gave no address.
    pub failed: Vec<(String, String)>,
}

/// Resolves every seed now.
pub async fn resolve_seeds(seeds: &[String]) -> Resolved {
    let mut out = Resolved::default();
    for seed in seeds {
        let found = match seed.strip_prefix(SRV_PREFIX) {
            Some(name) => resolve_srv(name).await,
            None => tokio::net::lookup_host(seed.as_str())
                .await
                .map(|a| a.collect::<Vec<_>>())
                .map_err(|e| e.to_string()),
        };
        match found {
            Ok(addrs) if !addrs.is_empty() => {
                for a in addrs {
                    if out.addrs.len() >= SEED_ADDRS_MAX {
                        tracing::warn!(%seed, "seeds past {SEED_ADDRS_MAX} addresses are ignored");
                        break;
                    }
                    if !out.addrs.contains(&a) {
                        out.addrs.push(a);
                    }
                }
            }
            Ok(_) => out.failed.push((seed.clone(), "no address".into())),
            Err(e) => out.failed.push((seed.clone(), e)),
        }
    }
    out
}

/// Every SRV record of `name`: each target's A and AAAA addresses at the record's port, in
/// priority order.
async fn resolve_srv(name: &str) -> Result<Vec<SocketAddr>, String> {
    let resolver = hickory_resolver::TokioResolver::builder_tokio()
        .map_err(|e| format!("resolver config: {e}"))?
        .build();
    let srv = resolver.srv_lookup(name).await.map_err(|e| e.to_string())?;
    let mut records: Vec<_> = srv.iter().cloned().collect();
    records.sort_by_key(|r| (r.priority(), std::cmp::Reverse(r.weight())));
    records.truncate(SEED_ADDRS_MAX);
    let mut out = Vec::new();
    for r in records {
        let target = r.target().to_utf8();
        match resolver.lookup_ip(target.as_str()).await {
            Ok(ips) => out.extend(ips.iter().map(|ip| SocketAddr::new(ip, r.port()))),
            Err(e) => tracing::warn!(%name, %target, error = %e, "SRV target did not resolve"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_checked_as_written() {
        for ok in [
            "10.0.0.1:7946",
            "[fd00::1]:7946",
            "seeds.example.org:7946",
            "srv:_dcore._tcp.x",
        ] {
            check_seed(ok).unwrap();
        }
        for bad in ["seeds.example.org", "srv:", "host:port", ":7946", "srv:a b"] {
            assert!(check_seed(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_resolution_keeps_a_bounded_number_of_addresses() {
        let many: Vec<String> = (1..=200).map(|p| format!("127.0.0.1:{p}")).collect();
        let r = resolve_seeds(&many).await;
        assert_eq!(r.addrs.len(), SEED_ADDRS_MAX);
    }

    #[tokio::test]
    async fn literals_and_local_names_resolve_and_failures_say_which_seed() {
        let r = resolve_seeds(&[
            "127.0.0.1:7000".into(),
            "localhost:7001".into(),
            "127.0.0.1:7000".into(),
            "localhost:notaport".into(),
        ])
        .await;
        assert!(r.addrs.contains(&"127.0.0.1:7000".parse().unwrap()));
        assert!(r.addrs.iter().any(|a| a.port() == 7001));
        assert_eq!(r.addrs.iter().filter(|a| a.port() == 7000).count(), 1);
        assert_eq!(r.failed.len(), 1);
        assert_eq!(r.failed[0].0, "localhost:notaport");
    }
}
