//! Who may call the lab tool. It answers on loopback by default, but a browser page from any
//! site can still reach loopback: a cross-origin `POST` (a "simple" `text/plain` request needs
//! no preflight) would run queries, and a DNS-rebinding page would read answers under its own
//! host name. So every request must name this server in `Host` (localhost, a loopback
//! address, the bound address, or a name in `CELLSPACE_ALLOWED_HOSTS`, at the bound port), and
//! a request that changes or computes something must not come from another origin.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;

/// The host names and port a request must address.
#[derive(Debug, Clone)]
pub struct Guard {
    port: u16,
    hosts: Vec<String>,
}

impl Guard {
    pub fn new(bound: SocketAddr) -> Self {
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
            .map(String::from)
            .to_vec();
        hosts.push(match bound.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        });
        if let Ok(extra) = std::env::var("CELLSPACE_ALLOWED_HOSTS") {
            hosts.extend(
                extra
                    .split(',')
                    .map(|h| h.trim().to_ascii_lowercase())
                    .filter(|h| !h.is_empty()),
            );
        }
        Self {
            port: bound.port(),
            hosts,
        }
    }

    /// Whether `authority` (`name[:port]`) names this server.
    fn is_us(&self, authority: &str) -> bool {
        let a = authority.trim().to_ascii_lowercase();
        let (name, port) = match a.rsplit_once(':') {
            Some((n, p)) if !n.ends_with(':') && p.chars().all(|c| c.is_ascii_digit()) => {
                (n.to_string(), p.parse::<u16>().ok())
            }
            _ => (a.clone(), Some(80)),
        };
        port == Some(self.port) && self.hosts.contains(&name)
    }

    /// Why a request is refused, if it is.
    pub fn check(&self, method: &Method, headers: &axum::http::HeaderMap) -> Result<(), String> {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !self.is_us(host) {
            return Err(format!(
                "unknown Host {host:?}: this server answers to localhost:{} (add names to CELLSPACE_ALLOWED_HOSTS)",
                self.port
            ));
        }
        if method == Method::GET || method == Method::HEAD {
            return Ok(());
        }
        if headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("cross-site"))
        {
            return Err("cross-site request refused".into());
        }
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            let authority = origin.split("://").nth(1).unwrap_or("");
            if !authority.eq_ignore_ascii_case(host) {
                return Err(format!("cross-origin request from {origin} refused"));
            }
        }
        Ok(())
    }
}

/// The middleware: a refused request gets 403 with a JSON error, like every API error.
pub async fn guard(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    match g.check(req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(msg) => (
            StatusCode::FORBIDDEN,
            axum::Json(serde_json::json!({ "error": msg })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn host_and_origin_rules() {
        let g = Guard::new("127.0.0.1:8080".parse().unwrap());
        let ok = |m: Method, h: &[(&'static str, &str)]| g.check(&m, &headers(h)).is_ok();
        assert!(ok(Method::GET, &[("host", "127.0.0.1:8080")]));
        assert!(ok(Method::GET, &[("host", "localhost:8080")]));
        assert!(ok(Method::GET, &[("host", "LOCALHOST:8080")]));
        assert!(
            !ok(Method::GET, &[("host", "evil.example:8080")]),
            "DNS rebinding"
        );
        assert!(!ok(Method::GET, &[("host", "localhost:9999")]));
        assert!(!ok(Method::GET, &[]));
        let same = [
            ("host", "localhost:8080"),
            ("origin", "http://localhost:8080"),
        ];
        assert!(ok(Method::POST, &same));
        let cross = [
            ("host", "localhost:8080"),
            ("origin", "http://evil.example"),
        ];
        assert!(!ok(Method::POST, &cross));
        let site = [("host", "localhost:8080"), ("sec-fetch-site", "cross-site")];
        assert!(!ok(Method::POST, &site));
        assert!(
            ok(Method::POST, &[("host", "127.0.0.1:8080")]),
            "curl sends no Origin"
        );
    }
}
