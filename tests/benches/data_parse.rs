//! Training-data parse throughput: JSON Lines through the bundled `jsonl`
//! WebAssembly plugin (decode + parse + layout normalisation + samples
//! back to the host) vs native serde_json parsing of the same file, in one
//! run, with peak memory of each path.
//!
//! `cargo bench -p tuner-tests --bench data_parse` (set `DATA_BENCH_MB` to
//! change the file size, default 200, and `DATA_BENCH_ROUNDS` for the number
//! of alternating rounds, default 3). Compare the ratio, not absolute
//! numbers across machines.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use tuner::data::load::{self, LoadOptions};
use tuner::plugins::{PluginHost, PluginLimits};

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Resets the peak so each path is measured on its own (Linux >= 4.0).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn generate(path: &Path, mb: u64) -> u64 {
    let mut out = BufWriter::new(std::fs::File::create(path).unwrap());
    let mut written = 0u64;
    let mut i = 0u64;
    while written < mb << 20 {
        let line = serde_json::json!({
            "messages": [
                {"role": "system", "content": "You are a helpful assistant. 你是一个乐于助人的助手。"},
                {"role": "user", "content": format!("Question {i}: explain why the sky is blue, in two or three sentences. 请解释天空为什么是蓝色的。")},
                {"role": "assistant", "content": format!("Answer {i}: sunlight is scattered by air molecules, and shorter (blue) wavelengths scatter much more strongly than longer ones (Rayleigh scattering). 所以天空看起来是蓝色的。")}
            ]
        })
        .to_string();
        out.write_all(line.as_bytes()).unwrap();
        out.write_all(b"\n").unwrap();
        written += line.len() as u64 + 1;
        i += 1;
    }
    out.flush().unwrap();
    written
}

/// Native: read lines, `serde_json::Value` per line. Returns (seconds, records).
fn native(path: &Path) -> (f64, u64) {
    let t = Instant::now();
    let mut records = 0u64;
    let reader = BufReader::with_capacity(1 << 20, std::fs::File::open(path).unwrap());
    for line in reader.lines() {
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        std::hint::black_box(&v);
        records += 1;
    }
    (t.elapsed().as_secs_f64(), records)
}

/// The product path: `data::load` through the `jsonl` plugin. Returns
/// (seconds, samples).
fn plugin(host: &PluginHost, path: &Path) -> (f64, u64) {
    let t = Instant::now();
    let mut records = 0u64;
    let report = load::load(host, path, "bench.jsonl", &LoadOptions::default(), |s| {
        std::hint::black_box(&s);
        records += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(report.rejected, 0);
    (t.elapsed().as_secs_f64(), records)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let env = |key: &str, default: u64| {
        std::env::var(key)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mb = env("DATA_BENCH_MB", 200);
    // Rounds alternate the two paths, so load from other processes on the
    // machine hits both alike; the best round of each is reported.
    let rounds = env("DATA_BENCH_ROUNDS", 3).max(1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.jsonl");
    let bytes = generate(&path, mb);
    let size_mb = bytes as f64 / (1 << 20) as f64;
    // Started after the first native round, so that round's peak memory is
    // the native path's alone.
    let mut host = None;

    let (mut native_times, mut plugin_times, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut native_peak, mut plugin_peak) = (0f64, 0f64);
    let mut records = 0;
    for round in 1..=rounds {
        reset_peak();
        let (n, native_records) = native(&path);
        if round == 1 {
            native_peak = peak_mib();
        }
        let host = host
            .get_or_insert_with(|| PluginHost::start(PluginLimits::default(), None, None).unwrap());
        reset_peak();
        let (p, plugin_records) = plugin(host, &path);
        plugin_peak = plugin_peak.max(peak_mib());
        assert_eq!(plugin_records, native_records);
        records = native_records;
        eprintln!(
            "round {round}: native {n:.2} s, plugin {p:.2} s, ratio {:.2}",
            n / p
        );
        native_times.push(n);
        plugin_times.push(p);
        ratios.push(n / p);
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let (native, plugin) = (best(&native_times), best(&plugin_times));

    println!(
        "JSONL parse, {size_mb:.0} MiB, {records} records, best of {rounds} alternating rounds"
    );
    println!("| path | time | MB/s | records/s | peak RSS |");
    println!("|---|---|---|---|---|");
    for (name, secs, peak) in [
        ("native serde_json (parse to Value)", native, native_peak),
        (
            "wasm jsonl plugin (decode + parse + normalise)",
            plugin,
            plugin_peak,
        ),
    ] {
        println!(
            "| {name} | {secs:.2} s | {:.0} | {:.0} | {peak:.0} MiB |",
            size_mb / secs,
            records as f64 / secs
        );
    }
    println!(
        "plugin / native throughput ratio: {:.2} best, {:.2} median of per-round ratios (target >= 0.5)",
        native / plugin,
        median(ratios)
    );
}
