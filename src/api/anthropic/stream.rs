//! `stream: true` on /v1/messages: Anthropic's events — `message_start`, a text block
//! (`content_block_start`, `text_delta`s, `content_block_stop`), one `tool_use` block per tool
//! call (its input as one `input_json_delta`), `message_delta` with `stop_reason` and usage,
//! `message_stop`; or an `error` event.

use axum::response::sse::Event;
use serde_json::{Value, json};

use crate::api::stream::Encoder;
use crate::completion::CompletionView;

pub(super) struct Events {
    request_id: String,
    model: Option<String>,
    started: bool,
    /// Index of the open text block, if one is open.
    text_block: Option<usize>,
    blocks: usize,
}

fn event(name: &str, data: Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

impl Events {
    pub(super) fn new(request_id: String) -> Self {
        Self {
            request_id,
            model: None,
            started: false,
            text_block: None,
            blocks: 0,
        }
    }

    fn start(&mut self, out: &mut Vec<Event>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(event(
            "message_start",
            json!({ "type": "message_start", "message": {
                "id": self.request_id, "type": "message", "role": "assistant", "content": [],
                "model": self.model, "stop_reason": null, "stop_sequence": null,
                "usage": { "input_tokens": 0, "output_tokens": 0 } } }),
        ));
    }

    fn text_delta(&mut self, text: &str, out: &mut Vec<Event>) {
        let index = match self.text_block {
            Some(i) => i,
            None => {
                let i = self.blocks;
                self.blocks += 1;
                self.text_block = Some(i);
                out.push(event(
                    "content_block_start",
                    json!({ "type": "content_block_start", "index": i,
                            "content_block": { "type": "text", "text": "" } }),
                ));
                i
            }
        };
        out.push(event(
            "content_block_delta",
            json!({ "type": "content_block_delta", "index": index,
                    "delta": { "type": "text_delta", "text": text } }),
        ));
    }
}

impl Encoder for Events {
    fn text(&mut self, model: &str, delta: &str) -> Vec<Event> {
        self.model.get_or_insert_with(|| model.to_owned());
        let mut out = Vec::new();
        self.start(&mut out);
        if !delta.is_empty() {
            self.text_delta(delta, &mut out);
        }
        out
    }

    fn end(&mut self, view: &CompletionView, rest: &str) -> Vec<Event> {
        if self.model.is_none() {
            self.model = view.model.clone();
        }
        let mut out = Vec::new();
        self.start(&mut out);
        if !rest.is_empty() {
            self.text_delta(rest, &mut out);
        }
        if let Some(i) = self.text_block.take() {
            out.push(event(
                "content_block_stop",
                json!({ "type": "content_block_stop", "index": i }),
            ));
        }
        for c in &view.tool_calls {
            let i = self.blocks;
            self.blocks += 1;
            out.push(event(
                "content_block_start",
                json!({ "type": "content_block_start", "index": i,
                        "content_block": { "type": "tool_use", "id": c.id, "name": c.name,
                                           "input": {} } }),
            ));
            out.push(event(
                "content_block_delta",
                json!({ "type": "content_block_delta", "index": i,
                        "delta": { "type": "input_json_delta",
                                   "partial_json": super::tool_input(&c.arguments).to_string() } }),
            ));
            out.push(event(
                "content_block_stop",
                json!({ "type": "content_block_stop", "index": i }),
            ));
        }
        out.push(event(
            "message_delta",
            json!({ "type": "message_delta",
                    "delta": { "stop_reason": super::stop_reason(view), "stop_sequence": null },
                    "usage": super::usage(view) }),
        ));
        out.push(event("message_stop", json!({ "type": "message_stop" })));
        out
    }

    fn fail(&mut self, message: &str) -> Vec<Event> {
        vec![event(
            "error",
            json!({ "type": "error", "error": { "type": "api_error", "message": message } }),
        )]
    }
}
