//! Every task this process spawns goes through [`spawn`]: it is tracked, so the binaries'
//! shutdown ([`wait`]) can wait for what is still running after the servers and workers
//! stopped, and it runs in a span naming it. A bare `tokio::spawn` is refused by the clippy
//! configuration (`clippy.toml`, `disallowed-methods`); the one exception is this module.
//!
//! Every tracked task ends on the shutdown token or when what feeds it is dropped (the
//! background loops take the token; the batchers end when their senders are gone; a
//! connection's task ends with its connection, which the server's graceful shutdown closes).

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

static TRACKER: LazyLock<TaskTracker> = LazyLock::new(TaskTracker::new);

/// Spawns `task` on the current runtime, tracked, in a span named `name` (inside the caller's
/// span, so a request's logs still name the request).
pub fn spawn<F>(name: &'static str, task: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    TRACKER.spawn(task.instrument(tracing::debug_span!("task", name)))
}

/// Waits up to `timeout` for every tracked task to end; returns how many were still running.
pub async fn wait(timeout: Duration) -> usize {
    TRACKER.close();
    let finished = tokio::time::timeout(timeout, TRACKER.wait()).await.is_ok();
    TRACKER.reopen();
    if finished { 0 } else { TRACKER.len() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_still_running_is_counted_and_a_finished_one_is_not() {
        let done = spawn("quick", async { 7 });
        assert_eq!(done.await.ok(), Some(7));
        let pending = spawn("pending", std::future::pending::<()>());
        assert!(wait(Duration::from_millis(20)).await >= 1);
        // Spawning still works after a wait.
        assert_eq!(spawn("after", async { 1 }).await.ok(), Some(1));
        pending.abort();
    }
}
