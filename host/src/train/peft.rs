//! Outputs the Python ecosystem loads unchanged: PEFT adapter folders and
//! merged Hugging Face model folders.
//!
//! * Adapter (`save_adapter` / `load_adapter`): `adapter_config.json` with
//!   PEFT's `LoraConfig` fields and `adapter_model.safetensors` with PEFT's
//!   tensor names, `base_model.model.{module}.lora_A.weight` `[r, in]` and
//!   `...lora_B.weight` `[out, r]`.
//! * Merge (`merge_linears`): `W += scale * B A` in place, adapters removed.
//! * Export (`export_merged_from`): a full HF folder — `config.json` and the
//!   tokenizer files copied from the source model, every source tensor
//!   written in its own dtype (merged where an adapter or a trained weight
//!   replaces it) into `model-0000i-of-0000N.safetensors` shards with
//!   `model.safetensors.index.json`. Tensors are written under the source's
//!   names only, so tied embeddings stay tied (no `lm_head.weight` appears
//!   that the source did not have). A quantised base is merged into the
//!   source's full-precision weight, not into its NF4 approximation.
//!
//! Every folder is written next to its destination and renamed into place,
//! so a crash leaves either the old folder or the new one.
//!
//! The functions take the model's linear layers (and, for full fine-tuning,
//! its trained variables by HF name) so they work on any model built from
//! [`Linear`]s; the `Qwen3` wrappers pass the model's own.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor, Var};

use crate::model::linear::{Linear, LinearBase};
use crate::model::lora::{
    ALL_LINEAR, Lora, LoraSpec, QWEN3_LINEARS, check_targets, matches_target, module_seed,
    peft_names, short_name,
};
use crate::model::qwen3::Qwen3;
use crate::text::TOKENIZER_FILES;

/// File name of the adapter configuration.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// File name of the adapter weights.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// Default shard size of merged exports (Hugging Face's `max_shard_size="5GB"`).
pub const DEFAULT_MAX_SHARD_BYTES: usize = 5_000_000_000;

/// Model files copied verbatim into a merged export when the source has them:
/// the model's configuration, then its [`TOKENIZER_FILES`].
pub const COPIED_FILES: [&str; 2 + TOKENIZER_FILES.len()] = {
    let mut files = [""; 2 + TOKENIZER_FILES.len()];
    files[0] = "config.json";
    files[1] = "generation_config.json";
    let mut i = 0;
    while i < TOKENIZER_FILES.len() {
        files[2 + i] = TOKENIZER_FILES[i];
        i += 1;
    }
    files
};

/// The short names of the adapted modules, in Qwen3's layer order then
/// alphabetical: what `target_modules` says in a saved config (PEFT too
/// saves the expanded list for `all-linear`).
fn adapted_short_names<'a>(linears: impl IntoIterator<Item = &'a Linear>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for lin in linears {
        if lin.lora.is_some() {
            let s = short_name(&lin.name).to_string();
            if !names.contains(&s) {
                names.push(s);
            }
        }
    }
    let rank = |s: &str| {
        QWEN3_LINEARS
            .iter()
            .position(|q| *q == s)
            .unwrap_or(usize::MAX)
    };
    names.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    names
}

/// `adapter_config.json` as PEFT writes it for a LoRA on a causal LM.
pub fn adapter_config_json(
    spec: &LoraSpec,
    target_modules: &[String],
    base_model_name_or_path: &str,
) -> serde_json::Value {
    // Integral alphas as integers, and the f32 dropout by its shortest
    // decimal (0.05, not 0.05000000074505806), as Python would write them.
    let alpha = if spec.alpha.fract() == 0.0 && spec.alpha.abs() < 1e15 {
        serde_json::Value::from(spec.alpha as i64)
    } else {
        serde_json::Value::from(spec.alpha)
    };
    let dropout: f64 = spec
        .dropout
        .to_string()
        .parse()
        .unwrap_or(spec.dropout as f64);
    let mut config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "revision": null,
        "r": spec.rank,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": target_modules,
        "use_rslora": spec.rslora,
        "use_dora": false,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
    });
    // PEFT writes the file with `sort_keys=True`.
    crate::fsio::sort_keys_deeply(&mut config);
    config
}

/// Writes the PEFT adapter folder `dir` (`adapter_config.json`,
/// `adapter_model.safetensors`) for the adapters of `model`.
pub fn save_adapter(
    model: &Qwen3,
    spec: &LoraSpec,
    base_model_name_or_path: &str,
    dir: &Path,
) -> Result<()> {
    save_adapter_from(model.linears(), spec, base_model_name_or_path, dir)
}

/// Attaches the adapters of the PEFT folder `dir` to `model`; returns its spec.
pub fn load_adapter(model: &mut Qwen3, dir: &Path) -> Result<LoraSpec> {
    load_adapter_into(model.linears_mut(), dir)
}

/// Folds the adapters of `model` into its base weights; returns how many.
pub fn merge_into(model: &mut Qwen3) -> Result<usize> {
    merge_linears(model.linears_mut())
}

/// Writes `model` merged (adapters folded in, trained weights in place of
/// the source's) as a full HF folder: see [`export_merged_from`].
pub fn export_merged(
    model: &Qwen3,
    source_model_dir: &Path,
    out_dir: &Path,
    max_shard_bytes: usize,
) -> Result<ExportSummary> {
    let trained = model.trainable_vars();
    export_merged_from(
        model.linears(),
        &trained,
        source_model_dir,
        out_dir,
        max_shard_bytes,
    )
}

