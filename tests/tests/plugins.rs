//! Loading, caching, hot reload, logging and the bundled plugins.

use std::sync::Arc;
use std::time::Duration;

use tuner::plugins::HostParseOptions;
use tuner::plugins::format::Record;
use tuner::plugins::plugin::Origin;
use tuner::plugins::runtime::CompileSource;
use tuner::plugins::{Kind, watch};
use tuner::sample::Sample;
use tuner_tests::{TestHome, TestServer, eventually, install, test_limits};

#[test]
fn bundled_plugins_of_every_kind_load() {
    let host = TestHome::new().start(test_limits());
    let kinds: Vec<(String, Kind, Origin)> = host
        .list()
        .iter()
        .map(|p| (p.meta.name.clone(), p.meta.kind, p.meta.origin))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("accuracy".into(), Kind::Reward, Origin::Bundled),
            ("csv".into(), Kind::Format, Origin::Bundled),
            ("dpo".into(), Kind::Method, Origin::Bundled),
            ("format".into(), Kind::Reward, Origin::Bundled),
            ("grpo".into(), Kind::Method, Origin::Bundled),
            ("huggingface".into(), Kind::Source, Origin::Bundled),
            ("json".into(), Kind::Format, Origin::Bundled),
            ("jsonl".into(), Kind::Format, Origin::Bundled),
            ("kto".into(), Kind::Method, Origin::Bundled),
            ("length".into(), Kind::Reward, Origin::Bundled),
            ("lora".into(), Kind::Method, Origin::Bundled),
            ("mirror".into(), Kind::Source, Origin::Bundled),
            ("modelscope".into(), Kind::Source, Origin::Bundled),
            ("parquet".into(), Kind::Format, Origin::Bundled),
            ("qlora".into(), Kind::Method, Origin::Bundled),
            ("sft".into(), Kind::Method, Origin::Bundled),
            ("text".into(), Kind::Format, Origin::Bundled),
        ]
    );
    let jsonl = host.get("jsonl").unwrap();
    // Built with the SDK for a version this host supports.
    let version = jsonl.meta.wit_version.as_str();
    assert!(
        tuner::plugins::inspect::SUPPORTED_WIT_VERSIONS.contains(&version),
        "{version}"
    );
    assert_eq!(jsonl.wit_version().to_string(), version);
    assert_eq!(jsonl.meta.sdk_version.as_deref(), Some(version));
    assert_eq!(
        host.get("huggingface").unwrap().meta.hosts,
        vec!["huggingface.co", "*.huggingface.co", "*.hf.co"]
    );
}

#[test]
fn the_second_start_loads_compiled_code_from_the_cache() {
    let home = TestHome::new();
    let first = home.start(test_limits());
    assert!(
        first
            .list()
            .iter()
            .all(|p| p.meta.compiled == CompileSource::Compiled)
    );
    drop(first);
    let second = home.start(test_limits());
    assert!(
        second
            .list()
            .iter()
            .all(|p| p.meta.compiled == CompileSource::Cached)
    );
    // And what was cached works.
    assert_eq!(
        second
            .format("jsonl")
            .unwrap()
            .detect("a.jsonl", "{\"text\": \"x\"}")
            .unwrap(),
        1.0
    );
}

#[test]
fn a_corrupt_cache_entry_is_recompiled() {
    let home = TestHome::new();
    drop(home.start(test_limits()));
    for entry in std::fs::read_dir(&home.home.compile_cache_dir).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let host = home.start(test_limits());
    assert!(
        host.list()
            .iter()
            .all(|p| p.meta.compiled == CompileSource::Compiled)
    );
}

