//! `tuner:plugin/http`: network access for plugins, checked by the host.
//!
//! Every request and every redirect must go to a host the plugin declared
//! (`hosts` in its manifest or `info()`). Names that resolve to loopback or
//! private-range addresses are refused unless the configuration allows them
//! (the check sits in the DNS resolver, so redirects and DNS tricks are
//! covered too). Bodies are capped and requests time out on the host side.
//!
//! Endpoints the *user* chose: a source plugin's declared hosts cover its
//! public hub, but `HF_ENDPOINT`, `MODELSCOPE_DOMAIN` or a mirror endpoint in
//! `config.toml` may name any host. The rule: the host (never the plugin)
//! grants the host of the endpoint configured for that source to that
//! plugin, with [`HttpGate::grant_endpoint`], because the user picked it.
//! Nothing a plugin returns or asks for widens its set. The same gate also
//! builds the client the host downloads files with
//! ([`HttpGate::transfer_client`]), so file URLs and their redirects
//! obey the same hosts.

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock, mpsc};
use std::time::Duration;

use reqwest::redirect;

use crate::plugins::bindings::v0_2_0::source::tuner::plugin::http::{
    Host, HttpError, Method, Request, Response,
};
use crate::plugins::limits::PluginLimits;
use crate::plugins::state::PluginState;

/// Host names a plugin may reach: exact names (`huggingface.co`) or
/// subdomain wildcards (`*.hf.co`, which does not match `hf.co` itself).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPatterns(Vec<String>);

impl HostPatterns {
    /// Parses and checks declared host patterns.
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let mut out = Vec::with_capacity(patterns.len());
        for p in patterns {
            let p = p.trim().to_ascii_lowercase();
            let bare = p.strip_prefix("*.").unwrap_or(&p);
            if bare.is_empty()
                || bare.contains(['/', ':', '*', '@', ' '])
                || bare.starts_with('.')
                || bare.ends_with('.')
            {
                return Err(format!(
                    "host `{p}` is not a host name (write `example.com` or `*.example.com`, \
                     without scheme, port or path)"
                ));
            }
            out.push(p);
        }
        Ok(Self(out))
    }

    /// Whether `host` (lowercase) is allowed.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.0.iter().any(|p| match p.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
            None => *p == host,
        })
    }

    /// The declared patterns.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    fn push(&mut self, host: String) {
        if !self.0.contains(&host) {
            self.0.push(host);
        }
    }
}

/// The hosts a gate lets through: the plugin's declared patterns plus the
/// hosts of endpoints the user configured for it.
#[derive(Debug, Default)]
struct Allowed {
    declared: HostPatterns,
    granted: RwLock<HostPatterns>,
}

impl Allowed {
    fn allows(&self, host: &str) -> bool {
        self.declared.allows(host) || self.granted.read().unwrap().allows(host)
    }

    fn describe(&self) -> String {
        let mut all = self.declared.as_slice().to_vec();
        all.extend(self.granted.read().unwrap().as_slice().iter().cloned());
        if all.is_empty() {
            "none".to_string()
        } else {
            all.join(", ")
        }
    }
}

/// Loopback, private-range, link-local, CGNAT, unspecified and broadcast
/// addresses, in IPv4 and IPv6 (including IPv4-mapped IPv6).
pub fn is_private_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || a == 0
                || (a == 100 && (b & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_private_address(IpAddr::V4(v4)))
        }
    }
}

/// The error a refused redirect or address carries through reqwest.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Refused {}

/// Resolves names, dropping private addresses unless they are allowed.
pub(crate) struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| allow_private || !is_private_address(a.ip()))
                .collect();
            if kept.is_empty() && !addrs.is_empty() {
                let err: Box<dyn StdError + Send + Sync> = Box::new(Refused(format!(
                    "`{host}` resolves to a private address; set allow_private_hosts = true \
                     (or TUNER_ALLOW_PRIVATE_HOSTS=1) to allow it"
                )));
                return Err(err);
            }
            let addrs: reqwest::dns::Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

/// Runs plugin HTTP requests on a small runtime of its own, so plugin calls
/// can block on them from any thread (including inside another runtime).
pub struct HttpService {
    runtime: Option<tokio::runtime::Runtime>,
}

impl HttpService {
    pub fn new() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tuner-plugin-http")
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    fn spawn<F>(&self, fut: F) -> mpsc::Receiver<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        if let Some(rt) = &self.runtime {
            rt.spawn(async move {
                let _ = tx.send(fut.await);
            });
        }
        rx
    }
}

