//! `stream: true` in any dialect: the provider's deltas, relayed by the worker, as Server-Sent
//! Events an [`Encoder`] shapes (OpenAI's `chat.completion.chunk`s, Anthropic's message
//! events). The relayed text is checked against the stored answer at the end: the missing tail
//! is sent, and a piece lost in the middle ends the stream with an error event naming
//! `/requests/{id}` instead of a wrong answer.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use crate::completion::{
    CompletionView, Completions, StreamChunk, Submitted, Subscription, Waiter,
};
use crate::types::RequestStatus;

/// Shapes one dialect's events.
pub trait Encoder: Send + 'static {
    /// Events for a relayed piece of text from `model`.
    fn text(&mut self, model: &str, delta: &str) -> Vec<Event>;
    /// Events ending a successful answer: `rest` is the stored text the client has not got
    /// (all of it when nothing was relayed, e.g. a cache hit), then the tool calls, the finish
    /// reason and usage from `view`.
    fn end(&mut self, view: &CompletionView, rest: &str) -> Vec<Event>;
    /// Events ending the stream with an error.
    fn fail(&mut self, message: &str) -> Vec<Event>;
}

struct State<E> {
    completions: Arc<Completions>,
    request_id: String,
    chunks: Option<Subscription>,
    waiter: Option<Waiter>,
    encoder: E,
    streamed: bool,
    /// The text relayed so far, checked against the stored answer at the end.
    sent: String,
    outbox: VecDeque<Event>,
    finished: bool,
    deadline: tokio::time::Instant,
}

/// The SSE response to an accepted streamed request (`x-optimizer-request-id` names it) — or,
/// when the request failed before its first piece was relayed, its record (`Err`): the caller
/// answers with the proper status and JSON error, as for a non-streamed request, since no byte
/// of the stream has been sent yet.
pub async fn respond<E: Encoder>(
    completions: Arc<Completions>,
    submitted: Submitted,
    encoder: E,
) -> Result<Response, Box<CompletionView>> {
    let deadline = tokio::time::Instant::now() + completions.settings.completion.timeout;
    let (request_id, chunks, waiter) = match submitted {
        Submitted::Queued {
            request_id,
            waiter,
            stream,
        } => (request_id, stream, waiter),
        Submitted::Cached(id) | Submitted::Replayed(id) => (id, None, None),
    };
    let mut state = State {
        completions,
        request_id: request_id.clone(),
        chunks,
        waiter,
        encoder,
        streamed: false,
        sent: String::new(),
        outbox: VecDeque::new(),
        finished: false,
        deadline,
    };
    first_piece(&mut state).await?;
    let events = futures_util::stream::unfold(state, next);
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-optimizer-request-id", v);
    }
    Ok(response)
}

/// Waits for the first relayed piece, or the end of the request when it comes first. A request
/// that failed by then is returned, so it is answered with a status instead of a stream.
async fn first_piece<E: Encoder>(st: &mut State<E>) -> Result<(), Box<CompletionView>> {
    if st.waiter.is_none() {
        return Ok(());
    }
    match wake(st).await {
        Woke::Piece(c) => content(st, c),
        Woke::RelayEnded => st.chunks = None,
        // Still nothing when the wait ends: the stream says so itself.
        Woke::TimedOut => {}
        Woke::Ended => match st.completions.get(&st.request_id).await {
            Ok(Some(record)) if record.status == RequestStatus::Failed => {
                return Err(Box::new(CompletionView::from_record(record)));
            }
            // Succeeded (the stream sends it whole), or unreadable (the stream says so).
            _ => {
                st.waiter = None;
                finish(st).await;
            }
        },
    }
    Ok(())
}

/// What ended a wait of the stream.
enum Woke {
    /// A relayed piece.
    Piece(StreamChunk),
    /// The relay stopped (this client fell behind).
    RelayEnded,
    /// The request ended.
    Ended,
    /// `COMPLETE_TIMEOUT_SECS` passed.
    TimedOut,
}

