//! Plugins built for `tuner:plugin@0.1.0` run through the host's 0.1.0
//! adapter. The frozen 0.1.0 components in `tests/plugins/v0.1.0/` (the
//! bundled set and the test plugins as they were before the SDK moved to
//! 0.2.0) are installed in the plugin folder, replacing the bundled plugins
//! of the same names, and every one loads; formats parse files (with their
//! free-form text settings), sources resolve, and methods configure from
//! the legacy settings and compute their loss on a tiny Qwen3, with
//! gradients reaching the model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use tuner::data::load::{self, LoadError, LoadOptions};
use tuner::model::linear::Mode;
use tuner::model::qwen3::{self, ModelInput, Qwen3};
use tuner::plugins::bindings::WitVersion;
use tuner::plugins::bindings::v0_1_0::legacy_method_settings;
use tuner::plugins::imports::model::{MethodBatch, PolicyBackend, Quantization, Trainable};
use tuner::plugins::plugin::Origin;
use tuner::plugins::settings::{self, SettingValue};
use tuner::plugins::source as wit;
use tuner::plugins::{CallError, Kind, MethodSession, PluginHost, PluginLimits};
use tuner::sample::SampleKind;
use tuner_tests::hub_emulator::HubEmulator;
use tuner_tests::{TestHome, test_limits};

fn frozen() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/v0.1.0")
}

/// Every frozen component, as (name, `.wasm` path).
fn frozen_plugins() -> Vec<(String, PathBuf)> {
    let mut all = Vec::new();
    for set in ["bundled", "tests"] {
        for entry in std::fs::read_dir(frozen().join(set)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "wasm") {
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                all.push((name, path));
            }
        }
    }
    all.sort();
    assert!(
        all.len() >= 20,
        "the frozen 0.1.0 set is incomplete: {all:?}"
    );
    all
}

/// Components of the frozen set that are not 0.1.0 plugins at all.
const NOT_PLUGINS: [&str; 2] = ["future-version", "wrong-world"];

/// A host whose plugin folder holds the whole frozen 0.1.0 set.
fn host_with_frozen(limits: PluginLimits) -> (TestHome, PluginHost) {
    let home = TestHome::new();
    std::fs::create_dir_all(home.plugin_dir()).unwrap();
    for (name, wasm) in frozen_plugins() {
        std::fs::copy(&wasm, home.plugin_dir().join(format!("{name}.wasm"))).unwrap();
        let manifest = wasm.with_extension("toml");
        if manifest.is_file() {
            std::fs::copy(&manifest, home.plugin_dir().join(format!("{name}.toml"))).unwrap();
        }
    }
    let host = home.start(limits);
    (home, host)
}

