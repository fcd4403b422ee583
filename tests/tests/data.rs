//! Training data end to end: format plugins, layouts, encodings, errors,
//! the dataset store and the `/api/data` routes. Fixtures are generated here.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use tuner::data::decode::TextEncoding;
use tuner::data::load::{self, LoadError, LoadOptions, LoadReport};
use tuner::data::store::{Datasets, StoreError};
use tuner::plugins::{PluginHost, PluginLimits};
use tuner::sample::Sample;
use tuner::store::Store;
use tuner_tests::{TestHome, TestServer};

/// One plugin host for the whole file: starting one compiles every plugin.
fn host() -> &'static Arc<PluginHost> {
    static HOST: OnceLock<(TestHome, Arc<PluginHost>)> = OnceLock::new();
    &HOST
        .get_or_init(|| {
            let home = TestHome::new();
            let host = home.start(PluginLimits {
                call_timeout: Duration::from_secs(20),
                memory_bytes: 256 << 20,
                ..PluginLimits::default()
            });
            (home, Arc::new(host))
        })
        .1
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn load_all(path: &Path, options: &LoadOptions) -> Result<(LoadReport, Vec<Sample>), LoadError> {
    let mut samples = Vec::new();
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    let report = load::load(host(), path, &name, options, |s| {
        samples.push(s);
        Ok(())
    })?;
    Ok((report, samples))
}

fn load_file(dir: &Path, name: &str, bytes: &[u8]) -> (LoadReport, Vec<Sample>) {
    let path = write(dir, name, bytes);
    load_all(&path, &LoadOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// One record per layout, with the layout and kind it must be read as.
fn layout_records() -> Vec<(Value, &'static str, &'static str)> {
    vec![
        (
            json!({"instruction": "把这句话翻译成英文", "input": "你好", "output": "Hello", "system": "你是翻译"}),
            "alpaca",
            "chat",
        ),
        (
            json!({"conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "你好！"}]}),
            "sharegpt",
            "chat",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}, {"role": "assistant", "content": "hello"}]}),
            "openai",
            "chat",
        ),
        (
            json!({"prompt": "2+2?", "chosen": "4", "rejected": "5"}),
            "preference",
            "preference",
        ),
        (json!({"prompt": "2+2?", "answer": "4"}), "prompt", "prompt"),
        (json!({"text": "天地玄黄，宇宙洪荒。"}), "text", "text"),
    ]
}

/// A CSV cell: quoted, quotes doubled.
fn cell(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    format!("\"{}\"", text.replace('"', "\"\""))
}

#[test]
fn every_layout_loads_from_every_file_format() {
    let dir = tempfile::tempdir().unwrap();
    for (record, layout, kind) in layout_records() {
        let jsonl = format!("{record}\n");
        let json_array = format!("[\n  {record}\n]");
        let json_wrapped = format!("{{\"version\": 1, \"data\": [{record}]}}");
        let obj = record.as_object().unwrap();
        let header: Vec<String> = obj.keys().cloned().collect();
        let row: Vec<String> = obj.values().map(cell).collect();
        let csv = format!("{}\r\n{}\r\n", header.join(","), row.join(","));
        let tsv = format!("{}\n{}\n", header.join("\t"), row.join("\t"));
        for (name, text) in [
            ("a.jsonl", jsonl),
            ("a.json", json_array),
            ("wrapped.json", json_wrapped),
            ("a.csv", csv),
            ("a.tsv", tsv),
        ] {
            let (report, samples) = load_file(dir.path(), name, text.as_bytes());
            assert_eq!(
                report.rejected, 0,
                "{layout} in {name}: {:?}",
                report.errors
            );
            assert_eq!(samples.len(), 1, "{layout} in {name}");
            assert_eq!(report.main_layout(), layout, "{name}");
            assert_eq!(samples[0].kind().as_str(), kind, "{name}");
        }
    }
    // Plain text files: whole file, or paragraphs.
    let text = "第一段\n第二行\n\n第二段\n";
    let (report, samples) = load_file(dir.path(), "book.txt", text.as_bytes());
    assert_eq!((report.format.as_str(), samples.len()), ("text", 1));
    let path = write(dir.path(), "book2.txt", text.as_bytes());
    let options = LoadOptions {
        settings: vec![("split".into(), "paragraph".into())],
        ..LoadOptions::default()
    };
    let (_, samples) = load_all(&path, &options).unwrap();
    assert_eq!(
        samples,
        vec![
            Sample::Text {
                text: "第一段\n第二行".into()
            },
            Sample::Text {
                text: "第二段".into()
            }
        ]
    );
}

