//! A Server-Sent Events reader over a streaming HTTP response (parsing by `eventsource-stream`),
//! for the providers' streaming wire formats, and the sender side of a streaming call.

use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::StreamExt;
use tokio::sync::mpsc::UnboundedSender;

use super::http::{status_error, transport_error};
use super::{ErrorKind, ProviderError, ProviderId};

/// Where a streaming call sends text deltas as they arrive.
pub type Deltas = UnboundedSender<String>;

/// One event: its `event:` name (empty when absent) and its joined `data:` lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event: String,
    pub data: String,
}

/// Sends `request` and, on a 2xx, calls `on_event` for every SSE event until the body ends.
/// Non-2xx answers and broken streams become classified errors.
pub async fn for_each_event(
    provider: ProviderId,
    request: reqwest::RequestBuilder,
    body: &serde_json::Value,
    error_message: fn(&serde_json::Value) -> Option<String>,
    mut on_event: impl FnMut(Event) -> Result<(), ProviderError>,
) -> Result<(), ProviderError> {
    let response = request
        .timeout(super::http::STREAM_LIMIT)
        .json(body)
        .send()
        .await
        .map_err(|e| transport_error(provider, &e))?;
    let status = response.status();
    if !status.is_success() {
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap_or_default();
        let detail = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| error_message(&v))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        return Err(status_error(provider, status.as_u16(), &headers, &detail));
    }
    let mut events = response.bytes_stream().eventsource();
    while let Some(event) = events.next().await {
        match event {
            Ok(e) => on_event(from_library(e))?,
            Err(EventStreamError::Transport(e)) => return Err(transport_error(provider, &e)),
            Err(e) => return Err(garbled(provider, &e.to_string())),
        }
    }
    Ok(())
}

/// Our view of an event: the library names an unnamed event `message` (the SSE default); the
/// providers' formats never use that name, so it reads as "no name".
fn from_library(e: eventsource_stream::Event) -> Event {
    Event {
        event: if e.event == "message" {
            String::new()
        } else {
            e.event
        },
        data: e.data,
    }
}

/// A stream whose body ended before the provider's end marker (OpenAI's `[DONE]`, Anthropic's
/// `message_stop`, a Gemini `finishReason`): the connection was cut, the answer is partial.
pub fn cut(provider: ProviderId) -> ProviderError {
    ProviderError {
        provider,
        kind: ErrorKind::Retryable,
        status: Some(200),
        retry_after: None,
        message: "the stream ended before the provider's end marker (connection cut)".into(),
    }
}

/// A malformed event in an otherwise healthy stream.
pub fn garbled(provider: ProviderId, what: &str) -> ProviderError {
    ProviderError {
        provider,
        kind: ErrorKind::Retryable,
        status: Some(200),
        retry_after: None,
        message: format!("malformed stream event: {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_split_and_parse() {
        let raw: &[u8] =
            b"event: a\ndata: {\"x\":1}\n\ndata: two\r\ndata: lines\r\n\r\n: comment\n\n";
        // Chunks cut mid-line and mid-separator, as a network delivers them.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            raw.chunks(7).map(|c| Ok(c.to_vec())).collect();
        let out: Vec<Event> = futures_util::stream::iter(chunks)
            .eventsource()
            .filter_map(|e| async move { e.ok().map(from_library) })
            .collect()
            .await;
        assert_eq!(
            out,
            vec![
                Event {
                    event: "a".into(),
                    data: "{\"x\":1}".into()
                },
                Event {
                    event: String::new(),
                    data: "two\nlines".into()
                },
            ]
        );
    }
}
