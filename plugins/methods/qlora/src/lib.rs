//! QLoRA: LoRA adapters over a quantised frozen base.
//!
//! The base is stored in NF4 (4-bit NormalFloat, block size 64, double
//! quantised scales), or 8-bit with `load_in_8bit = true`. The adapter
//! settings are those of `lora` (`lora_rank`, `lora_alpha`, `lora_dropout`,
//! `target_modules`, `use_rslora`), declared in `method-common`;
//! `load_in_4bit` defaults to true here. `load_in_4bit = false` is accepted
//! and changes nothing: quantising the base is what this method is. Loss:
//! the mean token NLL over the trained tokens.

use method_common::{adapter_plan, adapter_spec, lora_settings, supervised_loss};
use tuner_sdk::method::*;

struct Qlora {
    plan: Plan,
}

impl MethodPlugin for Qlora {
    fn info() -> PluginInfo {
        tuner_sdk::plugin_info!(
            Method,
            "QLoRA: LoRA adapters over an NF4 (or 8-bit) quantised base"
        )
    }

    fn settings() -> Vec<Setting> {
        lora_settings(true)
    }

    fn configure(settings: &Settings, _job: &Job) -> Result<Self, PluginError> {
        let adapter = adapter_spec(settings)?;
        // `load_in_4bit` is true by default, so it cannot tell "asked for"
        // from "left alone": 8-bit, when asked for, wins; otherwise NF4.
        let quantization = if settings.bool("load_in_8bit").unwrap_or(false) {
            Quantization::Int8
        } else {
            Quantization::Nf4
        };
        Ok(Qlora {
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

tuner_sdk::export_plugin!(method: Qlora);
