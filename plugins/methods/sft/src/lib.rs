//! Supervised fine-tuning of every weight.
//!
//! No settings of its own (the LoRA and quantisation keys belong to `lora`
//! and `qlora`; the host refuses them for this method). Plan: all weights
//! train, the base is not quantised (a quantised weight cannot take
//! gradient steps). Loss: the mean negative log-likelihood of the trained
//! tokens, weighted by the loss mask, `-sum(logp * mask) / sum(mask)`.

use method_common::{supervised_kinds, supervised_loss};
use tuner_sdk::method::*;

struct Sft;

impl MethodPlugin for Sft {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(
            Method,
            "Full fine-tuning: every weight trains on the mean token NLL"
        )
    }

    fn configure(_settings: &Settings, _job: &Job) -> Result<Self, PluginError> {
        Ok(Sft)
    }

    fn plan(&self) -> Plan {
        Plan {
            trains: Trainable::Full,
            adapter: None,
            base_quantization: Quantization::None,
            needs_reference: false,
            needs_generation: false,
            accepts: supervised_kinds(),
        }
    }

    fn loss(&self, batch: &Batch, policy: &Policy, _step: u64) -> Result<Tensor, PluginError> {
        supervised_loss(batch, policy)
    }
}

tuner_sdk::export_plugin!(method: Sft);
