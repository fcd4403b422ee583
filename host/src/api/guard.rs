//! Keeps other websites away from the local API.
//!
//! A browser lets any page send "simple" requests (form posts, `no-cors`
//! fetches) to `http://127.0.0.1:8000`, and DNS rebinding lets a page read
//! answers under its own name. Two checks stop both, before any handler runs:
//!
//! - **Host**: the `Host` header must name this server: `localhost`, a
//!   loopback address (127.0.0.0/8, `::1`), the address the server is bound
//!   to (any IP address when it is bound to `0.0.0.0`/`::`, since IP
//!   addresses cannot be rebound), or a name in `server.allowed_hosts`; any
//!   port. Otherwise 403 `host_not_allowed`.
//! - **Origin**: a request whose `Origin` is neither the server's own
//!   (`http://` + the `Host` header) nor in `server.allowed_origins` is
//!   refused with 403 `origin_not_allowed` when it changes state (POST, PUT,
//!   PATCH, DELETE). Any request a browser marks `Sec-Fetch-Site: cross-site`
//!   (and a state-changing one marked `same-site`) is refused the same way
//!   unless its origin is allowed. Requests without these headers (curl,
//!   scripts, the CLI) pass.
//!
//! No CORS headers are sent, so a foreign page can read nothing either.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

/// The middleware: checks `Host`, then `Origin` and `Sec-Fetch-Site`.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let settings = &state.inner.guard;
    let bound = state.inner.bound.get().copied();
    let host = request_host(&req);
    if let Some(host) = host.as_deref()
        && !host_allowed(host, bound, &settings.allowed_hosts)
    {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            format!(
                "this server does not answer to the host `{host}`; use http://127.0.0.1 or \
                 http://localhost, or add the name to `server.allowed_hosts` in config.toml"
            ),
        )
        .into_response();
    }
    if let Err(message) = origin_allowed(
        req.method(),
        req.headers(),
        host.as_deref(),
        &settings.allowed_origins,
    ) {
        return ApiError::new(StatusCode::FORBIDDEN, "origin_not_allowed", message).into_response();
    }
    next.run(req).await
}

/// What the guard needs from the settings, fixed at start.
#[derive(Debug, Clone, Default)]
pub struct GuardSettings {
    /// Lower-case host names or IP addresses (no port).
    pub allowed_hosts: Vec<String>,
    /// Normalised origins (`http://host:port`).
    pub allowed_origins: Vec<String>,
}

/// The authority the client asked for: `Host`, or the URI's authority
/// (HTTP/2, absolute-form requests).
fn request_host(req: &Request) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_string()))
}

