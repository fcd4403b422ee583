//! Choosing the next token from a row of logits: penalties, then greedy or
//! temperature sampling restricted by top-k, min-p and top-p, with a seeded
//! generator per sequence.
//!
//! The order is vLLM's (penalties, temperature, top-k, min-p, top-p), so the
//! same settings mean the same thing here and there. Everything runs on the
//! CPU over one `[vocab]` row; with Qwen's 151,936 entries a full sort per
//! token would dominate a small model's decode, so top-p sorts only as many
//! candidates as it needs (see [`nucleus`]).

use std::collections::{HashMap, HashSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::params::SamplingParams;

/// The per-sequence sampling state.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// Prompt and generated tokens (the repetition penalty's set).
    seen: HashSet<u32>,
    /// Generated tokens and how often (presence and frequency penalties).
    counts: HashMap<u32, u32>,
}

/// The chosen token with the log-probabilities asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub token: u32,
    /// `(chosen logprob, top alternatives best first)` when the params ask.
    pub logprobs: Option<(f32, Vec<(u32, f32)>)>,
}

impl Sampler {
    /// A sampler for a sequence continuing `prompt`; `seed` overrides the
    /// params' seed (the `n` choices of one request get `seed + i`).
    pub fn new(params: SamplingParams, prompt: &[u32], seed: u64) -> Self {
        let seen = if params.repetition_penalty != 1.0 {
            prompt.iter().copied().collect()
        } else {
            HashSet::new()
        };
        Sampler {
            params,
            rng: StdRng::seed_from_u64(seed),
            seen,
            counts: HashMap::new(),
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from `logits` (modified in place) and records it.
    pub fn sample(&mut self, logits: &mut [f32]) -> Choice {
        self.apply_penalties(logits);
        let logprobs = self
            .params
            .logprobs
            .map(|k| (log_softmax_max_sum(logits), k));
        let token = if self.params.is_greedy() {
            argmax(logits)
        } else {
            self.draw(logits)
        };
        let logprobs = logprobs.map(|((max, lse), k)| {
            let lp = |t: u32| logits[t as usize] - max - lse;
            let top = top_k_indices(logits, k)
                .into_iter()
                .map(|t| (t, lp(t)))
                .collect();
            (lp(token), top)
        });
        self.record(token);
        Choice { token, logprobs }
    }

    fn record(&mut self, token: u32) {
        if self.params.repetition_penalty != 1.0 {
            self.seen.insert(token);
        }
        *self.counts.entry(token).or_default() += 1;
    }

    fn apply_penalties(&self, logits: &mut [f32]) {
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            for &t in &self.seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&t, &n) in &self.counts {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l -= p.presence_penalty + p.frequency_penalty * n as f32;
                }
            }
        }
    }

    /// Temperature sampling within top-k, min-p and top-p.
    fn draw(&mut self, logits: &[f32]) -> u32 {
        let p = &self.params;
        let inv_t = 1.0 / p.temperature;
        // Candidates with unnormalised probabilities exp((l - max) / T).
        let mut cand: Vec<(u32, f32)> = if p.top_k > 0 && p.top_k < logits.len() {
            top_k_indices(logits, p.top_k)
                .into_iter()
                .map(|t| (t, logits[t as usize]))
                .collect()
        } else {
            logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, l))
                .collect()
        };
        let max = cand.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
        for c in &mut cand {
            c.1 = ((c.1 - max) * inv_t).exp();
        }
        if p.min_p > 0.0 {
            // The most likely candidate has weight exp(0) = 1.
            cand.retain(|c| c.1 >= p.min_p);
        }
        if p.top_p < 1.0 {
            cand = nucleus(cand, p.top_p);
        }
        let total: f64 = cand.iter().map(|c| c.1 as f64).sum();
        let mut r = self.rng.random::<f64>() * total;
        for &(t, w) in &cand {
            r -= w as f64;
            if r < 0.0 {
                return t;
            }
        }
        cand.last().map_or(0, |c| c.0)
    }
}

/// The smallest set of most likely candidates whose probability reaches
/// `top_p`, most likely first. Sorts a growing prefix (64, 256, ...) found
/// by selection instead of the whole vocabulary: the nucleus is usually a
/// few dozen tokens.
pub fn nucleus(mut cand: Vec<(u32, f32)>, top_p: f32) -> Vec<(u32, f32)> {
    let total: f64 = cand.iter().map(|c| c.1 as f64).sum();
    let target = top_p as f64 * total;
    let by_weight = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let mut k = 64.min(cand.len());
    loop {
        if k < cand.len() {
            cand.select_nth_unstable_by(k - 1, by_weight);
        }
        let head_sum: f64 = cand[..k].iter().map(|c| c.1 as f64).sum();
        if head_sum >= target || k == cand.len() {
            let head = &mut cand[..k];
            head.sort_unstable_by(by_weight);
            let mut acc = 0.0;
            let mut keep = 0;
            for c in head.iter() {
                acc += c.1 as f64;
                keep += 1;
                if acc >= target {
                    break;
                }
            }
            cand.truncate(keep.max(1));
            return cand;
        }
        k = (k * 4).min(cand.len());
    }
}

