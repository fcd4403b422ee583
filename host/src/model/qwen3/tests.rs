//! Whole-model tests on the tiny random checkpoints in
//! `tests/fixtures/tiny-qwen3` (made by `make_reference.py` with transformers).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::ops::testing::{assert_close, max_abs_diff};
use super::*;
use crate::model::lora::Lora;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/tiny-qwen3")
        .join(name)
}

fn opts(train: TrainMode, checkpointing: bool) -> LoadOptions {
    LoadOptions {
        dtype: DType::F32,
        train,
        quantization: Quant::None,
        gradient_checkpointing: checkpointing,
    }
}

fn load(name: &str, o: &LoadOptions) -> Qwen3 {
    Qwen3::load(&fixture(name), &Device::Cpu, o).unwrap()
}

/// The batch transformers saw, and its logits.
struct Expected {
    input: ModelInput,
    mask: Vec<Vec<u32>>,
    logits: Tensor,
}

fn expected(name: &str) -> Expected {
    let t =
        candle_core::safetensors::load(fixture(name).join("expected.safetensors"), &Device::Cpu)
            .unwrap();
    let u32_of = |k: &str| t[k].to_dtype(DType::U32).unwrap();
    let segments = u32_of("attention_mask");
    Expected {
        mask: segments.to_vec2().unwrap(),
        input: ModelInput {
            ids: u32_of("input_ids"),
            positions: u32_of("position_ids"),
            segments,
        },
        logits: t["logits"].clone(),
    }
}

/// Max abs error over the real (unpadded) tokens; padded positions must be finite.
fn error_vs_reference(model: &Qwen3, e: &Expected) -> f64 {
    let got = model.forward(&e.input, Mode::EVAL).unwrap();
    assert_eq!(got.dims(), e.logits.dims());
    let got3: Vec<Vec<Vec<f32>>> = got.to_vec3().unwrap();
    let want3: Vec<Vec<Vec<f32>>> = e.logits.to_vec3().unwrap();
    let mut worst = 0f64;
    for (b, row) in got3.iter().enumerate() {
        for (i, logits) in row.iter().enumerate() {
            assert!(
                logits.iter().all(|v| v.is_finite()),
                "row {b} token {i} not finite"
            );
            if e.mask[b][i] == 1 {
                for (g, w) in logits.iter().zip(&want3[b][i]) {
                    worst = worst.max((g - w).abs() as f64);
                }
            }
        }
    }
    worst
}

#[test]
fn logits_match_transformers() {
    for name in ["tied", "untied"] {
        let e = expected(name);
        for train in [TrainMode::Frozen, TrainMode::Full] {
            for ckpt in [false, true] {
                let err = error_vs_reference(&load(name, &opts(train, ckpt)), &e);
                assert!(
                    err <= 1e-4,
                    "{name} {train:?} checkpointing={ckpt}: max abs error {err}"
                );
            }
        }
    }
}

