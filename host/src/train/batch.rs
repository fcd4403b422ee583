//! Training batches from tokenised samples: truncation, length grouping,
//! packing, seeded shuffling and a resumable position.
//!
//! A [`Batcher`] takes every sample of the job once ([`BatchSample`]: the
//! ids and per-token loss weights of [`crate::text::encode`]), truncates and
//! filters them ([`BatchStats`] counts what was cut or dropped), forms the
//! units a batch row is made of (one sample, a preference pair, or several
//! short samples packed into one row), and per epoch orders the units with a
//! generator seeded from `(seed, epoch)`. The order of epoch `e` is a pure
//! function of the samples, the config and `e`, so a [`Cursor`] `(epoch,
//! index)` is all a checkpoint needs to continue with exactly the remaining
//! batches.
//!
//! Rows and masks:
//! - `loss_mask[r, t]` weighs the prediction of token `t + 1` from tokens
//!   `..= t`: it is that token's weight (0 untrained, the turn's
//!   `loss_weight` when trained). The first token of a row is never
//!   predicted.
//! - Packed rows hold samples one after another with `segments` 1, 2, 3…
//!   and `positions` restarting at 0 per sample; the model's attention
//!   only joins tokens of the same segment, and the mask is 0 where `t` and
//!   `t + 1` lie in different samples, so nothing of one sample trains on
//!   or sees another.
//! - Padding (right side, `pad_id`) has segment 0, position 0, mask 0.
//! - A preference batch of `p` pairs has rows `chosen[0..p]` then
//!   `rejected[0..p]`.
//! - An unpaired batch of `n` samples (KTO) has rows `sample[0..n]` then
//!   `kl[0..n]`: `kl[i]` is sample `i`'s prompt followed by the answer of
//!   its *KL partner*, the next kept unpaired sample in data order (the
//!   last one's partner is the first). KTO estimates the KL divergence to
//!   the reference from these mismatched pairs (Ethayarajh et al. 2024,
//!   §4). Partners are fixed per dataset, as LLaMA-Factory's and TRL's KL
//!   datasets are, so a row's content never depends on the shuffle.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{Device, Result, Tensor};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::rng::stream_rng;
use crate::sample::{Message, SampleKind};
use crate::text::{TokenizedSample, TokenizedSequence};

/// The model's input for one batch: ids, positions and segments `[b, s]`.
pub use crate::model::qwen3::ModelInput;

/// One batch, ready for the model and the method's loss.
#[derive(Debug, Clone)]
pub struct TrainBatch {
    /// Ids, positions and segments.
    pub input: ModelInput,
    /// `[b, s - 1]` f32: weight of predicting token `t + 1` at position `t`.
    pub loss_mask: Tensor,
    /// The kind every sample of the batch has.
    pub kind: SampleKind,
    /// Preference pairs (rows `0..pairs` chosen, `pairs..2·pairs` rejected),
    /// or unpaired samples (rows `0..pairs` the samples, `pairs..2·pairs`
    /// their KL rows); 0 for other kinds.
    pub pairs: usize,
    /// Unpaired batches: per sample, true when its answer is desirable;
    /// empty for other kinds.
    pub labels: Vec<bool>,
    /// Non-padding tokens in the batch.
    pub tokens: usize,
    /// Per row, the reference answer of a prompt sample (`None` otherwise,
    /// and for rows packing several samples).
    pub answers: Vec<Option<String>>,
    /// Per row, a prompt sample's conversation (for reward functions;
    /// `None` otherwise).
    pub prompts: Vec<Option<Arc<Vec<Message>>>>,
}

/// A sample as the batcher takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchSample {
    /// Ids and weights (and the rejected side of a preference pair).
    pub tokens: TokenizedSample,
    /// What kind of sample it was.
    pub kind: SampleKind,
    /// A prompt sample's reference answer.
    pub answer: Option<String>,
    /// A prompt sample's conversation, which reward functions read.
    pub prompt: Option<Arc<Vec<Message>>>,
    /// An unpaired sample's label (true: desirable).
    pub label: Option<bool>,
}

/// How batches are formed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    /// Rows per batch (pairs, for preference samples; packed rows when
    /// packing).
    pub batch_size: usize,
    /// Longer samples keep their first `max_seq_len` tokens (prompt
    /// samples their last).
    pub max_seq_len: usize,
    /// Pack text and chat samples into rows of up to `max_seq_len` tokens.
    pub packing: bool,
    /// Batch samples of similar length together (HF `group_by_length`).
    pub group_by_length: bool,
    /// Seed of the per-epoch shuffle.
    pub seed: u64,
    /// Id written into padding (never attended to nor trained).
    pub pad_id: u32,
}

/// Where the batcher stands: batch `index` of epoch `epoch` comes next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Epoch, from 0.
    pub epoch: u64,
    /// Batch within the epoch, from 0.
    pub index: usize,
}

/// What the batcher did to the samples, for the job's report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchStats {
    /// Samples given.
    pub samples: usize,
    /// Samples that train (given − dropped).
    pub kept: usize,
    /// Samples longer than `max_seq_len` (either side, for a pair), cut.
    pub truncated_samples: usize,
    /// Samples with nothing to train after truncation (no trained token
    /// after the first; an empty prompt), left out.
    pub dropped_empty: usize,
    /// Tokens per epoch after truncation (both sides of pairs).
    pub tokens: usize,
    /// Of those, tokens whose prediction is trained.
    pub trained_tokens: usize,
    /// Rows per epoch (pairs count once; a packed row once).
    pub rows: usize,
    /// Batches per epoch.
    pub batches_per_epoch: usize,
}

