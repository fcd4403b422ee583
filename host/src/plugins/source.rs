//! The handle of a source plugin: it resolves a repository to a file
//! listing; the host does the transfers.
//!
//! [`SourcePlugin`] is what [`super::PluginHost::source`] hands out. Its
//! requests and answers are host types ([`ResolveRequest`], [`Listing`],
//! [`SourceError`]); the generated bindings stay in `plugins/`.

use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::bindings::v0_1_0::Convert;
use super::bindings::v0_2_0 as new;
use super::imports::http::HttpGate;
use super::plugin::SourceBindings;
use super::{CallError, Plugin};

use new::source::exports::tuner::plugin::source_plugin as wit;

/// A loaded source plugin.
#[derive(Clone)]
pub struct SourcePlugin(Arc<Plugin>);

/// Whether a repository holds a model or a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RepoKind {
    Model,
    Dataset,
}

/// What to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveRequest {
    /// Repository id, e.g. `Qwen/Qwen3-0.6B`.
    pub repo: String,
    pub kind: RepoKind,
    /// Branch, tag or commit; `None` for the hub's default.
    pub revision: Option<String>,
    /// Endpoint chosen by the user; `None` for the plugin's default.
    pub endpoint: Option<String>,
    /// Access token for private repositories.
    pub token: Option<String>,
}

/// One file of a repository, as the plugin lists it (untrusted until the
/// hub has checked its path, hash and URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// Path inside the repository, `/`-separated.
    pub path: String,
    /// Size in bytes, if the hub says.
    pub size: Option<u64>,
    /// Lowercase hex SHA-256 of the content, if the hub says.
    pub sha256: Option<String>,
    /// Where to download it from.
    pub url: String,
    /// Extra headers for the download (authentication, cookies).
    pub headers: Vec<(String, String)>,
}

/// A resolved repository revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Repository id as the hub spells it.
    pub repo: String,
    /// The revision that was asked for (or the default one).
    pub revision: String,
    /// The commit that revision points at.
    pub commit: String,
    pub files: Vec<RemoteFile>,
}

/// Why a repository could not be resolved (the plugin's answer, not a
/// failed call).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// No such repository or revision.
    #[error("not found: {0}")]
    NotFound(String),
    /// Authentication required or refused.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The hub could not be reached or failed; another source may work.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The hub answered something the plugin does not understand.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
}

impl ResolveRequest {
    fn to_wit(&self) -> wit::ResolveRequest {
        wit::ResolveRequest {
            repo: self.repo.clone(),
            kind: match self.kind {
                RepoKind::Model => wit::RepoKind::Model,
                RepoKind::Dataset => wit::RepoKind::Dataset,
            },
            revision: self.revision.clone(),
            endpoint: self.endpoint.clone(),
            token: self.token.clone(),
        }
    }
}

impl From<wit::Listing> for Listing {
    fn from(l: wit::Listing) -> Self {
        Listing {
            repo: l.repo,
            revision: l.revision,
            commit: l.commit,
            files: l
                .files
                .into_iter()
                .map(|f| RemoteFile {
                    path: f.path,
                    size: f.size,
                    sha256: f.sha256,
                    url: f.url,
                    headers: f.headers,
                })
                .collect(),
        }
    }
}

impl From<wit::SourceError> for SourceError {
    fn from(e: wit::SourceError) -> Self {
        match e {
            wit::SourceError::NotFound(m) => SourceError::NotFound(m),
            wit::SourceError::Unauthorized(m) => SourceError::Unauthorized(m),
            wit::SourceError::Unavailable(m) => SourceError::Unavailable(m),
            wit::SourceError::InvalidResponse(m) => SourceError::InvalidResponse(m),
        }
    }
}

impl Deref for SourcePlugin {
    type Target = Plugin;
    fn deref(&self) -> &Plugin {
        &self.0
    }
}

impl SourcePlugin {
    /// Wraps a plugin already known to be a source ([`Plugin::as_source`]).
    pub(super) fn new(plugin: Arc<Plugin>) -> Self {
        Self(plugin)
    }

    /// The plugin behind the handle.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.0
    }

    /// The plugin's network gate: the hosts it declared. The host grants
    /// user-configured endpoints through it and builds its transfer client
    /// from it.
    pub fn network(&self) -> Option<&HttpGate> {
        self.0.http()
    }

    /// Resolves a repository to a file listing.
    pub fn resolve(
        &self,
        request: &ResolveRequest,
    ) -> Result<Result<Listing, SourceError>, CallError> {
        let request = request.to_wit();
        let answer = self
            .0
            .call_source("resolve", self.0.timeout(), |store, b| match b {
                SourceBindings::V0_2(b) => {
                    b.tuner_plugin_source_plugin().call_resolve(store, &request)
                }
                SourceBindings::V0_1(b) => b
                    .tuner_plugin_source_plugin()
                    .call_resolve(store, &request.clone().convert())
                    .map(|r| r.map(Convert::convert).map_err(Convert::convert)),
            })?;
        Ok(answer.map(Listing::from).map_err(SourceError::from))
    }

    /// The endpoint used when a request names none.
    pub fn default_endpoint(&self) -> Result<String, CallError> {
        self.0
            .call_source("default-endpoint", self.0.timeout(), |store, b| match b {
                SourceBindings::V0_2(b) => {
                    b.tuner_plugin_source_plugin().call_default_endpoint(store)
                }
                SourceBindings::V0_1(b) => {
                    b.tuner_plugin_source_plugin().call_default_endpoint(store)
                }
            })
    }
}
