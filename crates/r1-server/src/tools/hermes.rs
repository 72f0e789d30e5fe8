//! The Hermes format, which Qwen2.5 uses: each call is a JSON object between `<tool_call>`
//! and `</tool_call>`, `{"name": …, "arguments": {…}}`. A call is reported once its JSON is
//! whole (name and arguments in one go). Small Qwen2.5 models also write the bare JSON, or
//! the JSON in a ```` ```json ```` fence, at the start of the answer; both count.

use serde_json::Value;

use super::{Scanned, HERMES_BEGIN, HERMES_END};

pub(super) fn scan(region: &str, done: bool) -> Vec<Scanned> {
    let lead = region.trim_start();
    if lead.starts_with('{') {
        return super::llama3::json_calls(region, "arguments");
    }
    // A call in a ```json fence (the closing fence ends the JSON scan).
    if let Some(body) = super::strip_json_fence(lead) {
        return super::llama3::json_calls(body, "arguments");
    }
    let pieces: Vec<&str> = region.split(HERMES_BEGIN).skip(1).collect();
    let n = pieces.len();
    let mut out = Vec::with_capacity(n);
    for (i, piece) in pieces.into_iter().enumerate() {
        let body = match piece.find(HERMES_END) {
            Some(e) => &piece[..e],
            None if done || i + 1 < n => piece,
            None => continue,
        };
        if let Some(c) = json_call(body.trim(), "arguments") {
            out.push(c);
        }
    }
    out
}

/// `{"name": N, "<args_key>": A}` (either key for the arguments) as a complete call.
pub(super) fn json_call(text: &str, args_key: &str) -> Option<Scanned> {
    let v: Value = serde_json::from_str(text).ok()?;
    call_from_value(&v, args_key)
}

pub(super) fn call_from_value(v: &Value, args_key: &str) -> Option<Scanned> {
    let name = v.get("name")?.as_str()?.to_string();
    let other = if args_key == "arguments" {
        "parameters"
    } else {
        "arguments"
    };
    let args = match v.get(args_key).or_else(|| v.get(other)) {
        None | Some(Value::Null) => "{}".to_string(),
        // Some models write the arguments as a JSON string already.
        Some(Value::String(s)) => s.clone(),
        Some(a) => serde_json::to_string(a).ok()?,
    };
    Some(Scanned {
        name: Some(name),
        args,
        complete: true,
    })
}
