//! The sequences being generated and one step over all of them: feed each
//! its pending tokens (a prompt chunk or its last token), sample where a
//! sequence has consumed everything, decide whether it ends.
//!
//! Used by the serving engine (sequences come and go between steps:
//! continuous batching) and by [`generate`], which runs a fixed set of
//! requests to the end (training's `policy.generate`, tests, benchmarks).

use std::sync::Arc;

use anyhow::Result;

use super::adapter::LoadedAdapter;
use super::cache::SeqCache;
use super::forward::{Decoder, Logits, Step};
use super::params::SamplingParams;
use super::request::{Event, FinishReason, GenerationRequest, PositionLogprobs, TokenProb};
use super::sampler::Sampler;
use super::text_stream::{TextStream, token_bytes};
use crate::text::Tokenizer;

/// Identifies a request's sequences in a batch.
pub type RequestKey = u64;

struct Sequence {
    key: RequestKey,
    choice: usize,
    cache: SeqCache,
    /// Tokens to feed next: the rest of the prompt, then the last sampled token.
    pending: Vec<u32>,
    /// More choices to fork from this one when its prompt is done.
    forks: usize,
    /// The seed of choice 0; choice `i` uses `seed + i`.
    seed: u64,
    prompt: Arc<[u32]>,
    generated: usize,
    sampler: Sampler,
    text: TextStream,
    adapter: Option<Arc<LoadedAdapter>>,
    /// Tokens that end this sequence (the model's end tokens unless the
    /// request ignores them, and the request's own stop ids).
    end_tokens: Arc<[u32]>,
}

/// Sequences in flight.
#[derive(Default)]
pub struct Batch {
    seqs: Vec<Sequence>,
}

impl Batch {
    pub fn new() -> Self {
        Batch::default()
    }

    /// Sequences in flight (a request with `n` choices counts `n` once its
    /// prompt is done, 1 before).
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Sequences a request will have once forked.
    pub fn planned_len(&self) -> usize {
        self.seqs.iter().map(|s| 1 + s.forks).sum()
    }

    /// Starts a request. `model_end_tokens` are the model's own end tokens;
    /// `seed` is used when the params carry none.
    pub fn add(
        &mut self,
        key: RequestKey,
        request: &GenerationRequest,
        adapter: Option<Arc<LoadedAdapter>>,
        model_end_tokens: &[u32],
        seed: u64,
        cache: SeqCache,
    ) {
        let params = &request.params;
        let mut end: Vec<u32> = params.stop_token_ids.clone();
        if !params.ignore_eos {
            end.extend_from_slice(model_end_tokens);
        }
        let seed = params.seed.unwrap_or(seed);
        let prompt: Arc<[u32]> = request.prompt.clone().into();
        self.seqs.push(Sequence {
            key,
            choice: 0,
            cache,
            pending: request.prompt.clone(),
            forks: request.n.max(1) - 1,
            seed,
            sampler: Sampler::new(params.clone(), &prompt, seed),
            prompt,
            generated: 0,
            text: TextStream::new(params.stop.clone()),
            adapter,
            end_tokens: end.into(),
        });
    }

    /// Drops every sequence of a request (its reader went away).
    pub fn remove(&mut self, key: RequestKey) {
        self.seqs.retain(|s| s.key != key);
    }

    /// Requests with a sequence in flight.
    pub fn keys(&self) -> Vec<RequestKey> {
        let mut keys: Vec<RequestKey> = self.seqs.iter().map(|s| s.key).collect();
        keys.dedup();
        keys
    }

