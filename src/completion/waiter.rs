//! One LISTEN connection per process on `request_done`, fanned out to the requests waiting in
//! this process. A waiter registers before its job is enqueued, so no NOTIFY is missed; if the
//! connection drops, waiters still re-check the row periodically (see `Completions::wait`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::store::requests::{DONE_CHANNEL, RequestRecord, STREAM_CHANNEL};

/// What a woken waiter receives: the finished request when its finish ran in this process.
pub type Delivered = Option<Arc<RequestRecord>>;

type Senders = HashMap<String, Vec<oneshot::Sender<Delivered>>>;

/// One piece of a streamed answer, relayed from the worker (in memory, or by NOTIFY on
/// `request_stream` when the worker runs elsewhere).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamChunk {
    pub id: String,
    pub seq: u64,
    /// The model producing the stream.
    pub model: String,
    pub delta: String,
}

/// Chunks a stream's subscriber may fall behind before relaying to it stops (see
/// [`Notifier::push`]).
pub const STREAM_BUFFER: usize = 1024;

/// The registry of waiting requests and of streams being relayed.
#[derive(Debug, Default)]
pub struct Notifier {
    waiting: Mutex<Senders>,
    streams: Mutex<HashMap<String, mpsc::Sender<StreamChunk>>>,
    /// Cancelled when the process shuts down: waiting requests stop waiting (their clients get
    /// 202 + status URL; the requests stay queued and finish after the restart).
    closing: CancellationToken,
}

/// A streaming request's chunks; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    request_id: String,
    pub chunks: mpsc::Receiver<StreamChunk>,
    notifier: Arc<Notifier>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.notifier
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.request_id);
    }
}

/// One request's registration; dropping it unregisters.
#[derive(Debug)]
pub struct Waiter {
    request_id: String,
    rx: Option<oneshot::Receiver<Delivered>>,
    notifier: Arc<Notifier>,
}

impl Waiter {
    /// Resolves when the request is woken (at most once; afterwards never again), with the
    /// finished request if it finished in this process.
    pub async fn notified(&mut self) -> Delivered {
        match self.rx.as_mut() {
            Some(rx) => {
                let delivered = rx.await.ok().flatten();
                self.rx = None;
                delivered
            }
            None => std::future::pending().await,
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut waiting = self
            .notifier
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(senders) = waiting.get_mut(&self.request_id) {
            senders.retain(|s| !s.is_closed());
            if senders.is_empty() {
                waiting.remove(&self.request_id);
            }
        }
    }
}

impl Notifier {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Ends every wait in this process, now and from now on (see [`Notifier::closing`]).
    pub fn close(&self) {
        self.closing.cancel();
    }

    pub fn is_closing(&self) -> bool {
        self.closing.is_cancelled()
    }

    /// Resolves once [`Notifier::close`] was called.
    pub async fn closed(&self) {
        self.closing.cancelled().await;
    }

    pub fn register(self: &Arc<Self>, request_id: &str) -> Waiter {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(request_id.to_owned())
            .or_default()
            .push(tx);
        Waiter {
            request_id: request_id.to_owned(),
            rx: Some(rx),
            notifier: self.clone(),
        }
    }

    /// Subscribes to `request_id`'s stream (before its job is queued).
    pub fn subscribe(self: &Arc<Self>, request_id: &str) -> Subscription {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(request_id.to_owned(), tx);
        Subscription {
            request_id: request_id.to_owned(),
            chunks: rx,
            notifier: self.clone(),
        }
    }

    /// Whether this process relays `request_id`'s stream.
    pub fn has_stream(&self, request_id: &str) -> bool {
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(request_id)
    }

    /// Hands a chunk to this process's subscriber, if any. A subscriber [`STREAM_BUFFER`]
    /// chunks behind (a client that stopped reading) is relayed nothing more: its receiver
    /// ends after what it holds, and the stream's end sends the rest of the stored answer in one
    /// piece — memory stays bounded and the client still gets the whole answer.
    pub fn push(&self, chunk: StreamChunk) {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(tx) = streams.get(&chunk.id) else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(chunk)) = tx.try_send(chunk) {
            tracing::debug!(request_id = %chunk.id, "stream subscriber behind; relaying the rest at the end");
            streams.remove(&chunk.id);
        }
    }

    /// How many requests are waiting (for metrics and tests).
    pub fn waiting(&self) -> usize {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether a request in this process waits for `request_id`.
    pub fn is_waiting(&self, request_id: &str) -> bool {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(request_id)
    }

    /// Wakes this process's waiters for `request_id` (a NOTIFY: they read the row).
    pub fn wake(&self, request_id: &str) {
        self.deliver(request_id, None);
    }

    /// Wakes this process's waiters for `request_id` with the request as it finished.
    pub fn wake_with(&self, record: RequestRecord) {
        let request_id = record.request_id.clone();
        self.deliver(&request_id, Some(Arc::new(record)));
    }

    fn deliver(&self, request_id: &str, delivered: Delivered) {
        let senders = self
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(request_id);
        for tx in senders.into_iter().flatten() {
            let _ = tx.send(delivered.clone());
        }
    }

    /// Listens until `shutdown`, reconnecting after errors.
    pub async fn run(self: Arc<Self>, pool: PgPool, shutdown: CancellationToken) {
        loop {
            let listener = async {
                let mut l = PgListener::connect_with(&pool).await?;
                l.listen_all([DONE_CHANNEL, STREAM_CHANNEL]).await?;
                Ok::<_, sqlx::Error>(l)
            };
            let mut listener = tokio::select! {
                () = shutdown.cancelled() => return,
                l = listener => match l {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::debug!(error = %e, "request_done listener not connected; retrying");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                },
            };
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    n = listener.recv() => match n {
                        Ok(n) if n.channel() == STREAM_CHANNEL => {
                            if let Ok(chunk) = serde_json::from_str::<StreamChunk>(n.payload()) {
                                self.push(chunk);
                            }
                        }
                        Ok(n) => match RequestRecord::notified(n.payload()) {
                            Some(record) => self.wake_with(record),
                            None => self.wake(n.payload()),
                        },
                        Err(e) => {
                            tracing::warn!(error = %e, "request_done listener lost; reconnecting");
                            break;
                        }
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seq: u64) -> StreamChunk {
        StreamChunk {
            id: "r1".into(),
            seq,
            model: "m".into(),
            delta: "x".into(),
        }
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_relayed_nothing_more_and_memory_stays_bounded() {
        let notifier = Notifier::new();
        let mut sub = notifier.subscribe("r1");
        for seq in 0..(STREAM_BUFFER as u64 * 3) {
            notifier.push(chunk(seq));
        }
        // The relay stopped at the buffer's size; what the subscriber holds is a prefix.
        assert!(!notifier.has_stream("r1"));
        let mut got = Vec::new();
        while let Ok(c) = sub.chunks.try_recv() {
            got.push(c.seq);
        }
        assert_eq!(got, (0..STREAM_BUFFER as u64).collect::<Vec<_>>());
        // Then the channel reports its end (the stream waits for the stored answer).
        assert!(matches!(
            sub.chunks.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }
}
