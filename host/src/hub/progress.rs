//! Progress of a pull, reported to whoever shows it (CLI bars, API events).

use std::sync::Arc;

/// Receives progress events. Called from transfer tasks: keep it cheap.
pub trait ProgressSink: Send + Sync {
    /// A source is being asked for the listing.
    fn resolving(&self, _source: &str) {}
    /// The listing is known: what will be transferred.
    fn planned(&self, _files: usize, _bytes_to_fetch: u64) {}
    /// A file starts (or resumes, with `already` bytes on disk).
    fn file_started(&self, _path: &str, _size: Option<u64>, _already: u64) {}
    /// `n` more bytes of `path` arrived.
    fn advanced(&self, _path: &str, _n: u64) {}
    /// `path` was verified and is in the cache.
    fn file_done(&self, _path: &str) {}
    /// A note for the user (a retry, a fallback).
    fn note(&self, _message: &str) {}
}

/// A shared sink.
pub type Progress = Arc<dyn ProgressSink>;

/// Ignores everything.
pub struct Silent;
impl ProgressSink for Silent {}
