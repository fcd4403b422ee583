//! Supervised fine-tuning of every weight.
//!
//! Plan: all weights train, the base is not quantised (a quantised weight
//! cannot take gradient steps). Loss: the mean negative log-likelihood of
//! the trained tokens, weighted by the loss mask, `-sum(logp * mask) /
//! sum(mask)`.

use method_common::{Config, requested_quantization, supervised_kinds, supervised_loss};
use tuner_sdk::method::*;

struct Sft;

impl MethodPlugin for Sft {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(
            Method,
            "Full fine-tuning: every weight trains on the mean token NLL"
        )
    }

    fn configure(config: &str) -> Result<Plan, PluginError> {
        let config = Config::parse(config)?;
        if let Some(q) = requested_quantization(&config)? {
            let key = if q == Quantization::Nf4 {
                "load_in_4bit"
            } else {
                "load_in_8bit"
            };
            return Err(PluginError::field(
                key,
                "full fine-tuning trains every weight, which a quantised base cannot do; \
                 use training_method = \"qlora\" (or \"lora\") to train adapters on a quantised base",
            ));
        }
        Ok(Plan {
            trains: Trainable::Full,
            adapter: None,
            base_quantization: Quantization::None,
            needs_reference: false,
            needs_generation: false,
            accepts: supervised_kinds(),
        })
    }

    fn loss(batch: &Batch, policy: &Policy, _step: u64) -> Result<Tensor, PluginError> {
        supervised_loss(batch, policy)
    }
}

tuner_sdk::export_plugin!(method: Sft);