#[test]
fn chinese_content_survives_and_alpaca_joins_instruction_and_input() {
    let dir = tempfile::tempdir().unwrap();
    let (_, samples) = load_file(
        dir.path(),
        "zh.jsonl",
        "{\"instruction\": \"翻译\", \"input\": \"早上好\", \"output\": \"Good morning\"}\n"
            .as_bytes(),
    );
    let Sample::Chat { messages, .. } = &samples[0] else {
        panic!()
    };
    assert_eq!(messages[0].content, "翻译\n早上好");
}

#[test]
fn gbk_csv_bom_jsonl_and_utf16_are_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let csv = "instruction,output\n\"多行\n指令，带\"\"引号\"\"\",好的\n";
    let (gbk, _, unmappable) = encoding_rs::GBK.encode(csv);
    assert!(!unmappable);
    let (report, samples) = load_file(dir.path(), "excel.csv", &gbk);
    assert_eq!(report.encoding, TextEncoding::Gb18030);
    let Sample::Chat { messages, .. } = &samples[0] else {
        panic!()
    };
    assert_eq!(messages[0].content, "多行\n指令，带\"引号\"");

    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice("{\"text\": \"你好\"}\n".as_bytes());
    let (report, samples) = load_file(dir.path(), "bom.jsonl", &bom);
    assert_eq!(report.encoding, TextEncoding::Utf8Bom);
    assert_eq!(
        samples[0],
        Sample::Text {
            text: "你好".into()
        }
    );

    let mut utf16 = vec![0xFF, 0xFE];
    utf16.extend(
        "{\"text\": \"你好\"}\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes),
    );
    let (report, samples) = load_file(dir.path(), "wide.jsonl", &utf16);
    assert_eq!(report.encoding, TextEncoding::Utf16le);
    assert_eq!(
        samples[0],
        Sample::Text {
            text: "你好".into()
        }
    );
}

#[test]
fn invalid_bytes_fail_with_their_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "bad.jsonl",
        b"{\"text\": \"ok\"}\n{\"text\": \"\xFF\xFF\"}\n",
    );
    let err = load_all(&path, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("byte offset 25"), "{err}");
}

#[test]
fn a_broken_line_is_reported_with_its_number_and_the_rest_loads() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    for i in 1..=5 {
        if i == 3 {
            text.push_str("{\"instruction\": \"q\", \"output\": 5}\n");
        } else if i == 4 {
            text.push_str("{\"text\": \"unterminated\n");
        } else {
            text.push_str(&format!("{{\"text\": \"line {i}\"}}\n"));
        }
    }
    let (report, samples) = load_file(dir.path(), "train.jsonl", text.as_bytes());
    assert_eq!((report.samples, report.rejected), (3, 2));
    assert_eq!(
        report.errors[0].to_string(),
        "train.jsonl:3: field \"output\": expected string, found number"
    );
    assert_eq!(report.errors[1].line, 4);
    assert!(
        report.errors[1].message.starts_with("invalid JSON"),
        "{}",
        report.errors[1]
    );
    assert_eq!(samples.len(), 3);
}

