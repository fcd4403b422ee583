//! Source plugins: say where a model or dataset comes from.
//!
//! `resolve` turns a repository and revision into a listing of files with
//! sizes, hashes and URLs; the host downloads them (parallel, resumable,
//! verified). Talk to the hub through [`http`]; the host only lets requests
//! through to the hosts your plugin declares.

pub use crate::__bindings::source::exports::tuner::plugin::source_plugin::{
    Listing, RemoteFile, RepoKind, ResolveRequest, SourceError,
};
pub use crate::{PluginError, PluginInfo, PluginKind};

/// A model and dataset source.
pub trait SourcePlugin {
    /// Name, version, description and the hosts it reaches. Use
    /// [`plugin_info!`](crate::plugin_info).
    fn info() -> PluginInfo;

    /// The endpoint used when the request names none, e.g. `https://huggingface.co`.
    fn default_endpoint() -> String;

    /// Resolves a repository revision to its file listing.
    fn resolve(request: ResolveRequest) -> Result<Listing, SourceError>;
}

/// Requests through the host. Every URL, and every redirect, is checked
/// against the hosts the plugin declared.
pub mod http {
    use crate::__bindings::source::tuner::plugin::http as wit;
    pub use crate::__bindings::source::tuner::plugin::http::{
        HttpError, Method, Request, Response,
    };

    /// Sends a request and reads the whole response.
    pub fn send(request: &Request) -> Result<Response, HttpError> {
        wit::send(request)
    }

    /// `GET url` with the given headers.
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
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        /// The body as UTF-8 text (lossy).
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
