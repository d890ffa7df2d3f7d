//! The Messages API request as Anthropic SDKs send it, mapped onto the chat-completions request
//! (so both dialects share one validation and one routing path), with parameter names given
//! back in Anthropic's terms when something is refused.

use serde_json::{Map, Value, json};

use crate::api::openai::OpenAiError;

/// Fields Anthropic SDKs send that cannot change the answer here: accepted and ignored.
pub const IGNORED_FIELDS: &[&str] = &["service_tier", "container", "context_management"];

fn invalid(param: impl Into<String>, message: impl Into<String>) -> OpenAiError {
    OpenAiError::invalid(param.into(), message.into())
}

/// A content field: a string, or text blocks (other block kinds are refused naming `at`).
fn text_blocks(content: &Value, at: &str) -> Result<String, OpenAiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut out = String::new();
            for (k, b) in blocks.iter().enumerate() {
                match (b["type"].as_str(), b["text"].as_str()) {
                    (Some("text"), Some(t)) => out.push_str(t),
                    (kind, _) => {
                        return Err(invalid(
                            format!("{at}[{k}]"),
                            format!(
                                "content blocks of type {:?} are not supported here; send text",
                                kind.unwrap_or("?")
                            ),
                        ));
                    }
                }
            }
            Ok(out)
        }
        Value::Null => Ok(String::new()),
        _ => Err(invalid(at, "must be a string or a list of content blocks")),
    }
}

