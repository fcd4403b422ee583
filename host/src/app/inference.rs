//! Serving models: loading a model (folder or hub id) into a generation
//! engine, and the table of models this process serves (`tuner serve
//! --model`, the `/v1` routes, `tuner chat`).

use std::collections::BTreeMap;
use std::sync::RwLock;

use anyhow::{Context, Result, bail};
use candle_core::Device;

use super::App;
use super::models::WhenMissing;
use crate::infer::{Engine, EngineOptions, ModelOptions, ServedModel};

impl App {
    /// Loads the model `spec` names (a folder, a cached hub id, or a hub id
    /// pulled when `missing` says so) and starts its engine. The engine's
    /// name is `name`, else `spec` as typed.
    pub fn start_engine(
        &self,
        spec: &str,
        name: Option<&str>,
        model: ModelOptions,
        engine: EngineOptions,
        missing: WhenMissing<'_>,
    ) -> Result<Engine> {
        let dir = self.model_dir(spec, missing)?;
        let served = ServedModel::load(name.unwrap_or(spec), &dir, model, &Device::Cpu)
            .with_context(|| format!("loading {spec} for generation"))?;
        Engine::start(served, engine)
    }

    /// The models this process serves.
    pub fn served(&self) -> &ServedModels {
        &self.inner.served
    }
}

/// Served models by name; each engine's adapters are selectable by their
/// own names, so every name (model or adapter) is unique across the table.
#[derive(Default)]
pub struct ServedModels {
    engines: RwLock<BTreeMap<String, Engine>>,
}

/// What a request's `model` names.
pub struct Target {
    pub engine: Engine,
    /// The adapter, when the name was an adapter's.
    pub adapter: Option<String>,
}

impl ServedModels {
    /// Adds an engine; its name (and its adapters' names) must be new.
    pub fn insert(&self, engine: Engine) -> Result<()> {
        let mut engines = self.engines.write().expect("served models lock");
        let names = std::iter::once(engine.name().to_string())
            .chain(engine.adapters().into_iter().map(|a| a.name.clone()));
        for name in names {
            if name_taken(&engines, &name) {
                bail!("a model or adapter named {name:?} is already served");
            }
        }
        engines.insert(engine.name().to_string(), engine);
        Ok(())
    }

    /// Removes a model (and its adapters); None if none has that name.
    pub fn remove(&self, name: &str) -> Option<Engine> {
        self.engines
            .write()
            .expect("served models lock")
            .remove(name)
    }

    /// Every served model, by name.
    pub fn list(&self) -> Vec<Engine> {
        self.engines
            .read()
            .expect("served models lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<Engine> {
        self.engines
            .read()
            .expect("served models lock")
            .get(name)
            .cloned()
    }

    /// The engine (and adapter) a request's `model` selects.
    pub fn resolve(&self, model: &str) -> Option<Target> {
        let engines = self.engines.read().expect("served models lock");
        if let Some(engine) = engines.get(model) {
            return Some(Target {
                engine: engine.clone(),
                adapter: None,
            });
        }
        engines.values().find_map(|e| {
            e.adapters()
                .iter()
                .any(|a| a.name == model)
                .then(|| Target {
                    engine: e.clone(),
                    adapter: Some(model.to_string()),
                })
        })
    }

    /// Loads adapter `name` from `dir` onto the served model `model`; the
    /// name must be unused across the table.
    pub fn load_adapter(&self, model: &str, name: &str, dir: &std::path::Path) -> Result<()> {
        let engines = self.engines.read().expect("served models lock");
        let engine = engines
            .get(model)
            .with_context(|| format!("no model named {model:?} is served"))?;
        if name_taken(&engines, name) {
            bail!("a model or adapter named {name:?} is already served");
        }
        engine.load_adapter(name, dir)?;
        Ok(())
    }

    /// Unloads adapter `name` from whichever model has it.
    pub fn unload_adapter(&self, name: &str) -> bool {
        self.engines
            .read()
            .expect("served models lock")
            .values()
            .any(|e| e.unload_adapter(name))
    }
}

fn name_taken(engines: &BTreeMap<String, Engine>, name: &str) -> bool {
    engines.contains_key(name)
        || engines
            .values()
            .any(|e| e.adapters().iter().any(|a| a.name == name))
}
