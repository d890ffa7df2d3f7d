//! Extractors whose rejections use the API error shape, and the one JSON body reader behind both
//! error shapes (ours and OpenAI's).
//!
//! Bodies are read as JSON first (content type, size limit and syntax checked by axum), then
//! refused if any string or key holds a NUL character — Postgres text cannot store one, so it
//! would otherwise surface as a 500 deep in the request — and only then deserialized into the
//! endpoint's type, with the failing field's path in the message.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;

/// Why a JSON body was refused.
#[derive(Debug)]
pub enum BodyError {
    /// Wrong content type, too large, or not JSON (axum's verdict).
    Rejected(JsonRejection),
    /// A string (or key) at `path` holds a NUL character.
    Nul { path: String },
    /// An object names the key at `path` more than once (JSON parsers disagree on which value
    /// counts, so none is guessed).
    Duplicate { path: String },
    /// Valid JSON of the wrong shape: `path` is the failing field (`.` for the whole body).
    Data { path: String, message: String },
}

impl BodyError {
    /// The message to show: it names the field.
    pub fn message(&self) -> String {
        match self {
            BodyError::Rejected(r) => r.body_text(),
            BodyError::Nul { path } => {
                format!("{path}: must not contain NUL characters (\\u0000)")
            }
            BodyError::Duplicate { path } => {
                format!("{path}: duplicate key (an object may name each key once)")
            }
            BodyError::Data { path, message } if path == "." => {
                format!("Failed to deserialize the JSON body into the target type: {message}")
            }
            BodyError::Data { path, message } => format!(
                "Failed to deserialize the JSON body into the target type: {path}: {message}"
            ),
        }
    }

    /// The field at fault, when one is.
    pub fn field(&self) -> Option<&str> {
        match self {
            BodyError::Nul { path }
            | BodyError::Duplicate { path }
            | BodyError::Data { path, .. }
                if path != "." =>
            {
                Some(path)
            }
            _ => None,
        }
    }
}

/// Reads the request body as JSON into `T` (see the module header).
pub async fn json_body<T, S>(req: Request, state: &S) -> Result<T, BodyError>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    let axum::Json(Strict { value, duplicate }) = axum::Json::<Strict>::from_request(req, state)
        .await
        .map_err(BodyError::Rejected)?;
    if let Some(path) = duplicate {
        return Err(BodyError::Duplicate { path });
    }
    if let Some(path) = nul_path(&value, &mut String::new()) {
        return Err(BodyError::Nul { path });
    }
    serde_path_to_error::deserialize(value).map_err(|e| BodyError::Data {
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

/// A JSON value read with a note of the first key an object names twice (`serde_json::Value`
/// keeps the last value silently: `{"model":"auto","model":"x"}` would pin `x`).
struct Strict {
    value: Value,
    /// The path of the first duplicate key (`messages[0].role`).
    duplicate: Option<String>,
}

impl Strict {
    fn plain(value: Value) -> Self {
        Self {
            value,
            duplicate: None,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict::plain(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict::plain(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict::plain(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
        Ok(Strict::plain(
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }

    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict::plain(Value::String(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Strict, E> {
        Ok(Strict::plain(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict::plain(Value::Null))
    }

    fn visit_none<E>(self) -> Result<Strict, E> {
        Ok(Strict::plain(Value::Null))
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Strict, D::Error> {
        serde::Deserialize::deserialize(d)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut items = Vec::new();
        let mut duplicate = None;
        while let Some(Strict {
            value,
            duplicate: d,
        }) = seq.next_element::<Strict>()?
        {
            if duplicate.is_none() {
                duplicate = d.map(|d| format!("[{}]{}", items.len(), dotted(&d)));
            }
            items.push(value);
        }
        Ok(Strict {
            value: Value::Array(items),
            duplicate,
        })
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut object = serde_json::Map::new();
        let mut duplicate = None;
        while let Some(key) = map.next_key::<String>()? {
            let Strict {
                value,
                duplicate: d,
            } = map.next_value::<Strict>()?;
            if duplicate.is_none() {
                duplicate = if object.contains_key(&key) {
                    Some(key.clone())
                } else {
                    d.map(|d| format!("{key}{}", dotted(&d)))
                };
            }
            object.insert(key, value);
        }
        Ok(Strict {
            value: Value::Object(object),
            duplicate,
        })
    }
}

/// A child's path as it follows its parent's: `.key` or `[i]`.
fn dotted(child: &str) -> String {
    if child.starts_with('[') {
        child.to_owned()
    } else {
        format!(".{child}")
    }
}

/// The path of the first string or key holding a NUL character (`messages[1].content`).
fn nul_path(value: &Value, path: &mut String) -> Option<String> {
    match value {
        Value::String(s) if s.contains('\0') => Some(display(path)),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let found = nul_path(v, path);
            path.truncate(len);
            found
        }),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&k.replace('\0', "\\u0000"));
            let found = if k.contains('\0') {
                Some(display(path))
            } else {
                nul_path(v, path)
            };
            path.truncate(len);
            found
        }),
        _ => None,
    }
}

fn display(path: &str) -> String {
    if path.is_empty() {
        ".".to_owned()
    } else {
        path.to_owned()
    }
}

/// A JSON body in our error shape: refusals are 400/413/415 as axum decides, 422 naming the
/// field for NUL characters and wrong shapes.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppJson<T>(pub T);

impl<T, S> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        json_body(req, state)
            .await
            .map(AppJson)
            .map_err(ApiError::from)
    }
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::Rejected(r) => ApiError::from(r),
            BodyError::Duplicate { .. } => ApiError::bad_request("duplicate_key", e.message()),
            other => ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                other.message(),
            ),
        }
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for AppJson<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_are_found_with_their_path() {
        let v: Value = serde_json::from_str(
            r#"{"prompt":"ok","messages":[{"content":"a"},{"content":"b\u0000c"}]}"#,
        )
        .unwrap();
        assert_eq!(
            nul_path(&v, &mut String::new()).as_deref(),
            Some("messages[1].content")
        );
        let key: Value = serde_json::from_str(r#"{"meta":{"k\u0000":1}}"#).unwrap();
        assert_eq!(
            nul_path(&key, &mut String::new()).as_deref(),
            Some("meta.k\\u0000")
        );
        let clean: Value = serde_json::from_str(r#"{"a":["x",{"b":"y"}],"n":1}"#).unwrap();
        assert_eq!(nul_path(&clean, &mut String::new()), None);
    }
}
