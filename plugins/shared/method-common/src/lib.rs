//! What the bundled method plugins (`sft`, `lora`, `qlora`, `dpo`) share:
//! the LoRA settings schema (declared here only) and its reading, the
//! quantisation switches, the `finetuning_type` switch between adapters and
//! full fine-tuning ([`finetuning_type_setting`], [`trainable_plan`]), and
//! the supervised loss.
//!
//! The host checks the user's values against the schema (types, bounds) and
//! fills in the defaults before `configure`; what is left to check here is
//! what a schema cannot say (module names, exclusive switches).

use tuner_sdk::method::*;

/// LoRA defaults. `lora_alpha` follows ms-swift (32, independent of the
/// rank) rather than PEFT's 8, so configs written for ms-swift train the same.
pub const DEFAULT_RANK: i64 = 8;
pub const DEFAULT_ALPHA: f64 = 32.0;
pub const DEFAULT_DROPOUT: f64 = 0.05;
pub const ALL_LINEAR: &str = "all-linear";
/// Ranks above this are refused as a typo rather than allocated.
pub const MAX_RANK: i64 = 4096;

/// The settings of a LoRA method: the adapter shape, then the base
/// quantisation switches. `load_in_4bit` defaults to `four_bit_default`
/// (`true` for `qlora`).
pub fn lora_settings(four_bit_default: bool) -> Vec<Setting> {
    let four_bit = if four_bit_default {
        Setting::boolean("load_in_4bit", true)
            .describe("Store the frozen base in 4-bit NF4 (the default; load_in_8bit = true stores it in 8-bit instead)")
            .zh("以 4 位 NF4 存储冻结的基座权重（默认；设 load_in_8bit = true 则改用 8 位）")
    } else {
        Setting::boolean("load_in_4bit", false)
            .describe("Store the frozen base in 4-bit NF4, which makes this QLoRA")
            .zh("以 4 位 NF4 存储冻结的基座权重，即 QLoRA")
    };
    vec![
        Setting::integer("lora_rank", DEFAULT_RANK)
            .range(1, MAX_RANK as f64)
            .describe("Rank of the LoRA matrices")
            .zh("LoRA 矩阵的秩"),
        Setting::number("lora_alpha", DEFAULT_ALPHA)
            .above(0)
            .describe("LoRA scaling: adapter updates are scaled by lora_alpha / lora_rank")
            .zh("LoRA 缩放系数：适配器的更新按 lora_alpha / lora_rank 缩放"),
        Setting::number("lora_dropout", DEFAULT_DROPOUT)
            .min(0)
            .below(1)
            .describe("Dropout on the adapters' input during training")
            .zh("训练时适配器输入的 dropout 比例"),
        Setting::names("target_modules", &[ALL_LINEAR])
            .describe("Linear layers that get adapters: module names such as q_proj, v_proj, or all-linear")
            .zh("添加适配器的线性层：模块名（如 q_proj、v_proj），或 all-linear 表示全部线性层"),
        Setting::boolean("use_rslora", false)
            .describe("Rank-stabilised LoRA: scale by lora_alpha / sqrt(lora_rank) instead")
            .zh("秩稳定 LoRA：改为按 lora_alpha / sqrt(lora_rank) 缩放"),
        four_bit,
        Setting::boolean("load_in_8bit", false)
            .describe("Store the frozen base in 8-bit")
            .zh("以 8 位存储冻结的基座权重"),
    ]
}

