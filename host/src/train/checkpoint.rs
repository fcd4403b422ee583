//! Checkpoints: everything needed to continue a run exactly.
//!
//! A checkpoint folder `checkpoint-<step>` under the output folder holds
//! - `trainable.safetensors`: every trained variable under its name (PEFT
//!   names for adapters, HF names for full fine-tuning), in its own dtype;
//! - `optimizer.safetensors`: AdamW's fp32 moments (and master weights);
//! - `trainer_state.json`: step, data position, schedule and the losses so far;
//! - for adapter runs, a PEFT adapter folder (`adapter_config.json`,
//!   `adapter_model.safetensors`) so any checkpoint is usable as is.
//!
//! It is written to a hidden temporary folder and renamed into place, so a
//! crash leaves either the whole checkpoint or none of it; the oldest
//! checkpoints beyond `save_total_limit` are removed only after that.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::batch::Cursor;

/// The run's position, saved beside the weights.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Optimiser steps done.
    pub step: u64,
    /// Total optimiser steps of the run.
    pub total_steps: u64,
    /// The next batch the data would give.
    pub cursor: Cursor,
    /// The mean loss of every step so far (for the report and for checking
    /// that a resumed run continues the same curve).
    pub losses: Vec<f64>,
    /// `(step, eval_loss)` on the held-out samples, when `val_size` > 0.
    #[serde(default)]
    pub eval_losses: Vec<(u64, f64)>,
    /// The method plugin and model the checkpoint belongs to.
    pub method: String,
    pub model: String,
}

const STATE_FILE: &str = "trainer_state.json";
const TRAINABLE_FILE: &str = "trainable.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// Writes `checkpoint-<step>` into `output_dir`; `extra` writes further files
/// (the PEFT adapter) into the temporary folder before it is renamed.
pub fn save(
    output_dir: &Path,
    state: &TrainerState,
    trainable: &[(String, Var)],
    optimizer: &HashMap<String, Tensor>,
    extra: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let final_dir = output_dir.join(format!("checkpoint-{}", state.step));
    let tmp = output_dir.join(format!(".checkpoint-{}.partial", state.step));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let weights: HashMap<String, Tensor> = trainable
        .iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&weights, tmp.join(TRAINABLE_FILE))
        .context("writing the trained weights")?;
    candle_core::safetensors::save(optimizer, tmp.join(OPTIMIZER_FILE))
        .context("writing the optimiser state")?;
    std::fs::write(tmp.join(STATE_FILE), serde_json::to_vec_pretty(state)?)?;
    extra(&tmp)?;
    sync_dir(&tmp);
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir)
            .with_context(|| format!("replacing {}", final_dir.display()))?;
    }
    std::fs::rename(&tmp, &final_dir)
        .with_context(|| format!("moving the checkpoint to {}", final_dir.display()))?;
    sync_dir(output_dir);
    Ok(final_dir)
}

