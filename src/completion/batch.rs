//! Group commit: what concurrent requests write is sent by one statement — one round trip and
//! one commit for all of them — instead of one each.
//!
//! - [`Inserter`]: the inserts of new requests (without admission checks).
//! - [`Announcer`]: notifications (a job for the queue's workers, a finished request for a
//!   waiter in another process), sent after the durable commits they announce — or from them,
//!   while the process sends no other.
//!
//! Nothing waits to fill a batch. One task takes what is queued whenever one of its statement
//! slots is free, so a lone request is written at once, and under load the requests that arrive
//! while the slots are busy share the next statement. Each submission still gets its own answer
//! only after the statement that wrote it committed (durability is unchanged). If a batch of
//! inserts fails, each of its rows is written again on its own, so one bad row fails only its
//! own request.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::store::Hot;
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
    /// The id of its job, to announce once written (a job for the queue's workers).
    announce: Option<String>,
    done: oneshot::Sender<Written>,
}

/// What the inserter's batches need.
#[derive(Debug, Clone)]
struct Writer {
    hot: Hot,
    announcer: Arc<Announcer>,
}

/// The process's request inserter (see the module's documentation).
#[derive(Debug)]
pub struct Inserter {
    batcher: Batcher<Pending, Writer>,
}

impl Inserter {
    /// Announces the jobs it writes for the queue's workers with `announcer`.
    pub fn new(hot: Hot, announcer: Arc<Announcer>) -> Arc<Self> {
        Arc::new(Self {
            batcher: Batcher {
                ctx: Writer { hot, announcer },
                queue: OnceLock::new(),
                in_flight: IN_FLIGHT,
                limits: (MAX_ROWS, MAX_BYTES),
                size: |p| p.row.len(),
                write: |writer, batch| Box::pin(async move { write(&writer, batch).await }),
            },
        })
    }

    /// Writes request `request_id`'s `row` (a [`store::batch_row`]) with whatever else is
    /// queued, and announces its job `announce` (one for the queue's workers) once committed.
    /// True: written; false: its idempotency key was taken (nothing written).
    pub async fn insert(
        &self,
        request_id: String,
        row: String,
        announce: Option<String>,
    ) -> Written {
        let (done, written) = oneshot::channel();
        let pending = Pending {
            request_id,
            row,
            announce,
            done,
        };
        if let Err(p) = self.batcher.send(pending) {
            // The runtime its task ran on is gone: write it here.
            return write_alone(&self.batcher.ctx, &p.request_id, &p.row, p.announce).await;
        }
        written.await.unwrap_or(Err(sqlx::Error::PoolClosed))
    }

    /// Announces job `job_id` for the queue's workers (written and committed elsewhere).
    pub async fn announce(&self, job_id: String) {
        self.batcher.ctx.announcer.announce_jobs([job_id]).await;
    }
}

/// Writes one batch.
type Write<T, C> = fn(C, Vec<T>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// A queue of items written in batches by [`batches`], started on first use, on the runtime of
/// that use.
#[derive(Debug)]
struct Batcher<T, C> {
    /// What writing needs.
    ctx: C,
    queue: OnceLock<mpsc::UnboundedSender<T>>,
    /// Batch statements in flight at once.
    in_flight: usize,
    /// Items per batch at most, and the size past which no more are added.
    limits: (usize, usize),
    size: fn(&T) -> usize,
    write: Write<T, C>,
}

impl<T: Send + 'static, C: Clone + Send + 'static> Batcher<T, C> {
    /// Queues `item`; gives it back when the task that takes the queue is gone (the runtime it
    /// started on has ended).
    fn send(&self, item: T) -> Result<(), T> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            crate::tasks::spawn(
                "batcher",
                batches(
                    rx,
                    self.ctx.clone(),
                    self.in_flight,
                    self.limits,
                    self.size,
                    self.write,
                ),
            );
            tx
        });
        queue.send(item).map_err(|e| e.0)
    }
}

/// Takes what `queue` receives in batches (at most `max` items, and no more once `size` of them
/// reaches `max_bytes`) whenever one of `in_flight` slots is free, and runs `write` on each on
/// a task of its own. Ends when every sender is gone.
async fn batches<T: Send + 'static, C: Clone>(
    mut queue: mpsc::UnboundedReceiver<T>,
    ctx: C,
    in_flight: usize,
    (max, max_bytes): (usize, usize),
    size: fn(&T) -> usize,
    write: Write<T, C>,
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
        let written = write(ctx.clone(), batch);
        crate::tasks::spawn("batch_write", async move {
            written.await;
            drop(slot);
        });
    }
}

