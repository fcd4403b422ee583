//! Sandbox limits for plugins.

use std::time::Duration;

/// How much a plugin may use. Every field has a documented default; the
/// `[plugins]` section of `config.toml` changes memory, time and body-size
/// limits (redirects, resources and table size are fixed).
#[derive(Debug, Clone)]
pub struct PluginLimits {
    /// Linear memory per plugin instance. Default 512 MiB. Growing past it
    /// stops the call with an error.
    pub memory_bytes: u64,
    /// Wall-clock time one call into a plugin may run. Default 30 s. A plugin
    /// still running then is stopped (epoch interruption), not paused.
    pub call_timeout: Duration,
    /// Time `info()` may take while a plugin loads. Default 5 s, so a hostile
    /// plugin cannot hold up start-up for long.
    pub load_timeout: Duration,
    /// Time `detect` may take. Default 2 s (the call deadline if that is
    /// shorter): detection asks every format plugin about every upload, so a
    /// slow one must cost little. Fixed, not configurable.
    pub detect_timeout: Duration,
    /// How long a format plugin whose `detect` ran out of time, crashed or hit
    /// its memory cap is left out of format detection (shown as degraded).
    /// Default 5 minutes; reloading the plugin ends it early.
    pub detect_cooldown: Duration,
    /// Instances of one plugin alive at once, so independent calls into one
    /// plugin run side by side. Default 4; a fifth call waits for a free one.
    /// Each instance has its own `memory_bytes`.
    pub max_instances: usize,
    /// Time one HTTP request made for a plugin may take. Default 20 s: below
    /// the call deadline, which keeps running while the host waits, so the
    /// plugin gets a `timeout` error it can handle instead of being stopped.
    pub http_timeout: Duration,
    /// Largest HTTP response body handed to a plugin. Default 32 MiB.
    pub http_max_body: u64,
    /// Redirects followed per request (each one checked). Default 10.
    pub http_max_redirects: usize,
    /// Whether plugins may reach loopback and private-range addresses.
    /// Default false.
    pub allow_private_hosts: bool,
    /// Live host resources (tensors, batches) a plugin may hold. Default 65,536.
    pub max_resources: usize,
    /// Table elements (function references) per instance. Default 100,000.
    pub max_table_elements: usize,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 512 << 20,
            call_timeout: Duration::from_secs(30),
            load_timeout: Duration::from_secs(5),
            detect_timeout: Duration::from_secs(2),
            detect_cooldown: Duration::from_secs(300),
            max_instances: 4,
            http_timeout: Duration::from_secs(20),
            http_max_body: 32 << 20,
            http_max_redirects: 10,
            allow_private_hosts: false,
            max_resources: 65_536,
            max_table_elements: 100_000,
        }
    }
}

/// How often the engine's epoch advances; deadlines are counted in ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The number of epoch ticks in `d`, at least one.
pub fn ticks(d: Duration) -> u64 {
    (d.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}