/// Flushes a folder's entries so a rename survives a power cut (best effort).
fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Checkpoint folders in `output_dir`, oldest (lowest step) first.
pub fn list(output_dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(output_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path()
                .join(STATE_FILE)
                .is_file()
                .then(|| (step, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// Removes the oldest checkpoints so that at most `keep` remain (0 keeps all).
pub fn prune(output_dir: &Path, keep: usize) -> Result<Vec<PathBuf>> {
    let all = list(output_dir);
    if keep == 0 || all.len() <= keep {
        return Ok(Vec::new());
    }
    let mut removed = Vec::new();
    for (_, dir) in &all[..all.len() - keep] {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        removed.push(dir.clone());
    }
    Ok(removed)
}

/// `latest` (the newest checkpoint in `output_dir`) or a checkpoint folder.
pub fn resolve(spec: &str, output_dir: &Path) -> Result<PathBuf> {
    if spec == "latest" {
        return list(output_dir)
            .pop()
            .map(|(_, p)| p)
            .with_context(|| format!("no checkpoint to resume in {}", output_dir.display()));
    }
    let dir = PathBuf::from(spec);
    if !dir.join(STATE_FILE).is_file() {
        bail!(
            "{} is not a tuner checkpoint (it has no {STATE_FILE}); pass a checkpoint-N folder or `latest`",
            dir.display()
        );
    }
    Ok(dir)
}

/// What a checkpoint holds, read back.
pub struct Loaded {
    pub state: TrainerState,
    pub optimizer: HashMap<String, Tensor>,
}

/// Loads the trained weights of `dir` into `trainable` (names and shapes
/// must match the run being resumed) and returns the rest.
pub fn load(dir: &Path, trainable: &[(String, Var)], device: &Device) -> Result<Loaded> {
    let state: TrainerState = serde_json::from_slice(
        &std::fs::read(dir.join(STATE_FILE))
            .with_context(|| format!("reading {}", dir.join(STATE_FILE).display()))?,
    )
    .with_context(|| format!("{} is not valid", dir.join(STATE_FILE).display()))?;
    let weights = candle_core::safetensors::load(dir.join(TRAINABLE_FILE), device)
        .with_context(|| format!("reading {}", dir.join(TRAINABLE_FILE).display()))?;
    for (name, var) in trainable {
        let saved = weights.get(name).with_context(|| {
            format!(
                "{} has no weight `{name}`: it was written by a run with other trained modules",
                dir.display()
            )
        })?;
        if saved.dims() != var.dims() {
            bail!(
                "{}: `{name}` is {:?} in the checkpoint but {:?} in this run",
                dir.display(),
                saved.dims(),
                var.dims()
            );
        }
        var.set(&saved.to_dtype(var.dtype())?)?;
    }
    if weights.len() != trainable.len() {
        bail!(
            "{} holds {} trained weights but this run trains {}: was it written with another method or target_modules?",
            dir.display(),
            weights.len(),
            trainable.len()
        );
    }
    let optimizer = candle_core::safetensors::load(dir.join(OPTIMIZER_FILE), device)
        .with_context(|| format!("reading {}", dir.join(OPTIMIZER_FILE).display()))?;
    Ok(Loaded { state, optimizer })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: u64) -> TrainerState {
        TrainerState {
            step,
            total_steps: 10,
            cursor: Cursor {
                epoch: 0,
                index: step as usize,
            },
            losses: vec![1.0; step as usize],
            eval_losses: Vec::new(),
            method: "lora".into(),
            model: "m".into(),
        }
    }

    #[test]
    fn saves_loads_prunes_and_finds_the_latest() {
        let dir = tempfile::tempdir().unwrap();
        let var = Var::new(&[1f32, 2., 3.], &Device::Cpu).unwrap();
        let vars = vec![("w".to_string(), var.clone())];
        let opt: HashMap<String, Tensor> = [(
            "m".to_string(),
            Tensor::new(&[0.5f32], &Device::Cpu).unwrap(),
        )]
        .into();
        for step in [2, 4, 6] {
            var.set(&Tensor::new(&[step as f32; 3], &Device::Cpu).unwrap())
                .unwrap();
            save(dir.path(), &state(step), &vars, &opt, |_| Ok(())).unwrap();
        }
        assert_eq!(list(dir.path()).len(), 3);
        prune(dir.path(), 2).unwrap();
        let steps: Vec<u64> = list(dir.path()).iter().map(|(s, _)| *s).collect();
        assert_eq!(steps, [4, 6]);
        let latest = resolve("latest", dir.path()).unwrap();
        assert!(latest.ends_with("checkpoint-6"));

        var.set(&Tensor::new(&[0f32; 3], &Device::Cpu).unwrap())
            .unwrap();
        let loaded = load(&latest, &vars, &Device::Cpu).unwrap();
        assert_eq!(loaded.state, state(6));
        assert_eq!(var.as_tensor().to_vec1::<f32>().unwrap(), [6.0; 3]);
        assert!(loaded.optimizer.contains_key("m"));
    }

    #[test]
    fn a_partial_checkpoint_is_never_listed_and_mismatches_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(".checkpoint-3.partial")).unwrap();
        std::fs::create_dir_all(dir.path().join("checkpoint-9")).unwrap();
        assert!(list(dir.path()).is_empty());
        let err = resolve("latest", dir.path()).unwrap_err().to_string();
        assert!(err.contains("no checkpoint"), "{err}");

        let var = Var::new(&[1f32, 2.], &Device::Cpu).unwrap();
        let vars = vec![("w".to_string(), var)];
        let saved = save(dir.path(), &state(1), &vars, &HashMap::new(), |_| Ok(())).unwrap();
        let other = vec![(
            "v".to_string(),
            Var::new(&[1f32, 2.], &Device::Cpu).unwrap(),
        )];
        let err = load(&saved, &other, &Device::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no weight `v`"), "{err}");
    }
}
