//! QLoRA: LoRA adapters over a quantised frozen base.
//!
//! The base is stored in NF4 (4-bit NormalFloat, block size 64, double
//! quantised scales), or 8-bit with `load_in_8bit = true`. The adapter keys
//! are those of `lora` (`lora_rank`, `lora_alpha`, `lora_dropout`,
//! `target_modules`, `use_rslora`). `load_in_4bit = false` is accepted and
//! changes nothing: quantising the base is what this method is. Loss: the
//! mean token NLL over the trained tokens.

use method_common::{Config, adapter_plan, adapter_spec, requested_quantization, supervised_loss};
use tuner_sdk::method::*;

struct Qlora;

impl MethodPlugin for Qlora {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(
            Method,
            "QLoRA: LoRA adapters over an NF4 (or 8-bit) quantised base"
        )
    }

    fn configure(config: &str) -> Result<Plan, PluginError> {
        let config = Config::parse(config)?;
        let adapter = adapter_spec(&config)?;
        let quantization = requested_quantization(&config)?.unwrap_or(Quantization::Nf4);
        Ok(adapter_plan(adapter, quantization))
    }

    fn loss(batch: &Batch, policy: &Policy, _step: u64) -> Result<Tensor, PluginError> {
        supervised_loss(batch, policy)
    }
}

tuner_sdk::export_plugin!(method: Qlora);
