//! Llama 3.x's JSON calls: `{"name": …, "parameters": {…}}`, optionally after
//! `<|python_tag|>`, several separated by `;`. A call is reported once its JSON is whole.

use serde_json::Value;

use super::hermes::call_from_value;
use super::{Scanned, PYTHON_TAG};

pub(super) fn scan(region: &str, _done: bool) -> Vec<Scanned> {
    let rest = region.trim_start();
    json_calls(rest.strip_prefix(PYTHON_TAG).unwrap_or(rest), "parameters")
}

/// Whole JSON calls one after another (separated by whitespace or `;`), the arguments under
/// `args_key` (or the other usual key).
pub(super) fn json_calls(region: &str, args_key: &str) -> Vec<Scanned> {
    let mut rest = region;
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
        if !rest.starts_with('{') {
            break;
        }
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        match values.next() {
            Some(Ok(v)) => {
                let used = values.byte_offset();
                // Bare JSON is a call only with both a name and arguments: a JSON answer
                // that merely has a "name" field stays content.
                let has_args = v.get("arguments").is_some() || v.get("parameters").is_some();
                match call_from_value(&v, args_key).filter(|_| has_args) {
                    Some(c) => out.push(c),
                    None => break,
                }
                rest = &rest[used..];
            }
            _ => break,
        }
    }
    out
}
