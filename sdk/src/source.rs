//! Source plugins: say where a model or dataset comes from.
//!
//! `resolve` turns a repository and revision into a listing of files with
//! sizes, hashes and URLs; the host downloads them (parallel, resumable,
//! verified). Talk to the hub through [`http`]; the host only lets requests
//! through to the hosts your plugin declares.

/// A resolved repository revision.
///
/// ```
/// use tuner_sdk::source::{Listing, RemoteFile};
/// let listing = Listing {
///     repo: "acme/tiny".into(),
///     revision: "main".into(),
///     commit: "0123456789abcdef0123456789abcdef01234567".into(),
///     files: vec![RemoteFile {
///         path: "config.json".into(),
///         size: Some(512),
///         sha256: None,
///         url: "https://hub.example.com/acme/tiny/resolve/main/config.json".into(),
///         headers: Vec::new(),
///     }],
/// };
/// assert_eq!(listing.files.len(), 1);
/// ```
pub use crate::__bindings::source::exports::tuner::plugin::source_plugin::Listing;

/// One file of a repository, in a [`Listing`].
///
/// ```
/// let file = tuner_sdk::source::RemoteFile {
///     path: "model.safetensors".into(), size: None, sha256: None,
///     url: "https://hub.example.com/f".into(), headers: vec![("authorization".into(), "Bearer t".into())],
/// };
/// assert_eq!(file.headers.len(), 1);
/// ```
pub use crate::__bindings::source::exports::tuner::plugin::source_plugin::RemoteFile;

/// Whether a repository holds a model or a dataset.
///
/// ```
/// use tuner_sdk::source::RepoKind;
/// assert_ne!(RepoKind::Model, RepoKind::Dataset);
/// ```
pub use crate::__bindings::source::exports::tuner::plugin::source_plugin::RepoKind;

/// What to resolve.
///
/// ```
/// use tuner_sdk::source::{RepoKind, ResolveRequest};
/// let request = ResolveRequest { repo: "acme/tiny".into(), kind: RepoKind::Model, revision: None, endpoint: None, token: None };
/// assert_eq!(request.revision.as_deref().unwrap_or("main"), "main");
/// ```
pub use crate::__bindings::source::exports::tuner::plugin::source_plugin::ResolveRequest;

/// Why a repository could not be resolved.
///
/// ```
/// use tuner_sdk::source::SourceError;
/// let err = SourceError::NotFound("acme/missing".into());
/// assert!(matches!(err, SourceError::NotFound(_)));
/// ```
pub use crate::__bindings::source::exports::tuner::plugin::source_plugin::SourceError;

pub use crate::{PluginError, PluginInfo, PluginKind};

/// A model and dataset source.
///
/// ```no_run
/// use tuner_sdk::source::*;
///
/// struct MyHub;
///
/// impl SourcePlugin for MyHub {
///     fn info() -> PluginInfo {
///         tuner_sdk::plugin_info!(Source, "Models from my hub", ["hub.example.com"])
///     }
///     fn default_endpoint() -> String {
///         "https://hub.example.com".into()
///     }
///     fn resolve(request: ResolveRequest) -> Result<Listing, SourceError> {
///         let endpoint = request.endpoint.clone().unwrap_or_else(Self::default_endpoint);
///         let url = format!("{endpoint}/api/{}/files", request.repo);
///         let resp = http::get(&url, &[]).map_err(|e| SourceError::Unavailable(format!("{e:?}")))?;
///         if resp.status == 404 {
///             return Err(SourceError::NotFound(request.repo));
///         }
///         let files = resp
///             .text()
///             .lines()
///             .map(|path| RemoteFile {
///                 path: path.into(),
///                 size: None,
///                 sha256: None,
///                 url: format!("{endpoint}/files/{}/{path}", request.repo),
///                 headers: Vec::new(),
///             })
///             .collect();
///         Ok(Listing { repo: request.repo, revision: "main".into(), commit: "main".into(), files })
///     }
/// }
///
/// tuner_sdk::export_plugin!(source: MyHub);
/// ```
pub trait SourcePlugin {
    /// Name, version, description and the hosts it reaches. Use
    /// [`plugin_info!`](crate::plugin_info).
    ///
    /// ```
    /// let info = tuner_sdk::plugin_info!(Source, "My hub", ["hub.example.com", "*.cdn.example.com"]);
    /// # assert_eq!(info.hosts.len(), 2);
    /// ```
    fn info() -> PluginInfo;

    /// The endpoint used when the request names none, e.g. `https://huggingface.co`.
    ///
    /// ```
    /// fn default_endpoint() -> String { "https://hub.example.com".into() }
    /// # assert!(default_endpoint().starts_with("https://"));
    /// ```
    fn default_endpoint() -> String;