async fn write(writer: &Writer, batch: Vec<Pending>) {
    let rows: Vec<&str> = batch.iter().map(|p| p.row.as_str()).collect();
    // From the commit itself while this process sends no other notification (a sequential
    // request saves a round trip); otherwise after it (see `store::notify_all`).
    let in_commit = batch
        .iter()
        .any(|p| p.announce.is_some())
        .then(|| writer.announcer.in_commit())
        .flatten();
    let written = (writer.hot)
        .run(async |db| store::insert_batch(db, &rows, in_commit.is_some()).await)
        .await;
    match written {
        Ok(written) => {
            let mut later = Vec::new();
            for p in batch {
                let new = written.contains(&p.request_id);
                if let (true, None, Some(job_id)) = (new, &in_commit, p.announce) {
                    later.push(job_id);
                }
                let _ = p.done.send(Ok(new));
            }
            drop(in_commit);
            writer.announcer.announce_jobs(later).await;
        }
        Err(e) if batch.len() > 1 => {
            drop(in_commit);
            tracing::debug!(error = %e, rows = batch.len(), "a batch of inserts failed; writing each alone");
            let alone = batch.into_iter().map(|p| async move {
                let Pending {
                    request_id,
                    row,
                    announce,
                    done,
                } = p;
                let _ = done.send(write_alone(writer, &request_id, &row, announce).await);
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

/// Writes one row by a statement of its own, then announces its job `announce`.
async fn write_alone(
    writer: &Writer,
    request_id: &str,
    row: &str,
    announce: Option<String>,
) -> Written {
    let written = (writer.hot)
        .run(async |db| store::insert_batch(db, &[row], false).await)
        .await?;
    let new = written.iter().any(|w| w == request_id);
    if new {
        writer.announcer.announce_jobs(announce).await;
    }
    Ok(new)
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
/// after the durable commits they announce (see [`store::notify_all`]) — or, while the process
/// sends no other, from the commit itself ([`Announcer::in_commit`]).
#[derive(Debug)]
pub struct Announcer {
    batcher: Batcher<Notice, Hot>,
    busy: Arc<Busy>,
}

/// How long this process must have sent no notification before one may go from a durable
/// commit ([`Announcer::in_commit`]). Sequential requests leave longer gaps; under load the
/// gaps are shorter, or there are none.
const QUIET: Duration = Duration::from_millis(1);

/// This process's notifications being sent.
#[derive(Debug)]
struct Busy {
    /// Being sent: queued, in a statement, or in a commit.
    sending: AtomicUsize,
    /// When the last one was sent, in microseconds since `epoch`.
    last_sent: AtomicU64,
    epoch: Instant,
}

impl Busy {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// Counts a notification being sent until dropped.
#[derive(Debug)]
pub struct Sending(Arc<Busy>);

impl Drop for Sending {
    fn drop(&mut self) {
        self.0.last_sent.store(self.0.now(), Ordering::Release);
        self.0.sending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Announcer {
    pub fn new(hot: Hot) -> Arc<Self> {
        Arc::new(Self {
            batcher: Batcher {
                ctx: hot,
                queue: OnceLock::new(),
                in_flight: NOTICES_IN_FLIGHT,
                limits: (MAX_NOTICES, MAX_BYTES),
                size: |n| n.payload.len(),
                write: |hot, batch| Box::pin(async move { send(&hot, batch).await }),
            },
            busy: Arc::new(Busy {
                sending: AtomicUsize::new(0),
                last_sent: AtomicU64::new(0),
                // So that the first may go from a commit.
                epoch: Instant::now()
                    .checked_sub(QUIET)
                    .unwrap_or_else(Instant::now),
            }),
        })
    }

    /// Leave to send a notification from a durable commit, held until that commit is done:
    /// given only while this process sends no other notification and has sent none for
    /// [`QUIET`]. A NOTIFY serialises the commits that send one (see [`store::notify_all`]),
    /// which costs nothing while they do not overlap, and saves a sequential request the round
    /// trip of a separate notification; under load, when they would overlap, notifications go
    /// after their commits instead. (Other announcers' commits may still overlap with it: at
    /// most one per announcer, and a process has one for its inserts, one for its finishes.)
    pub fn in_commit(&self) -> Option<Sending> {
        let busy = &self.busy;
        if busy
            .now()
            .saturating_sub(busy.last_sent.load(Ordering::Acquire))
            < QUIET.as_micros() as u64
        {
            return None;
        }
        (busy.sending)
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Sending(busy.clone()))
    }

    /// NOTIFYs `channel` with `payload` together with whatever else is queued; returns once
    /// sent. A notification that could not be sent is logged and dropped: it only delays its
    /// listeners, who re-check without it (waiters re-read their request, the queue's poll
    /// takes its jobs).
    pub async fn announce(&self, channel: &'static str, payload: String) {
        self.announce_all(channel, vec![payload]).await;
    }

    /// Announces provider_call jobs `job_ids` to the queue's workers, in apalis' format.
    pub async fn announce_jobs(&self, job_ids: impl IntoIterator<Item = String>) {
        let payloads = job_ids
            .into_iter()
            .map(|id| store::job_announcement(&id))
            .collect();
        self.announce_all(store::JOB_INSERT_CHANNEL, payloads).await;
    }

    /// [`Announcer::announce`] for several payloads.
    async fn announce_all(&self, channel: &'static str, payloads: Vec<String>) {
        if payloads.is_empty() {
            return;
        }
        self.busy.sending.fetch_add(1, Ordering::AcqRel);
        let _sending = Sending(self.busy.clone());
        let mut sent = Vec::with_capacity(payloads.len());
        let mut unsent = Vec::new();
        for payload in payloads {
            let (tx, rx) = oneshot::channel();
            let notice = Notice {
                channel,
                payload,
                sent: tx,
            };
            match self.batcher.send(notice) {
                Ok(()) => sent.push(rx),
                // The runtime its task ran on is gone: send it here.
                Err(notice) => unsent.push(notice),
            }
        }
        if !unsent.is_empty() {
            send(&self.batcher.ctx, unsent).await;
        }
        for rx in sent {
            let _ = rx.await;
        }
    }
}

async fn send(hot: &Hot, batch: Vec<Notice>) {
    let channels: Vec<&str> = batch.iter().map(|n| n.channel).collect();
    let payloads: Vec<&str> = batch.iter().map(|n| n.payload.as_str()).collect();
    let sent = hot.run(async |db| store::notify_all(db, &channels, &payloads).await);
    if let Err(e) = sent.await {
        tracing::warn!(error = %e, notices = batch.len(), "notifications not sent; their listeners re-check without them");
    }
    for n in batch {
        let _ = n.sent.send(());
    }
}
