//! Exporting a trained adapter: merged into its base model and written as a
//! full Hugging Face model folder.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::App;
use super::models::WhenMissing;
use crate::train::peft::{ExportSummary, adapter_base_dir, export_merged_adapter};

impl App {
    /// Merges the PEFT adapter in `adapter` into its base and writes the
    /// result to `out` in shards of at most `max_shard_bytes`. The base is
    /// `base` (a model folder or a cached model id), else the folder the
    /// adapter's `base_model_name_or_path` names. Returns the base folder
    /// used and what was written.
    pub fn export_merged(
        &self,
        adapter: &Path,
        base: Option<&str>,
        out: &Path,
        max_shard_bytes: usize,
    ) -> Result<(PathBuf, ExportSummary)> {
        let base = match base {
            Some(text) => self.model_dir(text, WhenMissing::Fail)?,
            None => match adapter_base_dir(adapter)? {
                Some(dir) => dir,
                None => bail!(
                    "{}: base_model_name_or_path is not a model folder here; pass --base DIR",
                    adapter.display()
                ),
            },
        };
        let summary = export_merged_adapter(adapter, &base, out, max_shard_bytes)?;
        Ok((base, summary))
    }
}