#[test]
fn truncated_and_empty_files_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "cut.json",
        b"[{\"text\": \"a\"},\n {\"text\": \"b",
    );
    let err = load_all(&path, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("truncated") && err.contains("cut.json:2"),
        "{err}"
    );
    // A cut JSON Lines file loses only its last record.
    let (report, _) = load_file(
        dir.path(),
        "cut.jsonl",
        b"{\"text\": \"a\"}\n{\"text\": \"b",
    );
    assert_eq!((report.samples, report.rejected), (1, 1));
    let path = write(dir.path(), "empty.jsonl", b"");
    assert!(matches!(
        load_all(&path, &LoadOptions::default()),
        Err(LoadError::EmptyFile { .. })
    ));
    let path = write(dir.path(), "blank.jsonl", b"\n\n  \n");
    assert!(matches!(
        load_all(&path, &LoadOptions::default()),
        Err(LoadError::Empty { .. })
    ));
}

#[test]
fn json_nested_ten_thousand_levels_is_rejected_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let line = format!("{{\"text\": {deep}}}");
    let (report, _) = load_file(
        dir.path(),
        "deep.jsonl",
        format!("{line}\n{{\"text\": \"ok\"}}\n").as_bytes(),
    );
    assert_eq!((report.samples, report.rejected), (1, 1));
    assert!(
        report.errors[0].message.contains("recursion limit"),
        "{}",
        report.errors[0]
    );
    let (report, _) = load_file(
        dir.path(),
        "deep.json",
        format!("[{line}, {{\"text\": \"ok\"}}]").as_bytes(),
    );
    assert_eq!((report.samples, report.rejected), (1, 1));
}

#[test]
fn a_100_mb_line_is_skipped_without_buffering_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.jsonl");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        f.write_all(b"{\"text\": \"").unwrap();
        let block = vec![b'x'; 1 << 20];
        for _ in 0..100 {
            f.write_all(&block).unwrap();
        }
        f.write_all(b"\"}\n{\"text\": \"after\"}\n").unwrap();
    }
    // Default cap (64 MiB) under a 256 MiB plugin memory limit: the plugin
    // would trap if it tried to hold the line.
    let (report, samples) = load_all(&path, &LoadOptions::default()).unwrap();
    assert_eq!((report.samples, report.rejected), (1, 1));
    assert!(
        report.errors[0].message.contains("record too large"),
        "{}",
        report.errors[0]
    );
    assert_eq!(
        samples,
        vec![Sample::Text {
            text: "after".into()
        }]
    );
}

#[test]
fn the_format_is_detected_from_content_when_the_name_says_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (r, _) = load_file(
        dir.path(),
        "data",
        b"{\"text\": \"a\"}\n{\"text\": \"b\"}\n",
    );
    assert_eq!(r.format, "jsonl");
    let (r, _) = load_file(dir.path(), "data2", b"[{\"text\": \"a\"}]");
    assert_eq!(r.format, "json");
    let (r, _) = load_file(dir.path(), "data3", b"sep=;\ninstruction;output\nq;a\n");
    assert_eq!((r.format.as_str(), r.samples), ("csv", 1));
}

fn store_in(home: &TestHome) -> Store {
    Store::open(&home.home.database).unwrap()
}

