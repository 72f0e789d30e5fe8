//! From our [`Grammar`] to llguidance's: a JSON schema becomes a small Lark grammar around
//! `%json {...}` (so leading whitespace is allowed and the output is compact), a choice
//! becomes alternatives of quoted literals, GBNF is converted to Lark; and llguidance's
//! compile errors become [`ConstraintError`]s that name what is at fault.

use llguidance::api::TopLevelGrammar;
use serde_json::Value;

use super::{gbnf, ConstraintError, Grammar};

/// The most whitespace characters a JSON answer may start with (R1 writes `"\n\n"` after
/// `</think>`; a bound keeps a model from filling its budget with newlines).
pub const JSON_LEADING_WS_MAX: usize = 16;

pub(crate) fn to_llguidance(g: &Grammar) -> Result<TopLevelGrammar, ConstraintError> {
    let invalid = |m: &str| ConstraintError::Invalid(m.to_string());
    Ok(match g {
        Grammar::JsonSchema(schema) => {
            let json = json_schema_lark(schema)?;
            TopLevelGrammar::from_lark(format!(
                "start: json_value | LEADING_WS json_value\n\
                 LEADING_WS: /[ \\t\\r\\n]{{1,{JSON_LEADING_WS_MAX}}}/\n\
                 json_value: {json}\n"
            ))
        }
        Grammar::Regex(rx) => {
            if rx.is_empty() {
                return Err(invalid("the regex is empty"));
            }
            TopLevelGrammar::from_regex(rx)
        }
        Grammar::Choice(choices) => {
            if choices.is_empty() {
                return Err(invalid("the list of choices is empty"));
            }
            let alts: Vec<String> = choices.iter().map(|c| lark_literal(c)).collect();
            TopLevelGrammar::from_lark(format!("start: {}\n", alts.join(" | ")))
        }
        Grammar::Lark(src) => {
            if src.trim().is_empty() {
                return Err(invalid("the grammar is empty"));
            }
            TopLevelGrammar::from_lark(src.clone())
        }
        Grammar::Gbnf(src) => TopLevelGrammar::from_lark(gbnf::gbnf_to_lark(src)?),
    })
}

/// `%json {...}` for a Lark grammar: the schema with the options `Grammar::JsonSchema` uses
/// (compact separators, no whitespace between tokens, no lenient mode). A schema that
/// already carries llguidance's `x-guidance` options keeps them.
pub fn json_schema_lark(schema: &Value) -> Result<String, ConstraintError> {
    let mut schema = match schema {
        Value::Object(_) => schema.clone(),
        Value::Bool(true) => Value::Object(Default::default()),
        Value::Bool(false) => {
            return Err(ConstraintError::Invalid(
                "the JSON schema is `false`, which no output satisfies".into(),
            ))
        }
        other => {
            return Err(ConstraintError::Invalid(format!(
                "a JSON schema must be an object or a boolean, not {}",
                json_kind(other)
            )))
        }
    };
    let obj = schema.as_object_mut().expect("checked above");
    obj.entry("x-guidance").or_insert_with(|| {
        serde_json::json!({
            "item_separator": ",",
            "key_separator": ":",
            "whitespace_flexible": false,
            "lenient": false,
        })
    });
    Ok(format!("%json {schema}"))
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A Lark string literal matching exactly `s` (Lark strings use JSON's escapes; DEL must be
/// escaped too).
pub fn lark_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// An llguidance compile error as ours: keywords and formats it cannot enforce are
/// `Unsupported` (named), everything else `Invalid`.
pub(crate) fn classify(g: &Grammar, msg: &str) -> ConstraintError {
    let msg = msg.trim_end_matches("\n<non-verbose/>").trim();
    if let Some(keys) = unimplemented_keys(msg) {
        let list = keys.join("`, `");
        let s = if keys.len() > 1 { "s" } else { "" };
        return ConstraintError::Unsupported(format!(
            "JSON schema keyword{s} `{list}` cannot be enforced by constrained decoding"
        ));
    }
    if let Some(i) = msg.find("Unknown format: ") {
        let name = msg[i + 16..].split_whitespace().next().unwrap_or("");
        return ConstraintError::Unsupported(format!(
            "JSON schema `format` `{name}` cannot be enforced by constrained decoding"
        ));
    }
    if msg.contains("oneOf constraints are not supported") {
        return ConstraintError::Unsupported(
            "JSON schema keyword `oneOf` cannot be enforced when its alternatives may overlap \
             (use `anyOf`)"
                .into(),
        );
    }
    let what = match g {
        Grammar::JsonSchema(_) => "JSON schema",
        Grammar::Regex(_) => "regex",
        Grammar::Choice(_) => "choice",
        Grammar::Lark(_) => "Lark grammar",
        Grammar::Gbnf(_) => "GBNF grammar (as Lark)",
    };
    let msg = match g {
        Grammar::JsonSchema(_) => tidy_json(msg),
        _ => msg.to_string(),
    };
    if msg.contains("not supported") {
        ConstraintError::Unsupported(format!("{what}: {msg}"))
    } else {
        ConstraintError::Invalid(format!("{what}: {msg}"))
    }
}

/// The keys of llguidance's `Unimplemented keys: ["a", "b"]`.
fn unimplemented_keys(msg: &str) -> Option<Vec<String>> {
    let i = msg.find("Unimplemented keys: ")?;
    let rest = &msg[i + "Unimplemented keys: ".len()..];
    let end = rest.find(']')?;
    serde_json::from_str(&rest[..=end]).ok()
}

/// A JSON schema's errors come wrapped in the location of the `%json` in our generated
/// Lark grammar and a listing of it, which mean nothing to the client: keep the schema's
/// own message.
fn tidy_json(msg: &str) -> String {
    const WRAP: &str = "failed to compile JSON schema: ";
    let m = match msg.find(WRAP) {
        Some(i) => &msg[i + WRAP.len()..],
        None => msg,
    };
    m.lines().next().unwrap_or("").trim().to_string()
}
