//! Reference log-probs computed once before training
//! (`precompute_ref_log_probs`, TRL's `DPOConfig` key of that name): a map
//! from a batch row's content to the frozen reference's per-token
//! log-probs, so that training steps never run the reference.
//!
//! A row is looked up by its content, not by where it sits: the batcher
//! reshuffles every epoch, so the same pair lands in another batch, beside
//! other rows, padded to another length. That is sound because a row's
//! log-probs depend on its own tokens only: attention never leaves a row,
//! and right padding (segment 0) is seen by no real token. The key is the
//! content itself, not a hash of it, so a lookup can never answer with
//! another row's values.

use std::collections::HashMap;

use anyhow::{Result, ensure};
use candle_core::{DType, Device, Tensor};

use super::batch::{Batcher, Cursor, ModelInput};

/// A row's content: its ids through its last non-padding token, and, for a
/// row that is not one plain sequence (packed samples, or positions other
/// than 0, 1, 2, …), its positions and segments too, since those change the
/// log-probs of the same ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RowKey {
    ids: Vec<u32>,
    layout: Option<(Vec<u32>, Vec<u32>)>,
}

impl RowKey {
    /// The key of one row given as its ids, positions and segments.
    fn of(ids: &[u32], positions: &[u32], segments: &[u32]) -> RowKey {
        // Rows are right-padded: everything after the last token of a
        // non-zero segment is padding.
        let len = segments.iter().rposition(|&s| s != 0).map_or(0, |i| i + 1);
        let plain = segments[..len].iter().all(|&s| s == 1)
            && positions[..len]
                .iter()
                .enumerate()
                .all(|(i, &p)| p as usize == i);
        RowKey {
            ids: ids[..len].to_vec(),
            layout: (!plain).then(|| (positions[..len].to_vec(), segments[..len].to_vec())),
        }
    }

    /// Tokens of the row (padding excluded).
    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// The key of every row of `input`, in row order.
fn row_keys(input: &ModelInput) -> Result<Vec<RowKey>> {
    let read = |t: &Tensor| -> Result<Vec<Vec<u32>>> { Ok(t.to_dtype(DType::U32)?.to_vec2()?) };
    let (ids, positions, segments) = (
        read(&input.ids)?,
        read(&input.positions)?,
        read(&input.segments)?,
    );
    ensure!(
        ids.len() == positions.len() && ids.len() == segments.len(),
        "a model input whose ids, positions and segments differ in rows"
    );
    Ok(ids
        .iter()
        .zip(&positions)
        .zip(&segments)
        .map(|((i, p), s)| RowKey::of(i, p, s))
        .collect())
}

/// The reference's log-probs of every row of the data, by row content.
#[derive(Debug, Default)]
pub struct ReferenceLogProbs {
    /// Per row, `log p(ids[t + 1] | ids[..=t])` for `t` in `0..len - 1`.
    rows: HashMap<RowKey, Vec<f32>>,
}

impl ReferenceLogProbs {
    /// Distinct rows stored.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Stores each row of `input` with its log-probs, `logprobs` being
    /// `[rows, seq - 1]` as the reference computed them for this input.
    /// Values past a row's own length (predictions of padding) are dropped.
    pub fn insert(&mut self, input: &ModelInput, logprobs: &Tensor) -> Result<()> {
        let keys = row_keys(input)?;
        let values: Vec<Vec<f32>> = logprobs.to_dtype(DType::F32)?.to_vec2()?;
        ensure!(
            values.len() == keys.len(),
            "{} rows of log-probs for a batch of {} rows",
            values.len(),
            keys.len()
        );
        for (key, row) in keys.into_iter().zip(values) {
            let n = key.len().saturating_sub(1);
            ensure!(
                row.len() >= n,
                "{} log-probs for a row of {} tokens",
                row.len(),
                key.len()
            );
            self.rows.insert(key, row[..n].to_vec());
        }
        Ok(())
    }