/// A kept sample after truncation.
#[derive(Debug, Clone)]
struct Prepared {
    main: TokenizedSequence,
    rejected: Option<TokenizedSequence>,
    /// An unpaired sample's KL row: its prompt, its partner's answer.
    kl: Option<TokenizedSequence>,
    kind: SampleKind,
    answer: Option<String>,
    prompt: Option<Arc<Vec<Message>>>,
    label: Option<bool>,
}

impl Prepared {
    /// The row that goes with `main` in the second half of a batch: the
    /// rejected answer of a pair, or the KL row of an unpaired sample.
    fn second_row(&self) -> Option<&TokenizedSequence> {
        self.rejected.as_ref().or(self.kl.as_ref())
    }
}

/// What one batch row (or, for a pair, two rows) is made of.
#[derive(Debug, Clone)]
struct Unit {
    kind: SampleKind,
    /// Indices into the given samples; several only in a packed row.
    members: Vec<usize>,
    /// Row length (the longer side of a pair).
    len: usize,
}

/// Makes batches; see the module docs.
pub struct Batcher {
    config: BatchConfig,
    /// By given index; `None` for dropped samples.
    samples: Vec<Option<Prepared>>,
    units: Vec<Unit>,
    stats: BatchStats,
    cursor: Cursor,
    /// The plan of one epoch (unit indices per batch), cached.
    plan: Option<(u64, Vec<Vec<usize>>)>,
}

/// Cuts a sequence to `max` tokens, keeping the start, or with `keep_end`
/// the end; reports whether it was cut.
fn truncate(seq: &TokenizedSequence, max: usize, keep_end: bool) -> (TokenizedSequence, bool) {
    if seq.len() <= max {
        return (seq.clone(), false);
    }
    let range = if keep_end {
        seq.len() - max..seq.len()
    } else {
        0..max
    };
    (
        TokenizedSequence {
            ids: seq.ids[range.clone()].to_vec(),
            weights: seq.weights[range].to_vec(),
        },
        true,
    )
}

/// Tokens whose prediction trains (the first token is never predicted).
fn trained(seq: &TokenizedSequence) -> usize {
    seq.weights.iter().skip(1).filter(|w| **w > 0.0).count()
}

impl Batcher {
    /// Prepares the samples; fails on a zero batch size or sequence length.
    pub fn new(samples: Vec<BatchSample>, config: BatchConfig) -> Result<Self> {
        if config.batch_size == 0 {
            candle_core::bail!("batch: per_device_train_batch_size must be at least 1");
        }
        if config.max_seq_len < 2 {
            candle_core::bail!(
                "batch: max_seq_length must be at least 2 (got {})",
                config.max_seq_len
            );
        }
        let mut stats = BatchStats {
            samples: samples.len(),
            ..BatchStats::default()
        };
        let mut prepared = Vec::with_capacity(samples.len());
        for sample in samples {
            // A prompt is continued by generation, so it keeps its end (the
            // question and the generation header), as TRL truncates prompts;
            // everything else keeps its start, like HF tokenizer truncation.
            let keep_end = sample.kind == SampleKind::Prompt;
            let (main, cut_main) = truncate(&sample.tokens.main, config.max_seq_len, keep_end);
            let (rejected, cut_rejected) = match &sample.tokens.rejected {
                Some(r) => {
                    let (r, cut) = truncate(r, config.max_seq_len, false);
                    (Some(r), cut)
                }
                None => (None, false),
            };
            if cut_main || cut_rejected {
                stats.truncated_samples += 1;
            }
            let keep = match sample.kind {
                // Prompts are continued by generation: nothing in them trains.
                SampleKind::Prompt => !main.is_empty(),
                SampleKind::Preference => {
                    trained(&main) > 0 && rejected.as_ref().is_some_and(|r| trained(r) > 0)
                }
                SampleKind::Text | SampleKind::Chat | SampleKind::Unpaired => trained(&main) > 0,
            };
            if !keep {
                stats.dropped_empty += 1;
                prepared.push(None);
                continue;
            }
            stats.kept += 1;
            for seq in std::iter::once(&main).chain(rejected.as_ref()) {
                stats.tokens += seq.len();
                stats.trained_tokens += trained(seq);
            }
            prepared.push(Some(Prepared {
                main,
                rejected,
                kl: None,
                kind: sample.kind,
                answer: sample.answer,
                prompt: sample.prompt,
                label: sample.label,
            }));
        }
        stats.tokens += attach_kl_rows(&mut prepared, config.max_seq_len);
        let units = make_units(&prepared, &config);
        stats.rows = units.len();
        let mut batcher = Batcher {
            config,
            samples: prepared,
            units,
            stats,
            cursor: Cursor::default(),
            plan: None,
        };
        batcher.stats.batches_per_epoch = batcher.epoch_units(0).len();
        Ok(batcher)
    }