#[test]
fn every_frozen_0_1_0_plugin_loads_and_answers_through_the_adapter() {
    let (_home, host) = host_with_frozen(test_limits());
    let failed: Vec<String> = host
        .failures()
        .iter()
        .map(|f| f.file.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(failed, NOT_PLUGINS, "{:?}", host.failures());
    let legacy: Vec<String> = legacy_method_settings()
        .into_iter()
        .map(|s| s.name)
        .collect();
    for (name, _) in frozen_plugins() {
        if NOT_PLUGINS.contains(&name.as_str()) {
            continue;
        }
        let plugin = host.get(&name).unwrap();
        assert_eq!(plugin.meta.origin, Origin::Directory, "{name}");
        assert_eq!(plugin.meta.wit_version, "0.1.0", "{name}");
        assert_eq!(plugin.wit(), WitVersion::V0_1_0, "{name}");
        assert_eq!(plugin.wit_version().to_string(), "0.1.0", "{name}");
        plugin.info().unwrap();
        let names: Vec<String> = plugin
            .settings()
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        match plugin.kind() {
            Kind::Format => {
                let plugin = plugin.as_format().unwrap();
                assert!(names.is_empty(), "{name}: {names:?}");
                assert!(plugin.settings_are_open(), "{name}");
                plugin.extensions().unwrap();
                // The sandbox holds for 0.1.0 plugins too.
                match (name.as_str(), plugin.detect("a.txt", "hello")) {
                    ("endless-loop", Err(CallError::Timeout { .. })) => {}
                    ("memory-bomb", Err(CallError::MemoryLimit { .. })) => {}
                    (_, result) => {
                        result.unwrap_or_else(|e| panic!("{name}: {e}"));
                    }
                }
            }
            Kind::Method => {
                assert_eq!(names, legacy, "{name}");
            }
            Kind::Reward => panic!("{name}: 0.1.0 has no reward plugins"),
            Kind::Source => {
                let plugin = plugin.as_source().unwrap();
                assert!(names.is_empty(), "{name}");
                let endpoint = plugin.default_endpoint().unwrap();
                if tuner::plugins::bundled::BUNDLED
                    .iter()
                    .any(|b| b.name == name)
                {
                    assert!(endpoint.starts_with("https://"), "{name}: {endpoint}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------- formats

fn load_file(
    host: &PluginHost,
    format: &str,
    file: &str,
    text: &str,
    settings: &[(&str, &str)],
) -> Result<Vec<tuner::sample::Sample>, LoadError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file);
    std::fs::write(&path, text).unwrap();
    let options = LoadOptions {
        format: Some(format.into()),
        settings: settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..LoadOptions::default()
    };
    let mut samples = Vec::new();
    load::load(host, &path, file, &options, |s| {
        samples.push(s);
        Ok(())
    })?;
    Ok(samples)
}

#[test]
fn frozen_formats_parse_files_with_their_text_settings() {
    let (_home, host) = host_with_frozen(test_limits());
    let alpaca = r#"{"instruction": "hi", "output": "hello"}"#;
    let cases = [
        (
            "jsonl",
            "a.jsonl",
            format!("{alpaca}\n{{\"text\": \"plain\"}}\n"),
            2,
        ),
        (
            "json",
            "a.json",
            format!("[{alpaca}, {alpaca}, {alpaca}]"),
            3,
        ),
        (
            "csv",
            "a.csv",
            "instruction,output\nhi,hello\nbye,ciao\n".to_string(),
            2,
        ),
        (
            "text",
            "a.txt",
            "one document\n\nof two paragraphs\n".to_string(),
            1,
        ),
    ];
    for (format, file, text, n) in cases {
        let samples =
            load_file(&host, format, file, &text, &[]).unwrap_or_else(|e| panic!("{format}: {e}"));
        assert_eq!(samples.len(), n, "{format}: {samples:?}");
    }
    // A 0.1.0 format's settings are free text: passed on as given.
    let samples = load_file(
        &host,
        "csv",
        "a.csv",
        "instruction;output\nhi;hello\n",
        &[("delimiter", ";")],
    )
    .unwrap();
    assert_eq!(samples.len(), 1);
    // And the plugin names a key it does not know, before any parsing.
    let err = load_file(&host, "csv", "b.csv", "a,b\n1,2\n", &[("delimeter", ";")])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "b.csv: format plugin `csv`: `settings.delimeter`: unknown setting; this format \
         knows: max_record_bytes, delimiter"
    );
}

// ---------------------------------------------------------------- sources

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_sources_resolve_through_the_adapter() {
    let emu = HubEmulator::start().await;
    let repo = emu.add_repo("models", "org/tiny", &[("config.json", b"{}".to_vec())]);
    let (_home, host) = host_with_frozen(PluginLimits {
        allow_private_hosts: true,
        ..test_limits()
    });
    for source in ["huggingface", "modelscope"] {
        let plugin = host.source(source).unwrap();
        plugin
            .network()
            .unwrap()
            .grant_endpoint(&emu.url())
            .unwrap();
        let request = wit::ResolveRequest {
            repo: "org/tiny".into(),
            kind: wit::RepoKind::Model,
            revision: None,
            endpoint: Some(emu.url()),
            token: None,
        };
        let listing = tokio::task::spawn_blocking(move || plugin.resolve(&request))
            .await
            .unwrap()
            .unwrap()
            .unwrap_or_else(|e| panic!("{source}: {e:?}"));
        assert_eq!(listing.commit, repo.commit, "{source}");
        let paths: Vec<&str> = listing.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["config.json"], "{source}");
    }
    // A source error comes back converted, as a value.
    let plugin = host.source("huggingface").unwrap();
    let request = wit::ResolveRequest {
        repo: "org/missing".into(),
        kind: wit::RepoKind::Model,
        revision: None,
        endpoint: Some(emu.url()),
        token: None,
    };
    let out = tokio::task::spawn_blocking(move || plugin.resolve(&request))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(out, Err(wit::SourceError::NotFound(_))), "{out:?}");
}

// ---------------------------------------------------------------- methods

/// The tiny random Qwen3 of the model tests, as the policy: every weight
/// trains, so gradients can be checked.
struct TinyModel {
    model: Qwen3,
}

impl TinyModel {
    fn load() -> Arc<Self> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tiny-qwen3/tied");
        let options = qwen3::LoadOptions {
            dtype: DType::F32,
            train: qwen3::TrainMode::Full,
            quantization: qwen3::Quant::None,
            gradient_checkpointing: false,
        };
        Arc::new(Self {
            model: Qwen3::load(&dir, &Device::Cpu, &options).unwrap(),
        })
    }
}

impl PolicyBackend for TinyModel {
    fn token_logprobs(&self, batch: &MethodBatch, use_adapters: bool) -> anyhow::Result<Tensor> {
        let (rows, seq) = batch.ids.dims2()?;
        let positions = Tensor::arange(0u32, seq as u32, &Device::Cpu)?
            .unsqueeze(0)?
            .repeat((rows, 1))?;
        let input = ModelInput {
            ids: batch.ids.clone(),
            positions,
            segments: Tensor::ones((rows, seq), DType::U32, &Device::Cpu)?,
        };
        let mode = Mode {
            training: use_adapters,
            adapters: use_adapters,
        };
        let lp = self.model.token_logprobs(&input, mode)?;
        Ok(if use_adapters { lp } else { lp.detach() })
    }
}

const IDS: [[u32; 5]; 2] = [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]];
const MASK: [[f32; 4]; 2] = [[1.0, 1.0, 0.0, 0.5], [0.0, 1.0, 1.0, 1.0]];

