//! The tool-calling parts of the chat API: the `tools` and `tool_choice` a request sends
//! (checked here, each problem a 400 naming the field) and the `tool_calls` a response or a
//! stream chunk carries, shaped as OpenAI shapes them.

use serde::Serialize;
use serde_json::Value;

use crate::error::ApiError;

/// One function the model may call (`tools[i].function`).
#[derive(Clone, Debug, PartialEq)]
pub struct FunctionDef {
    pub name: String,
    /// The JSON schema of the arguments (`{"type": "object"}` when the tool gives none).
    pub parameters: Value,
}

/// `tool_choice`, resolved against `tools`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides; its output is parsed for calls.
    Auto,
    /// No calls: the tools are left out of the prompt and the output is not parsed.
    None,
    /// At least one call, forced by a grammar.
    Required,
    /// A call of this function (index into the tools), forced by a grammar.
    Named(usize),
}

/// The request's tools, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolsRequest {
    pub functions: Vec<FunctionDef>,
    pub choice: ToolChoice,
    /// Several calls in one turn (`parallel_tool_calls`, default true).
    pub parallel: bool,
}

fn bad(msg: impl Into<String>, param: &str) -> ApiError {
    ApiError::bad_request(msg, Some(param))
}

/// OpenAI's rule for function names; it also keeps names safe to splice into a grammar.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Check `tools`, `tool_choice` and `parallel_tool_calls`. `None` when the request has no
/// tools (an empty list counts as none, as OpenAI's SDKs send it).
pub fn parse_tools(
    tools: Option<&Value>,
    tool_choice: Option<&Value>,
    parallel: Option<bool>,
) -> Result<Option<ToolsRequest>, ApiError> {
    let list = match tools {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(a)) => a.as_slice(),
        Some(_) => return Err(bad("`tools` must be a list of tools.", "tools")),
    };
    let mut functions = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let kind = t.get("type").and_then(Value::as_str);
        if kind != Some("function") {
            return Err(bad(
                format!(
                    "tools[{i}].type must be \"function\" (got {}); only function tools are \
                     supported.",
                    t.get("type")
                        .map_or("nothing".to_string(), Value::to_string)
                ),
                &format!("tools[{i}].type"),
            ));
        }
        let f = t.get("function").filter(|f| f.is_object()).ok_or_else(|| {
            bad(
                format!("tools[{i}].function must be an object."),
                &format!("tools[{i}].function"),
            )
        })?;
        let name = f.get("name").and_then(Value::as_str).unwrap_or("");
        if !valid_name(name) {
            return Err(bad(
                format!(
                    "tools[{i}].function.name `{name}` is not a valid function name (1 to 64 of \
                     a-z, A-Z, 0-9, _, - and .)."
                ),
                &format!("tools[{i}].function.name"),
            ));
        }
        if functions.iter().any(|g: &FunctionDef| g.name == name) {
            return Err(bad(
                format!("tools[{i}].function.name `{name}` names a function given twice."),
                &format!("tools[{i}].function.name"),
            ));
        }
        let parameters = match f.get("parameters") {
            None | Some(Value::Null) => serde_json::json!({"type": "object"}),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(_) => {
                return Err(bad(
                    format!("tools[{i}].function.parameters must be a JSON schema object."),
                    &format!("tools[{i}].function.parameters"),
                ))
            }
        };
        functions.push(FunctionDef {
            name: name.to_string(),
            parameters,
        });
    }
    let choice = match tool_choice {
        None | Some(Value::Null) => {
            if functions.is_empty() {
                ToolChoice::None
            } else {
                ToolChoice::Auto
            }
        }
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => {
                return Err(bad(
                    format!(
                        "Invalid `tool_choice` \"{other}\" (expected \"auto\", \"none\", \
                         \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": …}}}})."
                    ),
                    "tool_choice",
                ))
            }
        },
        Some(v @ Value::Object(_)) => {
            if v.get("type").and_then(Value::as_str) != Some("function") {
                return Err(bad(
                    "`tool_choice.type` must be \"function\".",
                    "tool_choice.type",
                ));
            }
            let name = v
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    bad(
                        "`tool_choice.function.name` is missing.",
                        "tool_choice.function.name",
                    )
                })?;
            let i = functions
                .iter()
                .position(|f| f.name == name)
                .ok_or_else(|| {
                    bad(
                        format!(
                            "`tool_choice` names the function `{name}`, which is not in \
                             `tools`."
                        ),
                        "tool_choice.function.name",
                    )
                })?;
            ToolChoice::Named(i)
        }
        Some(_) => {
            return Err(bad(
                "`tool_choice` must be a string or an object.",
                "tool_choice",
            ))
        }
    };
    if functions.is_empty() {
        if matches!(choice, ToolChoice::Required | ToolChoice::Named(_)) {
            return Err(bad(
                "`tool_choice` asks for a tool call but `tools` is empty.",
                "tool_choice",
            ));
        }
        return Ok(None);
    }
    Ok(Some(ToolsRequest {
        functions,
        choice,
        parallel: parallel.unwrap_or(true),
    }))
}