    /// What truncation and filtering did, and the epoch's size.
    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }

    /// Batches in every epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.stats.batches_per_epoch
    }

    /// The position of the next batch, for a checkpoint.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// Continues from a checkpointed position.
    pub fn seek(&mut self, cursor: Cursor) -> Result<()> {
        if cursor.index > self.batches_per_epoch() {
            candle_core::bail!(
                "batch: resume position {} is past the {} batches of an epoch (was the data changed?)",
                cursor.index,
                self.batches_per_epoch()
            );
        }
        self.cursor = cursor;
        Ok(())
    }

    /// The given-sample indices of each batch of `epoch` (a pair's index
    /// once; a packed row's indices in row order).
    pub fn epoch_plan(&self, epoch: u64) -> Vec<Vec<Vec<usize>>> {
        self.epoch_units(epoch)
            .into_iter()
            .map(|batch| {
                batch
                    .into_iter()
                    .map(|u| self.units[u].members.clone())
                    .collect()
            })
            .collect()
    }

    /// The batch at the cursor, moving the cursor on (into the next epoch
    /// after an epoch's last batch).
    pub fn next_batch(&mut self, device: &Device) -> Result<TrainBatch> {
        if self.batches_per_epoch() == 0 {
            candle_core::bail!(
                "batch: no sample has anything to train ({} given, {} dropped as empty after truncation to {} tokens)",
                self.stats.samples,
                self.stats.dropped_empty,
                self.config.max_seq_len
            );
        }
        if self.cursor.index >= self.batches_per_epoch() {
            self.cursor = Cursor {
                epoch: self.cursor.epoch + 1,
                index: 0,
            };
        }
        let epoch = self.cursor.epoch;
        if self.plan.as_ref().is_none_or(|(e, _)| *e != epoch) {
            self.plan = Some((epoch, self.epoch_units(epoch)));
        }
        let units = self.plan.as_ref().expect("plan set above").1[self.cursor.index].clone();
        let batch = self.build(&units, device)?;
        self.cursor.index += 1;
        if self.cursor.index >= self.batches_per_epoch() {
            self.cursor = Cursor {
                epoch: epoch + 1,
                index: 0,
            };
        }
        Ok(batch)
    }

    /// Unit indices per batch for `epoch`: batches never mix sample kinds;
    /// with several kinds, the batches of all kinds are shuffled together.
    fn epoch_units(&self, epoch: u64) -> Vec<Vec<usize>> {
        let mut rng = stream_rng(self.config.seed, epoch);
        let mut kinds: Vec<SampleKind> = self.units.iter().map(|u| u.kind).collect();
        kinds.sort();
        kinds.dedup();
        let mut batches = Vec::new();
        for kind in &kinds {
            let mut order: Vec<usize> = (0..self.units.len())
                .filter(|&u| self.units[u].kind == *kind)
                .collect();
            order.shuffle(&mut rng);
            if self.config.group_by_length {
                let lengths: Vec<usize> = order.iter().map(|&u| self.units[u].len).collect();
                order = group_by_length(&order, &lengths, self.config.batch_size);
            }
            batches.extend(order.chunks(self.config.batch_size).map(<[usize]>::to_vec));
        }
        if kinds.len() > 1 {
            batches.shuffle(&mut rng);
        }
        batches
    }

    /// Tensors for a list of units.
    fn build(&self, units: &[usize], device: &Device) -> Result<TrainBatch> {
        let kind = self.units[units[0]].kind;
        let sample = |i: usize| self.samples[i].as_ref().expect("units hold kept samples");
        // Each row: its samples, in order.
        let mut rows: Vec<Vec<&TokenizedSequence>> = Vec::new();
        let mut answers = Vec::new();
        let mut prompts = Vec::new();
        let answer = |unit: &Unit| match unit.members.as_slice() {
            [only] => sample(*only).answer.clone(),
            _ => None,
        };
        let prompt = |unit: &Unit| match unit.members.as_slice() {
            [only] => sample(*only).prompt.clone(),
            _ => None,
        };
        for &u in units {
            let unit = &self.units[u];
            rows.push(unit.members.iter().map(|&i| &sample(i).main).collect());
            answers.push(answer(unit));
            prompts.push(prompt(unit));
        }
        let pairs = if matches!(kind, SampleKind::Preference | SampleKind::Unpaired) {
            for &u in units {
                let unit = &self.units[u];
                let second = sample(unit.members[0]).second_row();
                rows.push(vec![
                    second.expect("pairs and unpaired samples have a second row"),
                ]);
                answers.push(answer(unit));
                prompts.push(prompt(unit));
            }
            units.len()
        } else {
            0
        };
        let labels = if kind == SampleKind::Unpaired {
            units
                .iter()
                .map(|&u| {
                    let member = self.units[u].members[0];
                    sample(member).label.expect("unpaired samples have a label")
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut batch = rows_to_batch(&rows, self.config.pad_id, device)?;
        batch.kind = kind;
        batch.pairs = pairs;
        batch.labels = labels;
        batch.answers = answers;
        batch.prompts = prompts;
        Ok(batch)
    }
}

impl TrainBatch {
    /// A batch of single-sample rows, padded with `pad_id` (kind
    /// [`SampleKind::Chat`], no pairs, no answers; set them after). For
    /// callers that build batches themselves, e.g. tests of loss functions.
    pub fn from_rows(rows: &[TokenizedSequence], pad_id: u32, device: &Device) -> Result<Self> {
        let rows: Vec<Vec<&TokenizedSequence>> = rows.iter().map(|r| vec![r]).collect();
        rows_to_batch(&rows, pad_id, device)
    }
}

/// Pads rows (each the concatenation of its samples) into tensors.
fn rows_to_batch(
    rows: &[Vec<&TokenizedSequence>],
    pad_id: u32,
    device: &Device,
) -> Result<TrainBatch> {
    let b = rows.len();
    let s = rows
        .iter()
        .map(|r| r.iter().map(|seq| seq.len()).sum::<usize>())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut ids = vec![pad_id; b * s];
    let mut positions = vec![0u32; b * s];
    let mut segments = vec![0u32; b * s];
    let mut weights = vec![0f32; b * s];
    let mut tokens = 0;
    for (r, row) in rows.iter().enumerate() {
        let mut t = r * s;
        for (k, seq) in row.iter().enumerate() {
            for (p, (&id, &w)) in seq.ids.iter().zip(&seq.weights).enumerate() {
                ids[t] = id;
                positions[t] = p as u32;
                segments[t] = k as u32 + 1;
                weights[t] = w;
                t += 1;
            }
            tokens += seq.len();
        }
    }
    // Position t predicts token t + 1, within the same sample only.
    let mut mask = vec![0f32; b * (s - 1)];
    for r in 0..b {
        for t in 0..s - 1 {
            let (here, next) = (r * s + t, r * s + t + 1);
            if segments[next] != 0 && segments[here] == segments[next] {
                mask[r * (s - 1) + t] = weights[next];
            }
        }
    }
    Ok(TrainBatch {
        input: ModelInput {
            ids: Tensor::from_vec(ids, (b, s), device)?,
            positions: Tensor::from_vec(positions, (b, s), device)?,
            segments: Tensor::from_vec(segments, (b, s), device)?,
        },
        loss_mask: Tensor::from_vec(mask, (b, s - 1), device)?,
        kind: SampleKind::Chat,
        pairs: 0,
        labels: Vec::new(),
        tokens,
        answers: vec![None; b],
        prompts: vec![None; b],
    })
}

/// Gives every kept unpaired sample its KL row (see the module docs): its
/// own prompt, then the answer of the next kept unpaired sample in data
/// order, cut to `max_len` tokens. Returns the tokens added.
fn attach_kl_rows(samples: &mut [Option<Prepared>], max_len: usize) -> usize {
    let unpaired: Vec<usize> = (0..samples.len())
        .filter(|&i| {
            samples[i]
                .as_ref()
                .is_some_and(|s| s.kind == SampleKind::Unpaired)
        })
        .collect();
    let mut added = 0;
    for (k, &i) in unpaired.iter().enumerate() {
        let partner = unpaired[(k + 1) % unpaired.len()];
        let other = samples[partner].as_ref().expect("kept").main.clone();
        let own = samples[i].as_mut().expect("kept");
        let row = mismatched(&own.main, &other, max_len);
        added += row.len();
        own.kl = Some(row);
    }
    added
}

/// `own`'s prompt followed by `other`'s answer. A sequence's prompt is
/// everything before its first trained token (the template's untrained
/// assistant header included), its answer the rest, weights and all.
fn mismatched(
    own: &TokenizedSequence,
    other: &TokenizedSequence,
    max_len: usize,
) -> TokenizedSequence {
    let answer_start = |seq: &TokenizedSequence| {
        seq.weights
            .iter()
            .position(|w| *w > 0.0)
            .unwrap_or(seq.len())
    };
    let (prompt_end, answer_from) = (answer_start(own), answer_start(other));
    let mut ids = own.ids[..prompt_end].to_vec();
    let mut weights = vec![0.0; prompt_end];
    ids.extend_from_slice(&other.ids[answer_from..]);
    weights.extend_from_slice(&other.weights[answer_from..]);
    ids.truncate(max_len);
    weights.truncate(max_len);
    TokenizedSequence { ids, weights }
}

/// The units of the kept samples: one per sample, except that with packing
/// text and chat samples are packed best-fit-decreasing into rows of up to
/// `max_seq_len` tokens (fixed for the run; the rows are shuffled per
/// epoch). Pairs stay unpacked so chosen and rejected rows line up, and
/// prompts because generation continues each one.
fn make_units(samples: &[Option<Prepared>], config: &BatchConfig) -> Vec<Unit> {
    let mut units = Vec::new();
    let mut packable = Vec::new();
    for (i, sample) in samples.iter().enumerate() {
        let Some(sample) = sample else { continue };
        let len = sample
            .main
            .len()
            .max(sample.second_row().map_or(0, |r| r.len()));
        let packs = config.packing && matches!(sample.kind, SampleKind::Text | SampleKind::Chat);
        if packs {
            packable.push((i, len, sample.kind));
        } else {
            units.push(Unit {
                kind: sample.kind,
                members: vec![i],
                len,
            });
        }
    }
    for kind in [SampleKind::Text, SampleKind::Chat] {
        let mut items: Vec<(usize, usize)> = packable
            .iter()
            .filter(|(_, _, k)| *k == kind)
            .map(|&(i, len, _)| (i, len))
            .collect();
        // Longest first; ties by index so the packing is deterministic.
        items.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut rows: Vec<Unit> = Vec::new();
        // (room left, row): the tightest row a sample fits is the first key
        // at or above its length.
        let mut room: BTreeMap<(usize, usize), ()> = BTreeMap::new();
        for (i, len) in items {
            match room.range((len, 0)..).next().map(|(k, _)| *k) {
                Some((left, row)) => {
                    room.remove(&(left, row));
                    rows[row].members.push(i);
                    rows[row].len += len;
                    room.insert((left - len, row), ());
                }
                None => {
                    room.insert((config.max_seq_len - len, rows.len()), ());
                    rows.push(Unit {
                        kind,
                        members: vec![i],
                        len,
                    });
                }
            }
        }
        units.extend(rows);
    }
    units
}

/// HF's `get_length_grouped_indices`: cut the shuffled order into
/// mega-batches of `min(n / (4·batch), 50)·batch` (at least one batch),
/// sort each by length, longest first, and move the longest unit of all to
/// the very front so a run that runs out of memory does so at step 1.
fn group_by_length(order: &[usize], lengths: &[usize], batch_size: usize) -> Vec<usize> {
    let mult = (order.len() / (batch_size * 4)).clamp(1, 50);
    let mega = mult * batch_size;
    let mut groups: Vec<Vec<(usize, usize)>> = order
        .iter()
        .zip(lengths)
        .map(|(&u, &len)| (u, len))
        .collect::<Vec<_>>()
        .chunks(mega)
        .map(|chunk| {
            let mut chunk = chunk.to_vec();
            // Stable, so equal lengths keep their shuffled order.
            chunk.sort_by_key(|&(_, len)| std::cmp::Reverse(len));
            chunk
        })
        .collect();
    if let Some(longest) = (0..groups.len()).max_by(|&a, &b| {
        // First of the maxima, like torch.argmax.
        groups[a][0].1.cmp(&groups[b][0].1).then(b.cmp(&a))
    }) {
        let first = groups[0][0];
        groups[0][0] = groups[longest][0];
        groups[longest][0] = first;
    }
    groups.into_iter().flatten().map(|(u, _)| u).collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::OnceLock;

    use super::*;
    use crate::sample::{Message, Sample};
    use crate::text::{ModelFiles, RenderOptions};

    fn qwen3() -> &'static ModelFiles {
        static FILES: OnceLock<ModelFiles> = OnceLock::new();
        FILES.get_or_init(|| {
            ModelFiles::from_dir(
                &Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen3"),
            )
            .expect("tests/fixtures/qwen3 loads")
        })
    }

    fn chat(user: &str, assistant: &str) -> BatchSample {
        let sample = Sample::Chat {
            messages: vec![
                Message::new("user", user),
                Message::new("assistant", assistant),
            ],
            tools: None,
        };
        BatchSample {
            tokens: qwen3()
                .tokenize(&sample, &RenderOptions::default())
                .unwrap(),
            kind: SampleKind::Chat,
            answer: None,
            prompt: None,
            label: None,
        }
    }

    fn config(batch_size: usize, max_seq_len: usize) -> BatchConfig {
        BatchConfig {
            batch_size,
            max_seq_len,
            packing: false,
            group_by_length: false,
            seed: 1234,
            pad_id: qwen3().tokenizer.token_id("<|endoftext|>").unwrap(),
        }
    }

    fn u32s(t: &Tensor) -> Vec<Vec<u32>> {
        t.to_vec2().unwrap()
    }

    fn f32s(t: &Tensor) -> Vec<Vec<f32>> {
        t.to_vec2().unwrap()
    }

    /// The text of the tokens whose prediction the mask trains, per row.
    fn trained_text(batch: &TrainBatch) -> Vec<String> {
        let ids = u32s(&batch.input.ids);
        let mask = f32s(&batch.loss_mask);
        ids.iter()
            .zip(&mask)
            .map(|(ids, mask)| {
                let trained: Vec<u32> = (0..mask.len())
                    .filter(|&t| mask[t] > 0.0)
                    .map(|t| ids[t + 1])
                    .collect();
                qwen3().tokenizer.decode(&trained).unwrap()
            })
            .collect()
    }

    #[test]
    fn loss_mask_covers_only_the_assistant_answer() {
        let samples = vec![
            chat("What is 2+2?", "4."),
            chat("Name a colour, please, any colour you like.", "Blue."),
        ];
        let mut batcher = Batcher::new(samples, config(2, 64)).unwrap();
        let batch = batcher.next_batch(&Device::Cpu).unwrap();
        let (b, s) = batch.input.ids.dims2().unwrap();
        assert_eq!(b, 2);
        assert_eq!(batch.loss_mask.dims2().unwrap(), (2, s - 1));
        let mut texts = trained_text(&batch);
        texts.sort();
        // The answer and its end-of-turn token; nothing of the prompt.
        for (text, answer) in texts.iter().zip(["4.", "Blue."]) {
            assert!(text.contains(answer), "{text:?}");
            assert!(
                text.ends_with("<|im_end|>") || text.ends_with("<|im_end|>\n"),
                "{text:?}"
            );
            assert!(
                !text.contains("user") && !text.contains("colour"),
                "{text:?}"
            );
        }
        // Padding: segment 0, mask 0; tokens counts the rest.
        let segments = u32s(&batch.input.segments);
        let real: usize = segments.iter().flatten().filter(|s| **s != 0).count();
        assert_eq!(batch.tokens, real);
        assert!(
            segments.iter().any(|row| row.contains(&0)),
            "rows differ in length"
        );
        let mask = f32s(&batch.loss_mask);
        for (row, seg) in mask.iter().zip(&segments) {
            for t in 0..row.len() {
                if seg[t + 1] == 0 {
                    assert_eq!(row[t], 0.0);
                }
            }
        }
        assert_eq!(batch.kind, SampleKind::Chat);
        assert_eq!(batch.answers, vec![None, None]);
    }

    #[test]
    fn loss_weight_scales_the_mask() {
        let sample = Sample::Chat {
            messages: vec![
                Message::new("user", "Hi"),
                Message {
                    role: "assistant".into(),
                    content: "Hello.".into(),
                    loss_weight: Some(0.5),
                },
            ],
            tools: None,
        };
        let tokens = qwen3()
            .tokenize(&sample, &RenderOptions::default())
            .unwrap();
        let sample = BatchSample {
            tokens,
            kind: SampleKind::Chat,
            answer: None,
            prompt: None,
            label: None,
        };
        let batch = Batcher::new(vec![sample], config(1, 64))
            .unwrap()
            .next_batch(&Device::Cpu)
            .unwrap();
        let mask = f32s(&batch.loss_mask);
        assert!(mask[0].iter().all(|w| *w == 0.0 || *w == 0.5));
        assert!(mask[0].contains(&0.5));
    }

    #[test]
    fn truncation_is_counted_and_emptied_samples_dropped() {
        let long_prompt = "word ".repeat(40);
        let samples = vec![
            chat("Hi", "Hello there, friend."), // fits
            chat("Hello", &"Yes. ".repeat(20)), // answer cut, some trained left
            chat(&long_prompt, "Fine."),        // answer cut away entirely
        ];
        let lens: Vec<usize> = samples.iter().map(|s| s.tokens.main.len()).collect();
        let max = 24;
        assert!(lens[0] <= max && lens[1] > max && lens[2] > max, "{lens:?}");
        let mut batcher = Batcher::new(samples, config(4, max)).unwrap();
        let stats = batcher.stats().clone();
        assert_eq!(stats.samples, 3);
        assert_eq!(stats.truncated_samples, 2);
        assert_eq!(stats.dropped_empty, 1);
        assert_eq!(stats.kept, 2);
        assert_eq!(stats.tokens, lens[0] + max);
        assert_eq!(stats.batches_per_epoch, 1);
        let batch = batcher.next_batch(&Device::Cpu).unwrap();
        assert_eq!(batch.input.ids.dims2().unwrap(), (2, max));
        let mut members: Vec<usize> = batcher
            .epoch_plan(0)
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        members.sort();
        assert_eq!(members, vec![0, 1]);
    }

    #[test]
    fn packing_restarts_positions_and_separates_segments() {
        let samples = vec![chat("A?", "a."), chat("B?", "b."), chat("C?", "c.")];
        let lens: Vec<usize> = samples.iter().map(|s| s.tokens.main.len()).collect();
        let total: usize = lens.iter().sum();
        let mut cfg = config(1, total);
        cfg.packing = true;
        let mut batcher = Batcher::new(samples.clone(), cfg).unwrap();
        assert_eq!(batcher.stats().rows, 1);
        let batch = batcher.next_batch(&Device::Cpu).unwrap();
        assert_eq!(batch.input.ids.dims2().unwrap(), (1, total));
        let segments = &u32s(&batch.input.segments)[0];
        let positions = &u32s(&batch.input.positions)[0];
        let ids = &u32s(&batch.input.ids)[0];
        let mask = &f32s(&batch.loss_mask)[0];
        // Three segments 1, 2, 3, each with positions 0..len and its own ids.
        let mut start = 0;
        for k in 1..=3u32 {
            let len = segments.iter().filter(|s| **s == k).count();
            assert!(segments[start..start + len].iter().all(|s| *s == k));
            assert_eq!(
                positions[start..start + len],
                (0..len as u32).collect::<Vec<_>>()[..]
            );
            let member = batcher.epoch_plan(0)[0][0][k as usize - 1];
            assert_eq!(ids[start..start + len], samples[member].tokens.main.ids[..]);
            // The sample's own mask, shifted: weights[t + 1] within it.
            let w = &samples[member].tokens.main.weights;
            assert_eq!(mask[start..start + len - 1], w[1..]);
            // No loss across the boundary into the next sample.
            if start + len < total {
                assert_eq!(mask[start + len - 1], 0.0);
            }
            start += len;
        }
        assert_eq!(start, total);
        assert_eq!(batch.answers, vec![None]);

        // Rows hold at most max_seq_len: one token less splits them.
        let mut cfg = config(4, total - 1);
        cfg.packing = true;
        let batcher = Batcher::new(samples, cfg).unwrap();
        assert_eq!(batcher.stats().rows, 2);
    }

    fn many(n: usize) -> Vec<BatchSample> {
        (0..n)
            .map(|i| chat(&format!("Question {i}?"), &"ok ".repeat(1 + i % 5)))
            .collect()
    }

    #[test]
    fn shuffle_is_seeded_and_differs_per_epoch() {
        let samples = many(12);
        let a = Batcher::new(samples.clone(), config(3, 64)).unwrap();
        let b = Batcher::new(samples.clone(), config(3, 64)).unwrap();
        assert_eq!(a.batches_per_epoch(), 4);
        assert_eq!(a.epoch_plan(0), b.epoch_plan(0));
        assert_ne!(a.epoch_plan(0), a.epoch_plan(1));
        let mut other = config(3, 64);
        other.seed = 99;
        assert_ne!(
            a.epoch_plan(0),
            Batcher::new(samples, other).unwrap().epoch_plan(0)
        );
        // Every sample exactly once per epoch.
        let mut seen: Vec<usize> = a.epoch_plan(1).into_iter().flatten().flatten().collect();
        seen.sort();
        assert_eq!(seen, (0..12).collect::<Vec<_>>());
    }

    #[test]
    fn length_grouping_puts_the_longest_first_and_sorts_mega_batches() {
        let samples = many(20);
        let lens: Vec<usize> = samples.iter().map(|s| s.tokens.main.len()).collect();
        let mut cfg = config(2, 64);
        cfg.group_by_length = true;
        let batcher = Batcher::new(samples, cfg).unwrap();
        let order: Vec<usize> = batcher
            .epoch_plan(0)
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        assert_eq!(lens[order[0]], *lens.iter().max().unwrap());
        // 20 / (2·4) = 2 batches per mega-batch: 4 units, sorted by length
        // (the first mega-batch's head was swapped with the longest).
        for group in order.chunks(4).skip(1) {
            assert!(
                group.windows(2).all(|w| lens[w[0]] >= lens[w[1]]),
                "{group:?}"
            );
        }
    }

    #[test]
    fn resuming_at_a_cursor_yields_the_same_batches() {
        let samples = many(10);
        let run = |batcher: &mut Batcher, n: usize| -> Vec<Vec<Vec<u32>>> {
            (0..n)
                .map(|_| u32s(&batcher.next_batch(&Device::Cpu).unwrap().input.ids))
                .collect()
        };
        let mut full = Batcher::new(samples.clone(), config(3, 64)).unwrap();
        assert_eq!(full.batches_per_epoch(), 4);
        let all = run(&mut full, 10); // 2.5 epochs
        assert_eq!(full.cursor(), Cursor { epoch: 2, index: 2 });

        let mut first = Batcher::new(samples.clone(), config(3, 64)).unwrap();
        run(&mut first, 5);
        let saved = serde_json::to_string(&first.cursor()).unwrap();
        assert_eq!(first.cursor(), Cursor { epoch: 1, index: 1 });

        let mut resumed = Batcher::new(samples, config(3, 64)).unwrap();
        resumed.seek(serde_json::from_str(&saved).unwrap()).unwrap();
        assert_eq!(run(&mut resumed, 5), all[5..]);
    }

    #[test]
    fn preference_batches_put_chosen_rows_then_rejected_rows() {
        let pair = |q: &str, good: &str, bad: &str| {
            let sample = Sample::Preference {
                prompt: vec![Message::new("user", q)],
                chosen: vec![Message::new("assistant", good)],
                rejected: vec![Message::new("assistant", bad)],
            };
            BatchSample {
                tokens: qwen3()
                    .tokenize(&sample, &RenderOptions::default())
                    .unwrap(),
                kind: SampleKind::Preference,
                answer: None,
                prompt: None,
                label: None,
            }
        };
        let samples = vec![
            pair("Capital of France?", "Paris.", "Rome, I think."),
            pair("2+2?", "4.", "5."),
        ];
        let mut batcher = Batcher::new(samples.clone(), config(2, 64)).unwrap();
        let batch = batcher.next_batch(&Device::Cpu).unwrap();
        assert_eq!(batch.kind, SampleKind::Preference);
        assert_eq!(batch.pairs, 2);
        assert_eq!(batch.input.ids.dims2().unwrap().0, 4);
        let order: Vec<usize> = batcher.epoch_plan(0)[0].iter().map(|m| m[0]).collect();
        let texts = trained_text(&batch);
        for (p, &i) in order.iter().enumerate() {
            let (good, bad) = [("Paris.", "Rome"), ("4.", "5.")][i];
            assert!(texts[p].contains(good), "{:?}", texts[p]);
            assert!(texts[p + 2].contains(bad), "{:?}", texts[p + 2]);
        }
    }

    #[test]
    fn unpaired_batches_put_the_samples_then_their_mismatched_kl_rows() {
        let judged = |q: &str, answer: &str, label: bool| {
            let sample = Sample::Unpaired {
                prompt: vec![Message::new("user", q)],
                completion: vec![Message::new("assistant", answer)],
                label,
            };
            BatchSample {
                tokens: qwen3()
                    .tokenize(&sample, &RenderOptions::default())
                    .unwrap(),
                kind: SampleKind::Unpaired,
                answer: None,
                prompt: None,
                label: Some(label),
            }
        };
        let samples = vec![
            judged("Capital of France?", "Paris.", true),
            judged("2+2?", "Five.", false),
            judged("Colour of the sky?", "Blue.", true),
        ];
        let mut batcher = Batcher::new(samples, config(3, 64)).unwrap();
        let batch = batcher.next_batch(&Device::Cpu).unwrap();
        assert_eq!(batch.kind, SampleKind::Unpaired);
        assert_eq!(batch.pairs, 3);
        assert_eq!(batch.input.ids.dims2().unwrap().0, 6);
        let order: Vec<usize> = batcher.epoch_plan(0)[0].iter().map(|m| m[0]).collect();
        let answers = ["Paris.", "Five.", "Blue."];
        let questions = ["Capital of France?", "2+2?", "Colour of the sky?"];
        let texts = trained_text(&batch);
        let ids = u32s(&batch.input.ids);
        for (row, &i) in order.iter().enumerate() {
            assert_eq!(batch.labels[row], i != 1, "row {row} is sample {i}");
            assert!(texts[row].contains(answers[i]), "{:?}", texts[row]);
            // The KL row: this sample's prompt, the next sample's answer
            // (in data order, the last one wrapping to the first).
            let kl_row = row + 3;
            let partner = (i + 1) % 3;
            assert!(
                texts[kl_row].contains(answers[partner]),
                "{:?}",
                texts[kl_row]
            );
            let whole = qwen3().tokenizer.decode(&ids[kl_row]).unwrap();
            assert!(whole.contains(questions[i]), "{whole:?}");
            assert!(!whole.contains(answers[i]), "{whole:?}");
        }
    }

    /// Synthetic sequences (ids below the tiny model's vocab of 128).
    fn seq(ids: &[u32], weights: &[f32]) -> BatchSample {
        BatchSample {
            tokens: TokenizedSample {
                main: TokenizedSequence {
                    ids: ids.to_vec(),
                    weights: weights.to_vec(),
                },
                rejected: None,
            },
            kind: SampleKind::Chat,
            answer: None,
            prompt: None,
            label: None,
        }
    }

    /// `Σ logprob · mask` of every batch of epoch 0.
    fn weighted_logprob_sum(
        model: &crate::model::qwen3::Qwen3,
        samples: Vec<BatchSample>,
        packing: bool,
    ) -> (f32, usize) {
        let mut cfg = config(4, 16);
        cfg.packing = packing;
        cfg.pad_id = 0;
        let mut batcher = Batcher::new(samples, cfg).unwrap();
        let mode = crate::model::linear::Mode {
            training: false,
            adapters: false,
        };
        let mut total = 0.0;
        for _ in 0..batcher.batches_per_epoch() {
            let batch = batcher.next_batch(&Device::Cpu).unwrap();
            let logprobs = model.token_logprobs(&batch.input, mode).unwrap();
            total += (logprobs * &batch.loss_mask)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
        }
        (total, batcher.stats().rows)
    }

    #[test]
    fn packed_rows_give_the_tiny_model_the_same_loss_as_separate_rows() {
        use crate::model::qwen3::{LoadOptions, Qwen3, TrainMode};
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-qwen3/untied");
        let opts = LoadOptions {
            train: TrainMode::Frozen,
            ..LoadOptions::default()
        };
        let model = Qwen3::load(&dir, &Device::Cpu, &opts).unwrap();
        let samples = vec![
            seq(&[5, 17, 99, 3, 42], &[0.0, 0.0, 1.0, 1.0, 1.0]),
            seq(&[7, 8, 120], &[0.0, 0.5, 0.5]),
            seq(&[11, 100, 31, 64, 2, 9], &[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]),
            seq(&[30, 4], &[0.0, 1.0]),
        ];
        let (separate, rows) = weighted_logprob_sum(&model, samples.clone(), false);
        assert_eq!(rows, 4);
        let (packed, rows) = weighted_logprob_sum(&model, samples, true);
        assert_eq!(rows, 1, "16 tokens fit one row");
        assert!(separate < 0.0);
        assert!(
            (separate - packed).abs() < 1e-4,
            "separate {separate} vs packed {packed}"
        );
    }

    #[test]
    fn prompt_samples_keep_their_answers_and_are_not_dropped() {
        let sample = Sample::Prompt {
            prompt: vec![Message::new("user", "What is 6*7?")],
            answer: Some("42".into()),
        };
        let options = RenderOptions {
            add_generation_prompt: true,
            ..RenderOptions::default()
        };
        let tokens = qwen3().tokenize(&sample, &options).unwrap();
        let prompt = BatchSample {
            tokens,
            kind: SampleKind::Prompt,
            answer: Some("42".into()),
            prompt: None,
            label: None,
        };
        let mut batcher = Batcher::new(vec![prompt, chat("Hi", "Hello.")], config(2, 64)).unwrap();
        assert_eq!(batcher.stats().kept, 2);
        // Two kinds: never in one batch.
        assert_eq!(batcher.batches_per_epoch(), 2);
        let batches = [
            batcher.next_batch(&Device::Cpu).unwrap(),
            batcher.next_batch(&Device::Cpu).unwrap(),
        ];
        let prompt = batches
            .iter()
            .find(|b| b.kind == SampleKind::Prompt)
            .unwrap();
        assert_eq!(prompt.answers, vec![Some("42".to_string())]);
        assert!(f32s(&prompt.loss_mask)[0].iter().all(|w| *w == 0.0));

        // A long prompt keeps its last tokens: the generation header.
        let sample = Sample::Prompt {
            prompt: vec![Message::new("user", "word ".repeat(40))],
            answer: None,
        };
        let tokens = qwen3().tokenize(&sample, &options).unwrap();
        let full = tokens.main.ids.clone();
        let prompt = BatchSample {
            tokens,
            kind: SampleKind::Prompt,
            answer: None,
            prompt: None,
            label: None,
        };
        let mut batcher = Batcher::new(vec![prompt], config(1, 16)).unwrap();
        assert_eq!(batcher.stats().truncated_samples, 1);
        let ids = u32s(&batcher.next_batch(&Device::Cpu).unwrap().input.ids);
        assert_eq!(ids[0], full[full.len() - 16..]);
    }
}
