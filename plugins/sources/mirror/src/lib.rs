//! A Hugging Face protocol mirror. The default is the public hf-mirror.com;
//! the endpoint the user configures (`endpoints.mirror` in config.toml or
//! `TUNER_MIRROR_ENDPOINT`) is passed by the host, which also grants its host.
//! Mirrors often drop `X-Repo-Commit`, `Content-Range` or `Content-Length`:
//! the host's download manager tolerates that.

use tuner_sdk::source::*;

struct Mirror;

const ENDPOINT: &str = "https://hf-mirror.com";

impl SourcePlugin for Mirror {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(
            Source,
            "A Hugging Face protocol mirror",
            ["hf-mirror.com", "*.hf-mirror.com"]
        )
    }

    fn default_endpoint() -> String {
        ENDPOINT.into()
    }

    fn resolve(req: ResolveRequest) -> Result<Listing, SourceError> {
        hf_protocol::resolve(req, ENDPOINT)
    }
}

tuner_sdk::export_plugin!(source: Mirror);
