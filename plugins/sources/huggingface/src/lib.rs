//! The Hugging Face hub protocol (preview).
//!
//! `resolve` asks `{endpoint}/api/{models|datasets}/{repo}/revision/{rev}`
//! for the commit, then the recursive tree at that commit for sizes and LFS
//! SHA-256 hashes, and returns `resolve/{commit}/{path}` URLs.

use serde::Deserialize;
use tuner_sdk::source::http;
use tuner_sdk::source::*;

struct HuggingFace;

#[derive(Deserialize)]
struct RevisionInfo {
    sha: String,
}

#[derive(Deserialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    size: Option<u64>,
    lfs: Option<Lfs>,
}

#[derive(Deserialize)]
struct Lfs {
    oid: String,
}

impl SourcePlugin for HuggingFace {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(
            Source,
            "Hugging Face hub (preview)",
            ["huggingface.co", "*.huggingface.co", "*.hf.co"]
        )
    }

    fn default_endpoint() -> String {
        "https://huggingface.co".into()
    }

    fn resolve(req: ResolveRequest) -> Result<Listing, SourceError> {
        let endpoint = req.endpoint.clone().unwrap_or_else(Self::default_endpoint);
        let endpoint = endpoint.trim_end_matches('/');
        let revision = req.revision.clone().unwrap_or_else(|| "main".into());
        let (api, files) = match req.kind {
            RepoKind::Model => ("models", String::new()),
            RepoKind::Dataset => ("datasets", "datasets/".to_string()),
        };
        let auth = req.token.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.as_deref().map(|a| vec![("authorization", a)]).unwrap_or_default();

        let info: RevisionInfo = get_json(
            &format!("{endpoint}/api/{api}/{}/revision/{revision}", req.repo),
            &headers,
        )?;
        let tree: Vec<TreeEntry> = get_json(
            &format!("{endpoint}/api/{api}/{}/tree/{}?recursive=true", req.repo, info.sha),
            &headers,
        )?;
        let files = tree
            .into_iter()
            .filter(|e| e.kind == "file")
            .map(|e| RemoteFile {
                url: format!("{endpoint}/{files}{}/resolve/{}/{}", req.repo, info.sha, e.path),
                sha256: e.lfs.map(|l| l.oid.trim_start_matches("sha256:").to_string()),
                size: e.size,
                path: e.path,
                headers: auth.iter().map(|a| ("authorization".to_string(), a.clone())).collect(),
            })
            .collect();
        Ok(Listing { repo: req.repo, revision, commit: info.sha, files })
    }
}

fn get_json<T: for<'de> Deserialize<'de>>(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<T, SourceError> {
    let resp = http::get(url, headers).map_err(|e| SourceError::Unavailable(format!("{url}: {e}")))?;
    match resp.status {
        200 => serde_json::from_slice(&resp.body)
            .map_err(|e| SourceError::InvalidResponse(format!("{url}: {e}"))),
        401 | 403 => Err(SourceError::Unauthorized(format!("{url}: HTTP {}", resp.status))),
        404 => Err(SourceError::NotFound(format!("{url}: HTTP 404"))),
        s => Err(SourceError::Unavailable(format!("{url}: HTTP {s}"))),
    }
}

tuner_sdk::export_plugin!(source: HuggingFace);