/// `tuner export --merge`: the PEFT adapter folder `adapter_dir` merged
/// into the model folder `base_dir`, written as a full HF folder to
/// `out_dir`. The base is loaded in bf16 only for its layer shapes; the
/// merge itself starts from the source tensors in their own dtype.
pub fn export_merged_adapter(
    adapter_dir: &Path,
    base_dir: &Path,
    out_dir: &Path,
    max_shard_bytes: usize,
) -> Result<ExportSummary> {
    let opts = crate::model::qwen3::LoadOptions {
        dtype: DType::BF16,
        ..Default::default()
    };
    let mut model = Qwen3::load(base_dir, &Device::Cpu, &opts)
        .with_context(|| format!("loading the base model {}", base_dir.display()))?;
    load_adapter(&mut model, adapter_dir)?;
    export_merged(&model, base_dir, out_dir, max_shard_bytes)
}

/// The base model folder named by an adapter's `base_model_name_or_path`,
/// when that is a folder (relative paths are taken from the adapter folder's
/// parent, then the working directory).
pub fn adapter_base_dir(adapter_dir: &Path) -> Result<Option<PathBuf>> {
    let path = adapter_dir.join(ADAPTER_CONFIG);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let Some(base) = v.get("base_model_name_or_path").and_then(|b| b.as_str()) else {
        return Ok(None);
    };
    let candidates = [
        adapter_dir.parent().map(|p| p.join(base)),
        Some(PathBuf::from(base)),
    ];
    Ok(candidates
        .into_iter()
        .flatten()
        .find(|c| c.join("config.json").is_file()))
}

/// Parses a shard size such as `5GB`, `500MB`, `2GiB` or a byte count.
pub fn parse_size(text: &str) -> Result<usize> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .with_context(|| format!("size {text:?}: expected e.g. 5GB, 500MB or 1000000"))?;
    let mult: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KIB" => 1024.0,
        "MIB" => 1024.0 * 1024.0,
        "GIB" => 1024.0 * 1024.0 * 1024.0,
        other => bail!("size {text:?}: unknown unit {other:?} (B, KB, MB, GB, KiB, MiB, GiB)"),
    };
    let bytes = num * mult;
    if bytes < 1.0 {
        bail!("size {text:?} must be at least one byte");
    }
    Ok(bytes as usize)
}

/// Writes the PEFT adapter folder `dir` for the adapters on `linears`.
pub fn save_adapter_from<'a>(
    linears: impl IntoIterator<Item = &'a Linear> + Clone,
    spec: &LoraSpec,
    base_model_name_or_path: &str,
    dir: &Path,
) -> Result<()> {
    let targets = adapted_short_names(linears.clone());
    if targets.is_empty() {
        bail!(
            "saving an adapter to {}: the model has no LoRA adapters",
            dir.display()
        );
    }
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for lin in linears {
        if let Some(lora) = &lin.lora {
            let (a, b) = peft_names(&lin.name);
            tensors.push((a, lora.a.as_tensor().to_device(&Device::Cpu)?));
            tensors.push((b, lora.b.as_tensor().to_device(&Device::Cpu)?));
        }
    }
    let config = adapter_config_json(spec, &targets, base_model_name_or_path);
    write_folder_atomically(dir, |tmp| {
        write_safetensors(
            &tmp.join(ADAPTER_WEIGHTS),
            tensors.iter().map(|(n, t)| (n.as_str(), t)),
        )?;
        let text = serde_json::to_string_pretty(&config)?;
        fs::write(tmp.join(ADAPTER_CONFIG), text + "\n")
            .with_context(|| format!("writing {}", tmp.join(ADAPTER_CONFIG).display()))?;
        Ok(())
    })
}

/// Reads `adapter_config.json` of a PEFT LoRA folder.
pub fn read_adapter_config(dir: &Path) -> Result<LoraSpec> {
    let path = dir.join(ADAPTER_CONFIG);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let field = |k: &str| v.get(k).filter(|x| !x.is_null());
    let at = path.display();
    match field("peft_type").and_then(|t| t.as_str()) {
        Some("LORA") => {}
        other => bail!("{at}: peft_type is {other:?}, only \"LORA\" adapters are supported"),
    }
    let rank = field("r")
        .and_then(|r| r.as_u64())
        .with_context(|| format!("{at}: \"r\" must be a positive integer"))?
        as usize;
    let alpha = field("lora_alpha")
        .and_then(|a| a.as_f64())
        .with_context(|| format!("{at}: \"lora_alpha\" must be a number"))?;
    let dropout = field("lora_dropout")
        .and_then(|d| d.as_f64())
        .unwrap_or(0.0) as f32;
    let rslora = field("use_rslora")
        .and_then(|b| b.as_bool())
        .unwrap_or(false);
    let target_modules = match field("target_modules") {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|t| t.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .with_context(|| format!("{at}: \"target_modules\" must be a list of names"))?,
        Some(serde_json::Value::String(s)) if s == ALL_LINEAR => vec![ALL_LINEAR.to_string()],
        Some(serde_json::Value::String(s)) => {
            bail!(
                "{at}: \"target_modules\" is the regular expression {s:?}; only lists of names are supported"
            )
        }
        _ => bail!("{at}: \"target_modules\" is missing"),
    };
    if field("use_dora").and_then(|b| b.as_bool()) == Some(true) {
        bail!("{at}: DoRA adapters (\"use_dora\": true) are not supported");
    }
    if field("fan_in_fan_out").and_then(|b| b.as_bool()) == Some(true) {
        bail!("{at}: \"fan_in_fan_out\": true is not supported (Qwen3 has no Conv1D layers)");
    }
    for key in ["rank_pattern", "alpha_pattern"] {
        if field(key)
            .and_then(|p| p.as_object())
            .is_some_and(|o| !o.is_empty())
        {
            bail!("{at}: per-module \"{key}\" is not supported");
        }
    }
    if let Some(bias) = field("bias").and_then(|b| b.as_str())
        && bias != "none"
    {
        bail!("{at}: \"bias\": \"{bias}\" is not supported, only \"none\"");
    }
    if field("modules_to_save")
        .and_then(|m| m.as_array())
        .is_some_and(|m| !m.is_empty())
    {
        bail!("{at}: \"modules_to_save\" is not supported");
    }
    let spec = LoraSpec {
        rank,
        alpha,
        dropout,
        target_modules,
        rslora,
    };
    spec.validate().with_context(|| format!("{at}"))?;
    Ok(spec)
}

