//! Generation against references: the training forward pass (KV-cached
//! decode must give its logits), transformers + PEFT greedy `generate`
//! (`tests/fixtures/tiny-qwen3/generation.json`, made by
//! `make_generation.py`), and the sampling / stopping contract.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use serde::Deserialize;

use super::forward::Step;
use super::*;
use crate::model::linear::Mode;
use crate::model::qwen3::{LoadOptions, ModelInput, Qwen3};
use crate::text::Tokenizer;
use crate::train::peft;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn tiny(name: &str) -> Qwen3 {
    let dir = fixtures().join("tiny-qwen3").join(name);
    Qwen3::load(&dir, &Device::Cpu, &LoadOptions::default()).unwrap()
}

/// Qwen3's tokenizer: the tiny models' 128 ids are single byte-level
/// characters in it, so their output decodes to (odd) text.
fn tokenizer() -> Tokenizer {
    Tokenizer::from_file(&fixtures().join("qwen3/tokenizer.json")).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn cached_ragged_decode_matches_the_full_forward_pass() {
    let model = tiny("untied");
    let rows: Vec<Vec<u32>> = vec![
        (0..13).map(|i| (i * 7 + 3) % 128).collect(),
        (0..5).map(|i| (i * 11 + 1) % 128).collect(),
        (0..9).map(|i| (i * 5 + 2) % 128).collect(),
    ];
    let decoder = Decoder::new(&model, AttachedAdapters::Off, 64).unwrap();
    let mut caches: Vec<_> = rows.iter().map(|_| decoder.new_cache()).collect();
    // Step 1: ragged prefill of different prompt lengths in one pass.
    let prefix = [4usize, 2, 6];
    let mut got: Vec<Vec<Tensor>> = vec![Vec::new(); rows.len()];
    {
        let mut steps: Vec<Step<'_>> = caches
            .iter_mut()
            .zip(&rows)
            .zip(prefix)
            .map(|((cache, row), p)| Step {
                cache,
                tokens: &row[..p],
                adapter: None,
            })
            .collect();
        let logits = decoder.forward(&mut steps, forward::Logits::All).unwrap();
        let mut at = 0;
        for (i, p) in prefix.iter().enumerate() {
            got[i].push(logits.narrow(0, at, *p).unwrap());
            at += p;
        }
    }
    // Then one token at a time, sequences dropping out as they end.
    let mut pos = prefix;
    loop {
        let live: Vec<usize> = (0..rows.len())
            .filter(|&i| pos[i] < rows[i].len())
            .collect();
        if live.is_empty() {
            break;
        }
        let mut steps = Vec::new();
        for (i, cache) in caches.iter_mut().enumerate() {
            if live.contains(&i) {
                steps.push(Step {
                    cache,
                    tokens: &rows[i][pos[i]..pos[i] + 1],
                    adapter: None,
                });
            }
        }
        let logits = decoder.forward(&mut steps, forward::Logits::Last).unwrap();
        for (r, &i) in live.iter().enumerate() {
            got[i].push(logits.narrow(0, r, 1).unwrap());
            pos[i] += 1;
        }
    }
    for (i, row) in rows.iter().enumerate() {
        let input = ModelInput::from_rows(std::slice::from_ref(row), &Device::Cpu).unwrap();
        let full = model
            .forward(&input, Mode::EVAL)
            .unwrap()
            .squeeze(0)
            .unwrap();
        let cached = Tensor::cat(&got[i], 0).unwrap();
        let diff = max_abs_diff(&full, &cached);
        assert!(diff < 1e-4, "row {i}: cached decode differs by {diff}");
    }
}

#[derive(Deserialize)]
struct Reference {
    max_new_tokens: usize,
    cases: Vec<RefCase>,
}

#[derive(Deserialize)]
struct RefCase {
    name: String,
    model: String,
    adapter: Option<String>,
    prompts: Vec<RefPrompt>,
}

#[derive(Deserialize)]
struct RefPrompt {
    prompt_ids: Vec<u32>,
    generated_ids: Vec<u32>,
    first_logits: Vec<Vec<f32>>,
}

fn reference() -> Reference {
    let path = fixtures().join("tiny-qwen3/generation.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Greedy generation of every prompt of a case in one batch.
fn greedy(
    decoder: &Decoder<'_>,
    case: &RefCase,
    adapter: Option<Arc<LoadedAdapter>>,
    n: usize,
) -> Vec<Completion> {
    let requests: Vec<_> = case
        .prompts
        .iter()
        .map(|p| {
            let params = SamplingParams {
                logprobs: Some(0),
                ..SamplingParams::greedy(n)
            };
            (
                GenerationRequest::new(p.prompt_ids.clone(), params),
                adapter.clone(),
            )
        })
        .collect();
    generate(decoder, &tokenizer(), &[], &requests, 512)
        .unwrap()
        .into_iter()
        .map(|mut c| c.remove(0))
        .collect()
}

fn check_case(case: &RefCase, got: &[Completion], how: &str) {
    for (p, c) in case.prompts.iter().zip(got) {
        assert_eq!(
            c.tokens, p.generated_ids,
            "{} ({how}), prompt {:?}",
            case.name, p.prompt_ids
        );
        assert_eq!(c.finish_reason, FinishReason::Length);
    }
}

#[test]
fn greedy_generation_equals_transformers_and_peft_token_for_token() {
    let reference = reference();
    let n = reference.max_new_tokens;
    for case in &reference.cases {
        let mut model = tiny(&case.model);
        match &case.adapter {
            None => {
                let decoder = Decoder::new(&model, AttachedAdapters::Off, 64).unwrap();
                check_case(case, &greedy(&decoder, case, None, n), "base");
                // The logits of the first steps, against transformers'.
                for p in &case.prompts {
                    let mut cache = decoder.new_cache();
                    let mut tokens = p.prompt_ids.clone();
                    for (step, expect) in p.first_logits.iter().enumerate() {
                        let mut steps = [Step {
                            cache: &mut cache,
                            tokens: &tokens,
                            adapter: None,
                        }];
                        let logits = decoder.forward(&mut steps, forward::Logits::Last).unwrap();
                        let expect = Tensor::new(expect.as_slice(), &Device::Cpu)
                            .unwrap()
                            .unsqueeze(0)
                            .unwrap();
                        let diff = max_abs_diff(&logits, &expect);
                        assert!(
                            diff < 1e-4,
                            "{} step {step}: logits differ by {diff}",
                            case.name
                        );
                        tokens = vec![p.generated_ids[step]];
                    }
                }
            }
            Some(adapter_dir) => {
                let dir = fixtures().join("tiny-qwen3").join(adapter_dir);
                // Served: the adapter kept apart and chosen per sequence.
                let adapter = Arc::new(LoadedAdapter::load("a", &dir, &model).unwrap());
                {
                    let decoder = Decoder::new(&model, AttachedAdapters::Off, 64).unwrap();
                    check_case(
                        case,
                        &greedy(&decoder, case, Some(adapter), n),
                        "per request",
                    );
                    // The same base without it is a different model.
                    let base = greedy(&decoder, case, None, n);
                    assert_ne!(base[0].tokens, case.prompts[0].generated_ids);
                }
                // Training: the adapter attached to the linears.
                peft::load_adapter_into(model.linears_mut(), &dir).unwrap();
                let decoder = Decoder::new(&model, AttachedAdapters::On, 64).unwrap();
                check_case(case, &greedy(&decoder, case, None, n), "attached");
            }
        }
    }
}

#[test]
fn sequences_with_and_without_an_adapter_share_one_batch() {
    let reference = reference();
    let case = reference
        .cases
        .iter()
        .find(|c| c.adapter.is_some())
        .unwrap();
    let base_case = reference
        .cases
        .iter()
        .find(|c| c.adapter.is_none() && c.model == case.model)
        .unwrap();
    let model = tiny(&case.model);
    let dir = fixtures()
        .join("tiny-qwen3")
        .join(case.adapter.as_ref().unwrap());
    let adapter = Arc::new(LoadedAdapter::load("a", &dir, &model).unwrap());
    let decoder = Decoder::new(&model, AttachedAdapters::Off, 64).unwrap();
    // Interleave: adapter, base, adapter, base ...
    let mut requests = Vec::new();
    for (p, q) in case.prompts.iter().zip(&base_case.prompts) {
        let params = SamplingParams::greedy(reference.max_new_tokens);
        requests.push((
            GenerationRequest::new(p.prompt_ids.clone(), params.clone()),
            Some(adapter.clone()),
        ));
        requests.push((GenerationRequest::new(q.prompt_ids.clone(), params), None));
    }
    let out = generate(&decoder, &tokenizer(), &[], &requests, 512).unwrap();
    for (i, (p, q)) in case.prompts.iter().zip(&base_case.prompts).enumerate() {
        assert_eq!(out[2 * i][0].tokens, p.generated_ids, "adapter row {i}");
        assert_eq!(out[2 * i + 1][0].tokens, q.generated_ids, "base row {i}");
    }
}

fn sampled(decoder: &Decoder<'_>, seed: Option<u64>, n: usize) -> Vec<Vec<u32>> {
    let params = SamplingParams {
        max_new_tokens: 16,
        temperature: 1.0,
        top_p: 0.95,
        seed,
        ..SamplingParams::default()
    };
    let mut req = GenerationRequest::new(vec![5, 6, 7], params);
    req.n = n;
    generate(decoder, &tokenizer(), &[], &[(req, None)], 512).unwrap()[0]
        .iter()
        .map(|c| c.tokens.clone())
        .collect()
}

#[test]
fn seeded_sampling_is_reproducible_and_choices_differ() {
    let model = tiny("tied");
    let decoder = Decoder::new(&model, AttachedAdapters::Off, 64).unwrap();
    let a = sampled(&decoder, Some(42), 3);
    assert_eq!(a, sampled(&decoder, Some(42), 3));
    assert_ne!(a, sampled(&decoder, Some(43), 3));
    assert_eq!(a.len(), 3);
    assert!(a[0] != a[1] || a[1] != a[2], "choices use different seeds");
    // Choice 0 of n=3 is the single choice with the same seed.
    assert_eq!(sampled(&decoder, Some(42), 1)[0], a[0]);
}

#[test]
fn end_tokens_stop_strings_and_length_set_the_finish_reason() {
    let model = tiny("tied");
    let decoder = Decoder::new(&model, AttachedAdapters::Off, 64).unwrap();
    let tok = tokenizer();
    let prompt = vec![36, 5, 123];
    let run = |params: SamplingParams, end: &[u32]| {
        generate(
            &decoder,
            &tok,
            end,
            &[(GenerationRequest::new(prompt.clone(), params), None)],
            512,
        )
        .unwrap()
        .remove(0)
        .remove(0)
    };
    let free = run(SamplingParams::greedy(20), &[]);
    assert_eq!(free.finish_reason, FinishReason::Length);
    assert_eq!(free.tokens.len(), 20);
    assert_eq!(free.text, tok.decode_text(&free.tokens).unwrap());

    // The 5th token as an end token: the sequence stops there, with the
    // token counted but not in the text.
    let end = free.tokens[4];
    let first = free.tokens.iter().position(|t| *t == end).unwrap();
    let stopped = run(SamplingParams::greedy(20), &[end]);
    assert_eq!(stopped.finish_reason, FinishReason::Stop);
    assert_eq!(stopped.tokens, free.tokens[..=first]);
    assert_eq!(
        stopped.text,
        tok.decode_text(&free.tokens[..first]).unwrap()
    );
    // ignore_eos keeps going; a stop id of the request still stops.
    let ignored = run(
        SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(20)
        },
        &[end],
    );
    assert_eq!(ignored.tokens, free.tokens);

    // A stop string spanning tokens: the text ends exactly before it.
    let chars: Vec<char> = free.text.chars().collect();
    let (a, b) = (chars.len() / 2, chars.len() / 2 + 3);
    let stop: String = chars[a..b].iter().collect();
    let cut_at = free.text.find(&stop).unwrap();
    let stopped = run(
        SamplingParams {
            stop: vec!["never there".into(), stop.clone()],
            ..SamplingParams::greedy(20)
        },
        &[],
    );
    assert_eq!(stopped.finish_reason, FinishReason::Stop);
    assert_eq!(stopped.text, free.text[..cut_at], "stop {stop:?}");
    assert!(stopped.tokens.len() < free.tokens.len());
}

#[test]
fn streamed_text_never_splits_a_character_and_holds_back_stop_prefixes() {
    let tok = tokenizer();
    let text = "你好, wörld! stop here";
    let ids = tok.encode(text).unwrap().ids;
    let mut stream = text_stream::TextStream::new(vec!["stop here".into()]);
    let mut out = String::new();
    let mut stopped = false;
    for id in ids {
        let p = stream.push(&tok, id).unwrap();
        assert!(!p.text.contains('\u{FFFD}'));
        out.push_str(&p.text);
        if p.stopped {
            stopped = true;
            break;
        }
    }
    assert!(stopped);
    assert_eq!(out, "你好, wörld! ");
}

fn engine(options: EngineOptions) -> Engine {
    let served = ServedModel {
        name: "tiny".into(),
        dir: fixtures().join("tiny-qwen3/tied"),
        model: tiny("tied"),
        tokenizer: tokenizer(),
        template: None,
        end_tokens: Vec::new(),
        context_len: 64,
    };
    Engine::start(served, options).unwrap()
}

/// Every event of a generation, as (tokens, text, finish) per choice.
fn drain(mut generation: Generation) -> Vec<(Vec<u32>, String, Option<FinishReason>)> {
    let mut out: Vec<(Vec<u32>, String, Option<FinishReason>)> = Vec::new();
    while let Some(event) = generation.blocking_next() {
        match event {
            Event::Token {
                choice,
                token,
                text,
                ..
            } => {
                if out.len() <= choice {
                    out.resize(choice + 1, (Vec::new(), String::new(), None));
                }
                out[choice].0.push(token);
                out[choice].1.push_str(&text);
            }
            Event::Finished {
                choice,
                reason,
                text,
                ..
            } => {
                out[choice].1.push_str(&text);
                out[choice].2 = Some(reason);
            }
            Event::Failed { message } => panic!("{message}"),
        }
    }
    out
}

#[test]
fn the_engine_batches_concurrent_requests_without_mixing_them() {
    let reference = reference();
    let case = reference.cases.iter().find(|c| c.name == "tied").unwrap();
    // A batch of 2 makes later requests wait for a slot and join mid-way.
    let engine = engine(EngineOptions {
        max_batch: 2,
        ..EngineOptions::default()
    });
    let generations: Vec<_> = (0..6)
        .map(|i| {
            let p = &case.prompts[i % case.prompts.len()];
            let params = SamplingParams::greedy(reference.max_new_tokens);
            engine
                .submit(GenerationRequest::new(p.prompt_ids.clone(), params))
                .unwrap()
        })
        .collect();
    let threads: Vec<_> = generations
        .into_iter()
        .map(|g| std::thread::spawn(move || drain(g)))
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let out = t.join().unwrap();
        let p = &case.prompts[i % case.prompts.len()];
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, p.generated_ids, "request {i}");
        assert_eq!(out[0].2, Some(FinishReason::Length));
    }
    let load = engine.load();
    assert_eq!((load.running, load.waiting), (0, 0));
}

