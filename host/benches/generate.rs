//! Generation throughput on the CPU in f32: tuner's KV-cached decoder
//! ([`tuner::infer::Decoder`]) next to transformers `generate` on the same
//! weights.
//!
//! Random Qwen3 checkpoints are written to a temporary folder with
//! [`write_random_model`] and the real Qwen3 tokenizer
//! (`tests/fixtures/qwen3`, 151,669 tokens): `tiny` (hidden 64, 2 layers,
//! 4 heads / 2 kv heads of 16, intermediate 128) and `0.6b` (Qwen3-0.6B's
//! shape: hidden 1024, 28 layers, 16 / 8 heads of 128, intermediate 3072,
//! tied embeddings; 2.4 GB of f32 weights). Prompts are random token ids.
//!
//! Measured, per model and batch size (all sequences the same length):
//! - **prefill**: one [`Decoder::forward`] over the whole `[batch, prompt]`
//!   (last-token logits only), median of 3 on fresh caches;
//!   prompt tokens / s.
//! - **decode**: greedy (argmax) decoding with the cache; the first new token
//!   comes from the prefill's logits, then `new - 1` one-token steps are
//!   timed; decoded tokens / s (`(new - 1) * batch / time`).
//! - **decode-no-cache** (batch 1): each new token recomputes the whole
//!   sequence with the training forward pass ([`Qwen3::forward`] over
//!   [`ModelInput::from_rows`]), `GEN_BENCH_NO_CACHE_STEPS` tokens; the
//!   cache's gain is decode / decode-no-cache.
//! - **generate (e2e)** (batch 1): [`tuner::infer::generate`] with
//!   `ignore_eos` — prefill, decode, sampling and detokenising — new tokens
//!   over the whole call.
//!
//! transformers runs the same folder in its own process
//! (`generate_transformers.py`: `torch.inference_mode()`, float32, "sdpa" —
//! its default, the main comparison — and "eager" attention, prefill = one
//! forward with `logits_to_keep=1`, decode = `generate(do_sample=False,
//! min_new_tokens = max_new_tokens = new)` minus the prefill, counted the
//! same way; the no-cache row is `generate(use_cache=False)`, sdpa only).
//! The interpreter is `TUNER_BENCH_PYTHON`, else `target/bench-venv` (made
//! with `python3 -m venv` + `pip install torch transformers safetensors` on
//! first use); without one the comparison is skipped and said so.
//!
//! `cargo bench -p tuner --bench generate` prints one table with ratios.
//! Environment:
//! - `GEN_BENCH_MODELS` (`tiny,0.6b`), `GEN_BENCH_BATCHES` (`1,8`),
//!   `GEN_BENCH_PROMPT` (128), `GEN_BENCH_NEW_TOKENS` (64 for tiny, 32 for
//!   0.6b), `GEN_BENCH_NO_CACHE_STEPS` (16 for tiny, 8 for 0.6b);
//! - `GEN_BENCH_TRANSFORMERS=0` skips transformers;
//! - `GEN_BENCH_PROFILE=1` also times each part of a batch-1 decode step
//!   with an instrumented copy of the decoder's loop (per model).
//!
//! Both sides use every core (candle's rayon pool, `torch.set_num_threads(
//! os.cpu_count())`). Compare ratios from one run: these machines are shared
//! and noisy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use candle_core::{D, DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tuner::infer::forward::{Logits, Step};
use tuner::infer::{AttachedAdapters, Decoder, GenerationRequest, SamplingParams};
use tuner::model::linear::Mode;
use tuner::model::qwen3::{LoadOptions, ModelInput, Qwen3};
use tuner::model::random_init::{TinyShape, write_random_model};
use tuner::text::Tokenizer;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

struct Spec {
    name: &'static str,
    shape: TinyShape,
    new_tokens: usize,
    no_cache_steps: usize,
    /// Repeats of transformers' `generate` (median); the 0.6b one takes long.
    generate_repeats: usize,
}

fn spec(name: &str) -> Spec {
    match name {
        "tiny" => Spec {
            name: "tiny",
            shape: TinyShape::default(),
            new_tokens: 64,
            no_cache_steps: 16,
            generate_repeats: 3,
        },
        "0.6b" => Spec {
            name: "0.6b",
            shape: TinyShape {
                hidden_size: 1024,
                intermediate_size: 3072,
                num_hidden_layers: 28,
                num_attention_heads: 16,
                num_key_value_heads: 8,
                head_dim: 128,
                tie_word_embeddings: true,
                embedding_std: 0.02,
            },
            new_tokens: 32,
            no_cache_steps: 8,
            generate_repeats: 1,
        },
        other => panic!("GEN_BENCH_MODELS: unknown model {other:?} (tiny, 0.6b)"),
    }
}