    /// `[rows, seq - 1]` f32 on `input`'s device when every row of `input`
    /// is stored, zeros past each row's own length (where the loss mask is
    /// 0); `None` when any row is missing or rows are shorter than 2 tokens.
    pub fn lookup(&self, input: &ModelInput) -> Result<Option<Tensor>> {
        let (rows, seq) = input.ids.dims2()?;
        if seq < 2 {
            return Ok(None);
        }
        let mut out = vec![0f32; rows * (seq - 1)];
        for (r, key) in row_keys(input)?.iter().enumerate() {
            let Some(values) = self.rows.get(key) else {
                return Ok(None);
            };
            out[r * (seq - 1)..][..values.len()].copy_from_slice(values);
        }
        Ok(Some(Tensor::from_vec(
            out,
            (rows, seq - 1),
            input.ids.device(),
        )?))
    }

    /// Scores every batch of one epoch of `batcher` with `reference` (the
    /// `[rows, seq - 1]` log-probs of a model input) and stores its rows.
    /// Every unit of the data appears once per epoch, and a unit gives the
    /// same rows in every epoch, so one epoch covers the whole run. The
    /// batcher is left where it was. `should_stop` is asked before every
    /// batch (a stop request of the job); the answer is whether the epoch
    /// was scored to the end.
    pub fn add_epoch(
        &mut self,
        batcher: &mut Batcher,
        device: &Device,
        should_stop: &dyn Fn() -> bool,
        mut reference: impl FnMut(&ModelInput) -> Result<Tensor>,
    ) -> Result<bool> {
        let saved = batcher.cursor();
        batcher.seek(Cursor::default())?;
        let mut finished = true;
        for _ in 0..batcher.batches_per_epoch() {
            if should_stop() {
                finished = false;
                break;
            }
            let batch = batcher.next_batch(device)?;
            let logprobs = reference(&batch.input)?;
            self.insert(&batch.input, &logprobs)?;
        }
        batcher.seek(saved)?;
        Ok(finished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::SampleKind;
    use crate::text::{TokenizedSample, TokenizedSequence};
    use crate::train::batch::{BatchConfig, BatchSample};

    fn input(ids: &[&[u32]], positions: &[&[u32]], segments: &[&[u32]]) -> ModelInput {
        let t = |rows: &[&[u32]]| {
            let s = rows[0].len();
            let flat: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
            Tensor::from_vec(flat, (rows.len(), s), &Device::Cpu).unwrap()
        };
        ModelInput {
            ids: t(ids),
            positions: t(positions),
            segments: t(segments),
        }
    }

    /// A fake reference: each log-prob encodes its row's first id and the
    /// position, so a misplaced value shows.
    fn fake(input: &ModelInput) -> Tensor {
        let ids: Vec<Vec<u32>> = input.ids.to_vec2().unwrap();
        let s = ids[0].len();
        let flat: Vec<f32> = ids
            .iter()
            .flat_map(|row| (0..s - 1).map(move |t| -(row[0] as f32) - t as f32 / 4.0))
            .collect();
        Tensor::from_vec(flat, (ids.len(), s - 1), &Device::Cpu).unwrap()
    }

    #[test]
    fn a_row_is_found_in_another_batch_with_other_padding_and_zeros_past_its_end() {
        let mut cache = ReferenceLogProbs::default();
        // Two rows, the second right-padded (segment 0).
        let a = input(
            &[&[5, 6, 7, 8], &[9, 10, 0, 0]],
            &[&[0, 1, 2, 3], &[0, 1, 0, 0]],
            &[&[1, 1, 1, 1], &[1, 1, 0, 0]],
        );
        cache.insert(&a, &fake(&a)).unwrap();
        assert_eq!(cache.len(), 2);

        // The same rows swapped, padded to 5 tokens.
        let b = input(
            &[&[9, 10, 0, 0, 0], &[5, 6, 7, 8, 0]],
            &[&[0, 1, 0, 0, 0], &[0, 1, 2, 3, 0]],
            &[&[1, 1, 0, 0, 0], &[1, 1, 1, 1, 0]],
        );
        let got: Vec<Vec<f32>> = cache.lookup(&b).unwrap().unwrap().to_vec2().unwrap();
        assert_eq!(got[0], [-9.0, 0.0, 0.0, 0.0]);
        assert_eq!(got[1], [-5.0, -5.25, -5.5, 0.0]);

        // One unknown row: no answer for the batch.
        let c = input(&[&[5, 6, 7, 9]], &[&[0, 1, 2, 3]], &[&[1, 1, 1, 1]]);
        assert!(cache.lookup(&c).unwrap().is_none());
    }

    #[test]
    fn the_same_ids_packed_differently_are_different_rows() {
        let mut cache = ReferenceLogProbs::default();
        let plain = input(&[&[1, 2, 3, 4]], &[&[0, 1, 2, 3]], &[&[1, 1, 1, 1]]);
        cache.insert(&plain, &fake(&plain)).unwrap();
        for (positions, segments) in [
            ([0, 1, 0, 1], [1, 1, 2, 2]),
            ([0, 1, 2, 0], [1, 1, 1, 2]),
            // One sequence, but not starting at position 0.
            ([1, 2, 3, 4], [1, 1, 1, 1]),
        ] {
            let packed = input(&[&[1, 2, 3, 4]], &[&positions], &[&segments]);
            assert!(
                cache.lookup(&packed).unwrap().is_none(),
                "{positions:?} {segments:?}"
            );
            cache.insert(&packed, &fake(&packed)).unwrap();
            assert!(cache.lookup(&packed).unwrap().is_some());
        }
        assert_eq!(cache.len(), 4);
        assert!(cache.lookup(&plain).unwrap().is_some());
    }

    #[test]
    fn one_epoch_stores_every_row_and_leaves_the_batcher_where_it_was() {
        let sample = |ids: Vec<u32>| BatchSample {
            tokens: TokenizedSample {
                main: TokenizedSequence {
                    weights: vec![1.0; ids.len()],
                    ids,
                },
                rejected: None,
            },
            kind: SampleKind::Chat,
            answer: None,
            prompt: None,
            label: None,
        };
        let samples: Vec<BatchSample> = (1..=5u32)
            .map(|i| sample((0..i + 1).map(|t| 10 * i + t).collect()))
            .collect();
        let config = BatchConfig {
            batch_size: 2,
            max_seq_len: 16,
            packing: false,
            group_by_length: false,
            seed: 3,
            pad_id: 0,
        };
        let mut batcher = Batcher::new(samples, config).unwrap();
        batcher.next_batch(&Device::Cpu).unwrap();
        let at = batcher.cursor();
        let mut cache = ReferenceLogProbs::default();
        let mut calls = 0;
        // A stop request ends the pass before the next batch.
        let finished = ReferenceLogProbs::default()
            .add_epoch(&mut batcher, &Device::Cpu, &|| true, |_| {
                unreachable!("no batch is scored after a stop request")
            })
            .unwrap();
        assert!(!finished);
        assert_eq!(batcher.cursor(), at);
        let finished = cache
            .add_epoch(&mut batcher, &Device::Cpu, &|| false, |i| {
                calls += 1;
                Ok(fake(i))
            })
            .unwrap();
        assert!(finished);
        assert_eq!(calls, batcher.batches_per_epoch());
        assert_eq!(cache.len(), 5);
        assert_eq!(batcher.cursor(), at);
        // Every batch of a later epoch is answered.
        for _ in 0..2 * batcher.batches_per_epoch() {
            let batch = batcher.next_batch(&Device::Cpu).unwrap();
            let got = cache.lookup(&batch.input).unwrap().expect("every row");
            // Every weight is 1, so the mask is 1 exactly where a row has
            // a next token of its own.
            let want = (fake(&batch.input) * &batch.loss_mask).unwrap();
            let got = (got * &batch.loss_mask).unwrap();
            assert_eq!(
                got.to_vec2::<f32>().unwrap(),
                want.to_vec2::<f32>().unwrap()
            );
        }
    }
}
