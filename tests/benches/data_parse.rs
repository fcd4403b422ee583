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

/// CPU time of the calling thread so far, in seconds (`/proc/thread-self/schedstat`,
/// nanoseconds). Both paths run on this thread (wasmtime runs the plugin on
/// the caller's), so this is each path's own work, which time spent
/// waiting for the CPU on a busy machine does not inflate.
fn thread_cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map(|ns| ns / 1e9)
        .unwrap_or(f64::NAN)
}

/// Runs `f`, returning its result with the wall-clock and CPU seconds it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let (cpu, t) = (thread_cpu_secs(), Instant::now());
    let out = f();
    (out, t.elapsed().as_secs_f64(), thread_cpu_secs() - cpu)
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

/// Native: read lines, `serde_json::Value` per line. Returns the records.
fn native(path: &Path) -> u64 {
    let mut records = 0u64;
    let reader = BufReader::with_capacity(1 << 20, std::fs::File::open(path).unwrap());
    for line in reader.lines() {
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        std::hint::black_box(&v);
        records += 1;
    }
    records
}

/// The product path: `data::load` through the `jsonl` plugin. Returns the samples.
fn plugin(host: &PluginHost, path: &Path) -> u64 {
    let mut records = 0u64;
    let report = load::load(host, path, "bench.jsonl", &LoadOptions::default(), |s| {
        std::hint::black_box(&s);
        records += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(report.rejected, 0);
    records
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

    let (mut native_wall, mut plugin_wall, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut native_cpu, mut plugin_cpu) = (Vec::new(), Vec::new());
    let (mut native_peak, mut plugin_peak) = (0f64, 0f64);
    let mut records = 0;
    for round in 1..=rounds {
        reset_peak();
        let (native_records, nw, nc) = timed(|| native(&path));
        if round == 1 {
            native_peak = peak_mib();
        }
        let host = host
            .get_or_insert_with(|| PluginHost::start(PluginLimits::default(), None, None).unwrap());
        reset_peak();
        let (plugin_records, pw, pc) = timed(|| plugin(host, &path));
        plugin_peak = plugin_peak.max(peak_mib());
        assert_eq!(plugin_records, native_records);
        records = native_records;
        eprintln!(
            "round {round}: native {nw:.2} s ({nc:.2} s CPU), plugin {pw:.2} s ({pc:.2} s CPU), \
             ratio {:.2} ({:.2} by CPU)",
            nw / pw,
            nc / pc
        );
        native_wall.push(nw);
        plugin_wall.push(pw);
        native_cpu.push(nc);
        plugin_cpu.push(pc);
        ratios.push(nw / pw);
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);

    println!(
        "JSONL parse, {size_mb:.0} MiB, {records} records, best of {rounds} alternating rounds"
    );
    println!("| path | time | MB/s | records/s | CPU time | MB/s of CPU | peak RSS |");
    println!("|---|---|---|---|---|---|---|");
    for (name, wall, cpu, peak) in [
        (
            "native serde_json (parse to Value)",
            best(&native_wall),
            best(&native_cpu),
            native_peak,
        ),
        (
            "wasm jsonl plugin (decode + parse + normalise)",
            best(&plugin_wall),
            best(&plugin_cpu),
            plugin_peak,
        ),
    ] {
        println!(
            "| {name} | {wall:.2} s | {:.0} | {:.0} | {cpu:.2} s | {:.0} | {peak:.0} MiB |",
            size_mb / wall,
            records as f64 / wall,
            size_mb / cpu
        );
    }
    println!(
        "plugin / native throughput ratio: {:.2} by best wall time, {:.2} median of per-round \
         ratios, {:.2} by CPU time (target >= 0.5)",
        best(&native_wall) / best(&plugin_wall),
        median(ratios),
        best(&native_cpu) / best(&plugin_cpu)
    );
}
