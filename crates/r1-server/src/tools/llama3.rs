//! Llama 3.x's JSON calls: `{"name": …, "parameters": {…}}`, optionally after
//! `<|python_tag|>`, several separated by `;`. A call is reported once its JSON is whole.

use serde_json::Value;

use super::hermes::call_from_value;
use super::{Scanned, PYTHON_TAG};

pub(super) fn scan(region: &str, _done: bool) -> Vec<Scanned> {
    let mut rest = region.trim_start();
    rest = rest.strip_prefix(PYTHON_TAG).unwrap_or(rest);
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
                match call_from_value(&v, "parameters") {
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
