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

    /// Why a request is refused, if it is, with its status: 400 for a request that is not
    /// well formed (two `Host` headers: which one a proxy and this server read may differ),
    /// 413 for a declared body over the upload limit (answered before the body is read),
    /// 403 for one this server will not answer.
    pub fn check(
        &self,
        method: &Method,
        headers: &axum::http::HeaderMap,
    ) -> Result<(), (StatusCode, String)> {
        if headers.get_all(header::HOST).iter().count() > 1 {
            return Err((StatusCode::BAD_REQUEST, "more than one Host header".into()));
        }
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > crate::serve::MAX_UPLOAD as u64) {
            return Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "upload larger than {} MB",
                    crate::serve::MAX_UPLOAD / (1024 * 1024)
                ),
            ));
        }
        self.check_origin(method, headers)
            .map_err(|e| (StatusCode::FORBIDDEN, e))
    }

    fn check_origin(&self, method: &Method, headers: &axum::http::HeaderMap) -> Result<(), String> {
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

/// The middleware: a refused request gets its status with a JSON error, like every API error.
pub async fn guard(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    match g.check(req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err((status, msg)) => {
            (status, axum::Json(serde_json::json!({ "error": msg }))).into_response()
        }
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

    /// Issue 19 cases 18 and 19: two Host headers are a bad request; a declared body over the
    /// upload limit is refused with 413 before it is read.
    #[test]
    fn case_18_19_duplicate_host_and_oversized_declared_body() {
        let g = Guard::new("127.0.0.1:8080".parse().unwrap());
        let mut h = headers(&[("host", "localhost:8080")]);
        h.append(header::HOST, "evil.example:8080".parse().unwrap());
        assert_eq!(
            g.check(&Method::GET, &h).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
        let big = (crate::serve::MAX_UPLOAD + 1).to_string();
        let h = headers(&[("host", "localhost:8080"), ("content-length", &big)]);
        assert_eq!(
            g.check(&Method::POST, &h).unwrap_err().0,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let fine = headers(&[("host", "localhost:8080"), ("content-length", "1000")]);
        assert!(g.check(&Method::POST, &fine).is_ok());
    }
}