/// One line of the table.
struct Row {
    model: &'static str,
    batch: usize,
    phase: &'static str,
    tuner: f64,
    /// transformers by attention implementation.
    hf: BTreeMap<String, f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn argmax_rows(logits: &Tensor) -> Vec<u32> {
    logits.argmax(D::Minus1).unwrap().to_vec1::<u32>().unwrap()
}

fn random_prompts(batch: usize, len: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..batch)
        .map(|_| (0..len).map(|_| rng.random_range(0..151_643u32)).collect())
        .collect()
}

/// Prefill and cached decode with [`Decoder::forward`]: (prefill tok/s,
/// decode tok/s).
fn tuner_cached(model: &Qwen3, prompts: &[Vec<u32>], new_tokens: usize) -> (f64, f64) {
    let prompt_len = prompts[0].len();
    let decoder = Decoder::new(model, AttachedAdapters::Off, prompt_len + new_tokens + 1).unwrap();
    // Warm-up: a short prefill and two decode steps.
    {
        let mut caches: Vec<_> = prompts.iter().map(|_| decoder.new_cache()).collect();
        let mut next: Vec<Vec<u32>> = prompts.iter().map(|p| p[..8].to_vec()).collect();
        for _ in 0..3 {
            let mut steps: Vec<Step<'_>> = caches
                .iter_mut()
                .zip(&next)
                .map(|(cache, t)| Step {
                    cache,
                    tokens: t,
                    adapter: None,
                })
                .collect();
            let logits = decoder.forward(&mut steps, Logits::Last).unwrap();
            next = argmax_rows(&logits).into_iter().map(|t| vec![t]).collect();
        }
    }
    let mut prefill_times = Vec::new();
    let mut state = None;
    for _ in 0..3 {
        let mut caches: Vec<_> = prompts.iter().map(|_| decoder.new_cache()).collect();
        let t0 = Instant::now();
        let mut steps: Vec<Step<'_>> = caches
            .iter_mut()
            .zip(prompts)
            .map(|(cache, p)| Step {
                cache,
                tokens: p,
                adapter: None,
            })
            .collect();
        let logits = decoder.forward(&mut steps, Logits::Last).unwrap();
        let first = argmax_rows(&logits);
        prefill_times.push(secs(t0.elapsed()));
        state = Some((caches, first));
    }
    let prefill = (prompts.len() * prompt_len) as f64 / median(prefill_times);

    let (mut caches, first) = state.unwrap();
    let mut next: Vec<Vec<u32>> = first.into_iter().map(|t| vec![t]).collect();
    let t0 = Instant::now();
    for _ in 1..new_tokens {
        let mut steps: Vec<Step<'_>> = caches
            .iter_mut()
            .zip(&next)
            .map(|(cache, t)| Step {
                cache,
                tokens: t,
                adapter: None,
            })
            .collect();
        let logits = decoder.forward(&mut steps, Logits::Last).unwrap();
        next = argmax_rows(&logits).into_iter().map(|t| vec![t]).collect();
    }
    let decode = ((new_tokens - 1) * prompts.len()) as f64 / secs(t0.elapsed());
    (prefill, decode)
}

/// Greedy decoding without a cache: every token reruns the whole sequence.
fn tuner_no_cache(model: &Qwen3, prompt: &[u32], steps: usize) -> f64 {
    let mode = Mode {
        training: false,
        adapters: false,
    };
    let mut row = prompt.to_vec();
    let t0 = Instant::now();
    for _ in 0..steps {
        let input = ModelInput::from_rows(std::slice::from_ref(&row), model.device()).unwrap();
        let logits = model.forward(&input, mode).unwrap(); // [1, s, vocab]
        let last = logits.get(0).unwrap().get(row.len() - 1).unwrap();
        row.push(last.argmax(0).unwrap().to_scalar::<u32>().unwrap());
    }
    steps as f64 / secs(t0.elapsed())
}