fn batch() -> Arc<MethodBatch> {
    let ids = Tensor::new(&IDS, &Device::Cpu).unwrap();
    let mask = Tensor::new(&MASK, &Device::Cpu).unwrap();
    Arc::new(MethodBatch::new(SampleKind::Chat, ids, mask).unwrap())
}

/// A session for `method` from the user's `given` keys, as the trainer
/// starts one: checked against the (legacy) schema, the rest is the job.
fn start(host: &PluginHost, method: &str, given: serde_json::Value) -> MethodSession {
    let plugin = host.method(method).unwrap();
    let values = settings::check(&plugin.settings().unwrap(), given.as_object().unwrap()).unwrap();
    plugin
        .start_method(&values, r#"{"learning_rate": 0.0001, "lora_rank": 2}"#)
        .unwrap()
}

#[test]
fn frozen_methods_plan_from_the_legacy_settings() {
    let (_home, host) = host_with_frozen(test_limits());
    let sft = start(&host, "sft", serde_json::json!({}));
    assert_eq!(sft.plan().trains, Trainable::Full);
    // The checked values are laid over the job's keys (`lora_rank: 2`).
    let lora = start(
        &host,
        "lora",
        serde_json::json!({"lora_rank": "16", "target_modules": "q_proj, v_proj"}),
    );
    let adapter = lora.plan().adapter.clone().unwrap();
    assert_eq!(
        (
            adapter.rank,
            adapter.alpha,
            adapter.dropout,
            adapter.target_modules
        ),
        (
            16,
            32.0,
            0.05,
            vec!["q_proj".to_string(), "v_proj".to_string()]
        )
    );
    let lora = start(&host, "lora", serde_json::json!({}));
    assert_eq!(
        lora.plan().adapter.as_ref().unwrap().rank,
        8,
        "the legacy default"
    );
    let qlora = start(&host, "qlora", serde_json::json!({"load_in_8bit": true}));
    assert_eq!(qlora.plan().base_quantization, Quantization::Int8);
    // What the legacy schema cannot express is still the plugin's to refuse.
    let plugin = host.method("sft").unwrap();
    let values = vec![("load_in_4bit".to_string(), SettingValue::Boolean(true))];
    let err = plugin.start_method(&values, "{}").unwrap_err().to_string();
    assert!(
        err.starts_with("plugin `sft` failed in `configure`: `load_in_4bit`: full fine-tuning"),
        "{err}"
    );
    // A job that is not a JSON object reaches the plugin as it is.
    let err = plugin
        .start_method(&Vec::new(), "[1]")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "plugin `sft` failed in `configure`: configuration must be a JSON object"
    );
}