#[test]
fn a_dropped_reader_frees_its_slot_and_limits_are_checked_up_front() {
    let engine = engine(EngineOptions {
        max_batch: 1,
        max_queue: 1,
        ..EngineOptions::default()
    });
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(60)
    };
    let mut first = engine
        .submit(GenerationRequest::new(vec![1, 2, 3], params.clone()))
        .unwrap();
    // Wait until it runs, then fill the one queue place.
    assert!(matches!(first.blocking_next(), Some(Event::Token { .. })));
    let queued = engine
        .submit(GenerationRequest::new(
            vec![4, 5],
            SamplingParams::greedy(2),
        ))
        .unwrap();
    let full = engine.submit(GenerationRequest::new(
        vec![4, 5],
        SamplingParams::greedy(2),
    ));
    assert!(
        matches!(full, Err(SubmitError::QueueFull { .. })),
        "{:?}",
        full.err()
    );
    // Dropping the running request lets the queued one finish long before
    // the first could have produced its 60 tokens.
    drop(first);
    let out = drain(queued);
    assert_eq!(out[0].0.len(), 2);
    assert_eq!(engine.load().running, 0);

    let too_long = engine.submit(GenerationRequest::new(
        vec![1; 40],
        SamplingParams::greedy(30),
    ));
    assert_eq!(
        too_long.err(),
        Some(SubmitError::TooLong {
            prompt_tokens: 40,
            max_new_tokens: 30,
            context_len: 64
        })
    );
    let mut adapter = GenerationRequest::new(vec![1], SamplingParams::greedy(1));
    adapter.adapter = Some("nope".into());
    assert_eq!(
        engine.submit(adapter).err(),
        Some(SubmitError::UnknownAdapter("nope".into()))
    );
}

