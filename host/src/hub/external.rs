//! Models other tools already downloaded, found before anything is
//! downloaded. Read-only: tuner never writes, verifies or removes there.
//!
//! - **Hugging Face** (transformers, huggingface_hub, vLLM): the hub cache,
//!   `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`. It
//!   has the layout of tuner's own cache ([`Cache`]), so the same code reads
//!   it; `refs/main` names the snapshot used.
//! - **ModelScope** (the `modelscope` SDK): `MODELSCOPE_CACHE`, else
//!   `~/.cache/modelscope/hub`. A model is a plain folder:
//!   `models/<owner>/<name>` with every `.` of the name written `___`
//!   (modelscope 1.14 and later), or `<owner>/<name>` (older SDKs, or
//!   `MODELSCOPE_CACHE` set). Its `.mv` holds the revision
//!   (`Revision:master,CreatedAt:…`) and its `.msc` (a Python pickle) the
//!   files downloaded so far.
//!
//! A model is used only when complete: every file its `.msc` lists is there
//! (ModelScope), the snapshot is complete as `tuner cache list` judges it
//! (Hugging Face), and in both the weights are whole (`config.json`, and
//! every shard a `model.safetensors.index.json` names, or a
//! `.safetensors` file).

use std::path::{Path, PathBuf};

use serde::Serialize;
use utoipa::ToSchema;

use super::cache::{Cache, HF_DEFAULT_BRANCH, walk_files};
use super::{RepoId, RepoKind};
use crate::paths;

/// The tool whose cache a model was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The Hugging Face hub cache.
    Huggingface,
    /// The ModelScope SDK cache.
    Modelscope,
}

impl Origin {
    /// As JSON spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Huggingface => "huggingface",
            Origin::Modelscope => "modelscope",
        }
    }
}

/// A model found in another tool's cache, as `tuner cache list --all`
/// shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExternalModel {
    /// `org/name`.
    pub name: String,
    pub origin: Origin,
    /// The revision the folder holds, when the cache says (`main`,
    /// `master`).
    pub revision: Option<String>,
    /// Files in the folder (metadata files aside).
    pub files: usize,
    pub size_bytes: u64,
    /// Whether it is complete enough to use (see the module docs).
    pub complete: bool,
    /// The folder, usable as a local model path.
    #[schema(value_type = String)]
    pub path: PathBuf,
}

/// Where other tools keep their caches on this machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalCaches {
    pub huggingface: Option<PathBuf>,
    pub modelscope: Option<PathBuf>,
}

impl ExternalCaches {
    /// The caches the environment names, as the tools themselves find them.
    pub fn from_env() -> Self {
        let var = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let home = directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf());
        let huggingface = var("HF_HUB_CACHE")
            .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
            .or_else(|| home.as_ref().map(|h| h.join(".cache/huggingface/hub")));
        let modelscope = var("MODELSCOPE_CACHE")
            .or_else(|| home.as_ref().map(|h| h.join(".cache/modelscope/hub")));
        ExternalCaches {
            huggingface,
            modelscope,
        }
    }

    /// A complete copy of model `repo` in one of the caches: ModelScope's
    /// first when `modelscope_first` (the source order), else Hugging Face's.
    pub fn find(&self, repo: &RepoId, modelscope_first: bool) -> Option<ExternalModel> {
        if repo.kind != RepoKind::Model {
            return None;
        }
        let hf = || {
            self.huggingface
                .as_deref()
                .and_then(|root| huggingface_model(root, repo))
        };
        let ms = || {
            self.modelscope
                .as_deref()
                .and_then(|root| modelscope_model(root, repo))
        };
        if modelscope_first {
            ms().filter(|m| m.complete)
                .or_else(|| hf().filter(|m| m.complete))
        } else {
            hf().filter(|m| m.complete)
                .or_else(|| ms().filter(|m| m.complete))
        }
    }

    /// Every model in the caches, complete or not, by origin and name.
    pub fn list(&self) -> Vec<ExternalModel> {
        let mut out = Vec::new();
        if let Some(root) = &self.huggingface {
            let cache = Cache::new(root);
            out.extend(
                cache
                    .repos()
                    .into_iter()
                    .filter(|r| r.kind == RepoKind::Model)
                    .filter_map(|r| huggingface_model(root, &r)),
            );
        }
        if let Some(root) = &self.modelscope {
            out.extend(
                modelscope_ids(root)
                    .iter()
                    .filter_map(|id| RepoId::parse(RepoKind::Model, id).ok())
                    .filter_map(|r| modelscope_model(root, &r)),
            );
        }
        out
    }
}