/// The LoRA adapter from `lora_rank`, `lora_alpha`, `lora_dropout`,
/// `target_modules` and `use_rslora`.
pub fn adapter_spec(settings: &Settings) -> Result<AdapterSpec, PluginError> {
    let rank = settings.integer("lora_rank").unwrap_or(DEFAULT_RANK);
    let target_modules: Vec<String> = match settings.names("target_modules") {
        Some(names) => names.iter().map(|n| n.trim().to_string()).collect(),
        None => vec![ALL_LINEAR.to_string()],
    };
    if target_modules.is_empty() {
        return Err(PluginError::field("target_modules", "the list is empty"));
    }
    for name in &target_modules {
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !ok {
            return Err(PluginError::field(
                "target_modules",
                format!("`{name}` is not a module name (such as q_proj) or `{ALL_LINEAR}`"),
            ));
        }
    }
    if target_modules.len() > 1 && target_modules.iter().any(|m| m == ALL_LINEAR) {
        return Err(PluginError::field(
            "target_modules",
            format!("`{ALL_LINEAR}` already covers every linear layer; give it alone"),
        ));
    }
    Ok(AdapterSpec {
        rank: rank.clamp(1, MAX_RANK) as u32,
        alpha: settings.number("lora_alpha").unwrap_or(DEFAULT_ALPHA) as f32,
        dropout: settings.number("lora_dropout").unwrap_or(DEFAULT_DROPOUT) as f32,
        target_modules,
        rslora: settings.bool("use_rslora").unwrap_or(false),
    })
}

/// The base quantisation asked for by `load_in_4bit` / `load_in_8bit`, or
/// `None` when neither is set; both at once is refused.
pub fn requested_quantization(settings: &Settings) -> Result<Option<Quantization>, PluginError> {
    let four = settings.bool("load_in_4bit").unwrap_or(false);
    let eight = settings.bool("load_in_8bit").unwrap_or(false);
    match (four, eight) {
        (true, true) => Err(PluginError::field(
            "load_in_8bit",
            "load_in_4bit and load_in_8bit are both true; choose one",
        )),
        (true, false) => Ok(Some(Quantization::Nf4)),
        (false, true) => Ok(Some(Quantization::Int8)),
        (false, false) => Ok(None),
    }
}

/// Sample kinds the supervised methods train on.
pub fn supervised_kinds() -> Vec<BatchKind> {
    vec![BatchKind::Chat, BatchKind::Text]
}

/// A plan that trains adapters of `adapter` on a base stored as `quantization`.
pub fn adapter_plan(adapter: AdapterSpec, quantization: Quantization) -> Plan {
    Plan {
        trains: Trainable::Adapters,
        adapter: Some(adapter),
        base_quantization: quantization,
        needs_reference: false,
        needs_generation: false,
        accepts: supervised_kinds(),
    }
}

/// What trains in a method that offers both: LoRA adapters on a frozen base
/// (`lora`, QLoRA with `load_in_4bit`) or every weight (`full`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinetuningType {
    Lora,
    Full,
}

/// The `finetuning_type` setting (LLaMA-Factory's name): `lora` (the
/// default) or `full`. Declare it beside [`lora_settings`]; the LoRA keys
/// only apply to `lora`.
pub fn finetuning_type_setting() -> Setting {
    Setting::choice("finetuning_type", &["lora", "full"], "lora")
        .describe("What trains: lora (adapters on a frozen base; QLoRA with load_in_4bit) or full (every weight)")
        .zh("训练哪些权重：lora（冻结基座上的适配器；配合 load_in_4bit 即 QLoRA）或 full（全部权重）")
}

/// Reads `finetuning_type` (absent: `lora`).
pub fn finetuning_type(settings: &Settings) -> Result<FinetuningType, PluginError> {
    match settings.text("finetuning_type").unwrap_or("lora") {
        "lora" => Ok(FinetuningType::Lora),
        "full" => Ok(FinetuningType::Full),
        other => Err(PluginError::field(
            "finetuning_type",
            format!("`{other}` is not one of lora, full"),
        )),
    }
}

/// The plan of a method with a `finetuning_type` switch and the LoRA
/// settings: adapters of [`adapter_spec`] over a base quantised as asked
/// ([`requested_quantization`]), or every weight on an unquantised base
/// (a quantised weight cannot take gradient steps, so `load_in_4bit` /
/// `load_in_8bit` with `full` is refused, naming the switch).
pub fn trainable_plan(
    settings: &Settings,
    accepts: Vec<BatchKind>,
    needs_reference: bool,
) -> Result<Plan, PluginError> {
    let quantization = requested_quantization(settings)?;
    match finetuning_type(settings)? {
        FinetuningType::Lora => {
            let mut plan = adapter_plan(
                adapter_spec(settings)?,
                quantization.unwrap_or(Quantization::None),
            );
            plan.accepts = accepts;
            plan.needs_reference = needs_reference;
            Ok(plan)
        }
        FinetuningType::Full => {
            if let Some(q) = quantization {
                let field = match q {
                    Quantization::Int8 => "load_in_8bit",
                    _ => "load_in_4bit",
                };
                return Err(PluginError::field(
                    field,
                    "full fine-tuning trains every weight, which cannot be quantised; \
                     use finetuning_type = \"lora\" for QLoRA",
                ));
            }
            Ok(Plan {
                trains: Trainable::Full,
                adapter: None,
                base_quantization: Quantization::None,
                needs_reference,
                needs_generation: false,
                accepts,
            })
        }
    }
}

