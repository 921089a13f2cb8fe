//! What the admin API refuses before any route runs, and the count of every refusal.
//!
//! A browser on the operator's machine is the attacker this module has in mind: a page from
//! anywhere can make it send requests to `127.0.0.1:7947`.
//! - **DNS rebinding**: the page's own name is made to resolve to 127.0.0.1, so its requests
//!   reach the API as same-origin and their answers can be read. They carry the page's name in
//!   `Host`, so a `Host` that is not an IP literal, `localhost` or a configured name is refused
//!   (421). An IP literal is safe: a rebound name never shows as one.
//! - **Cross-site requests**: the page may send a POST to the API directly (a form, a `fetch`
//!   in `no-cors` mode). Such requests cannot carry `Content-Type: application/json` or a custom
//!   header without a CORS preflight, which the API never grants; so every request that is not
//!   a GET or HEAD needs one of the two (415 otherwise), and an `Origin` header, when present,
//!   must name an allowed host (403).
//!
//! Every refusal here, and those of the connection limits in `http`, is counted by reason in
//! `dcore_rejected_total{reason="admin_..."}`.

use crate::common::Counter;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The custom header that marks a request as sent by a program, not by a cross-site page.
pub const REQUEST_HEADER: &str = "x-dcore-request";

/// Why the admin API refused a request or a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `Host` names no allowed host.
    Host,
    /// `Origin` names no allowed host.
    Origin,
    /// A state change without `Content-Type: application/json` or `X-Dcore-Request`.
    ContentType,
    /// No valid bearer token.
    Token,
    /// No complete request head within `http_header_timeout`.
    HeaderTimeout,
    /// A state change's body not in full within `http_header_timeout` after its head.
    BodyTimeout,
    /// `http_connections_max` connections were open already.
    Connections,
    /// `http_event_streams_max` event streams were open already.
    EventStreams,
}

impl Refusal {
    const ALL: [Refusal; 8] = [
        Refusal::Host,
        Refusal::Origin,
        Refusal::ContentType,
        Refusal::Token,
        Refusal::HeaderTimeout,
        Refusal::BodyTimeout,
        Refusal::Connections,
        Refusal::EventStreams,
    ];

    /// The `reason` label in `dcore_rejected_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::Host => "admin_host",
            Refusal::Origin => "admin_origin",
            Refusal::ContentType => "admin_content_type",
            Refusal::Token => "admin_token",
            Refusal::HeaderTimeout => "admin_header_timeout",
            Refusal::BodyTimeout => "admin_body_timeout",
            Refusal::Connections => "admin_connections",
            Refusal::EventStreams => "admin_event_streams",
        }
    }
}

/// A live count of each [`Refusal`].
#[derive(Debug, Default)]
pub(crate) struct Refusals([Counter; Refusal::ALL.len()]);

impl Refusals {
    pub(crate) fn count(&self, r: Refusal) {
        self.0[r as usize].add(1);
    }

    /// Every count by label, for the metrics snapshot.
    pub(crate) fn snapshot(&self) -> BTreeMap<String, u64> {
        Refusal::ALL
            .iter()
            .map(|r| (r.label().to_string(), self.0[*r as usize].get()))
            .collect()
    }
}

/// A host as `Host` or `Origin` names it: lower-case name (an IPv6 literal without its
/// brackets), and the port if one was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostPort {
    name: String,
    port: Option<u16>,
}

impl HostPort {
    /// Parses `name`, `name:port`, `[v6]` or `[v6]:port`; `None` if it is none of them (a name
    /// holds letters, digits, `-`, `.` and `_` only).
    pub(crate) fn parse(text: &str) -> Option<HostPort> {
        let (name, port) = match text.strip_prefix('[') {
            Some(rest) => {
                let (v6, after) = rest.split_once(']')?;
                v6.parse::<std::net::Ipv6Addr>().ok()?;
                let port = match after {
                    "" => None,
                    p => Some(p.strip_prefix(':')?),
                };
                (v6, port)
            }
            None => match text.split_once(':') {
                Some((n, p)) => (n, Some(p)),
                None => (text, None),
            },
        };
        let port = match port {
            None => None,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                Some(p.parse().ok()?)
            }
            Some(_) => return None,
        };
        let plain = |b: u8| b.is_ascii_alphanumeric() || b"-._:".contains(&b);
        if name.is_empty() || name.len() > 253 || !name.bytes().all(plain) {
            return None;
        }
        Some(HostPort {
            name: name.to_ascii_lowercase(),
            port,
        })
    }
}

/// Which hosts the API answers to, and the count of what it refused.
#[derive(Debug)]
pub(crate) struct Guard {
    /// The API's own port: IP literals and `localhost` are allowed at it.
    port: u16,
    /// `http_allowed_hosts`, parsed.
    names: Vec<HostPort>,
    /// How long a state change's body may take to arrive, once its head has.
    pub(crate) body_timeout: std::time::Duration,
    pub(crate) refusals: Refusals,
}