/// Waits for the next relayed piece, the request's end or the deadline, whichever comes first.
async fn wake<E: Encoder>(st: &mut State<E>) -> Woke {
    let deadline = st.deadline;
    let chunks = st.chunks.as_mut().map(|s| &mut s.chunks);
    let waiter = st.waiter.as_mut();
    tokio::select! {
        c = async {
            match chunks {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        } => c.map_or(Woke::RelayEnded, Woke::Piece),
        _ = async {
            match waiter {
                Some(w) => w.notified().await,
                None => std::future::pending().await,
            }
        } => Woke::Ended,
        () = tokio::time::sleep_until(deadline) => Woke::TimedOut,
    }
}

fn content<E: Encoder>(st: &mut State<E>, c: StreamChunk) {
    st.streamed = true;
    st.sent.push_str(&c.delta);
    let events = st.encoder.text(&c.model, &c.delta);
    st.outbox.extend(events);
}

async fn finish<E: Encoder>(st: &mut State<E>) {
    let mut pending = Vec::new();
    if let Some(sub) = st.chunks.as_mut() {
        while let Ok(c) = sub.chunks.try_recv() {
            pending.push(c);
        }
    }
    for c in pending {
        content(st, c);
    }
    st.finished = true;
    let record = match st.completions.get(&st.request_id).await {
        Ok(Some(r)) => r,
        _ => {
            let events = st.encoder.fail("the request could not be read");
            st.outbox.extend(events);
            return;
        }
    };
    let view = CompletionView::from_record(record);
    let events = match view.status {
        RequestStatus::Succeeded => {
            let stored = view.response.as_deref().unwrap_or_default();
            let rest = if st.streamed {
                reconcile(&st.sent, stored)
            } else {
                Reconciled::Tail(stored)
            };
            match rest {
                Reconciled::Complete => st.encoder.end(&view, ""),
                Reconciled::Tail(rest) => st.encoder.end(&view, rest),
                Reconciled::Diverged => st.encoder.fail(&format!(
                    "stream_incomplete: part of the answer was lost in relay; the full answer \
                     is at /requests/{}",
                    st.request_id
                )),
            }
        }
        RequestStatus::Failed => st.encoder.fail(&view.failure_message()),
        _ => st.encoder.fail("still running after COMPLETE_TIMEOUT_SECS"),
    };
    st.outbox.extend(events);
}

/// What the client has, against the stored answer.
#[derive(Debug, PartialEq)]
enum Reconciled<'a> {
    /// It has all of it.
    Complete,
    /// It has a prefix: this is the rest (pieces still in flight, or lost at the end).
    Tail(&'a str),
    /// A piece in the middle never arrived: what it has is not the answer.
    Diverged,
}

fn reconcile<'a>(sent: &str, stored: &'a str) -> Reconciled<'a> {
    match stored.strip_prefix(sent) {
        Some("") => Reconciled::Complete,
        Some(rest) => Reconciled::Tail(rest),
        None => Reconciled::Diverged,
    }
}

async fn next<E: Encoder>(mut st: State<E>) -> Option<(Result<Event, Infallible>, State<E>)> {
    loop {
        if let Some(event) = st.outbox.pop_front() {
            return Some((Ok(event), st));
        }
        if st.finished {
            return None;
        }
        if st.waiter.is_none() {
            // Nothing to wait for (a cache hit): the answer is there already.
            finish(&mut st).await;
            continue;
        }
        match wake(&mut st).await {
            Woke::Piece(c) => content(&mut st, c),
            // The relay stopped: wait for the end, which sends the rest of the stored answer.
            Woke::RelayEnded => st.chunks = None,
            Woke::Ended | Woke::TimedOut => finish(&mut st).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relayed_text_is_checked_against_the_stored_answer() {
        assert_eq!(
            reconcile("Hello, world", "Hello, world"),
            Reconciled::Complete
        );
        assert_eq!(
            reconcile("Hello, ", "Hello, world"),
            Reconciled::Tail("world")
        );
        assert_eq!(
            reconcile("Hello", "Hello, world"),
            Reconciled::Tail(", world")
        );
        // "lo, " was lost: the client's text is not the answer.
        assert_eq!(reconcile("Helworld", "Hello, world"), Reconciled::Diverged);
        assert_eq!(reconcile("", "x"), Reconciled::Tail("x"));
    }
}
