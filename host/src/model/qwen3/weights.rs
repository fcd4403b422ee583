//! HF safetensors weights by memory map: one `model.safetensors`, or shards
//! listed in `model.safetensors.index.json`.
//!
//! Every tensor is looked up by its HF name and checked against the shape the
//! config implies, so a wrong or truncated checkpoint fails at load time with
//! the tensor and the file named, not later inside a matmul.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

/// The safetensors files of one model folder, memory-mapped.
pub struct WeightFiles {
    st: MmapedSafetensors,
    /// Tensor name -> file holding it.
    routing: HashMap<String, PathBuf>,
    /// What the error message calls the files as a whole.
    describe: String,
}

impl WeightFiles {
    /// Opens `model.safetensors.index.json` (sharded) or `model.safetensors`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        if index.is_file() {
            Self::open_sharded(dir, &index)
        } else if single.is_file() {
            Self::open_files(vec![single.clone()], single.display().to_string())
        } else {
            bail!(
                "no weights in {}: expected model.safetensors or model.safetensors.index.json",
                dir.display()
            )
        }
    }

    fn open_sharded(dir: &Path, index: &Path) -> Result<Self> {
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: HashMap<String, String>,
        }
        let text = std::fs::read_to_string(index)
            .with_context(|| format!("reading {}", index.display()))?;
        let parsed: Index = serde_json::from_str(&text)
            .with_context(|| format!("{}: expected a \"weight_map\" object", index.display()))?;
        let mut files: Vec<PathBuf> = parsed.weight_map.values().map(|f| dir.join(f)).collect();
        files.sort();
        files.dedup();
        for f in &files {
            if !f.is_file() {
                bail!(
                    "{} lists shard {}, which does not exist",
                    index.display(),
                    f.display()
                );
            }
        }
        let mut this = Self::open_files(files, index.display().to_string())?;
        // The index is the contract: a tensor it routes to a shard that lacks
        // it is reported against that shard.
        this.routing = parsed
            .weight_map
            .into_iter()
            .map(|(k, f)| (k, dir.join(f)))
            .collect();
        Ok(this)
    }

    fn open_files(files: Vec<PathBuf>, describe: String) -> Result<Self> {
        // SAFETY: the files are mapped read-only; like every mmap user we rely
        // on nobody truncating a model file while it is being trained.
        let st = unsafe { MmapedSafetensors::multi(&files) }
            .with_context(|| format!("memory-mapping safetensors {describe}"))?;
        let mut routing = HashMap::new();
        for f in &files {
            // SAFETY: as above.
            let one = unsafe { MmapedSafetensors::new(f) }
                .with_context(|| format!("reading safetensors header of {}", f.display()))?;
            for (name, _) in one.tensors() {
                routing.insert(name, f.clone());
            }
        }
        Ok(WeightFiles {
            st,
            routing,
            describe,
        })
    }

    /// Whether the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.routing.contains_key(name)
    }

    /// Loads `name`, checks its shape and converts it to `dtype` on `device`.
    pub fn load(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let Some(file) = self.routing.get(name) else {
            bail!("tensor {name} is missing from {}", self.describe);
        };
        let t = self
            .st
            .load(name, device)
            .with_context(|| format!("loading tensor {name} from {}", file.display()))?;
        if t.dims() != shape {
            bail!(
                "tensor {name} in {} has shape {:?}, the config implies {:?}",
                file.display(),
                t.dims(),
                shape
            );
        }
        Ok(t.to_dtype(dtype)?)
    }
}