#[test]
fn a_qlora_base_with_an_unmerged_adapter_generates_close_to_the_dense_one() {
    use crate::model::qwen3::Quant;
    let reference = reference();
    let case = reference
        .cases
        .iter()
        .find(|c| c.adapter.is_some())
        .unwrap();
    let dir = fixtures().join("tiny-qwen3").join(&case.model);
    let options = LoadOptions {
        quantization: Quant::Nf4,
        ..LoadOptions::default()
    };
    let model = Qwen3::load(&dir, &Device::Cpu, &options).unwrap();
    let adapter_dir = fixtures()
        .join("tiny-qwen3")
        .join(case.adapter.as_ref().unwrap());
    let adapter = Arc::new(LoadedAdapter::load("a", &adapter_dir, &model).unwrap());
    let decoder = Decoder::new(&model, AttachedAdapters::Off, 64).unwrap();
    let p = &case.prompts[0];
    let mut cache = decoder.new_cache();
    let mut steps = [Step {
        cache: &mut cache,
        tokens: &p.prompt_ids,
        adapter: Some(&adapter),
    }];
    let logits = decoder.forward(&mut steps, forward::Logits::Last).unwrap();
    let dense = Tensor::new(p.first_logits[0].as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    // 4-bit weights move the logits, but only by quantisation error.
    let diff = max_abs_diff(&logits, &dense);
    let scale = max_abs_diff(&dense, &dense.zeros_like().unwrap());
    assert!(
        diff > 0.0 && diff < 0.25 * scale,
        "NF4 logits differ by {diff} (scale {scale})"
    );
    let out = greedy(&decoder, case, Some(adapter), 8);
    assert!(out.iter().all(|c| c.tokens.len() == 8));
}
