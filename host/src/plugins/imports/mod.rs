//! The interfaces the host offers to plugins (`log`, `http`, `tensors`,
//! `model`). `types` has no functions; its empty `Host` impl is here too.

pub mod http;
pub mod log;
pub mod model;
pub mod tensors;

use super::bindings::format::tuner::plugin::types;
use super::state::PluginState;

impl types::Host for PluginState {}
