//! LoRA adapters kept apart from the base weights, so several share one base
//! in memory and each request picks its own (S-LoRA's idea, without the
//! custom kernels): the batch runs the base projection once for all rows,
//! then each adapter adds `scale * (x A^T) B^T` to its own rows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Tensor;

use crate::model::qwen3::Qwen3;
use crate::train::peft;

/// The factors of one adapted linear, on the model's device and dtype.
#[derive(Debug)]
pub struct ModuleAdapter {
    /// `[r, in]`, transposed once at load: `[in, r]`.
    pub a_t: Tensor,
    /// `[out, r]`, transposed once at load: `[r, out]`.
    pub b_t: Tensor,
    pub scale: f64,
}

impl ModuleAdapter {
    /// `scale * x A^T B^T` for `x` `[n, in]`.
    pub fn delta(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.a_t)?.matmul(&self.b_t)? * self.scale
    }
}

/// A PEFT adapter folder loaded for serving.
#[derive(Debug)]
pub struct LoadedAdapter {
    /// The name requests select it by.
    pub name: String,
    /// Where it was read from.
    pub dir: PathBuf,
    pub rank: usize,
    /// By HF module path.
    modules: HashMap<String, ModuleAdapter>,
}

impl LoadedAdapter {
    /// Reads the PEFT folder `dir` for `model`, checking every tensor against
    /// the model's linears (errors name the file and tensor).
    pub fn load(name: &str, dir: &Path, model: &Qwen3) -> Result<LoadedAdapter> {
        let shapes: Vec<(String, (usize, usize))> = model
            .linears()
            .map(|l| (l.name.clone(), l.shape()))
            .collect();
        let read = peft::read_adapter(dir, &shapes)
            .with_context(|| format!("loading adapter {name:?} from {}", dir.display()))?;
        let scale = read.spec.scale();
        let (dtype, device) = (model.dtype(), model.device());
        let mut modules = HashMap::new();
        for (module, f) in read.factors {
            let prep = |t: &Tensor| -> candle_core::Result<Tensor> {
                t.to_dtype(dtype)?.to_device(device)?.t()?.contiguous()
            };
            modules.insert(
                module,
                ModuleAdapter {
                    a_t: prep(&f.a)?,
                    b_t: prep(&f.b)?,
                    scale,
                },
            );
        }
        Ok(LoadedAdapter {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            rank: read.spec.rank,
            modules,
        })
    }

    /// The factors for a linear, if this adapter targets it.
    pub fn module(&self, name: &str) -> Option<&ModuleAdapter> {
        self.modules.get(name)
    }

    /// Number of adapted linears.
    pub fn module_count(&self) -> usize {
        self.modules.len()
    }

    /// Bytes of the factors.
    pub fn bytes(&self) -> usize {
        self.modules
            .values()
            .map(|m| (m.a_t.elem_count() + m.b_t.elem_count()) * m.a_t.dtype().size_in_bytes())
            .sum()
    }
}