#[test]
fn frozen_methods_compute_the_weighted_nll_on_a_tiny_model() {
    let (_home, host) = host_with_frozen(test_limits());
    let tiny = TinyModel::load();
    let lp: Vec<f32> = tiny
        .token_logprobs(&batch(), true)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let mask: Vec<f32> = MASK.iter().flatten().copied().collect();
    let want = -lp.iter().zip(&mask).map(|(l, m)| l * m).sum::<f32>() / mask.iter().sum::<f32>();
    for method in ["sft", "lora", "qlora"] {
        let mut session = start(&host, method, serde_json::json!({}));
        let out = session.loss(batch(), tiny.clone(), 3).unwrap();
        let loss = out.loss.to_scalar::<f32>().unwrap();
        assert!((loss - want).abs() < 1e-5, "{method}: {loss} vs {want}");
        let grads = tiny.model.backward(&out.loss).unwrap();
        let moved = tiny
            .model
            .trainable_vars()
            .iter()
            .filter(|(_, v)| grads.get(v.as_tensor()).is_some())
            .count();
        assert!(moved > 0, "{method}: no gradient reached the model");
    }
}

/// Log-probs straight from a variable.
struct FakePolicy(Var);

impl PolicyBackend for FakePolicy {
    fn token_logprobs(&self, _: &MethodBatch, _: bool) -> anyhow::Result<Tensor> {
        Ok(self.0.as_tensor().clone())
    }
}

#[test]
fn frozen_test_methods_use_every_tensor_op_and_fail_as_before() {
    let (_home, host) = host_with_frozen(test_limits());
    let lp = [[-0.3f32, -1.2, -2.5, -0.7], [-1.9, -0.15, -0.9, -2.2]];
    let var = Var::from_tensor(&Tensor::new(&lp, &Device::Cpu).unwrap()).unwrap();
    let policy: Arc<dyn PolicyBackend> = Arc::new(FakePolicy(var.clone()));

    // tensor-probe calls every 0.1.0 tensor op through the adapter.
    let mut probe = start(&host, "tensor-probe", serde_json::json!({}));
    let out = probe.loss(batch(), policy.clone(), 0).unwrap();
    let metric = |name: &str| out.metrics.iter().find(|(n, _)| n == name).map(|m| m.1);
    assert_eq!(metric("ids_sum"), Some(55.0));
    assert_eq!(metric("ids_u32"), Some(1.0));
    let sum: f64 = lp.iter().flatten().map(|&v| v as f64).sum();
    assert!((metric("to_list").unwrap() - sum).abs() < 1e-5);
    assert!(out.metrics.len() >= 30, "{:?}", out.metrics);
    assert!(out.loss.to_scalar::<f32>().unwrap().is_finite());
    let grads = out.loss.backward().unwrap();
    assert!(grads.get(var.as_tensor()).is_some());

    // bad-loss: a tensor error converted to the 0.1.0 type and back, a
    // missing host feature, a trap and the recovery after it.
    let plugin = host.method("bad-loss").unwrap();
    let mut bad = start(&host, "bad-loss", serde_json::json!({}));
    let err = bad.loss(batch(), policy.clone(), 4).unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `bad-loss` failed in `loss`: shape: add: shapes [2, 4] and [2, 5] do not \
         broadcast (dimension 1: 4 vs 5)"
    );
    let err = bad.loss(batch(), policy.clone(), 6).unwrap_err();
    assert!(
        err.to_string()
            .contains("policy.generate is not implemented"),
        "{err}"
    );
    let err = bad.loss(batch(), policy.clone(), 1).unwrap_err();
    assert!(matches!(err, CallError::Trap { .. }), "{err:?}");
    let out = bad.loss(batch(), policy, 5).unwrap();
    assert_eq!(out.metrics[1], ("answer".to_string(), 42.0));
    assert_eq!(plugin.stats().instances, 2, "one discarded after the trap");
}
