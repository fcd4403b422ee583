//! The ModelScope hub (default `https://www.modelscope.cn`; the host passes
//! `MODELSCOPE_DOMAIN` or `endpoints.modelscope` as the request endpoint).
//!
//! Models: `GET {ep}/api/v1/models/{id}/repo/files?Revision={rev}&Recursive=True`
//! answers `Data.Files[{Path, Size, Sha256, Type, Revision}]`; a file is at
//! `{ep}/api/v1/models/{id}/repo?Revision={rev}&FilePath={path}`.
//!
//! Datasets (as the modelscope SDK does it): `GET {ep}/api/v1/datasets/{id}`
//! gives the numeric `Data.Id`; `GET {ep}/api/v1/datasets/{numeric}/repo/tree
//! ?Revision=&Root=/&Recursive=True&PageNumber=&PageSize=` pages the files;
//! a file is at `{ep}/api/v1/datasets/{id}/repo?Source=SDK&Revision=&FilePath=`.
//!
//! The default revision is `master`. The token goes as the `m_session_id`
//! cookie. The commit: ModelScope lists each file with the commit it was
//! listed at (`Revision`); when all files agree that is the commit, otherwise
//! (or when it is just the branch name) a digest of the listing stands in, so
//! a changed repository still gets a new snapshot.

use hf_protocol::encode;
use serde::Deserialize;
use tuner_sdk::source::http;
use tuner_sdk::source::*;

struct ModelScope;

