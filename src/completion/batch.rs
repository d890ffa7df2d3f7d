//! Group commit: what concurrent requests write is sent by one statement — one round trip and
//! one commit for all of them — instead of one each.
//!
//! - [`Inserter`]: the inserts of new requests (without admission checks).
//! - [`Announcer`]: notifications (a job for the queue's workers, a finished request for a
//!   waiter in another process), sent after the durable commits they announce.
//!
//! Nothing waits to fill a batch. One task takes what is queued whenever one of its statement
//! slots is free, so a lone request is written at once, and under load the requests that arrive
//! while the slots are busy share the next statement. Each submission still gets its own answer
//! only after the statement that wrote it committed (durability is unchanged). If a batch of
//! inserts fails, each of its rows is written again on its own, so one bad row fails only its
//! own request.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::store::requests as store;

/// Batch statements in flight at once. Measured at 50 connections in `serve`
/// (docs/PERFORMANCE.md): 2 left the CPU idle waiting for commits; 8 made smaller batches
/// than 4 and no more throughput.
const IN_FLIGHT: usize = 4;
/// Rows per statement at most.
const MAX_ROWS: usize = 64;
/// Bytes of rows per statement beyond which no more are added (prompts can be large: a batch
/// stays one statement of bounded size; a single larger row still goes alone).
const MAX_BYTES: usize = 1 << 20;

type Written = Result<bool, sqlx::Error>;

#[derive(Debug)]
struct Pending {
    request_id: String,
    row: String,
    done: oneshot::Sender<Written>,
}

/// The process's request inserter (see the module's documentation).
#[derive(Debug)]
pub struct Inserter {
    batcher: Batcher<Pending>,
}

impl Inserter {
    pub fn new(pool: PgPool) -> Arc<Self> {
        Arc::new(Self {
            batcher: Batcher {
                pool,
                queue: OnceLock::new(),
                in_flight: IN_FLIGHT,
                limits: (MAX_ROWS, MAX_BYTES),
                size: |p| p.row.len(),
                write: |pool, batch| Box::pin(async move { write(&pool, batch).await }),
            },
        })
    }

    /// Writes request `request_id`'s `row` (a [`store::batch_row`]) with whatever else is
    /// queued. True: written; false: its idempotency key was taken (nothing written).
    pub async fn insert(&self, request_id: String, row: String) -> Written {
        let (done, written) = oneshot::channel();
        let pending = Pending {
            request_id,
            row,
            done,
        };
        if let Err(pending) = self.batcher.send(pending) {
            // The runtime its task ran on is gone: write it here.
            return write_alone(&self.batcher.pool, &pending.request_id, &pending.row).await;
        }
        written.await.unwrap_or(Err(sqlx::Error::PoolClosed))
    }
}

/// Writes one batch.
type Write<T> = fn(PgPool, Vec<T>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// A queue of items written in batches by [`batches`], started on first use, on the runtime of
/// that use.
#[derive(Debug)]
struct Batcher<T> {
    pool: PgPool,
    queue: OnceLock<mpsc::UnboundedSender<T>>,
    /// Batch statements in flight at once.
    in_flight: usize,
    /// Items per batch at most, and the size past which no more are added.
    limits: (usize, usize),
    size: fn(&T) -> usize,
    write: Write<T>,
}

impl<T: Send + 'static> Batcher<T> {
    /// Queues `item`; gives it back when the task that takes the queue is gone (the runtime it
    /// started on has ended).
    fn send(&self, item: T) -> Result<(), T> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(batches(
                rx,
                self.pool.clone(),
                self.in_flight,
                self.limits,
                self.size,
                self.write,
            ));
            tx
        });
        queue.send(item).map_err(|e| e.0)
    }
}

