//! What a plugin's wasmtime `Store` holds: its name, memory accounting, its
//! resource table and (for source plugins) its network gate.

use std::sync::Arc;

use wasmtime::component::ResourceTable;

use super::imports::http::HttpGate;
use super::imports::model::MethodState;
use super::limits::PluginLimits;

/// Per-instance state, owned by the `Store`.
pub struct PluginState {
    /// The plugin's name, for log lines and errors.
    pub plugin: Arc<str>,
    pub limiter: MemoryLimiter,
    /// Host resources (tensors, batches) handed to the plugin.
    pub table: ResourceTable,
    /// Network access, for plugins whose world imports `http`.
    pub http: Option<HttpGate>,
    /// Method plugins: tensor count, device, reported metrics.
    pub method: MethodState,
}

impl PluginState {
    pub fn new(plugin: Arc<str>, limits: &PluginLimits, http: Option<HttpGate>) -> Self {
        let mut table = ResourceTable::new();
        // `max_resources` caps the tensors a plugin holds (counted by
        // `MethodState`); the few batch and policy handles come on top.
        table.set_max_capacity(limits.max_resources.saturating_add(16));
        Self {
            plugin,
            limiter: MemoryLimiter {
                memory_bytes: limits.memory_bytes as usize,
                table_elements: limits.max_table_elements,
                refused: None,
            },
            table,
            http,
            method: MethodState::new(limits.max_resources),
        }
    }
}

/// Caps linear memory and tables, and remembers a refusal so the host can
/// report "memory limit exceeded" instead of a bare trap.
pub struct MemoryLimiter {
    pub memory_bytes: usize,
    pub table_elements: usize,
    /// The size a refused `memory.grow` asked for.
    pub refused: Option<usize>,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.refused = Some(desired);
            // An error (rather than `Ok(false)`) traps at once: a plugin that
            // ignores a failed grow cannot keep running on a full heap.
            return Err(wasmtime::format_err!(
                "memory limit exceeded: wanted {} MiB, limit {} MiB (had {} MiB)",
                desired >> 20,
                self.memory_bytes >> 20,
                current >> 20
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }
}
