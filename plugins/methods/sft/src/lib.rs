//! Supervised fine-tuning of all weights (preview).
//!
//! The loss is the mean negative log-likelihood of the trained tokens:
//! `-sum(logp * mask) / sum(mask)`. The host's training engine, which
//! provides `token-logprobs`, arrives with the training-engine work.

use serde_json::Value;
use tuner_sdk::method::*;

struct Sft;

impl MethodPlugin for Sft {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(Method, "Full-weight supervised fine-tuning (preview)")
    }

    fn configure(config: &str) -> Result<Plan, PluginError> {
        let config: Value = serde_json::from_str(config)
            .map_err(|e| PluginError::msg(format!("configuration is not JSON: {e}")))?;
        if !config.is_object() {
            return Err(PluginError::msg("configuration must be a JSON object"));
        }
        Ok(Plan {
            trains: Trainable::Full,
            adapter: None,
            base_quantization: Quantization::None,
            needs_reference: false,
            needs_generation: false,
            accepts: vec![BatchKind::Chat, BatchKind::Text],
        })
    }

    fn loss(batch: &Batch, policy: &Policy, _step: u64) -> Result<Tensor, PluginError> {
        let logprobs = policy.token_logprobs(batch, true)?;
        let mask = batch.loss_mask()?;
        let total = logprobs.mul(&mask)?.sum_all()?;
        let count = mask.sum_all()?.clamp(1.0, f64::MAX)?;
        Ok(total.div(&count)?.neg()?)
    }
}

tuner_sdk::export_plugin!(method: Sft);