impl Drop for HttpService {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside async code; this does not.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// One plugin's network access: its allowed hosts, limits and client.
#[derive(Clone)]
pub struct HttpGate {
    plugin: Arc<str>,
    allowed: Arc<Allowed>,
    allow_private: bool,
    max_redirects: usize,
    timeout: Duration,
    max_body: u64,
    client: reqwest::Client,
    service: Arc<HttpService>,
}

impl HttpGate {
    /// Builds the gate (and its HTTP client) for one plugin.
    pub fn new(
        plugin: Arc<str>,
        allowed: HostPatterns,
        limits: &PluginLimits,
        service: Arc<HttpService>,
    ) -> Result<Self, String> {
        let allowed = Arc::new(Allowed {
            declared: allowed,
            granted: RwLock::default(),
        });
        let allow_private = limits.allow_private_hosts;
        let max_redirects = limits.http_max_redirects;
        let client = guarded_client(allowed.clone(), allow_private, max_redirects)
            .user_agent(concat!("tuner/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Self {
            plugin,
            allowed,
            allow_private,
            max_redirects,
            timeout: limits.http_timeout,
            max_body: limits.http_max_body,
            client,
            service,
        })
    }

    /// Lets the plugin reach the host of `endpoint`, an endpoint the user
    /// configured for this source (environment or config file). Only host
    /// code calls this; returns the host name granted.
    pub fn grant_endpoint(&self, endpoint: &str) -> Result<String, String> {
        let url = reqwest::Url::parse(endpoint)
            .map_err(|e| format!("endpoint `{endpoint}` is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "endpoint `{endpoint}`: only http and https are supported"
            ));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(format!("endpoint `{endpoint}` has no host")),
        };
        let trimmed = host.trim_end_matches('.').to_string();
        if !self.allowed.declared.allows(&trimmed) {
            tracing::debug!(target: "tuner::plugin", plugin = &*self.plugin, host = %trimmed, "user-configured endpoint granted");
        }
        self.allowed.granted.write().unwrap().push(trimmed.clone());
        Ok(trimmed)
    }

    /// Whether `url` may be fetched for this plugin: scheme, declared or
    /// granted host, and (for IP literals) the private-address rule.
    pub fn check(&self, url: &str) -> Result<(), String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        check_url(&url, &self.allowed, self.allow_private)
    }

    /// A client builder for the host's own file transfers on this plugin's
    /// behalf: same host rule on every redirect, same private-address rule
    /// in DNS, no body cap and no overall timeout (the caller sets
    /// connect and read timeouts).
    pub fn transfer_client(&self) -> reqwest::ClientBuilder {
        guarded_client(self.allowed.clone(), self.allow_private, self.max_redirects)
    }

    /// Checks and sends one request, blocking until it completes or times out.
    pub fn send(&self, request: Request) -> Result<Response, HttpError> {
        let url = reqwest::Url::parse(&request.url)
            .map_err(|e| HttpError::InvalidUrl(format!("{}: {e}", request.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(HttpError::InvalidUrl(format!(
                "{url}: scheme `{}` is not supported (http and https only)",
                url.scheme()
            )));
        }
        check_url(&url, &self.allowed, self.allow_private).map_err(|why| {
            tracing::warn!(target: "tuner::plugin", plugin = &*self.plugin, url = %url, "request refused: {why}");
            HttpError::Denied(why)
        })?;
        let timeout = request
            .timeout_ms
            .map(|ms| Duration::from_millis(ms.into()).min(self.timeout))
            .unwrap_or(self.timeout);
        let method = match request.method {
            Method::Get => reqwest::Method::GET,
            Method::Head => reqwest::Method::HEAD,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Delete => reqwest::Method::DELETE,
        };
        let mut builder = self.client.request(method, url.clone()).timeout(timeout);
        for (k, v) in &request.headers {
            builder = builder.header(k, v);
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let max_body = self.max_body;
        let rx = self
            .service
            .spawn(async move { fetch(builder, max_body).await });
        // The client enforces `timeout`; the margin only guards a stuck runtime.
        let result = rx
            .recv_timeout(timeout + Duration::from_secs(5))
            .unwrap_or_else(|_| {
                Err(HttpError::Timeout(format!(
                    "{url}: no answer in {timeout:?}"
                )))
            });
        if let Err(err) = &result {
            tracing::debug!(target: "tuner::plugin", plugin = &*self.plugin, url = %url, "request failed: {err:?}");
        }
        result
    }
}

/// A reqwest client builder that checks every redirect against `allowed`
/// and resolves names through the private-address guard.
fn guarded_client(
    allowed: Arc<Allowed>,
    allow_private: bool,
    max_redirects: usize,
) -> reqwest::ClientBuilder {
    let policy = redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= max_redirects {
            return attempt.error(Refused(format!("more than {max_redirects} redirects")));
        }
        match check_url(attempt.url(), &allowed, allow_private) {
            Ok(()) => attempt.follow(),
            Err(why) => attempt.error(Refused(format!("redirect refused: {why}"))),
        }
    });
    reqwest::Client::builder()
        .redirect(policy)
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        // A proxy would resolve names itself, around the private-address check.
        .no_proxy()
}

