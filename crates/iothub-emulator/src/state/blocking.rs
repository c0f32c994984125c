//! Work that blocks a thread (disk syncs, registry scans, waiting for the writer lock) runs
//! off the async worker threads, so that a slow query or an fsync never keeps the runtime from
//! answering other requests (the health check included).
//!
//! The handlers are synchronous, so this uses `tokio::task::block_in_place`: the calling
//! worker hands its run queue to a fresh worker for the duration. On a current-thread runtime
//! (or outside any runtime) there is nothing to hand over, and the work runs where it is.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs `work`, handing the current async worker's duties to another thread meanwhile.
pub(crate) fn off_worker<R>(work: impl FnOnce() -> R) -> R {
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// A test hook: a gate that scans wait at while it is closed, so a test can hold a scan
/// "in progress" for as long as it needs.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Gate {
    /// (closed, how many wait at it now)
    state: std::sync::Mutex<(bool, usize)>,
    changed: std::sync::Condvar,
}

#[cfg(test)]
impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, (bool, usize)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn close(&self) {
        self.lock().0 = true;
    }

    pub(crate) fn open(&self) {
        self.lock().0 = false;
        self.changed.notify_all();
    }

    pub(crate) fn waiting(&self) -> usize {
        self.lock().1
    }

    /// Blocks the calling thread while the gate is closed.
    pub(crate) fn pass(&self) {
        let mut state = self.lock();
        state.1 += 1;
        while state.0 {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.1 -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_inline_outside_a_runtime_and_on_a_current_thread_one() {
        assert_eq!(off_worker(|| 1), 1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(async { off_worker(|| 2) }), 2);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        assert_eq!(
            rt.block_on(async { tokio::spawn(async { off_worker(|| 3) }).await.unwrap() }),
            3
        );
    }
}