/// Attaches the adapters of the PEFT folder `dir` to `linears` (replacing
/// any present) and returns the folder's spec. Every tensor must belong to
/// a targeted module and have the module's shape; errors name the tensor.
pub fn load_adapter_into<'a>(
    linears: impl IntoIterator<Item = &'a mut Linear>,
    dir: &Path,
) -> Result<LoraSpec> {
    let mut linears: Vec<&mut Linear> = linears.into_iter().collect();
    let shapes: Vec<(String, (usize, usize))> = linears
        .iter()
        .map(|l| (l.name.clone(), l.shape()))
        .collect();
    let adapter = read_adapter(dir, &shapes)?;
    for lin in linears.iter_mut() {
        let Some(factors) = adapter.factors.get(&lin.name) else {
            continue;
        };
        let device = base_device(lin);
        let a = factors.a.to_dtype(DType::F32)?.to_device(&device)?;
        let b = factors.b.to_dtype(DType::F32)?.to_device(&device)?;
        lin.lora = Some(Lora::from_tensors(
            a,
            b,
            adapter.spec.scale(),
            adapter.spec.dropout,
            module_seed(0, &lin.name),
        )?);
    }
    Ok(adapter.spec)
}

/// The LoRA factors of one module as a PEFT folder stores them.
#[derive(Debug, Clone)]
pub struct AdapterFactors {
    /// `lora_A`: `[r, in_features]`.
    pub a: Tensor,
    /// `lora_B`: `[out_features, r]`.
    pub b: Tensor,
}

/// A PEFT adapter folder read and checked against a model's linears.
#[derive(Debug, Clone)]
pub struct AdapterTensors {
    pub spec: LoraSpec,
    /// By HF module path (`model.layers.0.self_attn.q_proj`), on the CPU in
    /// the stored dtype.
    pub factors: HashMap<String, AdapterFactors>,
}

/// Reads the PEFT folder `dir` for a model whose linears are `modules`
/// (HF module path, `(out_features, in_features)`). Every targeted module
/// must have both factors with matching shapes, and every tensor must
/// belong to a targeted module; errors name the file and the tensor.
pub fn read_adapter(dir: &Path, modules: &[(String, (usize, usize))]) -> Result<AdapterTensors> {
    let spec = read_adapter_config(dir)?;
    let path = dir.join(ADAPTER_WEIGHTS);
    if !path.is_file() {
        bail!("{} is missing", path.display());
    }
    let mut tensors: HashMap<String, Tensor> = candle_core::safetensors::load(&path, &Device::Cpu)
        .with_context(|| format!("reading {}", path.display()))?
        .into_iter()
        // Some writers keep PEFT's adapter name in the key.
        .map(|(k, t)| {
            (
                k.replace(".lora_A.default.", ".lora_A.")
                    .replace(".lora_B.default.", ".lora_B."),
                t,
            )
        })
        .collect();
    check_targets(modules.iter().map(|(name, _)| name.as_str()), &spec)
        .with_context(|| format!("{}", dir.join(ADAPTER_CONFIG).display()))?;
    let at = path.display();
    let mut factors = HashMap::new();
    for (name, (out_f, in_f)) in modules.iter().filter(|(n, _)| matches_target(&spec, n)) {
        let (out_f, in_f) = (*out_f, *in_f);
        let (ka, kb) = peft_names(name);
        let a = tensors
            .remove(&ka)
            .with_context(|| format!("{at} has no tensor {ka}"))?;
        let b = tensors
            .remove(&kb)
            .with_context(|| format!("{at} has no tensor {kb}"))?;
        if a.dims() != [spec.rank, in_f] {
            bail!(
                "{at}: {ka} has shape {:?}, expected [{}, {in_f}] (r, in_features)",
                a.dims(),
                spec.rank
            );
        }
        if b.dims() != [out_f, spec.rank] {
            bail!(
                "{at}: {kb} has shape {:?}, expected [{out_f}, {}] (out_features, r)",
                b.dims(),
                spec.rank
            );
        }
        factors.insert(name.clone(), AdapterFactors { a, b });
    }
    if let Some(extra) = tensors.keys().min() {
        bail!("{at}: tensor {extra} belongs to no targeted linear layer of the model");
    }
    Ok(AdapterTensors { spec, factors })
}

fn base_device(lin: &Linear) -> Device {
    match &lin.base {
        LinearBase::Trainable(w) => w.device().clone(),
        LinearBase::Frozen(w) => w.device().clone(),
        LinearBase::Quantized(q) => q.device().clone(),
    }
}

/// `W + scale * B A` in `W`'s dtype, computed in f32.
fn merged_weight(w: &Tensor, lora: &Lora) -> Result<Tensor> {
    let delta = lora.delta_weight()?.to_device(w.device())?;
    Ok((w.to_dtype(DType::F32)? + delta)?.to_dtype(w.dtype())?)
}

