//! The one process-wide tokio runtime, built on first use, and the fork guard.
//!
//! After `fork()` the child has the parent's memory but none of its threads, so the parent's
//! runtime (and every connection driven by it) is dead there. Objects record the pid they were
//! made in and refuse to work in another process ([`CoreError::Fork`]); the runtime itself is
//! rebuilt when first used from a new pid, so that new objects in the child work.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

use crate::error::{CoreError, Result};

struct Built {
    pid: u32,
    runtime: &'static Runtime,
}

static RUNTIME: Mutex<Option<Built>> = Mutex::new(None);

/// A handle to the runtime of this process, building it if needed.
pub fn handle() -> Result<Handle> {
    let pid = std::process::id();
    let mut guard = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(built) = guard.as_ref() {
        if built.pid == pid {
            return Ok(built.runtime.handle().clone());
        }
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get().clamp(1, 4))
        .unwrap_or(2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("volley-core")
        .enable_all()
        .build()
        .map_err(|e| CoreError::Internal(format!("cannot start the tokio runtime: {e}")))?;
    // Leaked on purpose: it lives as long as the process, and a runtime inherited through fork()
    // must never be dropped (its threads do not exist in the child; dropping would wait for them).
    let runtime: &'static Runtime = Box::leak(Box::new(runtime));
    *guard = Some(Built { pid, runtime });
    Ok(runtime.handle().clone())
}

/// Remembers the process an object was created in.
#[derive(Debug, Clone, Copy)]
pub struct ForkGuard {
    pid: u32,
}

impl ForkGuard {
    pub fn new() -> Self {
        ForkGuard {
            pid: std::process::id(),
        }
    }

    pub fn check(&self) -> Result<()> {
        if std::process::id() == self.pid {
            Ok(())
        } else {
            Err(CoreError::Fork)
        }
    }
}

impl Default for ForkGuard {
    fn default() -> Self {
        Self::new()
    }
}

/// Text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

fn join_error(err: tokio::task::JoinError) -> CoreError {
    if err.is_panic() {
        CoreError::Internal(format!(
            "a Rust task panicked: {}",
            panic_message(err.into_panic().as_ref())
        ))
    } else {
        CoreError::Internal("a Rust task was cancelled".into())
    }
}

/// A future running on the runtime, waited for from a non-runtime (Python) thread in slices so
/// that the caller can do something between slices (check for Ctrl-C).
pub struct Pending<T> {
    handle: Handle,
    join: Option<JoinHandle<Result<T>>>,
}

impl<T: Send + 'static> Pending<T> {
    pub fn spawn<F>(handle: &Handle, fut: F) -> Self
    where
        F: Future<Output = Result<T>> + Send + 'static,
    {
        Pending {
            handle: handle.clone(),
            join: Some(handle.spawn(fut)),
        }
    }

    /// Wait up to `slice`; `None` if the future has not finished yet. A panic in the future
    /// becomes [`CoreError::Internal`].
    pub fn wait(&mut self, slice: Duration) -> Option<Result<T>> {
        let join = self.join.as_mut()?;
        let done = self
            .handle
            .block_on(async { tokio::time::timeout(slice, join).await });
        match done {
            Err(_elapsed) => None,
            Ok(joined) => {
                self.join = None;
                Some(joined.unwrap_or_else(|e| Err(join_error(e))))
            }
        }
    }

    /// Wait until done, without slices (for callers that cannot be interrupted anyway).
    pub fn wait_all(mut self) -> Result<T> {
        loop {
            if let Some(r) = self.wait(Duration::from_secs(3600)) {
                return r;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_reports_values_timeouts_and_panics() {
        let h = handle().unwrap();
        let mut p = Pending::spawn(&h, async { Ok(5) });
        assert_eq!(p.wait(Duration::from_secs(5)), Some(Ok(5)));

        let mut slow = Pending::spawn(&h, async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(1)
        });
        assert_eq!(slow.wait(Duration::from_millis(10)), None);
        assert_eq!(slow.wait_all(), Ok(1));

        let mut boom: Pending<()> = Pending::spawn(&h, async { panic!("kaboom") });
        match boom.wait(Duration::from_secs(5)) {
            Some(Err(CoreError::Internal(msg))) => assert!(msg.contains("kaboom"), "{msg}"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn fork_guard_passes_in_the_same_process() {
        assert_eq!(ForkGuard::new().check(), Ok(()));
        assert_eq!(ForkGuard { pid: u32::MAX }.check(), Err(CoreError::Fork));
    }
}
