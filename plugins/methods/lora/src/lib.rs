//! LoRA: low-rank adapters on a frozen base.
//!
//! Settings (declared in `method-common`): `lora_rank` (default 8),
//! `lora_alpha` (default 32, as in ms-swift), `lora_dropout` (0.05),
//! `target_modules` (`all-linear`, or module names such as `q_proj`,
//! `v_proj`), `use_rslora` (false). With `load_in_4bit` or `load_in_8bit`
//! the frozen base is quantised, which is QLoRA (the `qlora` method does
//! that by default). Loss: the mean token NLL over the trained tokens.

use method_common::{
    adapter_plan, adapter_spec, lora_settings, requested_quantization, supervised_loss,
};
use tuner_sdk::method::*;

struct Lora {
    plan: Plan,
}

impl MethodPlugin for Lora {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(
            Method,
            "LoRA: low-rank adapters train; the base stays frozen"
        )
    }

    fn settings() -> Vec<Setting> {
        lora_settings(false)
    }

    fn configure(settings: &Settings, _job: &Job) -> Result<Self, PluginError> {
        let adapter = adapter_spec(settings)?;
        let quantization = requested_quantization(settings)?.unwrap_or(Quantization::None);
        Ok(Lora {
            plan: adapter_plan(adapter, quantization),
        })
    }

    fn plan(&self) -> Plan {
        self.plan.clone()
    }

    fn loss(&self, batch: &Batch, policy: &Policy, _step: u64) -> Result<Tensor, PluginError> {
        supervised_loss(batch, policy)
    }
}

tuner_sdk::export_plugin!(method: Lora);