/// One Anthropic message → chat messages: a user turn's `tool_result` blocks become `tool`
/// messages (before its text), an assistant turn's `tool_use` blocks its `tool_calls`.
fn messages_of(i: usize, m: &Value, out: &mut Vec<Value>) -> Result<(), OpenAiError> {
    let at = format!("messages[{i}]");
    let role = m["role"].as_str().unwrap_or_default();
    if role != "user" && role != "assistant" {
        return Err(invalid(
            format!("{at}.role"),
            "must be \"user\" or \"assistant\" (the system prompt goes in `system`)",
        ));
    }
    let blocks: Vec<Value> = match &m["content"] {
        Value::String(s) => vec![json!({ "type": "text", "text": s })],
        Value::Array(b) => b.clone(),
        _ => {
            return Err(invalid(
                format!("{at}.content"),
                "must be a string or a list of content blocks",
            ));
        }
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for (k, b) in blocks.iter().enumerate() {
        let here = format!("{at}.content[{k}]");
        match (role, b["type"].as_str()) {
            (_, Some("text")) => match b["text"].as_str() {
                Some(t) => text.push_str(t),
                None => return Err(invalid(format!("{here}.text"), "must be a string")),
            },
            ("assistant", Some("tool_use")) => {
                let (Some(id), Some(name)) = (b["id"].as_str(), b["name"].as_str()) else {
                    return Err(invalid(here, "a tool_use block needs id, name and input"));
                };
                let input = if b["input"].is_null() {
                    json!({})
                } else {
                    b["input"].clone()
                };
                calls.push(json!({ "id": id, "type": "function",
                    "function": { "name": name, "arguments": input.to_string() } }));
            }
            ("user", Some("tool_result")) => {
                let Some(id) = b["tool_use_id"].as_str() else {
                    return Err(invalid(
                        format!("{here}.tool_use_id"),
                        "a tool_result block names the tool_use it answers",
                    ));
                };
                let mut result = text_blocks(&b["content"], &format!("{here}.content"))?;
                if b["is_error"] == true {
                    result = format!("Error: {result}");
                }
                out.push(json!({ "role": "tool", "tool_call_id": id, "content": result }));
            }
            (_, Some("thinking" | "redacted_thinking")) => {}
            (_, kind) => {
                return Err(invalid(
                    here,
                    format!(
                        "content blocks of type {:?} are not supported here",
                        kind.unwrap_or("?")
                    ),
                ));
            }
        }
    }
    if role == "assistant" {
        let mut msg = json!({ "role": "assistant", "content": text });
        if !calls.is_empty() {
            msg["tool_calls"] = Value::Array(calls);
        }
        out.push(msg);
    } else if !text.is_empty() || blocks.is_empty() {
        out.push(json!({ "role": "user", "content": text }));
    }
    Ok(())
}

/// `tools`: `[{name, description?, input_schema}]` (client tools; server tools are refused).
fn tools_of(tools: &Value) -> Result<Value, OpenAiError> {
    let Some(tools) = tools.as_array() else {
        return Err(invalid("tools", "must be a list"));
    };
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t["type"].as_str().is_some_and(|k| k != "custom") {
                return Err(invalid(
                    format!("tools[{i}].type"),
                    format!("{}: only client tools are supported", t["type"]),
                ));
            }
            let mut function = json!({ "name": t["name"], "parameters": t["input_schema"] });
            if !t["description"].is_null() {
                function["description"] = t["description"].clone();
            }
            Ok(json!({ "type": "function", "function": function }))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// `tool_choice`: `{type: auto|any|tool|none, name?}`.
fn tool_choice_of(choice: &Value) -> Result<Value, OpenAiError> {
    Ok(match choice["type"].as_str() {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => json!({ "type": "function", "function": { "name": choice["name"] } }),
        _ => {
            return Err(invalid(
                "tool_choice",
                "expected {\"type\": \"auto\" | \"any\" | \"tool\" | \"none\"}",
            ));
        }
    })
}

/// The Messages request as a chat-completions request body, and whether it streams.
pub fn to_chat(body: Map<String, Value>) -> Result<Value, OpenAiError> {
    let mut chat = Map::new();
    let mut messages = Vec::new();
    for (field, value) in body {
        match field.as_str() {
            "model" => {
                chat.insert("model".into(), value);
            }
            "max_tokens" => {
                if !value
                    .as_u64()
                    .is_some_and(|n| n >= 1 && n <= u64::from(u32::MAX))
                {
                    return Err(invalid("max_tokens", "must be a positive integer"));
                }
                chat.insert("max_tokens".into(), value);
            }
            "messages" => {
                let Some(list) = value.as_array() else {
                    return Err(invalid("messages", "must be a list of messages"));
                };
                if list.is_empty() {
                    return Err(invalid("messages", "must contain at least one message"));
                }
                let mut turns = Vec::new();
                for (i, m) in list.iter().enumerate() {
                    messages_of(i, m, &mut turns)?;
                }
                messages.extend(turns);
            }
            "system" => {
                let system = text_blocks(&value, "system")?;
                if !system.is_empty() {
                    messages.insert(0, json!({ "role": "system", "content": system }));
                }
            }
            "stop_sequences" => {
                chat.insert("stop".into(), value);
            }
            "temperature" | "top_p" | "stream" => {
                chat.insert(field, value);
            }
            "tools" if !value.is_null() => {
                chat.insert("tools".into(), tools_of(&value)?);
            }
            "tool_choice" if !value.is_null() => {
                chat.insert("tool_choice".into(), tool_choice_of(&value)?);
            }
            "metadata" => {
                if let Some(user) = value.get("user_id").filter(|u| !u.is_null()) {
                    chat.insert("user".into(), user.clone());
                }
            }
            "thinking" => {
                if value["type"].as_str().is_some_and(|t| t != "disabled") {
                    return Err(invalid("thinking", "extended thinking is not supported"));
                }
            }
            "top_k" if !value.is_null() => {
                return Err(invalid(
                    "top_k",
                    "not supported across providers; leave it out",
                ));
            }
            f if IGNORED_FIELDS.contains(&f) || value.is_null() => {}
            other => {
                return Err(invalid(
                    other,
                    format!("{other}: Extra inputs are not permitted"),
                ));
            }
        }
    }
    if !chat.contains_key("max_tokens") {
        return Err(invalid("max_tokens", "Field required"));
    }
    if !chat.contains_key("model") {
        return Err(invalid("model", "Field required"));
    }
    chat.insert("messages".into(), Value::Array(messages));
    Ok(Value::Object(chat))
}

/// A chat-completions parameter in the Messages API's terms.
pub fn param_name(param: &str) -> String {
    if param == "stop" {
        return "stop_sequences".into();
    }
    param
        .replace(".function.parameters", ".input_schema")
        .replace(".function.", ".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(v: Value) -> Result<Value, OpenAiError> {
        to_chat(v.as_object().cloned().unwrap_or_default())
    }

    #[test]
    fn a_tool_conversation_maps_onto_chat_messages() {
        let c = chat(json!({
            "model": "auto", "max_tokens": 100, "system": [{"type": "text", "text": "Be brief."}],
            "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"},
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"}]}
            ]
        }))
        .unwrap();
        assert_eq!(
            c["messages"][0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(
            c["messages"][2]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(
            c["messages"][3],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "18C"})
        );
        assert_eq!(c["messages"].as_array().map(Vec::len), Some(4));
        assert_eq!(c["tool_choice"], "required");
        assert_eq!(
            c["tools"][0]["function"]["parameters"],
            json!({"type": "object"})
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let base = json!({"model": "auto", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
        let mut no_max = base.clone();
        no_max.as_object_mut().map(|o| o.remove("max_tokens"));
        assert_eq!(
            chat(no_max).unwrap_err().param.as_deref(),
            Some("max_tokens")
        );
        let mut image = base.clone();
        image["messages"][0]["content"] = json!([{"type": "image", "source": {}}]);
        assert_eq!(
            chat(image).unwrap_err().param.as_deref(),
            Some("messages[0].content[0]")
        );
        let mut extra = base.clone();
        extra["frobnicate"] = json!(1);
        assert_eq!(
            chat(extra).unwrap_err().param.as_deref(),
            Some("frobnicate")
        );
        let mut system_role = base;
        system_role["messages"][0]["role"] = json!("system");
        assert_eq!(
            chat(system_role).unwrap_err().param.as_deref(),
            Some("messages[0].role")
        );
        assert_eq!(param_name("tools[0].function.name"), "tools[0].name");
        assert_eq!(param_name("stop"), "stop_sequences");
    }
}
