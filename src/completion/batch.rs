//! Group commit of new requests: the inserts of concurrent submissions (without admission
//! checks) are written by one statement — one round trip and one commit for all of them —
//! instead of one each.
//!
//! Nothing waits to fill a batch. One task takes what is queued whenever one of its
//! [`IN_FLIGHT`] statement slots is free, so a lone request is written at once, and under load
//! the requests that arrive while the slots are busy share the next statement. Each submission
//! still gets its own answer only after the statement that wrote it committed (durability is
//! unchanged). If a batch's statement fails, each of its rows is written again on its own, so
//! one bad row fails only its own request.

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
    pool: PgPool,
    /// Started on first use, on the runtime of that use.
    queue: OnceLock<mpsc::UnboundedSender<Pending>>,
}

impl Inserter {
    pub fn new(pool: PgPool) -> Arc<Self> {
        Arc::new(Self {
            pool,
            queue: OnceLock::new(),
        })
    }

    /// Writes request `request_id`'s `row` (a [`store::batch_row`]) with whatever else is
    /// queued. True: written; false: its idempotency key was taken (nothing written).
    pub async fn insert(&self, request_id: String, row: String) -> Written {
        let pool = &self.pool;
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run(pool.clone(), rx));
            tx
        });
        let (done, written) = oneshot::channel();
        let pending = Pending {
            request_id,
            row,
            done,
        };
        if let Err(mpsc::error::SendError(pending)) = queue.send(pending) {
            // The runtime its task ran on is gone: write it here.
            return write_alone(pool, &pending.request_id, &pending.row).await;
        }
        written.await.unwrap_or(Err(sqlx::Error::PoolClosed))
    }
}

async fn run(pool: PgPool, mut queue: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut bytes = first.row.len();
        let mut batch = vec![first];
        while batch.len() < MAX_ROWS && bytes < MAX_BYTES {
            match queue.try_recv() {
                Ok(next) => {
                    bytes += next.row.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            write(&pool, batch).await;
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
