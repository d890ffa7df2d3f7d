//! What the HTTP wire formats share: the client (rustls with the webpki roots, so it needs no
//! system certificate store), sending a JSON request, and classifying failures.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{ErrorKind, ProviderError, ProviderId};

/// An HTTP client with `timeout` for the whole request and for any pause between two reads of
/// the answer. Streamed answers lift the whole-request limit (see [`STREAM_LIMIT`]): a long
/// stream that keeps sending is not cut, a stalled one is.
pub fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    super::install_crypto();
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .read_timeout(timeout)
        .connect_timeout(Duration::from_secs(10).min(timeout))
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("ai-cost-optimizer/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

/// The whole-request limit of a streamed answer; the pause between two pieces stays bounded by
/// the provider's timeout.
pub const STREAM_LIMIT: Duration = Duration::from_secs(3600);

/// POSTs `body` as JSON and decodes a 2xx answer as `T`; anything else becomes a classified
/// [`ProviderError`]. `error_message` pulls a readable message out of an error body.
pub async fn post_json<B: Serialize, T: DeserializeOwned>(
    provider: ProviderId,
    request: reqwest::RequestBuilder,
    body: &B,
    error_message: fn(&serde_json::Value) -> Option<String>,
) -> Result<T, ProviderError> {
    let response = request
        .json(body)
        .send()
        .await
        .map_err(|e| transport_error(provider, &e))?;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| transport_error(provider, &e))?;
    if !status.is_success() {
        let detail = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| error_message(&v))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        return Err(status_error(provider, status.as_u16(), &headers, &detail));
    }
    serde_json::from_slice(&bytes).map_err(|e| ProviderError {
        provider,
        kind: ErrorKind::Retryable,
        status: Some(status.as_u16()),
        retry_after: None,
        message: sanitize(&format!("malformed response body: {e}")),
    })
}

/// Timeouts and connection failures are retryable.
pub fn transport_error(provider: ProviderId, e: &reqwest::Error) -> ProviderError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "transport error"
    };
    ProviderError {
        provider,
        kind: ErrorKind::Retryable,
        status: None,
        retry_after: None,
        message: what.to_owned(),
    }
}

/// Classifies a non-2xx status.
pub fn status_error(
    provider: ProviderId,
    status: u16,
    headers: &HeaderMap,
    detail: &str,
) -> ProviderError {
    let kind = match status {
        // The gateway's own key or account was refused: another provider may still answer.
        401..=403 => ErrorKind::ModelUnavailable,
        404 => ErrorKind::ModelUnavailable,
        408 | 409 | 425 | 429 => ErrorKind::Retryable,
        500..=599 => ErrorKind::Retryable,
        // The request itself (400, 413, 422, a content policy): no other model would take it.
        _ => ErrorKind::Permanent,
    };
    let message = match status {
        401..=403 => format!(
            "the provider refused the gateway's API key or account (check its key setting): {}",
            sanitize(detail)
        ),
        _ => sanitize(detail),
    };
    ProviderError {
        provider,
        kind,
        status: Some(status),
        retry_after: retry_after(headers),
        message,
    }
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// Bounded, single-line, and never echoing anything that looks like a key.
pub fn sanitize(message: &str) -> String {
    let mut out: String = message
        .split_whitespace()
        .map(|w| {
            let looks_secret = w.len() >= 20
                && (w.starts_with("sk-") || w.starts_with("AIza") || w.contains("key="));
            if looks_secret { "[redacted]" } else { w }
        })
        .collect::<Vec<_>>()
        .join(" ");
    if out.chars().count() > 300 {
        out = out.chars().take(300).collect::<String>() + "…";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn statuses_are_classified() {
        let h = HeaderMap::new();
        let kind = |s| status_error(ProviderId::Anthropic, s, &h, "x").kind;
        assert_eq!(kind(429), ErrorKind::Retryable);
        assert_eq!(kind(529), ErrorKind::Retryable);
        assert_eq!(kind(500), ErrorKind::Retryable);
        assert_eq!(kind(503), ErrorKind::Retryable);
        // Our key refused, or the model missing: the next candidate, at once.
        for s in [401, 402, 403, 404] {
            assert_eq!(kind(s), ErrorKind::ModelUnavailable, "{s}");
        }
        for s in [400, 413, 422] {
            assert_eq!(kind(s), ErrorKind::Permanent, "{s}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&date).unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn messages_are_sanitised() {
        let m = sanitize("invalid x-api-key sk-ant-api03-abcdefghijklmnopqrstuvwxyz\nretry");
        assert_eq!(m, "invalid x-api-key [redacted] retry");
        assert!(sanitize(&"a".repeat(1000)).chars().count() <= 301);
    }
}
