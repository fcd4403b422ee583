//! LoRA: low-rank adapters on a frozen base.
//!
//! Keys: `lora_rank` (default 8), `lora_alpha` (default 32, as in ms-swift),
//! `lora_dropout` (0.05), `target_modules` (`all-linear`, or module names
//! such as `["q_proj", "v_proj"]`), `use_rslora` (false). With
//! `load_in_4bit` or `load_in_8bit` the frozen base is quantised, which is
//! QLoRA (the `qlora` method does that by default). Loss: the mean token NLL
//! over the trained tokens.

use method_common::{Config, adapter_plan, adapter_spec, requested_quantization, supervised_loss};
use tuner_sdk::method::*;

struct Lora;

impl MethodPlugin for Lora {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(
            Method,
            "LoRA: low-rank adapters train; the base stays frozen"
        )
    }

    fn configure(config: &str) -> Result<Plan, PluginError> {
        let config = Config::parse(config)?;
        let adapter = adapter_spec(&config)?;
        let quantization = requested_quantization(&config)?.unwrap_or(Quantization::None);
        Ok(adapter_plan(adapter, quantization))
    }

    fn loss(batch: &Batch, policy: &Policy, _step: u64) -> Result<Tensor, PluginError> {
        supervised_loss(batch, policy)
    }
}

tuner_sdk::export_plugin!(method: Lora);
