//! `stream: true`: the provider's deltas, relayed by the worker, as `chat.completion.chunk`
//! events, then a final chunk with `finish_reason`, the usage chunk when
//! `stream_options.include_usage`, and `data: [DONE]`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::completion::{
    CompletionView, Completions, StreamChunk, Submitted, Subscription, Waiter,
};
use crate::types::RequestStatus;

struct State {
    completions: Arc<Completions>,
    request_id: String,
    chunks: Option<Subscription>,
    waiter: Option<Waiter>,
    include_usage: bool,
    created: i64,
    model: Option<String>,
    streamed: bool,
    /// The text relayed so far, checked against the stored answer at the end.
    sent: String,
    outbox: VecDeque<String>,
    finished: bool,
    deadline: tokio::time::Instant,
}

pub fn respond(
    completions: Arc<Completions>,
    submitted: Submitted,
    include_usage: bool,
) -> Response {
    let deadline = tokio::time::Instant::now() + completions.settings.completion.timeout;
    let (request_id, chunks, waiter) = match submitted {
        Submitted::Queued {
            request_id,
            waiter,
            stream,
        } => (request_id, stream, waiter),
        Submitted::Cached(id) | Submitted::Replayed(id) => (id, None, None),
    };
    let state = State {
        completions,
        request_id: request_id.clone(),
        chunks,
        waiter,
        include_usage,
        created: chrono::Utc::now().timestamp(),
        model: None,
        streamed: false,
        sent: String::new(),
        outbox: VecDeque::new(),
        finished: false,
        deadline,
    };
    let events = futures_util::stream::unfold(state, next);
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-optimizer-request-id", v);
    }
    response
}

fn chunk(st: &State, delta: Value, finish: Option<&str>) -> String {
    json!({
        "id": st.request_id, "object": "chat.completion.chunk", "created": st.created,
        "model": st.model, "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
    })
    .to_string()
}

fn content(st: &mut State, c: StreamChunk) {
    let first = !st.streamed;
    st.streamed = true;
    st.model.get_or_insert(c.model);
    st.sent.push_str(&c.delta);
    let delta = if first {
        json!({ "role": "assistant", "content": c.delta })
    } else {
        json!({ "content": c.delta })
    };
    let data = chunk(st, delta, None);
    st.outbox.push_back(data);
}

async fn finish(st: &mut State) {
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
            st.outbox
                .push_back(error("the request could not be read", "api_error"));
            st.outbox.push_back("[DONE]".into());
            return;
        }
    };
    let view = CompletionView::from_record(record);
    match view.status {
        RequestStatus::Succeeded => {
            if st.model.is_none() {
                st.model = view.model.clone();
            }
            let stored = view.response.as_deref().unwrap_or_default();
            match reconcile(&st.sent, stored) {
                // Answered from the cache (or relayed nothing): one chunk with all of it.
                _ if !st.streamed => {
                    let data = chunk(st, json!({ "role": "assistant", "content": stored }), None);
                    st.outbox.push_back(data);
                }
                Reconciled::Complete => {}
                Reconciled::Tail(rest) => {
                    let data = chunk(st, json!({ "content": rest }), None);
                    st.outbox.push_back(data);
                }
                Reconciled::Diverged => {
                    let message = format!(
                        "stream_incomplete: part of the answer was lost in relay; the full \
                         answer is at /requests/{}",
                        st.request_id
                    );
                    st.outbox.push_back(error(&message, "api_error"));
                    st.outbox.push_back("[DONE]".into());
                    return;
                }
            }
            if !view.tool_calls.is_empty() {
                let calls = super::response::tool_calls(&view.tool_calls, true);
                // The role went with the first content chunk.
                let data = chunk(st, json!({ "tool_calls": calls }), None);
                st.outbox.push_back(data);
            }
            let reason = view.finish_reason.as_deref().unwrap_or("stop");
            let data = chunk(st, json!({}), Some(reason));
            st.outbox.push_back(data);
            if st.include_usage {
                let (i, o) = view.tokens.as_ref().map_or((0, 0), |t| (t.input, t.output));
                st.outbox.push_back(
                    json!({
                        "id": st.request_id, "object": "chat.completion.chunk",
                        "created": st.created, "model": st.model, "choices": [],
                        "usage": { "prompt_tokens": i, "completion_tokens": o,
                                   "total_tokens": i + o },
                    })
                    .to_string(),
                );
            }
        }
        RequestStatus::Failed => {
            let message = view.failure_message();
            st.outbox.push_back(error(&message, "api_error"));
        }
        _ => st.outbox.push_back(error(
            "still running after COMPLETE_TIMEOUT_SECS",
            "api_error",
        )),
    }
    st.outbox.push_back("[DONE]".into());
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

fn error(message: &str, kind: &str) -> String {
    json!({ "error": { "message": message, "type": kind, "param": null, "code": null } })
        .to_string()
}

async fn next(mut st: State) -> Option<(Result<Event, Infallible>, State)> {
    loop {
        if let Some(data) = st.outbox.pop_front() {
            return Some((Ok(Event::default().data(data)), st));
        }
        if st.finished {
            return None;
        }
        if st.waiter.is_none() {
            // Nothing to wait for (a cache hit): the answer is there already.
            finish(&mut st).await;
            continue;
        }
        let deadline = st.deadline;
        let mut done = false;
        let mut received = None;
        let mut relay_ended = false;
        {
            let chunks = st.chunks.as_mut().map(|s| &mut s.chunks);
            let waiter = st.waiter.as_mut();
            tokio::select! {
                c = async {
                    match chunks {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    relay_ended = c.is_none();
                    received = c;
                }
                _ = async {
                    match waiter {
                        Some(w) => w.notified().await,
                        None => std::future::pending().await,
                    }
                } => done = true,
                () = tokio::time::sleep_until(deadline) => done = true,
            }
        }
        if let Some(c) = received {
            content(&mut st, c);
        }
        if relay_ended {
            // The relay stopped (this client fell behind): wait for the end, which sends the
            // rest of the stored answer.
            st.chunks = None;
        }
        if done {
            finish(&mut st).await;
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