#[test]
fn strict_mode_and_failed_loads_store_nothing_and_keep_what_was_there() {
    let home = TestHome::new();
    let store = store_in(&home);
    let data_dir = home.home.data_dir.clone();
    let datasets = Datasets::new(&data_dir, &store);
    let good = write(home.dir.path(), "good.jsonl", b"{\"text\": \"a\"}\n");
    let bad = write(
        home.dir.path(),
        "bad.jsonl",
        b"{\"text\": \"a\"}\n{\"text\": 1}\n",
    );
    datasets
        .add(host(), &good, "good.jsonl", "keep", &LoadOptions::default())
        .unwrap();
    let before = std::fs::read(datasets.samples_path("keep")).unwrap();

    let strict = LoadOptions {
        strict: true,
        ..LoadOptions::default()
    };
    let err = datasets
        .add(host(), &bad, "bad.jsonl", "strict", &strict)
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Load(LoadError::Strict { .. })),
        "{err}"
    );
    assert!(
        err.to_string().contains("bad.jsonl:2: field \"text\""),
        "{err}"
    );
    // Same name as an existing dataset: refused, the old one intact.
    let err = datasets
        .add(host(), &bad, "bad.jsonl", "keep", &LoadOptions::default())
        .unwrap_err();
    assert!(matches!(err, StoreError::Exists(_)));
    let names: Vec<String> = datasets
        .list()
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["keep"]);
    assert_eq!(
        std::fs::read(datasets.samples_path("keep")).unwrap(),
        before
    );
    let files: Vec<_> = std::fs::read_dir(&data_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, ["keep.jsonl"], "no leftovers from failed loads");

    // Default mode stores the good records and counts the bad one.
    let (record, _) = datasets
        .add(
            host(),
            &bad,
            "bad.jsonl",
            "lenient",
            &LoadOptions::default(),
        )
        .unwrap();
    assert_eq!((record.samples, record.rejected), (1, 1));
    assert_eq!(record.sha256.len(), 64);
    assert_eq!(datasets.samples("lenient", None).unwrap().len(), 1);
    datasets.remove("lenient").unwrap();
    assert!(!datasets.samples_path("lenient").exists());
}

#[test]
fn names_that_could_escape_the_data_dir_are_refused() {
    let home = TestHome::new();
    let store = store_in(&home);
    let datasets = Datasets::new(&home.home.data_dir, &store);
    let good = write(home.dir.path(), "good.jsonl", b"{\"text\": \"a\"}\n");
    for name in ["../evil", "a/b", "..", ".hidden", "/etc/passwd"] {
        let err = datasets
            .add(host(), &good, "good.jsonl", name, &LoadOptions::default())
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidName(_)), "{name}: {err}");
    }
    assert!(!home.dir.path().join("evil.jsonl").exists());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    #[test]
    fn arbitrary_bytes_never_crash_the_host(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
        format in 0usize..5,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let name = ["x.jsonl", "x.json", "x.csv", "x.txt", "x"][format];
        let path = write(dir.path(), name, &bytes);
        // Any outcome but a panic or a plugin crash is fine.
        if let Err(LoadError::Plugin(e)) = load_all(&path, &LoadOptions::default()) {
            panic!("plugin failed: {e}");
        }
    }
}