    /// One forward pass over every sequence: each decoding sequence feeds its
    /// last token, and prefilling sequences feed prompt chunks up to
    /// `prefill_budget` tokens in all (at least one chunk per step, so a long
    /// prompt always progresses). Returns the events, in sequence order.
    pub fn step(
        &mut self,
        decoder: &Decoder<'_>,
        tokenizer: &Tokenizer,
        prefill_budget: usize,
    ) -> Result<Vec<(RequestKey, Event)>> {
        if self.seqs.is_empty() {
            return Ok(Vec::new());
        }
        // Decoding sequences first, then prefill chunks within the budget;
        // grouped by adapter so each adapter's rows are contiguous.
        let mut order: Vec<usize> = (0..self.seqs.len()).collect();
        order.sort_by_key(|&i| {
            let s = &self.seqs[i];
            (
                s.generated == 0,
                s.adapter.as_ref().map_or(0, |a| Arc::as_ptr(a) as usize),
            )
        });
        let mut budget = prefill_budget.max(1);
        let mut fed: Vec<(usize, usize)> = Vec::new(); // (seq, tokens fed)
        for i in order {
            let s = &self.seqs[i];
            let n = if s.generated > 0 {
                s.pending.len()
            } else if budget > 0 || fed.is_empty() {
                let n = s.pending.len().min(budget.max(1));
                budget = budget.saturating_sub(n);
                n
            } else {
                continue;
            };
            fed.push((i, n));
        }
        fed.sort_by_key(|&(i, _)| {
            self.seqs[i]
                .adapter
                .as_ref()
                .map_or(0, |a| Arc::as_ptr(a) as usize)
        });
        let logits = {
            let view: Vec<(Vec<u32>, Option<Arc<LoadedAdapter>>)> = fed
                .iter()
                .map(|&(i, n)| {
                    let s = &self.seqs[i];
                    (s.pending[..n].to_vec(), s.adapter.clone())
                })
                .collect();
            let mut caches: Vec<Option<&mut SeqCache>> =
                self.seqs.iter_mut().map(|s| Some(&mut s.cache)).collect();
            let mut steps: Vec<Step<'_>> = Vec::with_capacity(fed.len());
            for (&(i, _), (tokens, adapter)) in fed.iter().zip(&view) {
                steps.push(Step {
                    cache: caches[i].take().expect("each sequence once"),
                    tokens,
                    adapter: adapter.as_deref(),
                });
            }
            decoder.forward(&mut steps, Logits::Last)?
        };
        let mut events = Vec::new();
        let mut done = vec![false; self.seqs.len()];
        for (row, &(i, n)) in fed.iter().enumerate() {
            self.seqs[i].pending.drain(..n);
            if !self.seqs[i].pending.is_empty() {
                continue; // more prompt to feed
            }
            let logits: Vec<f32> = logits.get(row)?.to_vec1()?;
            // A prompt with n choices is computed once, then forked.
            let mut targets = vec![i];
            let forks = std::mem::take(&mut self.seqs[i].forks);
            for f in 1..=forks {
                let fork = self.seqs[i].fork(f)?;
                self.seqs.push(fork);
                done.push(false);
                targets.push(self.seqs.len() - 1);
            }
            for t in targets {
                let s = &mut self.seqs[t];
                let (ev, ended) = s.sample(logits.clone(), decoder.max_len(), tokenizer)?;
                events.extend(ev.into_iter().map(|e| (s.key, e)));
                done[t] = ended;
            }
        }
        let mut index = 0;
        self.seqs.retain(|_| {
            index += 1;
            !done[index - 1]
        });
        Ok(events)
    }
}

impl Sequence {
    /// Choice `choice` of the same prompt, from here on independent.
    fn fork(&self, choice: usize) -> Result<Sequence> {
        let seed = self.seed.wrapping_add(choice as u64);
        Ok(Sequence {
            key: self.key,
            choice,
            cache: self.cache.fork()?,
            pending: Vec::new(),
            forks: 0,
            seed,
            prompt: self.prompt.clone(),
            generated: 0,
            sampler: Sampler::new(self.sampler.params().clone(), &self.prompt, seed),
            text: TextStream::new(self.sampler.params().stop.clone()),
            adapter: self.adapter.clone(),
            end_tokens: self.end_tokens.clone(),
        })
    }

