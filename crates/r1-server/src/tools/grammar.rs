//! Grammars that force a tool call (`tool_choice: "required"` or a named function): one
//! well-formed call in the model's own format (several with `parallel_tool_calls` and
//! `required`), whose arguments match the function's `parameters` schema. Written in
//! llguidance's Lark dialect: fixed text as string literals, the arguments as
//! `%json { schema }`, and markers that are special tokens as `<[token id]>` (a special token
//! has no text the grammar could match).

use crate::tool_types::FunctionDef;

use super::{
    ToolParserKind, DS_CALLS_BEGIN, DS_CALLS_END, DS_CALL_BEGIN, DS_CALL_END, DS_SEP, HERMES_BEGIN,
    HERMES_END,
};

/// `special(text)`: the token id when `text` is one special token of the vocabulary.
pub fn forced_call(
    kind: ToolParserKind,
    functions: &[FunctionDef],
    only: Option<usize>,
    parallel: bool,
    special: &dyn Fn(&str) -> Option<u32>,
) -> String {
    let mark = |s: &str| match special(s) {
        Some(id) => format!("<[{id}]>"),
        None => lit(s),
    };
    let mut g = String::new();
    let chosen: Vec<(usize, &FunctionDef)> = functions
        .iter()
        .enumerate()
        .filter(|(i, _)| only.is_none_or(|o| o == *i))
        .collect();
    let several = parallel && only.is_none();
    let (open, sep, close) = match kind {
        ToolParserKind::DeepSeekV3 | ToolParserKind::DeepSeekV31 => {
            (mark(DS_CALLS_BEGIN), lit("\n"), mark(DS_CALLS_END))
        }
        ToolParserKind::Hermes => (String::new(), lit("\n"), String::new()),
        ToolParserKind::Llama3Json => (String::new(), lit("; "), String::new()),
    };
    let calls = if several {
        format!("call ({sep} call)*")
    } else {
        "call".to_string()
    };
    g.push_str(&format!("start: {open} {calls} {close}\n"));
    let alts: Vec<String> = chosen.iter().map(|(i, _)| format!("call_{i}")).collect();
    g.push_str(&format!("call: {}\n", alts.join(" | ")));
    for (i, f) in chosen {
        let args = format!("args_{i}");
        let body = match kind {
            ToolParserKind::DeepSeekV3 => format!(
                "{} {} {} {} {args} {} {}",
                mark(DS_CALL_BEGIN),
                lit("function"),
                mark(DS_SEP),
                lit(&format!("{}\n```json\n", f.name)),
                lit("\n```"),
                mark(DS_CALL_END)
            ),
            ToolParserKind::DeepSeekV31 => format!(
                "{} {} {} {args} {}",
                mark(DS_CALL_BEGIN),
                lit(&f.name),
                mark(DS_SEP),
                mark(DS_CALL_END)
            ),
            // The spacing is the one Qwen2.5's template writes calls with.
            ToolParserKind::Hermes => format!(
                "{} {} {args} {} {}",
                mark(HERMES_BEGIN),
                lit(&format!("\n{{\"name\": \"{}\", \"arguments\": ", f.name)),
                lit("}\n"),
                mark(HERMES_END)
            ),
            ToolParserKind::Llama3Json => format!(
                "{} {args} {}",
                lit(&format!("{{\"name\": \"{}\", \"parameters\": ", f.name)),
                lit("}")
            ),
        };
        g.push_str(&format!("call_{i}: {body}\n"));
        let schema = serde_json::to_string(&f.parameters).unwrap_or_else(|_| "{}".into());
        g.push_str(&format!("{args}: %json {schema}\n"));
    }
    g
}

/// A Lark string literal (JSON's escaping, which llguidance's Lark strings accept).
fn lit(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}