#[test]
fn bundled_jsonl_streams_records_with_line_numbers() {
    let host = TestHome::new().start(test_limits());
    let jsonl = host.format("jsonl").unwrap();
    let options = HostParseOptions {
        file_name: "train.jsonl".into(),
        ..HostParseOptions::default()
    };
    // The second record is split across chunks (messages without an
    // assistant turn: a prompt); line 3 is broken.
    let chunks = [
        "{\"text\": \"你好\"}\n{\"messages\": [{\"role\": \"user\", \"con",
        "tent\": \"hi\"}]}\n{\"text\": 5}\n",
    ];
    let outcomes = jsonl.parse(&options, chunks).unwrap().unwrap();
    assert_eq!(outcomes.len(), 3);
    match &outcomes[0] {
        Record::Sample {
            location, sample, ..
        } => {
            assert_eq!(location.line, 1);
            assert!(matches!(sample, Sample::Text { text } if text == "你好"));
        }
        other => panic!("{other:?}"),
    }
    match &outcomes[1] {
        Record::Sample {
            location, layout, ..
        } => assert_eq!((location.line, layout.as_str()), (2, "prompt")),
        other => panic!("{other:?}"),
    }
    match &outcomes[2] {
        Record::Rejected {
            location,
            field,
            message,
        } => {
            assert_eq!((location.line, field.as_deref()), (3, Some("text")));
            assert_eq!(message, "expected string, found number");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bundled_sft_plans_and_reports_the_missing_engine() {
    let host = TestHome::new().start(test_limits());
    let sft = host.method("sft").unwrap();
    let values =
        tuner::plugins::settings::check(&sft.settings().unwrap(), &Default::default()).unwrap();
    let session = sft
        .start_method(&values, "{\"learning_rate\": 1e-5}")
        .unwrap();
    let plan = session.plan();
    assert!(!plan.needs_reference && !plan.needs_generation);
    let err = sft.start_method(&values, "[1, 2]").unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `sft` failed in `configure`: configuration must be a JSON object"
    );
}

#[test]
fn the_registry_hands_out_a_handle_of_the_plugins_own_kind_only() {
    // Calling a format function on a method plugin does not compile (see
    // the `compile_fail` example on `MethodPlugin`); here: no format handle
    // is ever made for a plugin of another kind.
    let host = TestHome::new().start(test_limits());
    assert!(host.format("sft").is_none());
    assert!(host.source("sft").is_none());
    assert_eq!(host.method("sft").unwrap().name(), "sft");
    assert!(host.get("sft").unwrap().as_format().is_none());
    assert_eq!(host.format("jsonl").unwrap().name(), "jsonl");
    assert!(host.method("jsonl").is_none());
    assert_eq!(host.source("modelscope").unwrap().name(), "modelscope");
    let kinds = |names: Vec<String>| names.join(",");
    assert_eq!(
        kinds(
            host.formats()
                .iter()
                .map(|p| p.name().to_string())
                .collect()
        ),
        "csv,json,jsonl,parquet,text"
    );
    assert_eq!(
        kinds(
            host.methods()
                .iter()
                .map(|p| p.name().to_string())
                .collect()
        ),
        "dpo,grpo,kto,lora,qlora,sft"
    );
    assert_eq!(
        kinds(
            host.rewards()
                .iter()
                .map(|p| p.name().to_string())
                .collect()
        ),
        "accuracy,format,length"
    );
    assert!(host.reward("sft").is_none());
    assert!(host.method("accuracy").is_none());
}

#[test]
fn plugin_log_lines_reach_tracing_tagged_with_the_plugin() {
    let buffer = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || Capture(writer.clone()))
        .finish();
    let home = TestHome::new();
    install(home.plugin_dir(), "probe", "probe");
    let host = home.start(test_limits());
    tracing::subscriber::with_default(subscriber, || {
        host.format("probe")
            .unwrap()
            .detect("log", "hello from inside")
            .unwrap();
    });
    let out = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
    assert!(out.contains("WARN"), "{out}");
    assert!(out.contains("plugin=\"probe\""), "{out}");
    assert!(out.contains("hello from inside"), "{out}");
}

struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);
impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_folder_plugin_replaces_the_bundled_one_of_the_same_name() {
    let home = TestHome::new();
    install(home.plugin_dir(), "probe", "jsonl");
    let host = home.start(test_limits());
    let jsonl = host.format("jsonl").unwrap();
    assert_eq!(jsonl.meta.origin, Origin::Directory);
    assert_eq!(jsonl.detect("x", "").unwrap(), 0.5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_dropped_in_replaced_and_removed_while_serving_are_picked_up() {
    let home = TestHome::new();
    let host = Arc::new(home.start(test_limits()));
    let _watcher = watch::watch(host.clone())
        .unwrap()
        .expect("a plugin folder");
    let server = TestServer::start(home.app_state(host.clone(), None)).await;
    let description = async |server: &TestServer| {
        let (status, body) = server.get_json("/api/plugins/probe").await;
        (status == 200).then(|| body["description"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(description(&server).await, None);

    // Dropped in.
    install(home.plugin_dir(), "probe", "probe");
    assert!(
        eventually(Duration::from_secs(15), async || description(&server)
            .await
            .as_deref()
            == Some("measures call costs"))
        .await,
        "the new plugin was not picked up"
    );
    // A call holding the old plugin is not disturbed by what follows.
    let in_flight = host.format("probe").unwrap();

    // Replaced by another build.
    install(home.plugin_dir(), "trap", "probe");
    assert!(
        eventually(Duration::from_secs(15), async || description(&server)
            .await
            .as_deref()
            == Some("panics in detect when asked to"))
        .await,
        "the replaced plugin was not reloaded"
    );
    assert_eq!(
        in_flight.detect("x", "").unwrap(),
        0.5,
        "the old instance still answers"
    );

    // Removed.
    std::fs::remove_file(home.plugin_dir().join("probe.wasm")).unwrap();
    assert!(
        eventually(Duration::from_secs(15), async || description(&server)
            .await
            .is_none())
        .await,
        "the removed plugin is still listed"
    );
    assert_eq!(in_flight.detect("x", "").unwrap(), 0.5);
}

#[test]
fn a_broken_replacement_keeps_the_last_good_version_active() {
    let home = TestHome::new();
    install(home.plugin_dir(), "probe", "probe");
    let host = home.start(test_limits());
    std::fs::write(home.plugin_dir().join("probe.wasm"), b"truncated").unwrap();
    let report = host.reload();
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].error, "not a WebAssembly file");
    assert!(report.removed.is_empty(), "{report:?}");
    assert_eq!(host.format("probe").unwrap().detect("x", "").unwrap(), 0.5);
    assert_eq!(host.failures().len(), 1, "the failure stays visible");
}
