//! Training-data parse throughput: JSON Lines through the bundled `jsonl`
//! WebAssembly plugin (decode + parse + layout normalisation + samples
//! back to the host) vs native serde_json parsing of the same file, in one
//! run, with peak memory of each path.
//!
//! `cargo bench -p tuner-tests --bench data_parse` (set `DATA_BENCH_MB` to
//! change the file size, default 200). Compare the ratio, not absolute
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

fn main() {
    let mb: u64 = std::env::var("DATA_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.jsonl");
    let bytes = generate(&path, mb);
    let size_mb = bytes as f64 / (1 << 20) as f64;

    // Native: read lines, serde_json::Value per line.
    reset_peak();
    let t = Instant::now();
    let mut native_records = 0u64;
    let reader = BufReader::with_capacity(1 << 20, std::fs::File::open(&path).unwrap());
    for line in reader.lines() {
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        std::hint::black_box(&v);
        native_records += 1;
    }
    let native = t.elapsed().as_secs_f64();
    let native_peak = peak_mib();

    let host = PluginHost::start(PluginLimits::default(), None, None).unwrap();
    reset_peak();
    let t = Instant::now();
    let mut plugin_records = 0u64;
    let report = load::load(&host, &path, "bench.jsonl", &LoadOptions::default(), |s| {
        std::hint::black_box(&s);
        plugin_records += 1;
        Ok(())
    })
    .unwrap();
    let plugin = t.elapsed().as_secs_f64();
    let plugin_peak = peak_mib();
    assert_eq!(plugin_records, native_records);
    assert_eq!(report.rejected, 0);

    println!("JSONL parse, {size_mb:.0} MiB, {native_records} records");
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
            native_records as f64 / secs
        );
    }
    println!(
        "plugin / native throughput ratio: {:.2} (target >= 0.5)",
        native / plugin
    );
}
