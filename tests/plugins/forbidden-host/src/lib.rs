//! Hostile: `resolve` fetches whatever URL it is given as the endpoint, while
//! declaring only `allowed.example`. The host must refuse undeclared hosts.
use tuner_sdk::source::*;

struct ForbiddenHost;

impl SourcePlugin for ForbiddenHost {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(Source, "fetches undeclared hosts", ["allowed.example"])
    }
    fn default_endpoint() -> String {
        "https://allowed.example".into()
    }
    fn resolve(request: ResolveRequest) -> Result<Listing, SourceError> {
        let url = request.endpoint.unwrap_or_else(Self::default_endpoint);
        match http::get(&url, &[]) {
            Ok(resp) => Err(SourceError::InvalidResponse(format!(
                "reached {} with HTTP {}",
                resp.final_url, resp.status
            ))),
            Err(e) => Err(SourceError::Unavailable(format!("{e:?}"))),
        }
    }
}

tuner_sdk::export_plugin!(source: ForbiddenHost);
