//! A Server-Sent Events reader over a streaming HTTP response, for the providers' streaming
//! wire formats, and the sender side of a streaming call.

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
    let mut stream = response.bytes_stream();
    let mut buffer: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| transport_error(provider, &e))?;
        buffer.extend_from_slice(&chunk);
        while let Some(end) = event_end(&buffer) {
            let raw: Vec<u8> = buffer.drain(..end.0).collect();
            buffer.drain(..end.1);
            if let Some(event) = parse(&raw) {
                on_event(event)?;
            }
        }
    }
    if let Some(event) = parse(&buffer) {
        on_event(event)?;
    }
    Ok(())
}

/// (end of the event, length of the blank-line separator) of the first complete event.
fn event_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn parse(raw: &[u8]) -> Option<Event> {
    let text = String::from_utf8_lossy(raw);
    let mut event = String::new();
    let mut data: Vec<&str> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v));
        } else if let Some(v) = line.strip_prefix("event:") {
            event = v.trim().to_owned();
        }
    }
    (!data.is_empty()).then(|| Event {
        event,
        data: data.join("\n"),
    })
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

    #[test]
    fn events_split_and_parse() {
        let raw = b"event: a\ndata: {\"x\":1}\n\ndata: two\r\ndata: lines\r\n\r\n: comment\n\n";
        let mut buf = raw.to_vec();
        let mut out = Vec::new();
        while let Some((end, sep)) = event_end(&buf) {
            let e: Vec<u8> = buf.drain(..end).collect();
            buf.drain(..sep);
            out.extend(parse(&e));
        }
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