impl Guard {
    /// `allowed` must hold valid entries (the config checked them).
    pub(crate) fn new(port: u16, allowed: &[String], body_timeout: std::time::Duration) -> Guard {
        Guard {
            port,
            names: allowed.iter().filter_map(|h| HostPort::parse(h)).collect(),
            body_timeout,
            refusals: Refusals::default(),
        }
    }

    /// Whether a request naming `host` (a `Host` value, or an `Origin`'s host part with
    /// `default_port` its scheme's) may be answered.
    pub(crate) fn allows_host(&self, host: &str, default_port: u16) -> bool {
        let Some(h) = HostPort::parse(host) else {
            return false;
        };
        let port = h.port.unwrap_or(default_port);
        if h.name == "localhost" || h.name.parse::<IpAddr>().is_ok() {
            return port == self.port;
        }
        self.names
            .iter()
            .any(|n| n.name == h.name && n.port.is_none_or(|p| p == port))
    }

    /// Whether an `Origin` value names an allowed host (`null` and schemes other than http and
    /// https never do).
    pub(crate) fn allows_origin(&self, origin: &str) -> bool {
        let (host, port) = if let Some(h) = origin.strip_prefix("http://") {
            (h, 80)
        } else if let Some(h) = origin.strip_prefix("https://") {
            (h, 443)
        } else {
            return false;
        };
        !host.contains('/') && self.allows_host(host, port)
    }
}

/// Whether a request with this method and these headers may change state: GET and HEAD never
/// do; anything else needs a JSON content type or [`REQUEST_HEADER`].
pub(crate) fn marked_as_program(
    method: &axum::http::Method,
    headers: &axum::http::HeaderMap,
) -> bool {
    use axum::http::{header, Method};
    if method == Method::GET || method == Method::HEAD || headers.contains_key(REQUEST_HEADER) {
        return true;
    }
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue, Method};

    #[test]
    fn hosts_parse_like_a_host_header() {
        let hp = |n: &str, p| {
            Some(HostPort {
                name: n.into(),
                port: p,
            })
        };
        assert_eq!(
            HostPort::parse("127.0.0.1:7947"),
            hp("127.0.0.1", Some(7947))
        );
        assert_eq!(HostPort::parse("LocalHost"), hp("localhost", None));
        assert_eq!(HostPort::parse("[::1]:80"), hp("::1", Some(80)));
        assert_eq!(HostPort::parse("[::1]"), hp("::1", None));
        for bad in [
            "",
            ":80",
            "a:",
            "a:x",
            "a:99999",
            "::1",
            "[::1",
            "[nope]:1",
            "[::1]x",
            "a b",
            "a/b",
            "a@b",
            "evil.example:80:80",
        ] {
            assert_eq!(HostPort::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ip_literals_and_localhost_at_our_port_and_configured_names_are_allowed() {
        let allowed = ["dcore.internal".into(), "proxy:8443".into()];
        let g = Guard::new(7947, &allowed, std::time::Duration::from_secs(1));
        for ok in [
            "127.0.0.1:7947",
            "localhost:7947",
            "[::1]:7947",
            "10.0.0.1:7947",
            "dcore.internal",
            "DCORE.internal:1234",
            "proxy:8443",
        ] {
            assert!(g.allows_host(ok, 80), "{ok}");
        }
        for bad in [
            "evil.example:7947",
            "evil.example",
            "127.0.0.1:7948",
            "localhost",
            "proxy:8444",
            "proxy",
            "dcore.internal.evil.example",
            "",
        ] {
            assert!(!g.allows_host(bad, 80), "{bad}");
        }
        assert!(g.allows_origin("http://127.0.0.1:7947"));
        assert!(g.allows_origin("https://dcore.internal"));
        assert!(g.allows_origin("https://proxy:8443"));
        for bad in [
            "http://evil.example",
            "null",
            "file://",
            "http://127.0.0.1:7947/x",
            "https://proxy",
            "http://localhost",
        ] {
            assert!(!g.allows_origin(bad), "{bad}");
        }
    }

    #[test]
    fn state_changes_need_json_or_the_custom_header() {
        let with = |k: &'static str, v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(k, HeaderValue::from_static(v));
            h
        };
        let none = HeaderMap::new();
        assert!(marked_as_program(&Method::GET, &none));
        assert!(marked_as_program(&Method::HEAD, &none));
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert!(!marked_as_program(&m, &none), "{m}");
            assert!(!marked_as_program(&m, &with("content-type", "text/plain")));
            assert!(!marked_as_program(
                &m,
                &with("content-type", "application/x-www-form-urlencoded")
            ));
            assert!(marked_as_program(
                &m,
                &with("content-type", "application/json")
            ));
            assert!(marked_as_program(
                &m,
                &with("content-type", "Application/JSON; charset=utf-8")
            ));
            assert!(marked_as_program(&m, &with(REQUEST_HEADER, "1")));
        }
    }
}
