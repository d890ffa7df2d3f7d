//! The direct lane: a request submitted in a process that also runs provider_call workers
//! (`optimizer serve`) is handed to them in memory instead of through the queue's NOTIFY and
//! fetch (a round trip and a commit, and a wake-up that apalis can miss while a fetch is in
//! flight, leaving the job to its poll).
//!
//! Durability is the queue's, unchanged: the request and its job are committed before the hand
//! over, by the one statement that writes them. The job is written already `Running`, locked by
//! the lane's worker row in `apalis.workers` (kept alive by the runner), and the request
//! `running`, so the run needs no claim and no read of the row. If this process dies before or
//! during the run, the queue's workers rescue the job from the dead worker row as they rescue
//! any dead worker's: nothing depends on the memory hand over.
//!
//! The lane takes a request only while it has a free slot (`WORKER_CONCURRENCY` of them);
//! otherwise the job is queued as usual.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::ProviderCall;
use crate::store::requests::Claimed;

/// A job handed over: run it (call, acknowledge), then drop the permit.
#[derive(Debug)]
pub struct Handoff {
    pub job_id: String,
    pub job: ProviderCall,
    /// What the job needs of its request, as it was written.
    pub claimed: Claimed,
    pub permit: OwnedSemaphorePermit,
}

#[derive(Debug)]
struct Attached {
    tx: mpsc::UnboundedSender<Handoff>,
    slots: Arc<Semaphore>,
    worker: Arc<str>,
}

/// The hand over point between the API and this process's workers (inactive until
/// [`DirectLane::attach`]).
#[derive(Debug, Default)]
pub struct DirectLane {
    attached: Mutex<Option<Attached>>,
    /// This process runs provider_call workers, so the lane should be open.
    expected: AtomicBool,
}

/// A free slot of the lane, the id its job must have and the worker that locks it.
#[derive(Debug)]
pub struct Reservation {
    pub job_id: String,
    worker: Arc<str>,
    permit: OwnedSemaphorePermit,
    tx: mpsc::UnboundedSender<Handoff>,
}

impl Reservation {
    /// The lane's worker row, which the job is written locked by.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// Hands the committed job to the lane's runner. If the runner is gone (the process is
    /// stopping), the queue's workers rescue the job once the lane's worker row is stale.
    pub fn hand_over(self, job: ProviderCall, claimed: Claimed) {
        let _ = self.tx.send(Handoff {
            job_id: self.job_id,
            job,
            claimed,
            permit: self.permit,
        });
    }
}

impl DirectLane {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Starts taking jobs for `worker` (a live row of `apalis.workers`), at most `slots` at a
    /// time; the runner reads the receiver.
    pub fn attach(&self, worker: &str, slots: usize) -> mpsc::UnboundedReceiver<Handoff> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.lock() = Some(Attached {
            tx,
            slots: Arc::new(Semaphore::new(slots.max(1))),
            worker: worker.into(),
        });
        rx
    }

    /// Marks the lane as one this process will open (it runs provider_call workers): until it
    /// is open, [`DirectLane::ready`] says no.
    pub fn expect(&self) {
        self.expected.store(true, Ordering::Relaxed);
    }

    /// Whether this process runs provider_call workers.
    pub fn runs_here(&self) -> bool {
        self.expected.load(Ordering::Relaxed)
    }

    /// Whether the process can run what it accepts at once: the lane is open, or this process
    /// runs no workers (another process's do). `/ready` reads it, so a load balancer sends no
    /// traffic to a `serve` whose workers have not started yet (or have stopped).
    pub fn ready(&self) -> bool {
        !self.expected.load(Ordering::Relaxed) || self.lock().is_some()
    }

    /// Stops taking jobs (shutdown, or the runner lost its worker row).
    pub fn detach(&self) {
        *self.lock() = None;
    }

    /// A free slot, if the lane is attached and has one.
    pub fn reserve(&self) -> Option<Reservation> {
        let guard = self.lock();
        let attached = guard.as_ref()?;
        let permit = attached.slots.clone().try_acquire_owned().ok()?;
        Some(Reservation {
            job_id: ulid::Ulid::generate().to_string(),
            worker: attached.worker.clone(),
            permit,
            tx: attached.tx.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Attached>> {
        self.attached.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expected_lane_is_ready_only_while_open() {
        let lane = DirectLane::new();
        assert!(
            lane.ready(),
            "no workers in this process: nothing to wait for"
        );
        lane.expect();
        assert!(!lane.ready(), "workers expected, not started");
        let _rx = lane.attach("w1", 1);
        assert!(lane.ready());
        lane.detach();
        assert!(!lane.ready(), "stopped");
    }

    #[test]
    fn the_lane_takes_jobs_only_while_attached_and_with_a_free_slot() {
        let lane = DirectLane::new();
        assert!(lane.reserve().is_none(), "not attached");
        let mut rx = lane.attach("w1", 2);
        let a = lane.reserve().unwrap();
        let b = lane.reserve().unwrap();
        assert_ne!(a.job_id, b.job_id);
        assert_eq!(a.worker(), "w1");
        assert!(lane.reserve().is_none(), "both slots taken");
        let claimed = Claimed {
            prompt: Some("hi".into()),
            system: None,
            params: serde_json::json!({}),
            route: serde_json::json!({}),
            created_at: chrono::Utc::now(),
        };
        a.hand_over(ProviderCall::first("r1"), claimed);
        let handed = rx.try_recv().unwrap();
        assert_eq!(handed.job.request_id, "r1");
        drop(handed);
        assert!(lane.reserve().is_some(), "a finished run frees its slot");
        drop(b);
        lane.detach();
        assert!(lane.reserve().is_none(), "detached");
    }
}