async fn upload(
    s: &TestServer,
    route: &str,
    name: Option<&str>,
    file_name: &str,
    bytes: Vec<u8>,
) -> (u16, Value) {
    let part = reqwest::multipart::Part::bytes(bytes).file_name(file_name.to_string());
    let mut form = reqwest::multipart::Form::new().part("file", part);
    if let Some(n) = name {
        form = form.text("name", n.to_string());
    }
    let resp = s
        .client
        .post(s.url(route))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn api_uploads_previews_validates_and_deletes_datasets() {
    let home = TestHome::new();
    let s = home
        .server()
        .host(host().clone())
        .settings(|settings| settings.server.max_upload_bytes = 64 << 10)
        .start()
        .await;
    let data =
        "{\"instruction\": \"问\", \"output\": \"答\"}\n{\"instruction\": \"x\", \"output\": 1}\n";

    let (status, body) = upload(
        &s,
        "/api/data/upload",
        Some("zh"),
        "train.jsonl",
        data.into(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["dataset"]["samples"], 1);
    assert_eq!(body["report"]["errors"][0]["line"], 2);

    let (status, list) = s.get_json("/api/data").await;
    assert_eq!((status, list[0]["name"].as_str()), (200, Some("zh")));
    let (_, one) = s.get_json("/api/data/zh").await;
    assert_eq!(one["layout"], "alpaca");
    let (_, preview) = s.get_json("/api/data/zh/preview?n=1").await;
    assert_eq!(preview["samples"][0]["messages"][1]["content"], "答");
    let (_, stats) = s.get_json("/api/data/zh/stats").await;
    assert_eq!(stats["samples"], 1);

    let (status, report) = upload(&s, "/api/data/validate", None, "v.jsonl", data.into()).await;
    assert_eq!((status, report["rejected"].as_u64()), (200, Some(1)));
    assert_eq!(report["errors"][0]["field"], "output");
    let (_, list) = s.get_json("/api/data").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "validate stores nothing");

    let (status, body) = upload(
        &s,
        "/api/data/upload",
        Some("big"),
        "big.jsonl",
        vec![b' '; 200 << 10],
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("upload_too_large"))
    );
    let (status, body) = upload(
        &s,
        "/api/data/upload",
        Some("../evil"),
        "a.jsonl",
        data.into(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_name"))
    );
    let (status, _) = s.get_json("/api/data/..%2Fetc").await;
    assert!(status == 400 || status == 404, "{status}");

    let resp = s.client.delete(s.url("/api/data/zh")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (status, _) = s.get_json("/api/data/zh").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn api_stats_and_preview_take_a_model_for_tokens_and_the_rendered_template() {
    let home = TestHome::new();
    let cache = home.settings().model_cache_dir;
    let s = home.server().host(host().clone()).start().await;
    let data = "{\"instruction\": \"你好\", \"output\": \"你好！有什么可以帮你？\"}\n\
                {\"messages\": [{\"role\": \"user\", \"content\": \"2+2?\"}, {\"role\": \"assistant\", \"content\": \"4\"}]}\n";
    let (status, body) = upload(&s, "/api/data/upload", Some("zh"), "t.jsonl", data.into()).await;
    assert_eq!(status, 201, "{body}");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/qwen3");
    let folder = fixtures.display().to_string();
    let q = |route: &str, model: &str, extra: &str| {
        let model: String = url_encode(model);
        format!("/api/data/zh/{route}?model={model}{extra}")
    };

    // A local model folder: token statistics beside the character ones.
    let (status, stats) = s.get_json(&q("stats", &folder, "&max_seq_len=12")).await;
    assert_eq!(status, 200, "{stats}");
    let tokens = &stats["tokens"];
    assert_eq!(
        (tokens["samples"].as_u64(), tokens["failed"].as_u64()),
        (Some(2), Some(0))
    );
    for key in ["prompt_tokens", "response_tokens", "total_tokens"] {
        let d = &tokens[key];
        for field in ["min", "mean", "p50", "p95", "max"] {
            assert!(d[field].is_number(), "{key}.{field}: {stats}");
        }
    }
    assert!(
        tokens["total_tokens"]["min"].as_u64().unwrap() > 5,
        "{stats}"
    );
    assert_eq!(tokens["max_seq_len"], 12);
    assert!(tokens["over_max_seq_len"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(stats["unit"], "chars");
    let (_, plain) = s.get_json("/api/data/zh/stats").await;
    assert!(plain["tokens"].is_null(), "{plain}");

    // The rendered template with the trained span: the answer and its end of turn.
    let (status, preview) = s
        .get_json(&q("preview", &folder, "&n=1&enable_thinking=false"))
        .await;
    assert_eq!(status, 200, "{preview}");
    let seq = &preview["rendered"][0]["sequences"][0];
    let text = seq["text"].as_str().unwrap();
    assert!(text.contains("<|im_start|>user\n你好<|im_end|>"), "{text}");
    let trained: String = seq["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["weight"].as_f64().unwrap() > 0.0)
        .map(|g| g["text"].as_str().unwrap())
        .collect();
    assert!(
        trained.contains("你好！有什么可以帮你？<|im_end|>"),
        "{trained}"
    );
    assert!(!trained.contains("<|im_start|>user"), "{trained}");
    assert_eq!(preview["samples"].as_array().unwrap().len(), 1);
    // Without `enable_thinking` the preview and the statistics render as
    // training does by default (thinking off: the empty think block is
    // prompt); `enable_thinking=true` trains it, as training with it does.
    let (_, default_preview) = s.get_json(&q("preview", &folder, "&n=1")).await;
    assert_eq!(default_preview["rendered"], preview["rendered"]);
    let sum = |stats: &Value| stats["tokens"]["response_tokens"]["sum"].as_u64().unwrap();
    let (_, default_stats) = s.get_json(&q("stats", &folder, "")).await;
    let (_, off) = s
        .get_json(&q("stats", &folder, "&enable_thinking=false"))
        .await;
    let (_, on) = s
        .get_json(&q("stats", &folder, "&enable_thinking=true"))
        .await;
    assert_eq!(sum(&default_stats), sum(&off));
    assert_eq!(sum(&on), sum(&off) + 2 * 4, "{on} {off}");
    let (_, with_system) = s
        .get_json(&q("preview", &folder, "&n=1&system=Be%20kind."))
        .await;
    let text = with_system["rendered"][0]["sequences"][0]["text"]
        .as_str()
        .unwrap();
    assert!(
        text.starts_with("<|im_start|>system\nBe kind.<|im_end|>"),
        "{text}"
    );

    // A model id found in the cache (nothing downloaded).
    let snapshot = cache.join("models--Qwen--Qwen3-Fixture/snapshots/abc123");
    std::fs::create_dir_all(&snapshot).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixtures.join(f), snapshot.join(f)).unwrap();
    }
    let (status, stats) = s.get_json(&q("stats", "Qwen/Qwen3-Fixture", "")).await;
    assert_eq!(
        (status, stats["tokens"]["samples"].as_u64()),
        (200, Some(2)),
        "{stats}"
    );
    assert_eq!(stats["tokens"]["max_seq_len"], 4096);

    // Clear errors when there is no such model or it has no tokenizer.
    let code = |v: &Value| v["error"]["code"].as_str().map(str::to_string);
    let (status, body) = s.get_json(&q("stats", "Qwen/NotDownloaded", "")).await;
    assert_eq!(
        (status, code(&body).as_deref()),
        (404, Some("model_not_found")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tuner pull"),
        "{body}"
    );
    let (status, body) = s.get_json(&q("preview", "/no/such/model/dir", "")).await;
    assert_eq!(
        (status, code(&body).as_deref()),
        (404, Some("model_not_found")),
        "{body}"
    );
    let empty = tempfile::tempdir().unwrap();
    let (status, body) = s
        .get_json(&q("stats", &empty.path().display().to_string(), ""))
        .await;
    assert_eq!(
        (status, code(&body).as_deref()),
        (404, Some("tokenizer_not_found")),
        "{body}"
    );
    let (status, body) = s.get_json(&q("stats", "bad name!", "")).await;
    assert_eq!(
        (status, code(&body).as_deref()),
        (400, Some("invalid_model")),
        "{body}"
    );
    let (status, body) = s.get_json(&q("stats", &folder, "&max_seq_len=0")).await;
    assert_eq!(
        (status, code(&body).as_deref()),
        (400, Some("invalid_query")),
        "{body}"
    );
    let (status, body) = s
        .get_json(&format!(
            "/api/data/nope/stats?model={}",
            url_encode(&folder)
        ))
        .await;
    assert_eq!(
        (status, code(&body).as_deref()),
        (404, Some("dataset_not_found")),
        "{body}"
    );

    // The OpenAPI document describes the new query parameters.
    let (_, doc) = s.get_json("/api/openapi.json").await;
    let params = |route: &str| -> Vec<String> {
        doc["paths"][route]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    };
    let stats_params = params("/api/data/{name}/stats");
    for name in ["model", "max_seq_len", "enable_thinking", "system"] {
        assert!(stats_params.iter().any(|p| p == name), "{stats_params:?}");
    }
    let preview_params = params("/api/data/{name}/preview");
    for name in ["n", "model", "enable_thinking", "system"] {
        assert!(
            preview_params.iter().any(|p| p == name),
            "{preview_params:?}"
        );
    }
}

/// Percent-encodes a query value.
fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Tool schemas reach the chat template in the file's key order, as
/// transformers passes them: the reference render (Jinja2, as
/// `apply_chat_template` sets it up) of a tool whose keys are not in
/// alphabetical order (`type` before `function`, `name`/`description`/
/// `parameters`) is reproduced byte for byte from a JSON Lines file (tools as
/// an array and as a string) and a CSV file. The file text is written from
/// the fixture's own JSON text, never re-serialised here.
#[test]
fn tool_schemas_reach_the_template_in_the_files_key_order() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/qwen3");
    let cases: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures.join("expected_renders.json")).unwrap(),
    )
    .unwrap();
    let case = cases
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "tools")
        .unwrap();
    let tools = case["tools_json"].as_str().unwrap();
    let expected = case["rendered"].as_str().unwrap();
    assert!(
        tools.find("\"type\"").unwrap() < tools.find("\"function\"").unwrap()
            && tools.find("\"name\"").unwrap() < tools.find("\"description\"").unwrap(),
        "the fixture's keys must be out of alphabetical order: {tools}"
    );
    let messages = serde_json::to_string(&case["messages"]).unwrap();
    let as_string = serde_json::to_string(tools).unwrap();
    let jsonl = format!(
        "{{\"messages\": {messages}, \"tools\": {tools}}}\n{{\"messages\": {messages}, \"tools\": {as_string}}}\n"
    );
    let cell = |text: &str| format!("\"{}\"", text.replace('"', "\"\""));
    let csv = format!("messages,tools\n{},{}\n", cell(&messages), cell(tools));
    let dir = tempfile::tempdir().unwrap();
    let files = tuner::text::ModelFiles::from_dir(&fixtures).unwrap();
    for (name, text) in [("tools.jsonl", jsonl), ("tools.csv", csv)] {
        let (report, samples) = load_file(dir.path(), name, text.as_bytes());
        assert_eq!(report.rejected, 0, "{name}: {:?}", report.errors);
        assert!(!samples.is_empty(), "{name}");
        for (i, sample) in samples.iter().enumerate() {
            let rendered = files
                .preview(sample, &tuner::text::RenderOptions::default())
                .unwrap();
            assert_eq!(
                rendered.sequences[0].text,
                expected,
                "{name} sample {}",
                i + 1
            );
            // The stored dataset (JSON Lines of samples) keeps the order too.
            let stored: Sample =
                serde_json::from_str(&serde_json::to_string(sample).unwrap()).unwrap();
            let rendered = files
                .preview(&stored, &tuner::text::RenderOptions::default())
                .unwrap();
            assert_eq!(rendered.sequences[0].text, expected, "{name}, stored");
        }
    }
}

#[test]
fn loaded_samples_get_token_statistics_from_the_qwen3_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let (_, samples) = load_file(
        dir.path(),
        "mix.jsonl",
        "{\"instruction\": \"你好\", \"output\": \"你好！有什么可以帮你？\"}\n{\"prompt\": \"q\", \"chosen\": \"a\", \"rejected\": \"b\"}\n"
            .as_bytes(),
    );
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/qwen3");
    let files = tuner::text::ModelFiles::from_dir(&fixtures).unwrap();
    let stats = files.stats(&samples, &tuner::text::RenderOptions::default(), 12);
    assert_eq!((stats.samples, stats.failed), (2, 0));
    let total = stats.total_tokens.unwrap();
    assert!(total.min > 5 && total.max > total.min, "{total:?}");
    assert!(stats.over_max_seq_len >= 1);
}

#[test]
fn csv_rows_after_blank_lines_and_multiline_cells_keep_their_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let csv = "instruction,output\nq,a\n\n\nq2,\n\"multi\nline\",x\nz,\n";
    let (report, _) = load_file(dir.path(), "lines.csv", csv.as_bytes());
    let lines: Vec<u64> = report.errors.iter().map(|e| e.line).collect();
    assert_eq!((report.samples, lines), (2, vec![5, 8]));
}
