//! Plugin runtime benchmark: host start with the bundled plugins (compile
//! cache cold vs warm), and the cost of host→plugin and plugin→host calls.
//!
//! `cargo bench -p tuner-tests --bench plugin_runtime` prints a table. Figures
//! are medians of several runs on whatever machine runs it; compare ratios
//! from the same run, not absolute numbers across machines.

use std::time::{Duration, Instant};

use tuner::plugins::{PluginHost, PluginLimits};
use tuner_tests::{TestHome, install};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn ns(d: Duration, n: u64) -> String {
    format!("{:.0} ns", d.as_secs_f64() * 1e9 / n as f64)
}

fn start(cache: &std::path::Path) -> (Duration, usize) {
    let t = Instant::now();
    let host = PluginHost::start(PluginLimits::default(), None, Some(cache.to_path_buf())).unwrap();
    let elapsed = t.elapsed();
    (elapsed, host.list().len())
}

fn main() {
    const RUNS: usize = 7;
    // Host start: cold (empty compile cache) vs warm (cache filled by a previous start).
    let mut cold = Vec::new();
    let mut plugins = 0;
    for _ in 0..RUNS {
        let dir = tempfile::tempdir().unwrap();
        let (d, n) = start(dir.path());
        cold.push(d);
        plugins = n;
    }
    let warm_dir = tempfile::tempdir().unwrap();
    start(warm_dir.path());
    let warm: Vec<Duration> = (0..RUNS).map(|_| start(warm_dir.path()).0).collect();
    let (cold, warm) = (median(cold), median(warm));

    // Call costs, through the same path the product uses (`Plugin::detect`:
    // lock, deadline, call, result).
    let home = TestHome::new();
    install(home.plugin_dir(), "probe", "probe");
    let host = home.start(PluginLimits::default());
    let probe = host.format("probe").unwrap();
    probe.detect("", "").unwrap(); // instantiate
    const CALLS: u64 = 200_000;
    let host_to_guest = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..CALLS {
                    std::hint::black_box(probe.detect("", "").unwrap());
                }
                t.elapsed()
            })
            .collect(),
    );
    const INNER: u64 = 2_000_000;
    let arg = format!("host-calls:{INNER}");
    let guest_to_host = median(
        (0..5)
            .map(|_| {
                let base = Instant::now();
                probe.detect("host-calls:0", "").unwrap();
                let base = base.elapsed();
                let t = Instant::now();
                probe.detect(&arg, "").unwrap();
                t.elapsed().saturating_sub(base)
            })
            .collect(),
    );

    println!("tuner plugin runtime benchmark ({RUNS} runs each, medians)");
    println!();
    println!("| measurement                                  | value       |");
    println!("|----------------------------------------------|-------------|");
    println!(
        "| host start, {plugins} bundled plugins, cache cold   | {:>11} |",
        ms(cold)
    );
    println!(
        "| host start, {plugins} bundled plugins, cache warm   | {:>11} |",
        ms(warm)
    );
    println!(
        "| cold / warm                                  | {:>10.1}x |",
        cold.as_secs_f64() / warm.as_secs_f64()
    );
    println!(
        "| host→plugin call (detect, 2 empty strings)   | {:>11} |",
        ns(host_to_guest, CALLS)
    );
    println!(
        "| plugin→host call (log.enabled)               | {:>11} |",
        ns(guest_to_host, INNER)
    );
}