/// Splits `host[:port]` / `[v6][:port]` and returns the lower-case host
/// (brackets removed), or None when it is malformed.
fn host_name(authority: &str) -> Option<String> {
    let a = authority.trim();
    if a.is_empty() || a.contains(['/', '@', ' ', '\\']) {
        return None;
    }
    let host = if let Some(rest) = a.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(valid_port)) {
            return None;
        }
        inner
    } else {
        match a.rsplit_once(':') {
            Some((h, port)) if !h.contains(':') => {
                if !valid_port(port) {
                    return None;
                }
                h
            }
            Some(_) => return None,
            None => a,
        }
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `authority` (a `Host` header) names this server.
pub(crate) fn host_allowed(authority: &str, bound: Option<SocketAddr>, extra: &[String]) -> bool {
    let Some(host) = host_name(authority) else {
        return false;
    };
    if host == "localhost" || extra.contains(&host) {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(ip) => {
            ip.is_loopback()
                || ip.to_canonical().is_loopback()
                || bound.is_some_and(|b| b.ip() == ip || b.ip().is_unspecified())
        }
        Err(_) => false,
    }
}

/// Whether a request may go on, judged by `Origin` and `Sec-Fetch-Site`;
/// the error message when not.
pub(crate) fn origin_allowed(
    method: &Method,
    headers: &HeaderMap,
    host: Option<&str>,
    allowed: &[String],
) -> Result<(), String> {
    let changes_state =
        ![Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE].contains(method);
    let fetch_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string());
    if let Some(origin) = &origin {
        let own = host.map(|h| format!("http://{}", h.trim().to_ascii_lowercase()));
        let normalised = crate::config::normalize_origin(origin).ok();
        let ok = normalised.as_ref().is_some_and(|o| {
            allowed.contains(o)
                || own
                    .as_deref()
                    .and_then(|own| crate::config::normalize_origin(own).ok())
                    .is_some_and(|own| own == *o)
        });
        if ok {
            return Ok(());
        }
        if changes_state || fetch_site.as_deref() == Some("cross-site") {
            return Err(format!(
                "requests from the web page at `{origin}` are refused: only this server's own \
                 pages, and origins in `server.allowed_origins`, may use the API"
            ));
        }
        return Ok(());
    }
    match fetch_site.as_deref() {
        Some("cross-site") => Err("requests from other websites are refused".into()),
        Some("same-site") if changes_state => {
            Err("requests from other websites are refused".into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_bound_and_listed_hosts_are_accepted() {
        let bound: SocketAddr = "127.0.0.1:8000".parse().unwrap();
        for ok in [
            "localhost",
            "LOCALHOST:8000",
            "localhost.:1",
            "127.0.0.1",
            "127.1.2.3:9",
            "[::1]:8000",
            "[::1]",
        ] {
            assert!(host_allowed(ok, Some(bound), &[]), "{ok}");
        }
        for bad in [
            "attacker.example",
            "attacker.example:8000",
            "localhost.attacker.example",
            "127.0.0.1.nip.io",
            "10.0.0.5:8000",
            "",
            "127.0.0.1:80:80",
            "::1",
            "user@127.0.0.1",
        ] {
            assert!(!host_allowed(bad, Some(bound), &[]), "{bad}");
        }
        assert!(host_allowed(
            "tuner.lan:443",
            Some(bound),
            &["tuner.lan".into()]
        ));
        let lan: SocketAddr = "192.168.1.5:8000".parse().unwrap();
        assert!(host_allowed("192.168.1.5:8000", Some(lan), &[]));
        assert!(!host_allowed("192.168.1.6:8000", Some(lan), &[]));
        let any: SocketAddr = "0.0.0.0:8000".parse().unwrap();
        assert!(host_allowed("192.168.1.6:8000", Some(any), &[]));
        assert!(!host_allowed("rebind.example:8000", Some(any), &[]));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn foreign_origins_cannot_change_state() {
        let host = Some("127.0.0.1:8000");
        let post = Method::POST;
        let evil = headers(&[("origin", "http://evil.example")]);
        assert!(origin_allowed(&post, &evil, host, &[]).is_err());
        assert!(origin_allowed(&Method::DELETE, &evil, host, &[]).is_err());
        assert!(origin_allowed(&Method::GET, &evil, host, &[]).is_ok());
        let null = headers(&[("origin", "null")]);
        assert!(origin_allowed(&post, &null, host, &[]).is_err());
        let other_port = headers(&[("origin", "http://127.0.0.1:3000")]);
        assert!(origin_allowed(&post, &other_port, host, &[]).is_err());
        assert!(
            origin_allowed(&post, &other_port, host, &["http://127.0.0.1:3000".into()]).is_ok()
        );
        let own = headers(&[
            ("origin", "http://127.0.0.1:8000"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(origin_allowed(&post, &own, host, &[]).is_ok());
        assert!(origin_allowed(&post, &HeaderMap::new(), host, &[]).is_ok());
        let cross = headers(&[("sec-fetch-site", "cross-site")]);
        assert!(origin_allowed(&post, &cross, host, &[]).is_err());
        assert!(origin_allowed(&Method::GET, &cross, host, &[]).is_err());
        let same_site = headers(&[("sec-fetch-site", "same-site")]);
        assert!(origin_allowed(&post, &same_site, host, &[]).is_err());
        assert!(origin_allowed(&Method::GET, &same_site, host, &[]).is_ok());
        let none = headers(&[("sec-fetch-site", "none")]);
        assert!(origin_allowed(&post, &none, host, &[]).is_ok());
    }
}
