//! The text pipeline: chat template, tokenizer, loss mask, token statistics
//! and the rendered preview. (The network itself is in [`crate::model`].)
//!
//! A training sample becomes tokens in three steps, each in its own module:
//! 1. [`template`]: the model's Jinja `chat_template` renders the messages,
//!    the way transformers does ([`python`] supplies Python's `tojson`).
//! 2. [`spans`] / [`render`]: the byte ranges of the rendered text that are
//!    trained (assistant answers and their end-of-turn token, weighted by
//!    `loss_weight`), found for any template by probe renders.
//! 3. [`tokenizer`] / [`encode`]: `tokenizer.json` turns the text into ids,
//!    and each id takes the weight of the span it lies in.
//!
//! [`stats`] and [`preview`] are built on the same steps, so what users
//! inspect is what training sees. [`ModelFiles`] bundles the template and
//! tokenizer of one model directory.

pub mod cache;
pub mod encode;
pub mod preview;
pub mod python;
pub mod render;
pub mod spans;
pub mod stats;
pub mod template;
pub mod tokenizer;

use std::path::Path;

use crate::sample::Sample;

pub use encode::{TokenizedSample, TokenizedSequence, tokenize_sample};
pub use preview::{RenderPreview, render_preview};
pub use render::{RenderedSample, render_sample};
pub use spans::{RenderedConversation, TrainedSpan};
pub use stats::{
    SampleTokens, TokenStats, TokenStatsBuilder, sample_tokens, token_stats, token_stats_parallel,
};
pub use template::{ChatTemplate, RenderOptions, SpecialTokens, TemplateError};
pub use tokenizer::{Tokenizer, TokenizerError};

/// Errors from rendering or tokenizing.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The chat template failed.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

/// The training settings that change what a sample renders to, and so what
/// the data commands must render to show and count what training trains
/// ([`crate::train::TrainConfig::training_render`]):
/// the training config's `enable_thinking` (default `false`, as there) and
/// `system`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrainingRender {
    /// Qwen3 hybrid thinking (training config `enable_thinking`). With
    /// `false` the empty `<think>\n\n</think>\n\n` block of the last turn
    /// is prompt, not trained.
    pub enable_thinking: bool,
    /// The system prompt given to chat samples without one (training config
    /// `system`).
    pub system: Option<String>,
}

impl TrainingRender {
    /// The template options training uses.
    pub fn options(&self) -> RenderOptions {
        RenderOptions::training(self.enable_thinking)
    }

    /// `sample` as training renders it (with the default system prompt).
    pub fn prepare(&self, sample: Sample) -> Sample {
        sample.with_default_system(self.system.as_deref())
    }

    /// `samples` as training renders them; borrowed when nothing changes.
    pub fn samples<'a>(&self, samples: &'a [Sample]) -> std::borrow::Cow<'a, [Sample]> {
        match self.system {
            None => std::borrow::Cow::Borrowed(samples),
            Some(_) => {
                std::borrow::Cow::Owned(samples.iter().map(|s| self.prepare(s.clone())).collect())
            }
        }
    }
}

/// The chat template and tokenizer of one model (a directory holding
/// `tokenizer.json` and `tokenizer_config.json`, as downloaded from
/// ModelScope or Hugging Face).
#[derive(Debug)]
pub struct ModelFiles {
    /// The chat template with the model's special tokens.
    pub template: ChatTemplate,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
}

impl ModelFiles {
    /// Loads both from a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self, ModelError> {
        Ok(ModelFiles {
            template: ChatTemplate::from_model_dir(dir)?,
            tokenizer: Tokenizer::from_model_dir(dir)?,
        })
    }

    /// Renders and tokenizes a sample, with loss weights per token.
    pub fn tokenize(
        &self,
        sample: &Sample,
        options: &RenderOptions,
    ) -> Result<TokenizedSample, ModelError> {
        tokenize_sample(&self.template, &self.tokenizer, sample, options)
    }

    /// Token counts of one sample.
    pub fn sample_tokens(
        &self,
        sample: &Sample,
        options: &RenderOptions,
    ) -> Result<SampleTokens, ModelError> {
        sample_tokens(&self.template, &self.tokenizer, sample, options)
    }

    /// Statistics of a sample set.
    pub fn stats<'a>(
        &self,
        samples: impl IntoIterator<Item = &'a Sample>,
        options: &RenderOptions,
        max_seq_len: usize,
    ) -> TokenStats {
        token_stats(
            &self.template,
            &self.tokenizer,
            samples,
            options,
            max_seq_len,
        )
    }

    /// Statistics of samples held in memory, measured on all cores.
    pub fn stats_parallel(
        &self,
        samples: &[Sample],
        options: &RenderOptions,
        max_seq_len: usize,
    ) -> TokenStats {
        token_stats_parallel(
            &self.template,
            &self.tokenizer,
            samples,
            options,
            max_seq_len,
        )
    }

    /// [`Self::stats_parallel`] that gives up (None) soon after `cancel`
    /// becomes true.
    pub fn stats_parallel_until(
        &self,
        samples: &[Sample],
        options: &RenderOptions,
        max_seq_len: usize,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Option<TokenStats> {
        stats::token_stats_parallel_until(
            &self.template,
            &self.tokenizer,
            samples,
            options,
            max_seq_len,
            cancel,
        )
    }

    /// The rendered sample with its trained spans marked.
    pub fn preview(
        &self,
        sample: &Sample,
        options: &RenderOptions,
    ) -> Result<RenderPreview, TemplateError> {
        render_preview(&self.template, sample, options)
    }
}

/// The tokenizer and chat template files a model folder carries (those
/// present are copied along whenever a model is written out: a merged
/// export, a randomly initialised test model).
pub const TOKENIZER_FILES: [&str; 7] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
];
