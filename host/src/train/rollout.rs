//! `policy.generate` for method plugins (GRPO and other on-policy methods):
//! sample completions of a prompt batch with the weights being trained
//! (adapters on, dropout off) through the generation engine's batched,
//! KV-cached decoder, and hand back a scorable batch of prompt + completion.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, ensure};
use candle_core::{DType, Tensor};

use super::rng::stream_seed;
use crate::infer::{AttachedAdapters, Decoder, FinishReason, GenerationRequest, SamplingParams};
use crate::model::qwen3::{ModelInput, Qwen3};
use crate::plugins::imports::model::{
    GeneratedCompletion, GeneratedRollout, MethodBatch, RolloutRows, Sampling,
};
use crate::sample::SampleKind;
use crate::text::Tokenizer;

/// What generation needs besides the weights.
pub struct PolicyGeneration {
    pub tokenizer: Tokenizer,
    /// Tokens that end a completion (the model's end-of-turn tokens).
    pub end_tokens: Vec<u32>,
    /// The run's seed; see [`PolicyGeneration::set_position`].
    pub seed: u64,
    /// Where in the run the coming `generate` calls are.
    position: AtomicU64,
    /// `generate` calls since the position was set.
    calls: AtomicU64,
}

/// Prompt tokens computed per decoder step.
const PREFILL_CHUNK: usize = 2048;

impl PolicyGeneration {
    pub fn new(tokenizer: Tokenizer, end_tokens: Vec<u32>, seed: u64) -> Self {
        PolicyGeneration {
            tokenizer,
            end_tokens,
            seed,
            position: AtomicU64::new(0),
            calls: AtomicU64::new(0),
        }
    }

    /// Seeds the coming `generate` calls from a position in the run (the
    /// trainer passes the micro-batch index, `step · accumulation + micro`):
    /// call `c` after `set_position(p)` samples from a seed that is a
    /// function of the run's seed, `p` and `c` only. A resumed run sets the
    /// same positions, so it samples the same completions as a run that was
    /// never interrupted.
    pub fn set_position(&self, position: u64) {
        self.position.store(position, Ordering::Relaxed);
        self.calls.store(0, Ordering::Relaxed);
    }

    /// Samples `sampling.samples_per_prompt` completions per prompt row of
    /// `batch`. The returned batch has one row per completion (prompt row
    /// `i`'s samples are rows `i * k .. (i + 1) * k`), right-padded, with a
    /// loss mask of 1 exactly on the predictions of completion tokens.
    pub fn generate(
        &self,
        model: &Qwen3,
        batch: &MethodBatch,
        sampling: &Sampling,
    ) -> Result<GeneratedRollout> {
        ensure!(
            sampling.samples_per_prompt >= 1,
            "samples-per-prompt must be at least 1"
        );
        let prompts = prompt_rows(batch)?;
        let k = sampling.samples_per_prompt as usize;
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        let position = self.position.load(Ordering::Relaxed);
        let seed = stream_seed(stream_seed(self.seed, position), call);
        let params = SamplingParams {
            max_new_tokens: sampling.max_new_tokens.max(1) as usize,
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            top_k: sampling.top_k as usize,
            seed: Some(seed),
            ..SamplingParams::default()
        };
        params
            .validate()
            .map_err(|e| anyhow::anyhow!("sampling.{}: {e}", e.param.replace('_', "-")))?;
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let decoder = Decoder::new(
            model,
            AttachedAdapters::On,
            longest + params.max_new_tokens + 1,
        )?;
        let requests: Vec<_> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut params = params.clone();
                params.seed = params.seed.map(|s| s.wrapping_add((i * k) as u64));
                let mut req = GenerationRequest::new(p.clone(), params);
                req.n = k;
                (req, None)
            })
            .collect();
        let out = crate::infer::generate(
            &decoder,
            &self.tokenizer,
            &self.end_tokens,
            &requests,
            PREFILL_CHUNK,
        )?;
        let mut rows = Vec::new();
        let mut completions = Vec::new();
        let mut answers = Vec::new();
        let mut conversations = Vec::new();
        for (i, (prompt, choices)) in prompts.iter().zip(out).enumerate() {
            for c in choices {
                let mut row = prompt.clone();
                row.extend_from_slice(&c.tokens);
                rows.push((row, prompt.len()));
                answers.push(batch.answers.get(i).cloned().flatten());
                conversations.push(batch.prompts.get(i).cloned().flatten());
                completions.push(GeneratedCompletion {
                    prompt_row: i as u32,
                    text: c.text,
                    tokens: c.tokens.len() as u32,
                    finished: c.finish_reason == FinishReason::Stop,
                });
            }
        }
        let mut rollout = scorable_batch(&rows, batch.ids.device())?;
        rollout.answers = answers;
        rollout.prompts = conversations;
        rollout.rollout = Some(Arc::new(RolloutRows {
            completions: completions.clone(),
            max_new_tokens: params.max_new_tokens as u32,
        }));
        Ok(GeneratedRollout {
            completions,
            batch: rollout,
        })
    }
}