/// `repo` in a Hugging Face hub cache at `root`.
fn huggingface_model(root: &Path, repo: &RepoId) -> Option<ExternalModel> {
    let cache = Cache::new(root);
    let repo = cache.find(repo.kind, &repo.id).ok()?;
    let described = cache.describe(&repo, None);
    let commit = cache
        .current_commit(&repo, Some(HF_DEFAULT_BRANCH))
        .or_else(|| cache.current_commit(&repo, None))?;
    let path = cache.snapshot_dir(&repo, &commit);
    let complete = described.complete && weights_complete(&path);
    Some(ExternalModel {
        name: repo.id,
        origin: Origin::Huggingface,
        revision: described.revision,
        files: described.files,
        size_bytes: described.size_bytes,
        complete,
        path,
    })
}

/// The folder of `repo` in a ModelScope cache at `root`, in the layouts
/// the SDK has used, newest first. `repo` was parsed by [`RepoId`] (no
/// `..`, no separators in its parts); the folder is still joined through
/// the containment check.
fn modelscope_folder(root: &Path, repo: &RepoId) -> Option<PathBuf> {
    let (owner, name) = repo.id.split_once('/')?;
    let safe_name = name.replace('.', "___");
    [
        format!("models/{owner}/{safe_name}"),
        format!("models/{owner}/{name}"),
        format!("{owner}/{name}"),
        format!("hub/{owner}/{name}"),
    ]
    .iter()
    .filter_map(|rel| paths::contained_as("ModelScope model folder", root, rel).ok())
    .find(|dir| dir.join("config.json").is_file() || dir.join(MS_FILES).is_file())
}

/// The `.msc` file: the files the ModelScope SDK downloaded into a folder.
const MS_FILES: &str = ".msc";
/// The `.mv` file: the revision of a ModelScope folder.
const MS_REVISION: &str = ".mv";
/// The `.mdl` file: the model id of a ModelScope folder.
const MS_MODEL_ID: &str = ".mdl";

/// `repo` in a ModelScope cache at `root`.
fn modelscope_model(root: &Path, repo: &RepoId) -> Option<ExternalModel> {
    let path = modelscope_folder(root, repo)?;
    let files: Vec<String> = walk_files(&path)
        .into_iter()
        .filter(|f| ![MS_FILES, MS_REVISION, MS_MODEL_ID].contains(&f.as_str()))
        .filter(|f| !f.starts_with("._____temp/") && !f.ends_with(".lock"))
        .collect();
    let size_bytes = files
        .iter()
        .filter_map(|f| std::fs::metadata(path.join(f)).ok())
        .map(|m| m.len())
        .sum();
    let listed_present = match modelscope_listed_files(&path) {
        Some(listed) => listed.iter().all(|f| files.contains(f)),
        None => true,
    };
    let revision = std::fs::read_to_string(path.join(MS_REVISION))
        .ok()
        .and_then(|text| modelscope_revision(&text));
    Some(ExternalModel {
        name: repo.id.clone(),
        origin: Origin::Modelscope,
        revision,
        files: files.len(),
        size_bytes,
        complete: listed_present && weights_complete(&path),
        path,
    })
}

/// `Revision:master,CreatedAt:1700000000` (or a bare revision) → `master`.
fn modelscope_revision(text: &str) -> Option<String> {
    let text = text.trim();
    let revision = match text.strip_prefix("Revision:") {
        Some(rest) => rest.split(',').next().unwrap_or_default(),
        None => text,
    };
    paths::check_git_ref("revision", revision).ok()?;
    Some(revision.to_string())
}