/// Folds every adapter into its base weight and removes it; returns how
/// many were merged. A trainable base is updated in place; a frozen one is
/// replaced; a quantised one becomes a dense frozen weight (its dequantised
/// values plus the delta) rather than being quantised again.
pub fn merge_linears<'a>(linears: impl IntoIterator<Item = &'a mut Linear>) -> Result<usize> {
    let mut count = 0;
    for lin in linears {
        let Some(lora) = lin.lora.take() else {
            continue;
        };
        match &lin.base {
            LinearBase::Trainable(var) => {
                let merged = merged_weight(var.as_tensor(), &lora)?;
                var.set(&merged)
                    .with_context(|| format!("merging into {}", lin.name))?;
            }
            LinearBase::Frozen(w) => {
                lin.base = LinearBase::Frozen(merged_weight(w, &lora)?);
            }
            LinearBase::Quantized(q) => {
                lin.base = LinearBase::Frozen(merged_weight(&q.dequantize()?, &lora)?);
            }
        }
        count += 1;
    }
    Ok(count)
}

/// What [`export_merged_from`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// Shard file names, in order.
    pub shards: Vec<String>,
    /// Bytes of tensor data (the index's `metadata.total_size`).
    pub total_size: usize,
    /// Tensors written.
    pub tensors: usize,
    /// Tensors that differ from the source (merged adapters, trained weights).
    pub replaced: usize,
    /// Non-weight files copied from the source.
    pub copied: Vec<String>,
}

/// The safetensors files of a model folder: the index's shards, or
/// `model.safetensors`.
fn source_weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text =
            fs::read_to_string(&index).with_context(|| format!("reading {}", index.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", index.display()))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .with_context(|| format!("{}: expected a \"weight_map\" object", index.display()))?;
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(|f| f.as_str())
            .map(|f| dir.join(f))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    bail!(
        "no weights in {}: expected model.safetensors or model.safetensors.index.json",
        dir.display()
    )
}

/// Writes the merged model to `out_dir` (created, or updated in place: an
/// output directory may also hold checkpoints, which are left alone; weight
/// files of an earlier export that the new one does not use are removed):
/// the weights of `source_dir` with each adapter of `linears` merged into its
/// base, and each of `trained` (full fine-tuning: HF tensor names, with or
/// without the `.weight` suffix) replacing the source tensor of that name.
pub fn export_merged_from<'a>(
    linears: impl IntoIterator<Item = &'a Linear>,
    trained: &[(String, Var)],
    source_dir: &Path,
    out_dir: &Path,
    max_shard_bytes: usize,
) -> Result<ExportSummary> {
    if !source_dir.join("config.json").is_file() {
        bail!("{} has no config.json", source_dir.display());
    }
    let files = source_weight_files(source_dir)?;
    // SAFETY: read-only maps of model files nobody writes while exporting.
    let st = unsafe { MmapedSafetensors::multi(&files) }
        .with_context(|| format!("memory-mapping the weights of {}", source_dir.display()))?;
    let mut names: Vec<String> = st.tensors().into_iter().map(|(n, _)| n).collect();
    names.sort();

    let linears: HashMap<String, &Linear> = linears
        .into_iter()
        .map(|l| (format!("{}.weight", l.name), l))
        .collect();
    let trained: HashMap<&str, &Var> = trained.iter().map(|(n, v)| (n.as_str(), v)).collect();
    let trained_for = |name: &str| {
        trained
            .get(name)
            .or_else(|| name.strip_suffix(".weight").and_then(|n| trained.get(n)))
            .copied()
    };
    for (name, lin) in &linears {
        if lin.lora.is_some() && !names.contains(name) {
            bail!(
                "{name} (adapted) is not in the weights of {}",
                source_dir.display()
            );
        }
    }

    let mut summary = ExportSummary {
        shards: Vec::new(),
        total_size: 0,
        tensors: 0,
        replaced: 0,
        copied: Vec::new(),
    };
    let mut weight_map: BTreeMap<String, usize> = BTreeMap::new();
    write_folder_atomically(out_dir, |tmp| {
        let mut shard: Vec<(String, Tensor)> = Vec::new();
        let mut shard_bytes = 0usize;
        let mut shard_paths: Vec<PathBuf> = Vec::new();
        let flush = |shard: &mut Vec<(String, Tensor)>, paths: &mut Vec<PathBuf>| -> Result<()> {
            let path = tmp.join(format!("shard-{}.partial", paths.len()));
            write_safetensors(&path, shard.iter().map(|(n, t)| (n.as_str(), t)))?;
            paths.push(path);
            shard.clear();
            Ok(())
        };
        for name in &names {
            let source = st
                .load(name, &Device::Cpu)
                .with_context(|| format!("loading {name} from {}", source_dir.display()))?;
            let lin = linears.get(name);
            let base = match (trained_for(name), lin.and_then(|l| l.trainable_var())) {
                (Some(v), _) | (None, Some(v)) => Some(v.as_tensor().detach()),
                (None, None) => None,
            };
            let lora = lin.and_then(|l| l.lora.as_ref());
            let tensor = match (base, lora) {
                (None, None) => source,
                (base, lora) => {
                    let w = base.unwrap_or(source.clone());
                    if w.dims() != source.dims() {
                        bail!(
                            "{name}: the model has shape {:?}, the source {:?}",
                            w.dims(),
                            source.dims()
                        );
                    }
                    let w = w.to_device(&Device::Cpu)?.to_dtype(source.dtype())?;
                    summary.replaced += 1;
                    match lora {
                        Some(l) => merged_weight(&w, l)?,
                        None => w,
                    }
                }
            };
            let bytes = tensor.elem_count() * tensor.dtype().size_in_bytes();
            if !shard.is_empty() && shard_bytes + bytes > max_shard_bytes {
                flush(&mut shard, &mut shard_paths)?;
                shard_bytes = 0;
            }
            weight_map.insert(name.clone(), shard_paths.len());
            shard_bytes += bytes;
            summary.total_size += bytes;
            summary.tensors += 1;
            shard.push((name.clone(), tensor));
        }
        if !shard.is_empty() {
            flush(&mut shard, &mut shard_paths)?;
        }
        let n = shard_paths.len();
        for (i, path) in shard_paths.iter().enumerate() {
            let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, n);
            fs::rename(path, tmp.join(&file)).with_context(|| format!("naming shard {file}"))?;
            summary.shards.push(file);
        }
        let index = serde_json::json!({
            "metadata": { "total_size": summary.total_size },
            "weight_map": weight_map
                .iter()
                .map(|(k, i)| (k.clone(), serde_json::Value::from(summary.shards[*i].clone())))
                .collect::<serde_json::Map<_, _>>(),
        });
        let index_path = tmp.join("model.safetensors.index.json");
        fs::write(&index_path, serde_json::to_string_pretty(&index)? + "\n")
            .with_context(|| format!("writing {}", index_path.display()))?;
        for file in COPIED_FILES {
            let from = source_dir.join(file);
            if from.is_file() {
                fs::copy(&from, tmp.join(file))
                    .with_context(|| format!("copying {}", from.display()))?;
                summary.copied.push(file.to_string());
            }
        }
        Ok(())
    })?;
    remove_stale_weights(out_dir, &summary.shards)?;
    Ok(summary)
}

