//! The Hugging Face hub (`HF_ENDPOINT` is honoured: the host passes it as the
//! request's endpoint and grants its host). Protocol in `hf-protocol`.

use tuner_sdk::source::*;

struct HuggingFace;

const ENDPOINT: &str = "https://huggingface.co";

impl SourcePlugin for HuggingFace {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(
            Source,
            "Hugging Face hub: models and datasets",
            ["huggingface.co", "*.huggingface.co", "*.hf.co"]
        )
    }

    fn default_endpoint() -> String {
        ENDPOINT.into()
    }

    fn resolve(req: ResolveRequest) -> Result<Listing, SourceError> {
        hf_protocol::resolve(req, ENDPOINT)
    }
}

tuner_sdk::export_plugin!(source: HuggingFace);
