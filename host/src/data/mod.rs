//! Training data: decoding files, parsing them through the format plugins,
//! storing datasets, sampling and mixing them.
//!
//! - [`decode`]: bytes to text (UTF-8 with or without BOM, UTF-16 with BOM,
//!   GB18030), streamed in chunks; invalid bytes are an error with their offset.
//! - [`load`]: picks a format plugin, streams the decoded text through it,
//!   collects samples and rejected records.
//! - [`store`]: datasets under the data dir with a SQLite record.
//! - [`resolve`]: dataset specs (file, stored name, hub dataset,
//!   LLaMA-Factory registry entry) to samples.
//! - [`registry`]: LLaMA-Factory's `dataset_info.json` (`DIR:NAME` specs).
//! - [`spec`]: `PATH_OR_NAME#N` sampling, mixing and train/validation split.
//! - [`stats`]: counts and lengths over a set of samples.

pub mod decode;
pub mod load;
pub mod registry;
pub mod resolve;
pub mod spec;
pub mod stats;
pub mod store;

pub use load::{LoadError, LoadOptions, LoadReport, Rejected};
pub use store::{DatasetRecord, Datasets, StoreError};