/// Removes `model.safetensors` and `model-*-of-*.safetensors` files in `dir`
/// that are not among `keep` (left by an earlier export with other shards).
fn remove_stale_weights(dir: &Path, keep: &[String]) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_weights = name == "model.safetensors"
            || (name.starts_with("model-")
                && name.contains("-of-")
                && name.ends_with(".safetensors"));
        if is_weights && !keep.contains(&name) {
            fs::remove_file(entry.path())
                .with_context(|| format!("removing stale {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Writes `tensors` to a safetensors file with `{"format": "pt"}` metadata
/// (transformers refuses files without a known format).
fn write_safetensors<'a>(
    path: &Path,
    tensors: impl Iterator<Item = (&'a str, &'a Tensor)>,
) -> Result<()> {
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let tensors: Vec<(&str, &Tensor)> = tensors.collect();
    safetensors::serialize_to_file(tensors, Some(metadata), path)
        .with_context(|| format!("writing {}", path.display()))
}

/// Builds a folder next to `dir` with `fill` and renames it into place.
///
/// When `dir` does not exist the swap is a single rename. When it exists
/// (e.g. an output directory that also holds checkpoints), only the files
/// `fill` wrote are moved in, each by rename, the config-like `.json` files
/// last so a reader never sees a config without its weights.
fn write_folder_atomically(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let base = dir.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = parent.join(format!(".{base}.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing stale {}", tmp.display()))?;
    }
    fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let result = fill(&tmp).and_then(|()| {
        for entry in fs::read_dir(&tmp)? {
            fs::File::open(entry?.path())?.sync_all()?;
        }
        let dir_is_empty = dir.is_dir() && fs::read_dir(dir)?.next().is_none();
        if dir_is_empty {
            fs::remove_dir(dir)?;
        }
        if !dir.exists() {
            fs::rename(&tmp, dir).with_context(|| format!("renaming into {}", dir.display()))?;
            return Ok(());
        }
        let mut files: Vec<PathBuf> = fs::read_dir(&tmp)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        files.sort_by_key(|p| (p.extension().is_some_and(|e| e == "json"), p.clone()));
        for f in files {
            let to = dir.join(f.file_name().expect("read_dir entries have names"));
            fs::rename(&f, &to).with_context(|| format!("renaming into {}", to.display()))?;
        }
        fs::remove_dir(&tmp)?;
        Ok(())
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::linear::Mode;
    use crate::model::lora::attach_lora;
    use crate::model::qwen3::{LoadOptions, ModelInput, Quant};

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/tiny-qwen3")
            .join(name)
    }

    fn spec(targets: &[&str]) -> LoraSpec {
        LoraSpec {
            rank: 4,
            alpha: 8.0,
            dropout: 0.05,
            target_modules: targets.iter().map(|s| s.to_string()).collect(),
            rslora: false,
        }
    }

    fn load(dir: &Path, quantization: Quant) -> Qwen3 {
        let opts = LoadOptions {
            quantization,
            ..LoadOptions::default()
        };
        Qwen3::load(dir, &Device::Cpu, &opts).unwrap()
    }

    /// The fixture with adapters whose B is non-zero (as after training).
    fn adapted(targets: &[&str], quantization: Quant) -> Qwen3 {
        let mut model = load(&fixture("tied"), quantization);
        attach_lora(&mut model, &spec(targets), 11).unwrap();
        for (i, lin) in model.linears().enumerate() {
            if let Some(lora) = &lin.lora {
                // Deterministic non-zero values.
                let n = lora.b.elem_count();
                let vals: Vec<f32> = (0..n)
                    .map(|k| ((k * 7 + i * 13) % 17) as f32 * 0.01 - 0.08)
                    .collect();
                lora.b
                    .set(&Tensor::from_vec(vals, lora.b.dims(), &Device::Cpu).unwrap())
                    .unwrap();
            }
        }
        model
    }

    fn logits(model: &Qwen3, mode: Mode) -> Vec<f32> {
        let input =
            ModelInput::from_rows(&[vec![1, 5, 9, 3, 7], vec![2, 4, 6]], &Device::Cpu).unwrap();
        model
            .forward(&input, mode)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
    }

    fn read_json(path: &Path) -> serde_json::Value {
        serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn adapter_names_and_shapes_follow_peft() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("adapter");
        let model = adapted(&["q_proj", "v_proj"], Quant::None);
        save_adapter(
            &model,
            &spec(&["q_proj", "v_proj"]),
            "Qwen/Qwen3-0.6B",
            &dir,
        )
        .unwrap();

        let config = read_json(&dir.join(ADAPTER_CONFIG));
        assert_eq!(config["peft_type"], "LORA");
        assert_eq!(config["task_type"], "CAUSAL_LM");
        assert_eq!(config["r"], 4);
        assert_eq!(config["lora_alpha"], 8);
        assert_eq!(config["lora_dropout"], 0.05);
        assert_eq!(
            config["target_modules"],
            serde_json::json!(["q_proj", "v_proj"])
        );
        assert_eq!(config["base_model_name_or_path"], "Qwen/Qwen3-0.6B");
        assert_eq!(config["use_rslora"], false);
        assert_eq!(config["bias"], "none");
        assert_eq!(config["fan_in_fan_out"], false);
        assert_eq!(config["inference_mode"], true);

        let tensors =
            candle_core::safetensors::load(dir.join(ADAPTER_WEIGHTS), &Device::Cpu).unwrap();
        let mut names: Vec<&String> = tensors.keys().collect();
        names.sort();
        let mut want = Vec::new();
        for layer in 0..2 {
            // hidden 16, 4 heads x 8 = 32 for q, 2 kv heads x 8 = 16 for v.
            for (m, out_f) in [("q_proj", 32), ("v_proj", 16)] {
                let p = format!("base_model.model.model.layers.{layer}.self_attn.{m}");
                assert_eq!(tensors[&format!("{p}.lora_A.weight")].dims(), &[4, 16]);
                assert_eq!(tensors[&format!("{p}.lora_B.weight")].dims(), &[out_f, 4]);
                want.push(format!("{p}.lora_A.weight"));
                want.push(format!("{p}.lora_B.weight"));
            }
        }
        want.sort();
        assert_eq!(names, want.iter().collect::<Vec<_>>());
        // transformers and PEFT insist on the format metadata.
        let bytes = fs::read(dir.join(ADAPTER_WEIGHTS)).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");

        // all-linear is saved expanded, as PEFT does; the mlp shapes follow.
        let all = adapted(&["all-linear"], Quant::None);
        let dir = tmp.path().join("all");
        save_adapter(&all, &spec(&["all-linear"]), "base", &dir).unwrap();
        assert_eq!(
            read_json(&dir.join(ADAPTER_CONFIG))["target_modules"],
            serde_json::json!(QWEN3_LINEARS)
        );
        let tensors =
            candle_core::safetensors::load(dir.join(ADAPTER_WEIGHTS), &Device::Cpu).unwrap();
        assert_eq!(tensors.len(), 2 * 7 * 2);
        assert_eq!(
            tensors["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"].dims(),
            &[4, 32]
        );
        assert_eq!(
            tensors["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"].dims(),
            &[16, 4]
        );
        assert!(!tensors.keys().any(|k| k.contains("lm_head")));
    }

    #[test]
    fn adapter_round_trips_and_bad_folders_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("adapter");
        let model = adapted(&["q_proj", "down_proj"], Quant::None);
        let s = LoraSpec {
            rslora: true,
            ..spec(&["q_proj", "down_proj"])
        };
        save_adapter(&model, &s, "base", &dir).unwrap();
        // Saving again over an existing folder replaces the files.
        save_adapter(&model, &s, "base", &dir).unwrap();

        let mut fresh = load(&fixture("tied"), Quant::None);
        let loaded = load_adapter(&mut fresh, &dir).unwrap();
        assert_eq!(loaded.rank, 4);
        assert!(loaded.rslora);
        assert_eq!(loaded.target_modules, vec!["q_proj", "down_proj"]);
        for (a, b) in model.linears().zip(fresh.linears()) {
            assert_eq!(a.lora.is_some(), b.lora.is_some(), "{}", a.name);
            if let (Some(x), Some(y)) = (&a.lora, &b.lora) {
                assert_eq!(
                    x.a.as_tensor().to_vec2::<f32>().unwrap(),
                    y.a.as_tensor().to_vec2::<f32>().unwrap()
                );
                assert_eq!(
                    x.b.as_tensor().to_vec2::<f32>().unwrap(),
                    y.b.as_tensor().to_vec2::<f32>().unwrap()
                );
                assert_eq!(y.scale, 8.0 / 2.0, "rsLoRA: alpha / sqrt(r)");
            }
        }

        // A rank that disagrees with the tensors: the tensor and shapes are named.
        let mut config = read_json(&dir.join(ADAPTER_CONFIG));
        config["r"] = 8.into();
        fs::write(dir.join(ADAPTER_CONFIG), config.to_string()).unwrap();
        let err = format!(
            "{:#}",
            load_adapter(&mut load(&fixture("tied"), Quant::None), &dir).unwrap_err()
        );
        assert!(
            err.contains("lora_A.weight has shape [4, 16], expected [8, 16]"),
            "{err}"
        );
        // A target the model lacks.
        config["r"] = 4.into();
        config["target_modules"] = serde_json::json!(["q_proj", "qkv_proj"]);
        fs::write(dir.join(ADAPTER_CONFIG), config.to_string()).unwrap();
        let err = format!(
            "{:#}",
            load_adapter(&mut load(&fixture("tied"), Quant::None), &dir).unwrap_err()
        );
        assert!(
            err.contains("\"qkv_proj\"") && err.contains("q_proj, k_proj"),
            "{err}"
        );
        // Tensors for modules the config does not target.
        config["target_modules"] = serde_json::json!(["q_proj"]);
        fs::write(dir.join(ADAPTER_CONFIG), config.to_string()).unwrap();
        let err = format!(
            "{:#}",
            load_adapter(&mut load(&fixture("tied"), Quant::None), &dir).unwrap_err()
        );
        assert!(
            err.contains("mlp.down_proj.lora_A.weight belongs to no targeted"),
            "{err}"
        );
        // Not a LoRA adapter.
        config["peft_type"] = "IA3".into();
        fs::write(dir.join(ADAPTER_CONFIG), config.to_string()).unwrap();
        let err = format!(
            "{:#}",
            load_adapter(&mut load(&fixture("tied"), Quant::None), &dir).unwrap_err()
        );
        assert!(
            err.contains("adapter_config.json") && err.contains("IA3"),
            "{err}"
        );
    }

    #[test]
    fn merge_equals_base_plus_scaled_ba() {
        for quant in [Quant::None, Quant::Nf4] {
            let mut model = adapted(&["all-linear"], quant);
            let before = logits(&model, Mode::EVAL);
            let bases: Vec<Tensor> = model.linears().map(|l| l.base_weight().unwrap()).collect();
            let deltas: Vec<Option<Tensor>> = model
                .linears()
                .map(|l| l.lora.as_ref().map(|x| x.delta_weight().unwrap()))
                .collect();
            assert_eq!(merge_into(&mut model).unwrap(), 14);
            for ((lin, base), delta) in model.linears().zip(&bases).zip(&deltas) {
                assert!(lin.lora.is_none());
                let want = match delta {
                    Some(d) => (base + d).unwrap(),
                    None => base.clone(),
                };
                let got = lin.base_weight().unwrap();
                let diff = (got - want)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(diff < 1e-6, "{}: {diff}", lin.name);
            }
            let after = logits(&model, Mode::EVAL);
            assert!(
                max_diff(&before, &after) < 1e-4,
                "{quant:?}: {}",
                max_diff(&before, &after)
            );
        }
    }

    #[test]
    fn export_writes_a_sharded_hf_folder_with_merged_weights() {
        let tmp = tempfile::tempdir().unwrap();
        let src = fixture("tied");
        let out = tmp.path().join("merged");
        let model = adapted(&["q_proj", "v_proj", "down_proj"], Quant::Nf4);
        // Small shards: the 35 KB fixture splits into several.
        let summary = export_merged(&model, &src, &out, 8_000).unwrap();
        assert!(summary.shards.len() > 2, "{:?}", summary.shards);
        let n = summary.shards.len();
        assert_eq!(
            summary.shards[0],
            format!("model-00001-of-{n:05}.safetensors")
        );
        assert_eq!(summary.replaced, 6);
        assert!(summary.copied.contains(&"config.json".to_string()));
        assert_eq!(
            fs::read(out.join("config.json")).unwrap(),
            fs::read(src.join("config.json")).unwrap()
        );

        let index = read_json(&out.join("model.safetensors.index.json"));
        let map = index["weight_map"].as_object().unwrap();
        let source =
            candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
        assert_eq!(map.len(), source.len());
        assert!(
            !map.contains_key("lm_head.weight"),
            "tied embeddings stay tied"
        );
        let mut total = 0;
        let mut exported = HashMap::new();
        for shard in &summary.shards {
            for (k, t) in candle_core::safetensors::load(out.join(shard), &Device::Cpu).unwrap() {
                assert_eq!(
                    map[&k],
                    shard.as_str(),
                    "{k} is in the shard the index names"
                );
                total += t.elem_count() * 4;
                exported.insert(k, t);
            }
        }
        assert_eq!(index["metadata"]["total_size"], total);

        // Merged into the source's full-precision weight, not the NF4 one.
        for lin in model.linears() {
            let key = format!("{}.weight", lin.name);
            let Some(base) = source.get(&key) else {
                continue;
            };
            let want = match &lin.lora {
                Some(l) => (base + l.delta_weight().unwrap()).unwrap(),
                None => base.clone(),
            };
            let got = &exported[&key];
            let diff = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-6, "{key}: {diff}");
        }
        for name in [
            "model.embed_tokens.weight",
            "model.norm.weight",
            "model.layers.1.self_attn.k_proj.weight",
        ] {
            assert_eq!(
                exported[name]
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
                source[name]
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap(),
                "{name} is copied unchanged"
            );
        }

        // The folder loads as a model whose logits are the adapted model's
        // on a dense base.
        let mut dense = load(&src, Quant::None);
        for (d, q) in dense.linears_mut().zip(model.linears()) {
            if let Some(l) = &q.lora {
                let a = l.a.as_tensor().copy().unwrap();
                let b = l.b.as_tensor().copy().unwrap();
                d.lora = Some(Lora::from_tensors(a, b, l.scale, 0.0, 0).unwrap());
            }
        }
        let reloaded = load(&out, Quant::None);
        let diff = max_diff(&logits(&dense, Mode::EVAL), &logits(&reloaded, Mode::EVAL));
        assert!(diff < 1e-4, "{diff}");

        // Exporting again into the folder (an output dir with checkpoints)
        // keeps other files and drops the earlier shards.
        fs::create_dir(out.join("checkpoint-2")).unwrap();
        let again = export_merged(&model, &src, &out, DEFAULT_MAX_SHARD_BYTES).unwrap();
        assert_eq!(again.shards, vec!["model-00001-of-00001.safetensors"]);
        let mut left: Vec<String> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "checkpoint-2",
                "config.json",
                "model-00001-of-00001.safetensors",
                "model.safetensors.index.json"
            ]
        );
        let reloaded = load(&out, Quant::None);
        assert!(max_diff(&logits(&dense, Mode::EVAL), &logits(&reloaded, Mode::EVAL)) < 1e-4);
    }

    #[test]
    fn exporting_a_saved_adapter_equals_exporting_the_adapted_model() {
        let tmp = tempfile::tempdir().unwrap();
        let src = fixture("tied");
        let model = adapted(&["k_proj", "gate_proj"], Quant::None);
        let adapter = tmp.path().join("adapter");
        save_adapter(
            &model,
            &spec(&["k_proj", "gate_proj"]),
            src.to_str().unwrap(),
            &adapter,
        )
        .unwrap();
        assert_eq!(adapter_base_dir(&adapter).unwrap(), Some(src.clone()));
        let direct = tmp.path().join("direct");
        export_merged(&model, &src, &direct, DEFAULT_MAX_SHARD_BYTES).unwrap();
        let via = tmp.path().join("via");
        let summary = export_merged_adapter(&adapter, &src, &via, DEFAULT_MAX_SHARD_BYTES).unwrap();
        assert_eq!(summary.replaced, 4);
        let shard = "model-00001-of-00001.safetensors";
        assert!(fs::read(direct.join(shard)).unwrap() == fs::read(via.join(shard)).unwrap());
    }

    #[test]
    fn sizes_parse_like_hugging_face() {
        assert_eq!(parse_size("5GB").unwrap(), 5_000_000_000);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(
            parse_size("5XB")
                .unwrap_err()
                .to_string()
                .contains("unknown unit")
        );
        assert!(parse_size("GB").is_err());
    }

    #[test]
    fn full_fine_tuning_exports_trained_weights() {
        let tmp = tempfile::tempdir().unwrap();
        let src = fixture("untied");
        let opts = LoadOptions {
            train: crate::model::qwen3::TrainMode::Full,
            ..LoadOptions::default()
        };
        let model = Qwen3::load(&src, &Device::Cpu, &opts).unwrap();
        let vars = model.trainable_vars();
        assert!(!vars.is_empty());
        for (_, v) in &vars {
            v.set(&(v.as_tensor() + 0.5).unwrap()).unwrap();
        }
        let out = tmp.path().join("full");
        let summary = export_merged(&model, &src, &out, DEFAULT_MAX_SHARD_BYTES).unwrap();
        assert_eq!(summary.shards, vec!["model-00001-of-00001.safetensors"]);
        let source =
            candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
        let exported =
            candle_core::safetensors::load(out.join(&summary.shards[0]), &Device::Cpu).unwrap();
        assert_eq!(
            summary.replaced,
            source.len(),
            "every weight trains in full fine-tuning"
        );
        for (k, t) in &source {
            let diff = ((&exported[k] - t).unwrap() - 0.5)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-6, "{k}");
        }
    }
}