/// Takes what `queue` receives in batches (at most `max` items, and no more once `size` of them
/// reaches `max_bytes`) whenever one of `in_flight` slots is free, and runs `write` on each on
/// a task of its own. Ends when every sender is gone.
async fn batches<T: Send + 'static>(
    mut queue: mpsc::UnboundedReceiver<T>,
    pool: PgPool,
    in_flight: usize,
    (max, max_bytes): (usize, usize),
    size: fn(&T) -> usize,
    write: Write<T>,
) {
    let slots = Arc::new(Semaphore::new(in_flight));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut bytes = size(&first);
        let mut batch = vec![first];
        while batch.len() < max && bytes < max_bytes {
            match queue.try_recv() {
                Ok(next) => {
                    bytes += size(&next);
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let written = write(pool.clone(), batch);
        tokio::spawn(async move {
            written.await;
            drop(slot);
        });
    }
}

async fn write(pool: &PgPool, batch: Vec<Pending>) {
    let rows: Vec<&str> = batch.iter().map(|p| p.row.as_str()).collect();
    match store::insert_batch(pool, &rows).await {
        Ok(written) => {
            for p in batch {
                let _ = p.done.send(Ok(written.contains(&p.request_id)));
            }
        }
        Err(e) if batch.len() > 1 => {
            tracing::debug!(error = %e, rows = batch.len(), "a batch of inserts failed; writing each alone");
            let alone = batch.into_iter().map(|p| async move {
                let _ = p.done.send(write_alone(pool, &p.request_id, &p.row).await);
            });
            futures_util::future::join_all(alone).await;
        }
        Err(e) => {
            if let Some(p) = batch.into_iter().next() {
                let _ = p.done.send(Err(e));
            }
        }
    }
}

async fn write_alone(pool: &PgPool, request_id: &str, row: &str) -> Written {
    let written = store::insert_batch(pool, &[row]).await?;
    Ok(written.iter().any(|w| w == request_id))
}

/// Notification statements in flight at once. They do not wait for a flush, so a few suffice.
const NOTICES_IN_FLIGHT: usize = 2;
/// Notifications per statement at most (each payload is under 8,000 bytes).
const MAX_NOTICES: usize = 128;

#[derive(Debug)]
struct Notice {
    channel: &'static str,
    payload: String,
    sent: oneshot::Sender<()>,
}

/// The process's notification sender: notifications queued meanwhile share one statement, sent
/// after (and never within) the durable commits they announce (see [`store::notify_all`]).
#[derive(Debug)]
pub struct Announcer {
    batcher: Batcher<Notice>,
}

impl Announcer {
    pub fn new(pool: PgPool) -> Arc<Self> {
        Arc::new(Self {
            batcher: Batcher {
                pool,
                queue: OnceLock::new(),
                in_flight: NOTICES_IN_FLIGHT,
                limits: (MAX_NOTICES, MAX_BYTES),
                size: |n| n.payload.len(),
                write: |pool, batch| Box::pin(async move { send(&pool, batch).await }),
            },
        })
    }

    /// NOTIFYs `channel` with `payload` together with whatever else is queued; returns once
    /// sent. A notification that could not be sent is logged and dropped: it only delays its
    /// listeners, who re-check without it (waiters re-read their request, the queue's poll
    /// takes its jobs).
    pub async fn announce(&self, channel: &'static str, payload: String) {
        let (sent, done) = oneshot::channel();
        let notice = Notice {
            channel,
            payload,
            sent,
        };
        match self.batcher.send(notice) {
            Ok(()) => {
                let _ = done.await;
            }
            // The runtime its task ran on is gone: send it here.
            Err(notice) => send(&self.batcher.pool, vec![notice]).await,
        }
    }
}

async fn send(pool: &PgPool, batch: Vec<Notice>) {
    let channels: Vec<&str> = batch.iter().map(|n| n.channel).collect();
    let payloads: Vec<&str> = batch.iter().map(|n| n.payload.as_str()).collect();
    if let Err(e) = store::notify_all(pool, &channels, &payloads).await {
        tracing::warn!(error = %e, notices = batch.len(), "notifications not sent; their listeners re-check without them");
    }
    for n in batch {
        let _ = n.sent.send(());
    }
}