const ENDPOINT: &str = "https://www.modelscope.cn";
const PAGE_SIZE: usize = 500;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Envelope<T> {
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
    data: Option<T>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Files {
    #[serde(default)]
    files: Vec<MsFile>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MsFile {
    path: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(rename = "Type", default)]
    kind: Option<String>,
    #[serde(default)]
    revision: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DatasetInfo {
    id: serde_json::Value,
}

impl SourcePlugin for ModelScope {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(
            Source,
            "ModelScope hub: models and datasets",
            ["modelscope.cn", "*.modelscope.cn", "modelscope.ai", "*.modelscope.ai"]
        )
    }

    fn default_endpoint() -> String {
        ENDPOINT.into()
    }

    fn resolve(req: ResolveRequest) -> Result<Listing, SourceError> {
        let endpoint = req.endpoint.clone().unwrap_or_else(|| ENDPOINT.into());
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let revision = req.revision.clone().unwrap_or_else(|| "master".into());
        let cookie = req.token.as_ref().map(|t| format!("m_session_id={t}"));
        let headers: Vec<(&str, &str)> = cookie
            .as_deref()
            .map(|c| vec![("cookie", c)])
            .unwrap_or_default();
        let rev = encode(&revision);
        let (files, file_url): (Vec<MsFile>, Box<dyn Fn(&str) -> String>) = match req.kind {
            RepoKind::Model => {
                let url = format!(
                    "{endpoint}/api/v1/models/{}/repo/files?Revision={rev}&Recursive=True",
                    req.repo
                );
                let files = get_data::<Files>(&url, &headers)?.files;
                let (ep, repo, rev) = (endpoint.clone(), req.repo.clone(), rev.clone());
                (
                    files,
                    Box::new(move |p: &str| {
                        format!("{ep}/api/v1/models/{repo}/repo?Revision={rev}&FilePath={}", encode(p))
                    }),
                )
            }
            RepoKind::Dataset => {
                let info: DatasetInfo =
                    get_data(&format!("{endpoint}/api/v1/datasets/{}", req.repo), &headers)?;
                let id = match info.id {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                let mut files = Vec::new();
                for page in 1.. {
                    let url = format!(
                        "{endpoint}/api/v1/datasets/{id}/repo/tree?Revision={rev}&Root=%2F\
                         &Recursive=True&PageNumber={page}&PageSize={PAGE_SIZE}"
                    );
                    let batch = get_data::<Files>(&url, &headers)?.files;
                    let n = batch.len();
                    files.extend(batch);
                    if n < PAGE_SIZE || page > 1000 {
                        break;
                    }
                }
                let (ep, repo, rev) = (endpoint.clone(), req.repo.clone(), rev.clone());
                (
                    files,
                    Box::new(move |p: &str| {
                        format!(
                            "{ep}/api/v1/datasets/{repo}/repo?Source=SDK&Revision={rev}&FilePath={}",
                            encode(p)
                        )
                    }),
                )
            }
        };
        let files: Vec<MsFile> = files
            .into_iter()
            .filter(|f| f.kind.as_deref().is_none_or(|k| k == "blob" || k == "file"))
            .collect();
        let commit = commit_of(&files, &revision);
        let file_headers: Vec<(String, String)> = cookie
            .iter()
            .map(|c| ("cookie".to_string(), c.clone()))
            .collect();
        let files = files
            .into_iter()
            .map(|f| RemoteFile {
                url: file_url(&f.path),
                sha256: f.sha256.filter(|s| s.len() == 64).map(|s| s.to_ascii_lowercase()),
                size: f.size,
                path: f.path,
                headers: file_headers.clone(),
            })
            .collect();
        Ok(Listing {
            repo: req.repo,
            revision,
            commit,
            files,
        })
    }
}

/// The commit the listing is at (see the module comment).
fn commit_of(files: &[MsFile], revision: &str) -> String {
    let mut revs = files.iter().filter_map(|f| f.revision.as_deref());
    if let Some(first) = revs.next() {
        let looks_like_commit = first.len() >= 7 && first.bytes().all(|b| b.is_ascii_hexdigit());
        if looks_like_commit && first != revision && revs.all(|r| r == first) {
            return first.to_ascii_lowercase();
        }
    }
    if revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit()) {
        return revision.to_ascii_lowercase();
    }
    // FNV-1a over the sorted (path, size, sha256) list, twice with different
    // seeds, as 40 hex digits: stable for an unchanged repository.
    let mut entries: Vec<String> = files
        .iter()
        .map(|f| format!("{}\0{:?}\0{:?}", f.path, f.size, f.sha256))
        .collect();
    entries.sort();
    let text = entries.join("\n");
    let mut out = String::new();
    for seed in [0xcbf29ce484222325u64, 0x84222325cbf29ce4, 0x1234_5678_9abc_def0] {
        let mut h = seed;
        for b in text.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        out.push_str(&format!("{h:016x}"));
    }
    out.truncate(40);
    out
}

fn get_data<T: for<'de> Deserialize<'de>>(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<T, SourceError> {
    let resp =
        http::get(url, headers).map_err(|e| SourceError::Unavailable(format!("{url}: {e:?}")))?;
    match resp.status {
        200 => {}
        401 | 403 => {
            return Err(SourceError::Unauthorized(format!(
                "{url}: HTTP {} (set MODELSCOPE_API_TOKEN for private repositories)",
                resp.status
            )));
        }
        404 => return Err(SourceError::NotFound(format!("{url}: HTTP 404"))),
        s => return Err(SourceError::Unavailable(format!("{url}: HTTP {s}"))),
    }
    let env: Envelope<T> = serde_json::from_slice(&resp.body)
        .map_err(|e| SourceError::InvalidResponse(format!("{url}: {e}")))?;
    let ok = match &env.code {
        None => true,
        Some(serde_json::Value::Number(n)) => n.as_i64() == Some(200) || n.as_i64() == Some(0),
        Some(serde_json::Value::String(s)) => s == "200" || s == "0",
        Some(_) => true,
    };
    match env.data {
        Some(data) if ok => Ok(data),
        _ => Err(SourceError::NotFound(format!(
            "{url}: {}",
            env.message.unwrap_or_else(|| "no data in the answer".into())
        ))),
    }
}

tuner_sdk::export_plugin!(source: ModelScope);
