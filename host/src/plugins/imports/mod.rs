//! The interfaces the host offers to plugins (`log`, `input`, `http`,
//! `tensors`, `model`), implemented once for the newest `tuner:plugin` version.
//! [`v0_1_0`] makes the 0.1.0 traits delegate to these. `types` has no
//! functions; its empty `Host` impls are here too.

pub mod http;
pub mod input;
pub mod log;
pub mod model;
pub mod tensors;
pub mod v0_1_0;

use super::bindings::{v0_1_0 as old, v0_2_0 as new};
use super::state::PluginState;

impl new::format::tuner::plugin::types::Host for PluginState {}
impl old::format::tuner::plugin::types::Host for PluginState {}