/// The supervised loss: mean negative log-likelihood of the trained tokens,
/// weighted by the loss mask, `-sum(logp * mask) / sum(mask)`.
pub fn supervised_loss(batch: &Batch, policy: &Policy) -> Result<Tensor, PluginError> {
    Ok(masked_nll(batch, policy)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults(four_bit_default: bool) -> Settings {
        let mut settings = Settings::new();
        for s in lora_settings(four_bit_default) {
            if let Some(v) = s.default {
                settings = settings.with(&s.name, v);
            }
        }
        settings
    }

    #[test]
    fn the_defaults_make_the_default_adapter() {
        let a = adapter_spec(&defaults(false)).unwrap();
        assert_eq!(
            (a.rank, a.alpha, a.dropout, a.rslora),
            (8, 32.0, 0.05, false)
        );
        assert_eq!(a.target_modules, [ALL_LINEAR]);
        assert_eq!(requested_quantization(&defaults(false)).unwrap(), None);
        assert!(matches!(
            requested_quantization(&defaults(true)).unwrap(),
            Some(Quantization::Nf4)
        ));
    }

    #[test]
    fn every_setting_is_described_in_both_languages() {
        for s in lora_settings(true)
            .into_iter()
            .chain([finetuning_type_setting()])
        {
            assert!(!s.description.is_empty(), "{}", s.name);
            assert!(s.description_zh.is_some(), "{}", s.name);
        }
    }

    #[test]
    fn finetuning_type_picks_adapters_or_every_weight() {
        let mut settings = defaults(false);
        settings = settings.with("finetuning_type", "lora");
        let lora = trainable_plan(&settings, vec![BatchKind::Preference], true).unwrap();
        assert!(matches!(lora.trains, Trainable::Adapters));
        assert!(lora.adapter.is_some() && lora.needs_reference);
        assert!(matches!(lora.accepts[..], [BatchKind::Preference]));
        let qlora =
            trainable_plan(&settings.clone().with("load_in_4bit", true), vec![], false).unwrap();
        assert!(matches!(qlora.base_quantization, Quantization::Nf4));

        let full = settings.with("finetuning_type", "full");
        let plan = trainable_plan(&full, vec![BatchKind::Preference], false).unwrap();
        assert!(matches!(plan.trains, Trainable::Full));
        assert!(plan.adapter.is_none() && !plan.needs_reference);
        let err = trainable_plan(&full.clone().with("load_in_8bit", true), vec![], true)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("`load_in_8bit`: full fine-tuning"), "{err}");
        let err = trainable_plan(&full.with("load_in_4bit", true), vec![], true)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("`load_in_4bit`: full fine-tuning"), "{err}");
    }

    #[test]
    fn module_names_are_checked() {
        let bad = |names: &[&str]| {
            adapter_spec(&defaults(false).with("target_modules", names))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(bad(&[]), "`target_modules`: the list is empty");
        assert_eq!(
            bad(&["q proj"]),
            "`target_modules`: `q proj` is not a module name (such as q_proj) or `all-linear`"
        );
        assert_eq!(
            bad(&["all-linear", "q_proj"]),
            "`target_modules`: `all-linear` already covers every linear layer; give it alone"
        );
        let both = defaults(false)
            .with("load_in_4bit", true)
            .with("load_in_8bit", true);
        assert_eq!(
            requested_quantization(&both).unwrap_err().to_string(),
            "`load_in_8bit`: load_in_4bit and load_in_8bit are both true; choose one"
        );
    }
}