    /// Samples the next token; returns its events and whether the sequence ended.
    fn sample(
        &mut self,
        mut logits: Vec<f32>,
        max_len: usize,
        tokenizer: &Tokenizer,
    ) -> Result<(Vec<Event>, bool)> {
        let choice = self.sampler.sample(&mut logits);
        let token = choice.token;
        self.generated += 1;
        let logprobs = choice.logprobs.map(|(lp, top)| PositionLogprobs {
            chosen: token_prob(tokenizer, token, lp),
            top: top
                .into_iter()
                .map(|(t, lp)| token_prob(tokenizer, t, lp))
                .collect(),
        });
        let mut events = Vec::new();
        let finished = |reason, text, n| Event::Finished {
            choice: self.choice,
            reason,
            text,
            completion_tokens: n,
        };
        if self.end_tokens.contains(&token) {
            let text = self.text.finish();
            events.push(Event::Token {
                choice: self.choice,
                token,
                text: String::new(),
                logprobs,
            });
            events.push(finished(FinishReason::Stop, text, self.generated));
            return Ok((events, true));
        }
        let pushed = self.text.push(tokenizer, token)?;
        events.push(Event::Token {
            choice: self.choice,
            token,
            text: pushed.text,
            logprobs,
        });
        let params: &SamplingParams = self.sampler.params();
        let reason = if pushed.stopped {
            Some(FinishReason::Stop)
        } else if self.generated >= params.max_new_tokens || self.cache.len() + 1 >= max_len {
            Some(FinishReason::Length)
        } else {
            None
        };
        if let Some(reason) = reason {
            let text = if pushed.stopped {
                String::new()
            } else {
                self.text.finish()
            };
            events.push(finished(reason, text, self.generated));
            return Ok((events, true));
        }
        self.pending.push(token);
        Ok((events, false))
    }
}

fn token_prob(tokenizer: &Tokenizer, token: u32, logprob: f32) -> TokenProb {
    TokenProb {
        token,
        text: tokenizer.decode(&[token]).unwrap_or_default(),
        bytes: token_bytes(tokenizer, token),
        logprob,
    }
}

/// One finished completion of [`generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Choice index within its request.
    pub choice: usize,
    /// Every sampled token, the end token included when one ended it.
    pub tokens: Vec<u32>,
    /// The text (stop strings cut, end token left out).
    pub text: String,
    pub finish_reason: FinishReason,
    /// Per-token log-probabilities when the params asked for them.
    pub logprobs: Vec<PositionLogprobs>,
}

/// Runs `requests` (with their adapters) to the end in one batch and returns
/// each request's completions, choices in order.
pub fn generate(
    decoder: &Decoder<'_>,
    tokenizer: &Tokenizer,
    end_tokens: &[u32],
    requests: &[(GenerationRequest, Option<Arc<LoadedAdapter>>)],
    prefill_budget: usize,
) -> Result<Vec<Vec<Completion>>> {
    let mut batch = Batch::new();
    let mut out: Vec<Vec<Completion>> = Vec::with_capacity(requests.len());
    for (key, (req, adapter)) in requests.iter().enumerate() {
        anyhow::ensure!(!req.prompt.is_empty(), "request {key} has an empty prompt");
        batch.add(
            key as RequestKey,
            req,
            adapter.clone(),
            end_tokens,
            rand::random(),
            decoder.new_cache(),
        );
        out.push(
            (0..req.n.max(1))
                .map(|choice| Completion {
                    choice,
                    tokens: Vec::new(),
                    text: String::new(),
                    finish_reason: FinishReason::Length,
                    logprobs: Vec::new(),
                })
                .collect(),
        );
    }
    while !batch.is_empty() {
        for (key, event) in batch.step(decoder, tokenizer, prefill_budget)? {
            let completions = &mut out[key as usize];
            match event {
                Event::Token {
                    choice,
                    token,
                    text,
                    logprobs,
                } => {
                    let c = &mut completions[choice];
                    c.tokens.push(token);
                    c.text.push_str(&text);
                    c.logprobs.extend(logprobs);
                }
                Event::Finished {
                    choice,
                    reason,
                    text,
                    ..
                } => {
                    let c = &mut completions[choice];
                    c.text.push_str(&text);
                    c.finish_reason = reason;
                }
                Event::Failed { message } => anyhow::bail!(message),
            }
        }
    }
    Ok(out)
}