/// Index of the largest logit (the first on ties, as `torch.argmax`).
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// The `k` largest entries' indices, largest first (ties: lower index first).
pub fn top_k_indices(row: &[f32], k: usize) -> Vec<u32> {
    let k = k.min(row.len());
    if k == 0 {
        return Vec::new();
    }
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let by_value = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, by_value);
        idx.truncate(k);
    }
    idx.sort_unstable_by(by_value);
    idx
}

/// `(max, log(sum(exp(l - max))))` of a row, for log-softmax values.
fn log_softmax_max_sum(row: &[f32]) -> (f32, f32) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&l| ((l - max) as f64).exp()).sum();
    (max, sum.ln() as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        let mut p = SamplingParams::default();
        f(&mut p);
        p
    }

    fn logits() -> Vec<f32> {
        (0..1000)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0)
            .collect()
    }

    #[test]
    fn greedy_takes_the_argmax_and_first_on_ties() {
        let mut s = Sampler::new(SamplingParams::greedy(1), &[], 0);
        assert_eq!(s.sample(&mut [0.0, 3.0, 1.0, 3.0]).token, 1);
    }

    #[test]
    fn the_same_seed_draws_the_same_tokens_and_another_seed_differs() {
        let draw = |seed| {
            let mut s = Sampler::new(params(|p| p.temperature = 1.5), &[], seed);
            (0..50)
                .map(|_| s.sample(&mut logits()).token)
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_k_and_top_p_and_min_p_restrict_the_candidates() {
        let row = logits();
        let best: Vec<u32> = top_k_indices(&row, 3);
        let mut s = Sampler::new(
            params(|p| {
                p.temperature = 2.0;
                p.top_k = 3
            }),
            &[],
            1,
        );
        for _ in 0..200 {
            assert!(best.contains(&s.sample(&mut row.clone()).token));
        }
        // A nucleus this small is the argmax alone.
        let mut s = Sampler::new(params(|p| p.top_p = 1e-6), &[], 2);
        for _ in 0..20 {
            assert_eq!(s.sample(&mut row.clone()).token, argmax(&row));
        }
        // min_p = 1 keeps only tokens as likely as the best.
        let mut s = Sampler::new(params(|p| p.min_p = 1.0), &[], 3);
        assert_eq!(s.sample(&mut row.clone()).token, argmax(&row));
    }

    #[test]
    fn nucleus_keeps_the_smallest_set_reaching_top_p() {
        let cand: Vec<(u32, f32)> = (0..500).map(|i| (i, 1.0 / (1 + i) as f32)).collect();
        let total: f64 = cand.iter().map(|c| c.1 as f64).sum();
        let kept = nucleus(cand, 0.9);
        let sum: f64 = kept.iter().map(|c| c.1 as f64).sum();
        assert!(sum >= 0.9 * total);
        let without_last = sum - kept.last().unwrap().1 as f64;
        assert!(without_last < 0.9 * total);
        // Most likely first, and exactly the prefix 0..len.
        assert!(kept.iter().enumerate().all(|(i, c)| c.0 == i as u32));
    }

    #[test]
    fn penalties_follow_transformers_and_openai() {
        let mut s = Sampler::new(
            params(|p| {
                p.repetition_penalty = 2.0;
                p.temperature = 0.0
            }),
            &[0],
            0,
        );
        // Token 0 (in the prompt) 3.0 -> 1.5 loses to token 1 (2.0).
        assert_eq!(s.sample(&mut [3.0, 2.0, -1.0]).token, 1);
        // Token 1 was generated: 2.0 -> 1.0; token 0 stays 1.5; negative doubles.
        let mut row = [3.0, 2.0, -1.0];
        s.apply_penalties(&mut row);
        assert_eq!(row, [1.5, 1.0, -1.0]);

        let mut s = Sampler::new(
            params(|p| {
                p.frequency_penalty = 0.5;
                p.presence_penalty = 0.25;
                p.temperature = 0.0
            }),
            &[],
            0,
        );
        s.record(2);
        s.record(2);
        let mut row = [0.0, 0.0, 2.0];
        s.apply_penalties(&mut row);
        assert_eq!(row, [0.0, 0.0, 2.0 - 0.25 - 2.0 * 0.5]);
    }

    #[test]
    fn logprobs_are_the_log_softmax_with_the_best_alternatives() {
        let mut s = Sampler::new(
            params(|p| {
                p.temperature = 0.0;
                p.logprobs = Some(2)
            }),
            &[],
            0,
        );
        let row = [1.0f32, 3.0, 2.0];
        let choice = s.sample(&mut row.clone());
        let z: f32 = row.iter().map(|l| l.exp()).sum::<f32>().ln();
        let (chosen, top) = choice.logprobs.unwrap();
        assert_eq!(choice.token, 1);
        assert!((chosen - (3.0 - z)).abs() < 1e-5);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!((top[1].1 - (2.0 - z)).abs() < 1e-5);
    }
}