/// The `Path` of every entry of a folder's `.msc` (a pickled list of
/// dicts); `None` when there is none or it does not read. Paths that are
/// not safe relative paths are left out: they can never be there.
fn modelscope_listed_files(folder: &Path) -> Option<Vec<String>> {
    let bytes = std::fs::read(folder.join(MS_FILES)).ok()?;
    let value: serde_pickle::Value =
        serde_pickle::value_from_slice(&bytes, serde_pickle::DeOptions::new()).ok()?;
    let serde_pickle::Value::List(entries) = value else {
        return None;
    };
    let key = serde_pickle::HashableValue::String("Path".into());
    Some(
        entries
            .iter()
            .filter_map(|entry| match entry {
                serde_pickle::Value::Dict(d) => match d.get(&key) {
                    Some(serde_pickle::Value::String(p)) => Some(p.clone()),
                    _ => None,
                },
                _ => None,
            })
            .filter(|p| paths::check_relative("file path", p).is_ok())
            .collect(),
    )
}

/// The model ids in a ModelScope cache (`owner/name`, dots restored).
fn modelscope_ids(root: &Path) -> Vec<String> {
    let subdirs = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut ids = Vec::new();
    for base in [root.join("models"), root.to_path_buf(), root.join("hub")] {
        for owner in subdirs(&base) {
            for name in subdirs(&base.join(&owner)) {
                let dir = base.join(&owner).join(&name);
                if dir.join("config.json").is_file() || dir.join(MS_FILES).is_file() {
                    ids.push(format!("{owner}/{}", name.replace("___", ".")));
                }
            }
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

/// `config.json`, and whole weights: every shard the safetensors index
/// names, or (without an index) at least one `.safetensors` file.
fn weights_complete(dir: &Path) -> bool {
    if !dir.join("config.json").is_file() {
        return false;
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let Ok(text) = std::fs::read_to_string(&index) else {
            return false;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            return false;
        };
        let Some(map) = json["weight_map"].as_object() else {
            return false;
        };
        return map.values().all(|shard| {
            shard
                .as_str()
                .and_then(|s| paths::contained_as("weight shard", dir, s).ok())
                .is_some_and(|p| p.is_file())
        });
    }
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(id: &str) -> RepoId {
        RepoId::parse(RepoKind::Model, id).unwrap()
    }

    #[test]
    fn revisions_read_as_the_sdk_writes_them() {
        assert_eq!(
            modelscope_revision("Revision:master,CreatedAt:1745893530").as_deref(),
            Some("master")
        );
        assert_eq!(modelscope_revision("v1.0\n").as_deref(), Some("v1.0"));
        assert_eq!(modelscope_revision("Revision:../x,CreatedAt:1"), None);
    }

    #[test]
    fn a_modelscope_folder_with_dots_written_as_underscores_is_found_when_whole() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("models/Qwen/Qwen3-0___6B");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(MS_REVISION), "Revision:master,CreatedAt:1").unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        let caches = ExternalCaches {
            huggingface: None,
            modelscope: Some(root.path().to_path_buf()),
        };
        // No weights yet: listed, not used.
        assert!(caches.find(&model("Qwen/Qwen3-0.6B"), true).is_none());
        let listed = caches.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "Qwen/Qwen3-0.6B");
        assert!(!listed[0].complete);
        // A sharded checkpoint needs every shard its index names.
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            r#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        std::fs::write(dir.join("model-00001-of-00002.safetensors"), "x").unwrap();
        assert!(caches.find(&model("Qwen/Qwen3-0.6B"), true).is_none());
        std::fs::write(dir.join("model-00002-of-00002.safetensors"), "x").unwrap();
        let found = caches.find(&model("Qwen/Qwen3-0.6B"), true).unwrap();
        assert_eq!(found.path, dir);
        assert_eq!(found.revision.as_deref(), Some("master"));
        assert_eq!(found.origin, Origin::Modelscope);
    }

    #[test]
    fn a_shard_index_cannot_point_outside_the_folder() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("m");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(root.path().join("outside.safetensors"), "x").unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            r#"{"weight_map": {"a": "../outside.safetensors"}}"#,
        )
        .unwrap();
        assert!(!weights_complete(&dir));
    }
}