/// Splits the untied checkpoint into two shards with an index, as HF does.
fn write_sharded(dir: &Path, drop: Option<&str>) {
    let src = fixture("untied");
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut map = serde_json::Map::new();
    let mut shards = [Vec::new(), Vec::new()];
    for (i, n) in names.iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i % 2 + 1);
        map.insert((*n).clone(), file.into());
        if Some(n.as_str()) != drop {
            shards[i % 2].push(((*n).clone(), tensors[*n].clone()));
        }
    }
    for (i, shard) in shards.iter().enumerate() {
        let path = dir.join(format!("model-0000{}-of-00002.safetensors", i + 1));
        candle_core::safetensors::save(&shard.iter().cloned().collect(), path).unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

#[test]
fn sharded_checkpoint_loads_and_missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write_sharded(dir.path(), None);
    let model = Qwen3::load(dir.path(), &Device::Cpu, &opts(TrainMode::Frozen, false)).unwrap();
    assert!(error_vs_reference(&model, &expected("untied")) <= 1e-4);

    let dir = tempfile::tempdir().unwrap();
    let missing = "model.layers.1.mlp.up_proj.weight";
    write_sharded(dir.path(), Some(missing));
    let err = Qwen3::load(dir.path(), &Device::Cpu, &LoadOptions::default())
        .err()
        .unwrap();
    let msg = format!("{err:#}");
    assert!(msg.contains(missing) && msg.contains("model-0000"), "{msg}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("untied/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let mut t =
        candle_core::safetensors::load(fixture("untied/model.safetensors"), &Device::Cpu).unwrap();
    t.remove("lm_head.weight");
    candle_core::safetensors::save(&t, dir.path().join("model.safetensors")).unwrap();
    let msg = format!(
        "{:#}",
        Qwen3::load(dir.path(), &Device::Cpu, &LoadOptions::default())
            .err()
            .unwrap()
    );
    assert!(
        msg.contains("lm_head.weight") && msg.contains("model.safetensors"),
        "{msg}"
    );
}

#[test]
fn packed_segments_equal_separate_sequences() {
    let model = load("untied", &opts(TrainMode::Frozen, false));
    let (a, b) = (vec![5u32, 17, 99, 3, 42], vec![7u32, 8, 120]);
    // One row: a, then b, then one padding token.
    let mut ids = a.clone();
    ids.extend(&b);
    ids.push(0);
    let positions: Vec<u32> = vec![0, 1, 2, 3, 4, 0, 1, 2, 0];
    let segments: Vec<u32> = vec![1, 1, 1, 1, 1, 2, 2, 2, 0];
    let dev = Device::Cpu;
    let packed = ModelInput {
        ids: Tensor::new(ids.as_slice(), &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap(),
        positions: Tensor::new(positions.as_slice(), &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap(),
        segments: Tensor::new(segments.as_slice(), &dev)
            .unwrap()
            .unsqueeze(0)
            .unwrap(),
    };
    let packed = model
        .forward(&packed, Mode::EVAL)
        .unwrap()
        .squeeze(0)
        .unwrap();
    let alone = |seq: &Vec<u32>| {
        let input = ModelInput::from_rows(std::slice::from_ref(seq), &dev).unwrap();
        model
            .forward(&input, Mode::EVAL)
            .unwrap()
            .squeeze(0)
            .unwrap()
    };
    assert_close(&packed.narrow(0, 0, 5).unwrap(), &alone(&a), 1e-5);
    assert_close(&packed.narrow(0, 5, 3).unwrap(), &alone(&b), 1e-5);
    let pad: Vec<f32> = packed.get(8).unwrap().to_vec1().unwrap();
    assert!(pad.iter().all(|v| v.is_finite()));
}

#[test]
fn token_logprobs_are_log_softmax_at_next_token() {
    let model = load("tied", &opts(TrainMode::Frozen, false));
    let input = ModelInput::from_rows(&[vec![1, 2, 3, 4], vec![9, 8]], &Device::Cpu).unwrap();
    let lp = model.token_logprobs(&input, Mode::EVAL).unwrap();
    assert_eq!(lp.dims(), &[2, 3]);
    let logits: Vec<Vec<Vec<f32>>> = model
        .forward(&input, Mode::EVAL)
        .unwrap()
        .to_vec3()
        .unwrap();
    let lp: Vec<Vec<f32>> = lp.to_vec2().unwrap();
    let ids = [[1usize, 2, 3, 4], [9, 8, 0, 0]];
    for b in 0..2 {
        for t in 0..3 {
            let l = &logits[b][t];
            let lse = l.iter().map(|v| (*v as f64).exp()).sum::<f64>().ln();
            let want = l[ids[b][t + 1]] as f64 - lse;
            assert!((lp[b][t] as f64 - want).abs() < 1e-5, "{b} {t}");
        }
    }
}

/// A loss over a padded and a packed row, as training sees it.
fn loss_input() -> (ModelInput, Tensor) {
    let dev = Device::Cpu;
    let ids = Tensor::new(
        &[[3u32, 9, 27, 81, 115, 2, 0], [4, 5, 6, 7, 8, 9, 10]],
        &dev,
    )
    .unwrap();
    let positions = Tensor::new(&[[0u32, 1, 2, 3, 4, 5, 0], [0, 1, 2, 0, 1, 2, 3]], &dev).unwrap();
    let segments = Tensor::new(&[[1u32, 1, 1, 1, 1, 1, 0], [1, 1, 1, 2, 2, 2, 2]], &dev).unwrap();
    let weights = Tensor::new(
        &[[1f32, 1., 1., 0.5, 1., 0.], [1., 1., 0., 1., 1., 1.]],
        &dev,
    )
    .unwrap();
    (
        ModelInput {
            ids,
            positions,
            segments,
        },
        weights,
    )
}

fn loss_and_grads(model: &Qwen3) -> (f32, Vec<(String, Tensor)>) {
    let (input, weights) = loss_input();
    let lp = model.token_logprobs(&input, Mode::TRAIN).unwrap();
    let loss = (lp * weights).unwrap().sum_all().unwrap().neg().unwrap();
    let grads = model.backward(&loss).unwrap();
    let named = model
        .trainable_vars()
        .into_iter()
        .map(|(n, v)| {
            let g = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {n}"))
                .clone();
            (n, g)
        })
        .collect();
    (loss.to_scalar().unwrap(), named)
}

fn assert_same_grads(a: &(f32, Vec<(String, Tensor)>), b: &(f32, Vec<(String, Tensor)>)) {
    assert!(
        (a.0 - b.0).abs() <= 1e-5 * a.0.abs().max(1.0),
        "loss {} vs {}",
        a.0,
        b.0
    );
    assert_eq!(a.1.len(), b.1.len());
    for ((na, ga), (nb, gb)) in a.1.iter().zip(&b.1) {
        assert_eq!(na, nb);
        let d = max_abs_diff(ga, gb);
        assert!(d <= 1e-5, "{na}: gradients differ by {d}");
    }
}

#[test]
fn checkpointing_gives_the_same_full_gradients() {
    for name in ["tied", "untied"] {
        let plain = load(name, &opts(TrainMode::Full, false));
        let mut ckpt = load(name, &opts(TrainMode::Full, true));
        let a = loss_and_grads(&plain);
        let b = loss_and_grads(&ckpt);
        // Logits recomputed in chunks of 2 positions (the last one shorter).
        ckpt.logits_chunk_elems = 2 * 2 * 128;
        let c = loss_and_grads(&ckpt);
        assert_same_grads(&a, &c);
        // Every weight trains once (tied: embed_tokens doubles as lm_head).
        let per_layer = 4 + 7;
        let n = 1 + 2 * per_layer + 1 + usize::from(name == "untied");
        assert_eq!(a.1.len(), n, "{name}");
        assert!(a.1.iter().all(|(_, g)| {
            g.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        }));
        assert_same_grads(&a, &b);
    }
}

/// Attaches a seeded rank-2 adapter (non-zero `B`, with dropout) to every
/// decoder linear.
fn attach(model: &mut Qwen3) {
    for (i, lin) in model.linears_mut().enumerate() {
        if lin.name == "lm_head" {
            continue;
        }
        let (out_f, in_f) = lin.shape();
        let a = super::ops::testing::randn(&[2, in_f], 100 + i as u64)
            .to_dtype(DType::F32)
            .unwrap();
        let b = super::ops::testing::randn(&[out_f, 2], 200 + i as u64)
            .to_dtype(DType::F32)
            .unwrap();
        lin.lora = Some(
            Lora::from_tensors((a * 0.3).unwrap(), (b * 0.3).unwrap(), 2.0, 0.2, i as u64).unwrap(),
        );
    }
}

#[test]
fn checkpointing_gives_the_same_lora_gradients() {
    for name in ["tied", "untied"] {
        let mut plain = load(name, &opts(TrainMode::Frozen, false));
        let mut ckpt = load(name, &opts(TrainMode::Frozen, true));
        attach(&mut plain);
        attach(&mut ckpt);
        let a = loss_and_grads(&plain);
        assert_eq!(a.1.len(), 2 * 7 * 2);
        assert!(
            a.1.iter()
                .all(|(n, _)| n.starts_with("base_model.model.model.layers."))
        );
        assert_same_grads(&a, &loss_and_grads(&ckpt));
    }
}

#[test]
fn frozen_base_has_no_variables_and_full_shares_tied_embedding() {
    let frozen = load("tied", &opts(TrainMode::Frozen, false));
    assert!(frozen.trainable_vars().is_empty());
    let full = load("tied", &opts(TrainMode::Full, false));
    let vars = full.trainable_vars();
    let embed = &vars
        .iter()
        .find(|(n, _)| n == "model.embed_tokens.weight")
        .unwrap()
        .1;
    let head = full.linears().last().unwrap();
    assert_eq!(head.name, "lm_head");
    assert_eq!(
        head.trainable_var().unwrap().as_tensor().id(),
        embed.as_tensor().id()
    );
    assert!(!vars.iter().any(|(n, _)| n == "lm_head.weight"));
    // named_weights round-trips the checkpoint.
    let src =
        candle_core::safetensors::load(fixture("tied/model.safetensors"), &Device::Cpu).unwrap();
    let named = full.named_weights().unwrap();
    assert_eq!(named.len(), src.len());
    for (n, t) in named {
        assert_eq!(max_abs_diff(&t, &src[&n]), 0.0, "{n}");
    }
}

#[test]
fn quantized_full_fine_tuning_is_refused() {
    let o = LoadOptions {
        quantization: Quant::Nf4,
        train: TrainMode::Full,
        ..LoadOptions::default()
    };
    let msg = format!(
        "{:#}",
        Qwen3::load(&fixture("tied"), &Device::Cpu, &o)
            .err()
            .unwrap()
    );
    assert!(msg.contains("quantized"), "{msg}");
    let o = LoadOptions {
        quantization: Quant::Int8,
        ..LoadOptions::default()
    };
    let model = load("tied", &o);
    let e = expected("tied");
    // 8-bit blockwise weights: close to, not equal to, the reference.
    let err = error_vs_reference(&model, &e);
    assert!(err > 0.0 && err < 0.5, "int8 error {err}");
}

#[test]
fn quantized_bases_equal_their_dequantized_weights() {
    use crate::model::linear::LinearBase;
    use crate::model::quant::QuantizedWeight;
    let e = expected("untied");
    for q in [Quant::Nf4, Quant::Int8] {
        let quantized = load(
            "untied",
            &LoadOptions {
                quantization: q,
                ..LoadOptions::default()
            },
        );
        let n = quantized
            .linears()
            .filter(|l| matches!(l.base, LinearBase::Quantized(_)))
            .count();
        assert_eq!(n, 14, "every decoder linear, not lm_head");
        // The same model with each decoder linear replaced by the dense
        // dequantised weight: the quantised path must compute exactly that.
        let mut dense = load("untied", &LoadOptions::default());
        for lin in dense.linears_mut().filter(|l| l.name != "lm_head") {
            let w = lin.base_weight().unwrap();
            let qw = match q {
                Quant::Nf4 => QuantizedWeight::nf4(&w),
                _ => QuantizedWeight::int8(&w),
            };
            lin.base = LinearBase::Frozen(qw.unwrap().dequantize().unwrap());
        }
        let a = quantized.forward(&e.input, Mode::EVAL).unwrap();
        let b = dense.forward(&e.input, Mode::EVAL).unwrap();
        assert_close(&a, &b, 1e-4);
    }
}

#[test]
fn bf16_trains_with_checkpointing() {
    // bf16 weights and activations (norms and softmax in f32): logits near
    // the f32 reference, and checkpointed gradients equal to plain ones.
    let e = expected("tied");
    for ckpt in [false, true] {
        let o = LoadOptions {
            dtype: DType::BF16,
            ..opts(TrainMode::Full, ckpt)
        };
        let model = load("tied", &o);
        let err = error_vs_reference(&model, &e);
        assert!(err < 0.25, "bf16 error {err}");
    }
    let o = |ckpt| LoadOptions {
        dtype: DType::BF16,
        ..opts(TrainMode::Full, ckpt)
    };
    let a = loss_and_grads(&load("tied", &o(false)));
    let b = loss_and_grads(&load("tied", &o(true)));
    assert_eq!(a.0, b.0);
    for ((n, ga), (_, gb)) in a.1.iter().zip(&b.1) {
        assert_eq!(ga.dtype(), DType::BF16, "{n}");
        // Same values up to bf16 rounding: a tied embedding sums its two
        // gradients in another order when the head is recomputed.
        let scale = ga.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        let scale = scale
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let d = max_abs_diff(ga, gb);
        assert!(d <= 1e-2 * scale, "{n}: {d} vs gradient scale {scale}");
    }
}

#[test]
fn frozen_base_keeps_no_weight_or_score_sized_gradients() {
    // With a frozen base only adapters train; the backward pass must not
    // leave gradients of base weights, logits or attention scores behind.
    let mut model = load("untied", &opts(TrainMode::Frozen, false));
    attach(&mut model);
    let (input, weights) = loss_input();
    let lp = model.token_logprobs(&input, Mode::TRAIN).unwrap();
    let grads = model
        .backward(&(lp * weights).unwrap().sum_all().unwrap())
        .unwrap();
    let base: Vec<Vec<usize>> = model
        .named_weights()
        .unwrap()
        .into_iter()
        .map(|(_, t)| t.dims().to_vec())
        .filter(|d| d.len() == 2)
        .collect();
    for id in grads.get_ids() {
        let d = grads.get_id(*id).unwrap().dims().to_vec();
        assert!(!base.contains(&d), "weight-sized gradient {d:?}");
        assert!(d.last() != Some(&128), "vocabulary-sized gradient {d:?}");
        assert!(d != [2, 4, 7, 7], "score-sized gradient {d:?}");
    }
}

#[test]
fn model_is_shareable_across_threads_and_inputs_are_checked() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Qwen3>();
    let model = load("tied", &opts(TrainMode::Frozen, false));
    let mut input = ModelInput::from_rows(&[vec![1, 2, 3]], &Device::Cpu).unwrap();
    input.segments = Tensor::new(&[[1u32, 1]], &Device::Cpu).unwrap();
    let err = model.forward(&input, Mode::EVAL).unwrap_err().to_string();
    assert!(err.contains("ModelInput.segments"), "{err}");
}