/// [`tuner::infer::generate`] end to end at batch 1: new tokens / s.
fn tuner_generate(model: &Qwen3, tokenizer: &Tokenizer, prompt: &[u32], new_tokens: usize) -> f64 {
    let decoder =
        Decoder::new(model, AttachedAdapters::Off, prompt.len() + new_tokens + 1).unwrap();
    let mut params = SamplingParams::greedy(new_tokens);
    params.ignore_eos = true;
    let requests = vec![(GenerationRequest::new(prompt.to_vec(), params), None)];
    let t0 = Instant::now();
    let out = tuner::infer::generate(&decoder, tokenizer, &[], &requests, 4096).unwrap();
    let elapsed = secs(t0.elapsed());
    assert_eq!(out[0][0].tokens.len(), new_tokens, "generate stopped early");
    new_tokens as f64 / elapsed
}

/// The Python to run transformers with, or why there is none.
fn python() -> Result<PathBuf, String> {
    let imports = |py: &Path| {
        Command::new(py)
            .args(["-c", "import torch, transformers, safetensors"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if let Ok(p) = std::env::var("TUNER_BENCH_PYTHON") {
        let p = PathBuf::from(p);
        return if imports(&p) {
            Ok(p)
        } else {
            Err(format!(
                "TUNER_BENCH_PYTHON={} cannot import torch, transformers and safetensors",
                p.display()
            ))
        };
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target"));
    let venv = target.join("bench-venv");
    let py = venv.join("bin/python");
    if py.is_file() && imports(&py) {
        return Ok(py);
    }
    println!(
        "creating {} with torch, transformers and safetensors (pip; takes minutes)...",
        venv.display()
    );
    let ok = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        return Err("`python3 -m venv` failed".into());
    }
    let ok = Command::new(&py)
        .args([
            "-m",
            "pip",
            "install",
            "-q",
            "torch",
            "transformers",
            "safetensors",
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok || !imports(&py) {
        return Err("pip install torch transformers safetensors failed (no network?)".into());
    }
    Ok(py)
}

/// Results of `generate_transformers.py`: one JSON object per (attn, batch).
fn transformers(
    py: &Path,
    model_dir: &Path,
    spec: &Spec,
    prompt: usize,
    batches: &[usize],
) -> Result<Vec<Value>, String> {
    let batch_list: Vec<String> = batches.iter().map(|b| b.to_string()).collect();
    let out = Command::new(py)
        .arg(repo().join("host/benches/generate_transformers.py"))
        .arg("--model")
        .arg(model_dir)
        .args(["--prompt-len", &prompt.to_string()])
        .args(["--new-tokens", &new_tokens(spec).to_string()])
        .args(["--batch", &batch_list.join(",")])
        .args(["--attn", "sdpa,eager"])
        .args(["--generate-repeats", &spec.generate_repeats.to_string()])
        .args(["--no-cache-steps", &no_cache_steps(spec).to_string()])
        .env("TOKENIZERS_PARALLELISM", "false")
        .output()
        .map_err(|e| format!("running {}: {e}", py.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(15).collect();
        return Err(format!(
            "generate_transformers.py failed:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

fn new_tokens(spec: &Spec) -> usize {
    env_usize("GEN_BENCH_NEW_TOKENS").unwrap_or(spec.new_tokens)
}

fn no_cache_steps(spec: &Spec) -> usize {
    env_usize("GEN_BENCH_NO_CACHE_STEPS").unwrap_or(spec.no_cache_steps)
}

fn main() {
    let models = env_list("GEN_BENCH_MODELS", "tiny,0.6b");
    let batches: Vec<usize> = env_list("GEN_BENCH_BATCHES", "1,8")
        .iter()
        .map(|b| b.parse().expect("GEN_BENCH_BATCHES: numbers"))
        .collect();
    let prompt_len = env_usize("GEN_BENCH_PROMPT").unwrap_or(128);
    let profile = std::env::var("GEN_BENCH_PROFILE").is_ok_and(|v| v == "1");
    let with_hf = std::env::var("GEN_BENCH_TRANSFORMERS").map_or(true, |v| v != "0");
    let tokenizer_dir = repo().join("tests/fixtures/qwen3");
    let tokenizer = Tokenizer::from_file(&tokenizer_dir.join("tokenizer.json")).unwrap();

    let py = if with_hf {
        match python() {
            Ok(p) => Some(p),
            Err(why) => {
                println!("skipped transformers comparison: {why}");
                None
            }
        }
    } else {
        println!("skipped transformers comparison: GEN_BENCH_TRANSFORMERS=0");
        None
    };
    let tuner_threads = candle_core::utils::get_num_threads();
    let mut hf_threads = None;
    let mut hf_versions = None;

    let tmp = tempfile::tempdir().unwrap();
    let mut rows: Vec<Row> = Vec::new();
    let mut profiles = Vec::new();
    for name in &models {
        let spec = spec(name);
        let new = new_tokens(&spec);
        let nc_steps = no_cache_steps(&spec);
        let dir = tmp.path().join(spec.name);
        let t0 = Instant::now();
        write_random_model(&dir, &tokenizer_dir, &spec.shape, 42).unwrap();
        let model = Qwen3::load(&dir, &Device::Cpu, &LoadOptions::default()).unwrap();
        assert_eq!(model.dtype(), DType::F32);
        eprintln!(
            "[{}] model written and loaded in {:.1}s; measuring tuner...",
            spec.name,
            secs(t0.elapsed())
        );
        let mut push = |batch, phase, tuner| {
            rows.push(Row {
                model: spec.name,
                batch,
                phase,
                tuner,
                hf: BTreeMap::new(),
            })
        };
        for &b in &batches {
            let prompts = random_prompts(b, prompt_len, b as u64);
            let (prefill, decode) = tuner_cached(&model, &prompts, new);
            push(b, "prefill", prefill);
            push(b, "decode", decode);
            if b == 1 {
                push(
                    1,
                    "decode-no-cache",
                    tuner_no_cache(&model, &prompts[0], nc_steps),
                );
                push(
                    1,
                    "generate (e2e)",
                    tuner_generate(&model, &tokenizer, &prompts[0], new),
                );
            }
        }
        if profile {
            let prompt = &random_prompts(1, prompt_len, 1)[0];
            let runs: Vec<Profile> = [
                Products::AsIs,
                Products::TwoRows,
                Products::Split(1 << 20),
                Products::Split(1 << 26),
                Products::AsIs,
            ]
            .into_iter()
            .map(|v| profile_decode(&model, prompt, new, v))
            .collect();
            profiles.push((spec.name, runs, profile_linears(&model)));
        }
        drop(model);
        if let Some(py) = &py {
            eprintln!("[{}] measuring transformers...", spec.name);
            match transformers(py, &dir, &spec, prompt_len, &batches) {
                Ok(results) => {
                    for r in results {
                        let attn = r["attn"].as_str().unwrap_or("?").to_string();
                        let b = r["batch"].as_u64().unwrap_or(0) as usize;
                        hf_threads = r["threads"].as_u64();
                        hf_versions = Some(format!(
                            "torch {}, transformers {}",
                            r["torch"].as_str().unwrap_or("?"),
                            r["transformers"].as_str().unwrap_or("?")
                        ));
                        for (key, phase) in [
                            ("prefill_tok_s", "prefill"),
                            ("decode_tok_s", "decode"),
                            ("no_cache_tok_s", "decode-no-cache"),
                            ("generate_tok_s", "generate (e2e)"),
                        ] {
                            let Some(v) = r[key].as_f64() else { continue };
                            if let Some(row) = rows
                                .iter_mut()
                                .find(|x| x.model == spec.name && x.batch == b && x.phase == phase)
                            {
                                row.hf.insert(attn.clone(), v);
                            }
                        }
                    }
                }
                Err(why) => println!("skipped transformers comparison for {}: {why}", spec.name),
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    println!();
    println!(
        "generation, f32 CPU, prompt {prompt_len} random ids, greedy; tuner threads {tuner_threads}, transformers threads {}{}",
        hf_threads.map_or("-".to_string(), |t| t.to_string()),
        hf_versions.map_or(String::new(), |v| format!(" ({v})")),
    );
    println!(
        "{:<6} {:>5} {:<16} {:>12} {:>12} {:>8} {:>12} {:>8}",
        "model", "batch", "phase", "tuner tok/s", "hf sdpa", "ratio", "hf eager", "ratio"
    );
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    for r in &rows {
        let sdpa = r.hf.get("sdpa").copied();
        let eager = r.hf.get("eager").copied();
        println!(
            "{:<6} {:>5} {:<16} {:>12.1} {:>12} {:>8} {:>12} {:>8}",
            r.model,
            r.batch,
            r.phase,
            r.tuner,
            fmt(sdpa),
            sdpa.map_or("-".into(), |s| format!("{:.2}x", r.tuner / s)),
            fmt(eager),
            eager.map_or("-".into(), |s| format!("{:.2}x", r.tuner / s)),
        );
    }
    println!("(ratio = tuner / transformers; above 1 means tuner is faster)");
    for name in &models {
        let get = |phase: &str| {
            rows.iter()
                .find(|r| r.model == name.as_str() && r.batch == 1 && r.phase == phase)
                .map(|r| (r.tuner, r.hf.get("sdpa").copied()))
        };
        if let (Some((dc, hf_dc)), Some((nc, hf_nc))) = (get("decode"), get("decode-no-cache")) {
            let hf = match (hf_dc, hf_nc) {
                (Some(a), Some(b)) => format!("; transformers sdpa {:.1}x", a / b),
                _ => String::new(),
            };
            println!(
                "KV cache gain, {name} batch 1: tuner {:.1}x (decode {dc:.1} vs no-cache {nc:.1} tok/s){hf}",
                dc / nc
            );
        }
    }
    for (name, runs, linears) in &profiles {
        for run in runs {
            run.print(name);
        }
        print!("{linears}");
    }
}

// ---------------------------------------------------------------------------
// GEN_BENCH_PROFILE: a copy of `Decoder::forward` for one sequence at decode
// (one token, no adapters) with a timer around each part. Kept in step with
// `host/src/infer/forward.rs` by hand; it only explains where time goes.

#[derive(Default)]
struct Profile {
    products: Products,
    parts: BTreeMap<&'static str, Duration>,
    steps: usize,
    total: Duration,
}

impl Profile {
    fn time<T>(&mut self, part: &'static str, f: impl FnOnce() -> T) -> T {
        let t0 = Instant::now();
        let out = f();
        *self.parts.entry(part).or_default() += t0.elapsed();
        out
    }

    fn print(&self, model: &str) {
        let total = secs(self.total);
        println!();
        println!(
            "decode step profile, {model} batch 1{} ({} steps, {:.2} ms/step, {:.1} tok/s):",
            match self.products {
                Products::AsIs => String::new(),
                Products::TwoRows => ", one-row products as two rows".into(),
                Products::Split(min) => format!(", weights >= {min} elements split across threads"),
            },
            self.steps,
            1e3 * total / self.steps as f64,
            self.steps as f64 / total
        );
        let mut parts: Vec<_> = self.parts.iter().collect();
        parts.sort_by(|a, b| b.1.cmp(a.1));
        let mut accounted = 0.0;
        for (name, d) in parts {
            let s = secs(*d);
            accounted += s;
            println!(
                "  {:<28} {:>9.3} ms/step {:>5.1}%",
                name,
                1e3 * s / self.steps as f64,
                100.0 * s / total
            );
        }
        println!(
            "  {:<28} {:>9.3} ms/step {:>5.1}%",
            "(untimed glue)",
            1e3 * (total - accounted) / self.steps as f64,
            100.0 * (total - accounted) / total
        );
    }
}

/// How the profiled copy runs its one-row products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Products {
    /// As `Decoder::linear` does: gemm's gemv branch, one thread.
    #[default]
    AsIs,
    /// Two identical rows: gemm's blocked, multi-threaded kernel.
    TwoRows,
    /// Weights of at least this many elements split by output rows across
    /// scoped threads (each part a gemv), the rest as is.
    Split(usize),
}

fn profile_decode(model: &Qwen3, prompt: &[u32], new_tokens: usize, products: Products) -> Profile {
    use tuner::infer::cache::SeqCache;
    let c = model.config();
    let d = c.head_dim();
    let max_len = prompt.len() + new_tokens + 1;
    // Rope tables as the decoder builds them.
    let half = d / 2;
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for p in 0..max_len {
        for i in 0..half {
            let f = (1.0 / c.rope_theta().powf((2 * i) as f64 / d as f64)) as f32;
            cos.push((p as f32 * f).cos());
            sin.push((p as f32 * f).sin());
        }
    }
    let dev = model.device();
    let cos = Tensor::from_vec(cos, (max_len, half), dev).unwrap();
    let sin = Tensor::from_vec(sin, (max_len, half), dev).unwrap();
    let mode = Mode {
        training: false,
        adapters: false,
    };

    // Prefill with the real decoder into a cache, then decode with the copy.
    let decoder = Decoder::new(model, AttachedAdapters::Off, max_len).unwrap();
    let mut cache: SeqCache = decoder.new_cache();
    let logits = decoder
        .forward(
            &mut [Step {
                cache: &mut cache,
                tokens: prompt,
                adapter: None,
            }],
            Logits::Last,
        )
        .unwrap();
    let mut next = argmax_rows(&logits)[0];
    let mut p = Profile {
        products,
        ..Profile::default()
    };
    let threads = candle_core::utils::get_num_threads();
    let lin = |l: &tuner::model::linear::Linear, x: &Tensor| -> Tensor {
        match products {
            Products::TwoRows => l
                .forward(&Tensor::cat(&[x, x], 0).unwrap(), mode)
                .unwrap()
                .narrow(0, 0, 1)
                .unwrap(),
            Products::Split(min) if threads > 1 && l.shape().0 * l.shape().1 >= min => {
                let w = l.base_weight().unwrap();
                let out_f = w.dim(0).unwrap();
                let chunk = out_f.div_ceil(threads);
                let parts: Vec<Tensor> = (0..out_f)
                    .step_by(chunk)
                    .map(|s| w.narrow(0, s, chunk.min(out_f - s)).unwrap())
                    .collect();
                let outs: Vec<Tensor> = std::thread::scope(|sc| {
                    let handles: Vec<_> = parts[1..]
                        .iter()
                        .map(|p| sc.spawn(|| x.matmul(&p.t().unwrap()).unwrap()))
                        .collect();
                    let mut outs = vec![x.matmul(&parts[0].t().unwrap()).unwrap()];
                    outs.extend(handles.into_iter().map(|h| h.join().unwrap()));
                    outs
                });
                Tensor::cat(&outs, 1).unwrap()
            }
            _ => l.forward(x, mode).unwrap(),
        }
    };
    let norm = |n: &tuner::model::qwen3::RmsNorm, x: &Tensor| {
        candle_nn::ops::rms_norm(&x.contiguous().unwrap(), &n.weight, n.eps as f32).unwrap()
    };
    let t_all = Instant::now();
    for _ in 1..new_tokens {
        let start = cache.len();
        let ids = Tensor::from_vec(vec![next], 1, dev).unwrap();
        let mut x = p.time("embed", || {
            model.embed_tokens().index_select(&ids, 0).unwrap()
        });
        for (li, layer) in model.layers().iter().enumerate() {
            let a = &layer.self_attn;
            let (h, kvh) = (a.num_heads, a.num_kv_heads);
            let n_rep = h / kvh;
            let hn = p.time("rms norm", || norm(&layer.input_layernorm, &x));
            let q_all = p.time("q/k/v proj", || lin(&a.q_proj, &hn));
            let k_all = p.time("q/k/v proj", || lin(&a.k_proj, &hn));
            let v_all = p.time("q/k/v proj", || lin(&a.v_proj, &hn));
            let c0 = cos.narrow(0, start, 1).unwrap();
            let s0 = sin.narrow(0, start, 1).unwrap();
            let (q, k, v) = p.time("qk norm + rope", || {
                let heads = |all: &Tensor, n: usize, w: Option<&tuner::model::qwen3::RmsNorm>| {
                    let t3 = all.reshape((1, n, d)).unwrap();
                    let t3 = match w {
                        Some(w) => norm(w, &t3),
                        None => t3,
                    };
                    t3.transpose(0, 1).unwrap().contiguous().unwrap()
                };
                let rope = |x: Tensor| {
                    candle_nn::rotary_emb::rope(&x.unsqueeze(0).unwrap(), &c0, &s0)
                        .unwrap()
                        .squeeze(0)
                        .unwrap()
                };
                (
                    rope(heads(&q_all, h, Some(&a.q_norm))),
                    rope(heads(&k_all, kvh, Some(&a.k_norm))),
                    heads(&v_all, kvh, None),
                )
            });
            let (k, v) = p.time("kv cache append", || cache.append(li, &k, &v).unwrap());
            let scale = 1.0 / (d as f64).sqrt();
            let out = p.time("attention (q k^T, softmax, p v)", || {
                let q = q.reshape((kvh, n_rep, d)).unwrap();
                let scores = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap();
                let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
                let out = probs.matmul(&v.contiguous().unwrap()).unwrap();
                out.reshape((h, 1, d))
                    .unwrap()
                    .transpose(0, 1)
                    .unwrap()
                    .reshape((1, h * d))
                    .unwrap()
            });
            let o = p.time("o proj", || lin(&a.o_proj, &out));
            let x1 = p.time("residual adds", || (&x + o).unwrap());
            let hn = p.time("rms norm", || norm(&layer.post_attention_layernorm, &x1));
            let m = &layer.mlp;
            let gate = p.time("mlp gate/up proj", || lin(&m.gate_proj, &hn));
            let up = p.time("mlp gate/up proj", || lin(&m.up_proj, &hn));
            let act = p.time("mlp silu * up", || (gate.silu().unwrap() * up).unwrap());
            let down = p.time("mlp down proj", || lin(&m.down_proj, &act));
            x = p.time("residual adds", || (x1 + down).unwrap());
        }
        let hn = p.time("rms norm", || norm(model.final_norm(), &x));
        let logits = p.time("lm_head (vocab x hidden)", || lin(model.lm_head(), &hn));
        next = p.time("argmax", || argmax_rows(&logits)[0]);
        p.steps += 1;
    }
    p.total = t_all.elapsed();
    p
}

/// One-row products (a batch-1 decode step) three ways, to show what the
/// matmul path costs: candle's `x W^T` with one row (gemm's gemv branch,
/// which is single-threaded), the same row twice (gemm's blocked kernel,
/// which uses every thread) and the weight split by output rows across
/// scoped threads. Prints ms per product and the weight bytes read per second.
fn profile_linears(model: &Qwen3) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let mode = Mode {
        training: false,
        adapters: false,
    };
    let layer = &model.layers()[0];
    let cases: [(&str, &tuner::model::linear::Linear); 5] = [
        ("q_proj", &layer.self_attn.q_proj),
        ("k_proj", &layer.self_attn.k_proj),
        ("gate_proj", &layer.mlp.gate_proj),
        ("down_proj", &layer.mlp.down_proj),
        ("lm_head", model.lm_head()),
    ];
    let threads = candle_core::utils::get_num_threads();
    writeln!(o).unwrap();
    writeln!(
        o,
        "one-row linear products ({threads} threads): ms per product (weight GB/s)"
    )
    .unwrap();
    writeln!(
        o,
        "  {:<10} {:>14} {:>18} {:>18} {:>18}",
        "linear", "out x in", "1 row (gemv)", "2 rows (gemm)", "split x threads"
    )
    .unwrap();
    for (name, lin) in cases {
        let (out_f, in_f) = lin.shape();
        let w = lin.base_weight().unwrap();
        let x = Tensor::ones((1, in_f), DType::F32, &Device::Cpu).unwrap();
        let x2 = Tensor::cat(&[&x, &x], 0).unwrap();
        let reps = if out_f > 100_000 { 5 } else { 50 };
        let bench = |f: &dyn Fn() -> Tensor| {
            f();
            let t0 = Instant::now();
            for _ in 0..reps {
                f();
            }
            secs(t0.elapsed()) / reps as f64
        };
        let one = bench(&|| lin.forward(&x, mode).unwrap());
        let two = bench(&|| lin.forward(&x2, mode).unwrap().narrow(0, 0, 1).unwrap());
        let chunk = out_f.div_ceil(threads);
        let parts: Vec<Tensor> = (0..out_f)
            .step_by(chunk)
            .map(|s| w.narrow(0, s, chunk.min(out_f - s)).unwrap())
            .collect();
        let split = bench(&|| {
            let outs: Vec<Tensor> = std::thread::scope(|sc| {
                let handles: Vec<_> = parts[1..]
                    .iter()
                    .map(|p| sc.spawn(|| x.matmul(&p.t().unwrap()).unwrap()))
                    .collect();
                let mut outs = vec![x.matmul(&parts[0].t().unwrap()).unwrap()];
                outs.extend(handles.into_iter().map(|h| h.join().unwrap()));
                outs
            });
            Tensor::cat(&outs, 1).unwrap()
        });
        let gb = (out_f * in_f * 4) as f64 / 1e9;
        let cell = |s: f64| format!("{:.3} ({:.1})", 1e3 * s, gb / s);
        writeln!(
            o,
            "  {:<10} {:>14} {:>18} {:>18} {:>18}",
            name,
            format!("{out_f}x{in_f}"),
            cell(one),
            cell(two),
            cell(split)
        )
        .unwrap();
    }
    o
}
