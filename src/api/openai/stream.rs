//! `stream: true` on /v1/chat/completions: `chat.completion.chunk` events (see
//! [`crate::api::stream`]), then a final chunk with `finish_reason`, the usage chunk when
//! `stream_options.include_usage`, and `data: [DONE]`.

use axum::response::sse::Event;
use serde_json::{Value, json};

use crate::api::stream::Encoder;
use crate::completion::CompletionView;

pub(super) struct Chunks {
    request_id: String,
    created: i64,
    include_usage: bool,
    model: Option<String>,
    /// Whether the first chunk (the one carrying the role) went out.
    started: bool,
}

impl Chunks {
    pub(super) fn new(request_id: String, include_usage: bool) -> Self {
        Self {
            request_id,
            created: chrono::Utc::now().timestamp(),
            include_usage,
            model: None,
            started: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Event {
        Event::default().data(
            json!({
                "id": self.request_id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
            })
            .to_string(),
        )
    }

    /// A content chunk; the first one carries the role.
    fn content(&mut self, text: &str) -> Event {
        let delta = if self.started {
            json!({ "content": text })
        } else {
            json!({ "role": "assistant", "content": text })
        };
        self.started = true;
        self.chunk(delta, None)
    }
}

impl Encoder for Chunks {
    fn text(&mut self, model: &str, delta: &str) -> Vec<Event> {
        self.model.get_or_insert_with(|| model.to_owned());
        vec![self.content(delta)]
    }

    fn end(&mut self, view: &CompletionView, rest: &str) -> Vec<Event> {
        if self.model.is_none() {
            self.model = view.model.clone();
        }
        let mut out = Vec::new();
        if !self.started || !rest.is_empty() {
            out.push(self.content(rest));
        }
        if !view.tool_calls.is_empty() {
            let calls = super::response::tool_calls(&view.tool_calls, true);
            // The role went with the first content chunk.
            out.push(self.chunk(json!({ "tool_calls": calls }), None));
        }
        let reason = view.finish_reason.as_deref().unwrap_or("stop");
        out.push(self.chunk(json!({}), Some(reason)));
        if self.include_usage {
            out.push(
                Event::default().data(
                    json!({
                        "id": self.request_id, "object": "chat.completion.chunk",
                        "created": self.created, "model": self.model, "choices": [],
                        "usage": super::response::usage(view),
                    })
                    .to_string(),
                ),
            );
        }
        out.push(Event::default().data("[DONE]"));
        out
    }

    fn fail(&mut self, message: &str) -> Vec<Event> {
        vec![
            Event::default().data(
                json!({ "error": { "message": message, "type": "api_error", "param": null,
                                   "code": null } })
                .to_string(),
            ),
            Event::default().data("[DONE]"),
        ]
    }
}
