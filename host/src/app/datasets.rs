//! The data use cases: token statistics, rendered previews, checking and
//! inspecting files. The CLI (`tuner data`) and the API (`/api/data`) both
//! call these, so a number or a preview means the same on either face.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::App;
use super::models::ModelLookupError;
use crate::data::load::{self, LoadError, LoadOptions, LoadReport};
use crate::data::stats::{self, Chars, DataStats};
use crate::data::store::StoreError;
use crate::sample::Sample;
use crate::text::{RenderPreview, TrainingRender};

/// The sequence length token statistics check when the caller names none.
pub const DEFAULT_MAX_SEQ_LEN: u64 = 4096;

/// What to measure a sample set with.
#[derive(Debug, Clone, Default)]
pub struct StatsRequest {
    /// Add token statistics measured with this model's chat template and
    /// tokenizer (a model folder or a cached model id; nothing is
    /// downloaded). Without it, lengths are in characters only.
    pub model: Option<String>,
    /// Count samples longer than this: in tokens with `model` (default
    /// [`DEFAULT_MAX_SEQ_LEN`]), in characters without (no count by default).
    pub max_seq_len: Option<u64>,
    /// How samples are rendered for the token counts: as training renders
    /// them with the same settings.
    pub render: TrainingRender,
}

/// Why a data use case failed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Model(#[from] ModelLookupError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The chat template refused a sample.
    #[error("rendering sample {sample} with `{model}`: {message}")]
    Render {
        /// 1-based.
        sample: usize,
        model: String,
        message: String,
    },
    /// The caller's cancel flag was raised (its client went away).
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl App {
    /// Counts and lengths of `samples`: in characters, and with a model
    /// also in tokens (prompt/response/total, and how many samples the
    /// limit would truncate, counted in tokens). Gives up with
    /// [`DataError::Cancelled`] soon after `cancel` becomes true.
    pub fn dataset_stats(
        &self,
        samples: &[Sample],
        request: &StatsRequest,
        cancel: &AtomicBool,
    ) -> Result<DataStats, DataError> {
        let Some(model) = &request.model else {
            return Ok(stats::compute(samples, &Chars, request.max_seq_len));
        };
        let (_, files) = self.model_files(model)?;
        // Lengths in characters stay; the limit applies to tokens only.
        let mut stats = stats::compute(samples, &Chars, None);
        let limit = request.max_seq_len.unwrap_or(DEFAULT_MAX_SEQ_LEN) as usize;
        let rendered = request.render.samples(samples);
        let tokens =
            files.stats_parallel_until(&rendered, &request.render.options(), limit, cancel);
        stats.tokens = Some(tokens.ok_or(DataError::Cancelled)?);
        Ok(stats)
    }

    /// `samples` rendered with the chat template of `model`, trained spans
    /// marked: exactly the text and spans training uses with the settings
    /// `render`. Also the folder the template came from.
    pub fn render_previews(
        &self,
        samples: &[Sample],
        model: &str,
        render: &TrainingRender,
        cancel: &AtomicBool,
    ) -> Result<(PathBuf, Vec<RenderPreview>), DataError> {
        let (dir, files) = self.model_files(model)?;
        let options = render.options();
        let mut out = Vec::with_capacity(samples.len());
        for (i, sample) in samples.iter().enumerate() {
            if cancel.load(Ordering::Relaxed) {
                return Err(DataError::Cancelled);
            }
            let preview = files
                .preview(&render.prepare(sample.clone()), &options)
                .map_err(|e| DataError::Render {
                    sample: i + 1,
                    model: model.trim().to_string(),
                    message: e.to_string(),
                })?;
            out.push(preview);
        }
        Ok((dir, out))
    }

    /// Checks every record of a file without storing anything: the report
    /// of a non-strict load (also for a file with no sample at all).
    pub fn validate_file(
        &self,
        path: &Path,
        display_name: &str,
        options: &LoadOptions,
    ) -> Result<LoadReport, DataError> {
        let host = self.plugins()?;
        let options = LoadOptions {
            strict: false,
            ..options.clone()
        };
        match load::load(&host, path, display_name, &options, |_| Ok(())) {
            Ok(report) => Ok(report),
            Err(LoadError::Empty { report, .. }) => Ok(*report),
            Err(e) => Err(e.into()),
        }
    }

    /// Loads a file and keeps its first `keep` samples (`tuner data inspect`).
    pub fn inspect_file(
        &self,
        path: &Path,
        display_name: &str,
        options: &LoadOptions,
        keep: usize,
    ) -> Result<(LoadReport, Vec<Sample>), DataError> {
        let host = self.plugins()?;
        let mut first = Vec::new();
        let report = load::load(&host, path, display_name, options, |s| {
            if first.len() < keep {
                first.push(s);
            }
            Ok(())
        })?;
        Ok((report, first))
    }
}