/// The PEFT interoperability fixture: an adapter folder and a merged export
/// written by tuner from the tiny checkpoint, with tuner's logits, which
/// `tests/fixtures/tiny-qwen3/check_peft.py` loads with PEFT and
/// transformers. `TUNER_WRITE_FIXTURES=1` rewrites it; otherwise the test
/// checks the committed fixture is what the current code writes.
#[cfg(test)]
mod fixture {
    use super::*;
    use crate::model::linear::Mode;
    use crate::model::lora::attach_lora;
    use crate::model::qwen3::{LoadOptions, ModelInput};

    #[test]
    fn peft_fixture_is_current() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-qwen3");
        let base = root.join("tied");
        let mut model = Qwen3::load(&base, &Device::Cpu, &LoadOptions::default()).unwrap();
        let spec = LoraSpec {
            rank: 4,
            alpha: 8.0,
            dropout: 0.05,
            target_modules: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
            rslora: false,
        };
        attach_lora(&mut model, &spec, 5).unwrap();
        for (i, lin) in model.linears().enumerate() {
            if let Some(lora) = &lin.lora {
                let n = lora.b.elem_count();
                let vals: Vec<f32> = (0..n)
                    .map(|k| ((k * 5 + i * 3) % 11) as f32 * 0.02 - 0.1)
                    .collect();
                lora.b
                    .set(&Tensor::from_vec(vals, lora.b.dims(), &Device::Cpu).unwrap())
                    .unwrap();
            }
        }
        let input = ModelInput::from_rows(&[vec![1, 5, 9, 3, 7, 2, 11, 4]], &Device::Cpu).unwrap();
        let logits = model.forward(&input, Mode::EVAL).unwrap();