// ---- responses ----

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FunctionCall {
    pub name: String,
    /// The arguments as a JSON text, as OpenAI sends them.
    pub arguments: String,
}

/// `message.tool_calls[i]`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCall,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct FunctionCallDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub arguments: String,
}

/// `delta.tool_calls[i]`: the first chunk of a call has its id, type and name (and
/// `arguments: ""`); later ones only the index and an arguments fragment.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ToolCallDelta {
    pub index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub function: FunctionCallDelta,
}

/// A fresh call id: `call_` and 24 random alphanumerics (the form OpenAI uses).
pub fn new_call_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    // RandomState is seeded from the OS once per process and varies per instance: random
    // enough for ids that only need to be unique, without a new dependency.
    let mut out = String::from("call_");
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut word = 0u64;
    for i in 0..24 {
        if i % 8 == 0 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(n);
            h.write_u64(i as u64);
            word = h.finish();
        }
        out.push(ALPHABET[(word % ALPHABET.len() as u64) as usize] as char);
        word /= ALPHABET.len() as u64;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn weather() -> Value {
        json!([{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
    }

    #[test]
    fn choices() {
        let t = weather();
        let r = parse_tools(Some(&t), None, None).unwrap().unwrap();
        assert_eq!(r.choice, ToolChoice::Auto);
        assert!(r.parallel);
        let named = json!({"type": "function", "function": {"name": "get_weather"}});
        let r = parse_tools(Some(&t), Some(&named), Some(false))
            .unwrap()
            .unwrap();
        assert_eq!(r.choice, ToolChoice::Named(0));
        assert!(!r.parallel);
        let r = parse_tools(Some(&t), Some(&json!("required")), None)
            .unwrap()
            .unwrap();
        assert_eq!(r.choice, ToolChoice::Required);
        assert!(parse_tools(None, None, None).unwrap().is_none());
        assert!(parse_tools(Some(&json!([])), Some(&json!("auto")), None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn errors_name_the_field() {
        let t = weather();
        let e = parse_tools(
            Some(&t),
            Some(&json!({"type": "function", "function": {"name": "nope"}})),
            None,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tool_choice.function.name"));
        assert!(e.message.contains("nope"), "{}", e.message);
        let e = parse_tools(Some(&json!([{"type": "retrieval"}])), None, None).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools[0].type"));
        let e = parse_tools(Some(&t), Some(&json!("sometimes")), None).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
        let e = parse_tools(
            Some(&json!([{"type": "function", "function": {"name": "a b"}}])),
            None,
            None,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tools[0].function.name"));
        let e = parse_tools(None, Some(&json!("required")), None).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("tool_choice"));
    }

    #[test]
    fn call_ids_are_distinct() {
        let a = new_call_id();
        let b = new_call_id();
        assert!(a.starts_with("call_") && a.len() == 29, "{a}");
        assert_ne!(a, b);
    }
}
