//! Running async work (downloads) from blocking code: the one bridge.
//!
//! Data resolution and training run on plain threads (a training job's
//! thread, a `spawn_blocking` task of the server, the CLI's main thread),
//! yet fetching a model or a hub dataset is async. Inside a Tokio runtime
//! the future is run with `block_in_place` on the current runtime; outside
//! one, on a small runtime made for it.

use std::future::Future;

/// Runs `future` to completion from synchronous code.
pub fn block_on<F>(future: F) -> std::io::Result<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    use tokio::runtime::{Builder, Handle, RuntimeFlavor};
    let fresh = |future: F| -> std::io::Result<F::Output> {
        Ok(Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(future))
    };
    match Handle::try_current() {
        Err(_) => fresh(future),
        // A worker of a multi-threaded runtime may block in place.
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(|| handle.block_on(future)))
        }
        // A current-thread runtime cannot block in place, nor start another
        // runtime on its thread: the work gets a thread of its own.
        Ok(_) => std::thread::scope(|scope| {
            scope
                .spawn(|| fresh(future))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_outside_a_runtime() {
        assert_eq!(block_on(async { 7 }).unwrap(), 7);
    }

    #[test]
    fn runs_inside_a_multi_threaded_runtime() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let value = rt.block_on(async { tokio::spawn(async { block_on(async { 8 }) }).await });
        assert_eq!(value.unwrap().unwrap(), 8);
    }

    #[test]
    fn runs_inside_a_current_thread_runtime() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(async { block_on(async { 9 }) }).unwrap(), 9);
    }
}