        let tmp = tempfile::tempdir().unwrap();
        let adapter = tmp.path().join("peft-adapter");
        save_adapter(&model, &spec, "tied", &adapter).unwrap();
        let merged = tmp.path().join("peft-merged");
        export_merged(&model, &base, &merged, DEFAULT_MAX_SHARD_BYTES).unwrap();
        let logits_file = tmp.path().join("peft-logits.safetensors");
        write_safetensors(
            &logits_file,
            [("logits", &logits), ("input_ids", &input.ids)].into_iter(),
        )
        .unwrap();

        let fixture = root.join("peft");
        if std::env::var("TUNER_WRITE_FIXTURES").is_ok_and(|v| v == "1") {
            let _ = fs::remove_dir_all(&fixture);
            fs::create_dir_all(&fixture).unwrap();
            fs::rename(&adapter, fixture.join("adapter")).unwrap();
            fs::rename(&merged, fixture.join("merged")).unwrap();
            fs::rename(&logits_file, fixture.join("logits.safetensors")).unwrap();
            return;
        }
        for (ours, committed) in [
            (
                adapter.join(ADAPTER_CONFIG),
                fixture.join("adapter").join(ADAPTER_CONFIG),
            ),
            (
                adapter.join(ADAPTER_WEIGHTS),
                fixture.join("adapter").join(ADAPTER_WEIGHTS),
            ),
            (
                merged.join("model-00001-of-00001.safetensors"),
                fixture.join("merged/model-00001-of-00001.safetensors"),
            ),
        ] {
            let want =
                fs::read(&committed).unwrap_or_else(|e| panic!("{}: {e}", committed.display()));
            assert!(
                fs::read(&ours).unwrap() == want,
                "{} is stale (TUNER_WRITE_FIXTURES=1 rewrites it)",
                committed.display()
            );
        }
        let committed =
            candle_core::safetensors::load(fixture.join("logits.safetensors"), &Device::Cpu)
                .unwrap();
        let diff = (&committed["logits"] - &logits)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-6);
    }
}
