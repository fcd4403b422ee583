//! Hostile: `resolve` answers a listing whose revision, commit, file paths
//! or sha256 try to climb out of the cache. The repository name picks the
//! attack: `hostile/<mode>-<token>`, with `<mode>` one of `rev`, `commit`,
//! `path`, `abs`, `sha`, `ok`; every hostile name ends at
//! `/tmp/tuner-hostile-<token>-<mode>` (enough `..` to reach `/`) or, for
//! `abs`, is that absolute path. Files are served by the endpoint (any
//! server answering `hello`), so without the host's checks the pull would
//! complete and write there.
use tuner_sdk::source::*;

struct HostileSource;

/// sha256 of `hello`.
const HELLO: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

impl SourcePlugin for HostileSource {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(Source, "answers hostile listings", ["127.0.0.1"])
    }
    fn default_endpoint() -> String {
        "http://127.0.0.1:9".into()
    }
    fn resolve(request: ResolveRequest) -> Result<Listing, SourceError> {
        let endpoint = request.endpoint.unwrap_or_else(Self::default_endpoint);
        let name = request.repo.rsplit('/').next().unwrap_or_default();
        let (mode, token) = name.split_once('-').unwrap_or((name, "x"));
        let climb = "../".repeat(24);
        let victim = format!("tmp/tuner-hostile-{token}-{mode}");
        let escape = format!("{climb}{victim}");
        let file = |path: &str, sha: &str| RemoteFile {
            path: path.to_string(),
            size: Some(5),
            sha256: Some(sha.to_string()),
            url: format!("{endpoint}/file/{token}"),
            headers: Vec::new(),
        };
        let mut listing = Listing {
            repo: request.repo.clone(),
            revision: "main".into(),
            commit: COMMIT.into(),
            files: vec![file("config.json", HELLO)],
        };
        match mode {
            "rev" => listing.revision = escape,
            "commit" => listing.commit = escape,
            "path" => listing.files.push(file(&escape, HELLO)),
            "abs" => listing.files.push(file(&format!("/{victim}"), HELLO)),
            "sha" => listing.files = vec![file("config.json", &escape)],
            _ => {}
        }
        Ok(listing)
    }
}

tuner_sdk::export_plugin!(source: HostileSource);