    /// Resolves a repository revision to its file listing.
    ///
    /// ```
    /// use tuner_sdk::source::*;
    /// fn resolve(request: ResolveRequest) -> Result<Listing, SourceError> {
    ///     Err(SourceError::NotFound(request.repo))
    /// }
    /// # let r = ResolveRequest { repo: "a/b".into(), kind: RepoKind::Model, revision: None, endpoint: None, token: None };
    /// # assert!(resolve(r).is_err());
    /// ```
    fn resolve(request: ResolveRequest) -> Result<Listing, SourceError>;
}

/// Requests through the host. Every URL, and every redirect, is checked
/// against the hosts the plugin declared.
///
/// ```no_run
/// use tuner_sdk::source::http;
/// let resp = http::get("https://hub.example.com/api/models/acme/tiny", &[("accept", "application/json")]).unwrap();
/// if resp.status == 200 {
///     let body = resp.text();
/// }
/// ```
pub mod http {
    use crate::__bindings::source::tuner::plugin::http as wit;

    /// Why a request failed (4xx and 5xx are responses, not errors).
    ///
    /// ```
    /// let err = tuner_sdk::source::http::HttpError::TooLarge(32 << 20);
    /// assert!(matches!(err, tuner_sdk::source::http::HttpError::TooLarge(_)));
    /// ```
    pub use crate::__bindings::source::tuner::plugin::http::HttpError;

    /// The HTTP method of a [`Request`].
    ///
    /// ```
    /// let m = tuner_sdk::source::http::Method::Head;
    /// assert_eq!(m, tuner_sdk::source::http::Method::Head);
    /// ```
    pub use crate::__bindings::source::tuner::plugin::http::Method;

    /// A request for [`send`].
    ///
    /// ```
    /// use tuner_sdk::source::http::{Method, Request};
    /// let req = Request { method: Method::Post, url: "https://hub.example.com/api".into(), headers: vec![], body: Some(b"{}".to_vec()), timeout_ms: Some(5_000) };
    /// assert!(req.body.is_some());
    /// ```
    pub use crate::__bindings::source::tuner::plugin::http::Request;

    /// A whole response: status, lowercase headers, body, URL after redirects.
    ///
    /// ```no_run
    /// let resp = tuner_sdk::source::http::get("https://hub.example.com/", &[]).unwrap();
    /// println!("{} from {}", resp.status, resp.final_url);
    /// ```
    pub use crate::__bindings::source::tuner::plugin::http::Response;

    /// Sends a request and reads the whole response.
    ///
    /// ```no_run
    /// use tuner_sdk::source::http::{self, Method, Request};
    /// let resp = http::send(&Request {
    ///     method: Method::Head,
    ///     url: "https://hub.example.com/big.bin".into(),
    ///     headers: vec![],
    ///     body: None,
    ///     timeout_ms: None,
    /// });
    /// ```
    pub fn send(request: &Request) -> Result<Response, HttpError> {
        wit::send(request)
    }

    /// `GET url` with the given headers.
    ///
    /// ```no_run
    /// let resp = tuner_sdk::source::http::get("https://hub.example.com/api/x", &[("authorization", "Bearer token")]);
    /// ```
    pub fn get(url: &str, headers: &[(&str, &str)]) -> Result<Response, HttpError> {
        send(&Request {
            method: Method::Get,
            url: url.to_string(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: None,
            timeout_ms: None,
        })
    }

    impl Response {
        /// The first header called `name` (case-insensitive).
        ///
        /// ```
        /// let resp = tuner_sdk::source::http::Response {
        ///     status: 200, headers: vec![("etag".into(), "\"abc\"".into())], body: vec![], final_url: "https://x".into(),
        /// };
        /// assert_eq!(resp.header("ETag"), Some("\"abc\""));
        /// ```
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        /// The body as UTF-8 text (lossy).
        ///
        /// ```
        /// let resp = tuner_sdk::source::http::Response { status: 200, headers: vec![], body: b"ok".to_vec(), final_url: String::new() };
        /// assert_eq!(resp.text(), "ok");
        /// ```
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }
}

#[doc(hidden)]
#[macro_export]
macro_rules! __source_glue {
    ($export:ident, $ty:ty) => {
        impl $crate::__bindings::source::exports::tuner::plugin::source_plugin::Guest for $export {
            fn info() -> $crate::PluginInfo {
                <$ty as $crate::source::SourcePlugin>::info()
            }
            fn default_endpoint() -> String {
                <$ty as $crate::source::SourcePlugin>::default_endpoint()
            }
            fn resolve(
                request: $crate::source::ResolveRequest,
            ) -> Result<$crate::source::Listing, $crate::source::SourceError> {
                <$ty as $crate::source::SourcePlugin>::resolve(request)
            }
        }
    };
}
