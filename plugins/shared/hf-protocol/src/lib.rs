//! The Hugging Face hub protocol, as spoken by huggingface.co and by
//! HF-protocol mirrors.
//!
//! `resolve` asks `{endpoint}/api/{models|datasets}/{repo}/revision/{rev}`
//! for the commit, then the recursive tree at that commit for sizes and LFS
//! SHA-256 hashes (following `Link: rel="next"` pages), and returns
//! `resolve/{commit}/{path}` URLs. Mirrors that do not serve the tree API
//! still work: the revision answer's `siblings` give the paths (sizes and
//! hashes then unknown; the host verifies what it can).

use serde::Deserialize;
use tuner_sdk::source::http;
use tuner_sdk::source::*;

#[derive(Deserialize)]
struct RevisionInfo {
    sha: String,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
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

/// Resolves `req` against `endpoint` (the request's, or `default_endpoint`).
pub fn resolve(req: ResolveRequest, default_endpoint: &str) -> Result<Listing, SourceError> {
    let endpoint = req
        .endpoint
        .clone()
        .unwrap_or_else(|| default_endpoint.to_string());
    let endpoint = endpoint.trim_end_matches('/');
    let revision = req.revision.clone().unwrap_or_else(|| "main".into());
    let (api, prefix) = match req.kind {
        RepoKind::Model => ("models", ""),
        RepoKind::Dataset => ("datasets", "datasets/"),
    };
    let auth = req.token.as_ref().map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();

    let (info, _) = get_json::<RevisionInfo>(
        &format!(
            "{endpoint}/api/{api}/{}/revision/{}",
            req.repo,
            encode(&revision)
        ),
        &headers,
    )?;
    let mut entries: Vec<TreeEntry> = Vec::new();
    let mut next = Some(format!(
        "{endpoint}/api/{api}/{}/tree/{}?recursive=true",
        req.repo, info.sha
    ));
    let mut tree_ok = true;
    while let Some(url) = next.take() {
        match get_json::<Vec<TreeEntry>>(&url, &headers) {
            Ok((page, link)) => {
                entries.extend(page);
                next = link.and_then(|l| next_link(&l));
            }
            // A mirror without the tree API: fall back to the sibling list.
            Err(SourceError::NotFound(_)) if entries.is_empty() && !info.siblings.is_empty() => {
                tree_ok = false;
            }
            Err(e) => return Err(e),
        }
    }
    let file_headers: Vec<(String, String)> = auth
        .iter()
        .map(|a| ("authorization".to_string(), a.clone()))
        .collect();
    let url = |path: &str| {
        format!(
            "{endpoint}/{prefix}{}/resolve/{}/{}",
            req.repo,
            info.sha,
            path.split('/').map(encode).collect::<Vec<_>>().join("/")
        )
    };
    let files = if tree_ok {
        entries
            .into_iter()
            .filter(|e| e.kind == "file")
            .map(|e| RemoteFile {
                url: url(&e.path),
                sha256: e
                    .lfs
                    .map(|l| l.oid.trim_start_matches("sha256:").to_ascii_lowercase()),
                size: e.size,
                path: e.path,
                headers: file_headers.clone(),
            })
            .collect()
    } else {
        info.siblings
            .iter()
            .map(|s| RemoteFile {
                url: url(&s.rfilename),
                sha256: None,
                size: None,
                path: s.rfilename.clone(),
                headers: file_headers.clone(),
            })
            .collect()
    };
    Ok(Listing {
        repo: req.repo,
        revision,
        commit: info.sha,
        files,
    })
}

/// Percent-encodes one path segment (or a revision such as `refs/pr/1`).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .contains("rel=\"next\"")
            .then(|| url.trim().trim_start_matches('<').trim_end_matches('>').to_string())
    })
}

/// GETs JSON; returns the value and the `Link` header.
pub fn get_json<T: for<'de> Deserialize<'de>>(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(T, Option<String>), SourceError> {
    let resp =
        http::get(url, headers).map_err(|e| SourceError::Unavailable(format!("{url}: {e:?}")))?;
    match resp.status {
        200 => serde_json::from_slice(&resp.body)
            .map(|v| (v, resp.header("link").map(String::from)))
            .map_err(|e| SourceError::InvalidResponse(format!("{url}: {e}"))),
        401 | 403 => Err(SourceError::Unauthorized(format!(
            "{url}: HTTP {} (set HF_TOKEN for private or gated repositories)",
            resp.status
        ))),
        404 => Err(SourceError::NotFound(format!("{url}: HTTP 404"))),
        s => Err(SourceError::Unavailable(format!("{url}: HTTP {s}"))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn next_link_is_found() {
        assert_eq!(
            super::next_link("<https://h/api?cursor=x>; rel=\"next\"").as_deref(),
            Some("https://h/api?cursor=x")
        );
        assert_eq!(super::encode("refs/pr/1"), "refs%2Fpr%2F1");
    }
}