/// Each row's prompt: its tokens outside padding (prompt batches are never
/// packed).
fn prompt_rows(batch: &MethodBatch) -> Result<Vec<Vec<u32>>> {
    ensure!(
        batch.kind == SampleKind::Prompt,
        "policy.generate needs a prompt batch, got a {} batch",
        batch.kind
    );
    let input = batch.model_input()?;
    let ids: Vec<Vec<u32>> = input.ids.to_dtype(DType::U32)?.to_vec2()?;
    let segments: Vec<Vec<u32>> = input.segments.to_vec2()?;
    ids.into_iter()
        .zip(segments)
        .enumerate()
        .map(|(r, (ids, seg))| {
            let prompt: Vec<u32> = ids
                .into_iter()
                .zip(&seg)
                .filter(|(_, s)| **s != 0)
                .map(|(t, _)| t)
                .collect();
            ensure!(!prompt.is_empty(), "prompt row {r} is empty");
            Ok(prompt)
        })
        .collect::<Result<_>>()
        .context("reading the prompts of the batch")
}

/// Right-padded rows of prompt + completion; the mask weighs position `t`
/// (predicting token `t + 1`) 1 when token `t + 1` is a completion token.
fn scorable_batch(rows: &[(Vec<u32>, usize)], device: &candle_core::Device) -> Result<MethodBatch> {
    let seqs: Vec<Vec<u32>> = rows.iter().map(|(r, _)| r.clone()).collect();
    // Every row is a prompt token or more plus a generated token or more.
    ensure!(
        seqs.iter().all(|s| s.len() >= 2),
        "a rollout row has under 2 tokens"
    );
    let input = ModelInput::from_rows(&seqs, device)?;
    let seq = seqs.iter().map(Vec::len).max().unwrap_or(2);
    let mut mask = Vec::with_capacity(rows.len() * (seq - 1));
    for (row, prompt_len) in rows {
        for t in 0..seq - 1 {
            let target = t + 1;
            mask.push(if target >= *prompt_len && target < row.len() {
                1f32
            } else {
                0.0
            });
        }
    }
    let mask = Tensor::from_vec(mask, (rows.len(), seq - 1), device)?;
    MethodBatch::packed(SampleKind::Chat, input, mask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_mask_covers_exactly_the_completion_tokens() {
        // Prompt of 3 + completion of 2; prompt of 2 + completion of 1.
        let rows = vec![(vec![1, 2, 3, 4, 5], 3), (vec![6, 7, 8], 2)];
        let b = scorable_batch(&rows, &Device::Cpu).unwrap();
        let mask: Vec<Vec<f32>> = b.loss_mask.to_vec2().unwrap();
        assert_eq!(mask[0], vec![0.0, 0.0, 1.0, 1.0]);
        assert_eq!(mask[1], vec![0.0, 1.0, 0.0, 0.0]);
        let seg: Vec<Vec<u32>> = b.model_input().unwrap().segments.to_vec2().unwrap();
        assert_eq!(seg[1], vec![1, 1, 1, 0, 0]);
    }
}