/// Whether a reqwest error was one of our own refusals (undeclared host on
/// a redirect, private address), with its message.
pub fn refusal(err: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn StdError + 'static)> = err.source();
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused.0.clone());
        }
        source = e.source();
    }
    None
}

/// Scheme, declared host and (for IP literals) private-address checks.
fn check_url(url: &reqwest::Url, allowed: &Allowed, allow_private: bool) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme `{}` is not allowed (http and https only)",
            url.scheme()
        ));
    }
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err(format!("{url} has no host")),
    };
    if !allowed.allows(&host) {
        return Err(format!(
            "host `{host}` is not declared by the plugin (declared: {})",
            allowed.describe()
        ));
    }
    let literal: Option<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(ip.into()),
        Some(url::Host::Ipv6(ip)) => Some(ip.into()),
        _ => None,
    };
    if let Some(ip) = literal
        && !allow_private
        && is_private_address(ip)
    {
        return Err(format!(
            "`{ip}` is a private address; set allow_private_hosts = true \
             (or TUNER_ALLOW_PRIVATE_HOSTS=1) to allow it"
        ));
    }
    Ok(())
}

async fn fetch(builder: reqwest::RequestBuilder, max_body: u64) -> Result<Response, HttpError> {
    let mut resp = builder.send().await.map_err(classify)?;
    let status = resp.status().as_u16();
    let final_url = resp.url().to_string();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    if resp.content_length().is_some_and(|n| n > max_body) {
        return Err(HttpError::TooLarge(max_body));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(classify)? {
        if (body.len() + chunk.len()) as u64 > max_body {
            return Err(HttpError::TooLarge(max_body));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response {
        status,
        headers,
        body,
        final_url,
    })
}

/// Maps a reqwest error to the WIT error, surfacing our own refusals.
fn classify(err: reqwest::Error) -> HttpError {
    if let Some(why) = refusal(&err) {
        return HttpError::Denied(why);
    }
    if err.is_timeout() {
        return HttpError::Timeout(err.to_string());
    }
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        msg.push_str(": ");
        msg.push_str(&e.to_string());
        source = e.source();
    }
    HttpError::Transport(msg)
}

impl Host for PluginState {
    fn send(&mut self, request: Request) -> Result<Response, HttpError> {
        match &self.http {
            Some(gate) => gate.send(request),
            None => Err(HttpError::Denied(format!(
                "plugin `{}` has no network access",
                self.plugin
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matches_subdomains_only() {
        let p = HostPatterns::new(&["*.hf.co".into(), "huggingface.co".into()]).unwrap();
        assert!(p.allows("cdn-lfs.hf.co"));
        assert!(p.allows("HuggingFace.co"));
        assert!(!p.allows("hf.co"));
        assert!(!p.allows("evilhf.co"));
        assert!(!p.allows("huggingface.co.evil.com"));
    }

    #[test]
    fn granted_endpoint_is_allowed_and_nothing_else() {
        let service = Arc::new(HttpService::new().unwrap());
        let gate = HttpGate::new(
            Arc::from("t"),
            HostPatterns::new(&["huggingface.co".into()]).unwrap(),
            &PluginLimits::default(),
            service,
        )
        .unwrap();
        assert!(gate.check("https://hf-mirror.com/api/x").is_err());
        assert_eq!(
            gate.grant_endpoint("https://HF-Mirror.com/").unwrap(),
            "hf-mirror.com"
        );
        assert!(gate.check("https://hf-mirror.com/api/x").is_ok());
        assert!(gate.check("https://huggingface.co/x").is_ok());
        let err = gate.check("https://evil.example/x").unwrap_err();
        assert!(err.contains("not declared"), "{err}");
        assert!(gate.grant_endpoint("ftp://x.com").is_err());
    }

    #[test]
    fn patterns_with_scheme_or_path_are_rejected() {
        assert!(HostPatterns::new(&["https://x.com".into()]).is_err());
        assert!(HostPatterns::new(&["x.com/a".into()]).is_err());
        assert!(HostPatterns::new(&["*".into()]).is_err());
    }

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
        ] {
            assert!(is_private_address(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_private_address(ip.parse().unwrap()), "{ip}");
        }
    }
}
