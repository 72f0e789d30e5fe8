//! Tool-call parsers: from the text a model writes when it calls tools to OpenAI's
//! `tool_calls`, whole (non-streaming responses) or delta by delta (streams).
//!
//! Formats (`--tool-call-parser`, or picked from the chat template):
//! * `deepseek_v3`: DeepSeek-V3/R1, `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\n{…}\n```<｜tool▁call▁end｜>…<｜tool▁calls▁end｜>`;
//! * `deepseek_v31`: DeepSeek-V3.1, `<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{…}<｜tool▁call▁end｜>`;
//! * `hermes`: Qwen2.5 and Hermes, `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`
//!   (also the same JSON without the tags at the start of the output, which small Qwen2.5
//!   models write; output that does not parse as calls stays content);
//! * `llama3_json`: Llama 3.x, `{"name": …, "parameters": {…}}` (optionally after
//!   `<|python_tag|>`, several separated by `;`).
//!
//! Each format is a scanner over the tool-call region (the text from the first marker on)
//! that reports the calls seen so far; the whole-text parse scans once, the stream
//! ([`stream::ToolStream`]) rescans as text arrives and sends what is new. Both use the same
//! scanner, so a stream split anywhere yields the calls the whole text does.

mod deepseek;
pub mod grammar;
mod hermes;
mod llama3;
pub mod request;
pub mod stream;

pub use request::{prepare_messages, ChatTools};
pub use stream::{ToolEvent, ToolStream};

/// A tool-call output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolParserKind {
    DeepSeekV3,
    DeepSeekV31,
    Hermes,
    Llama3Json,
}

impl std::str::FromStr for ToolParserKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "deepseek_v3" | "deepseek_r1" => Ok(ToolParserKind::DeepSeekV3),
            "deepseek_v31" => Ok(ToolParserKind::DeepSeekV31),
            "hermes" | "qwen" | "qwen25" => Ok(ToolParserKind::Hermes),
            "llama3_json" | "llama3" => Ok(ToolParserKind::Llama3Json),
            _ => Err(format!(
                "unknown tool-call parser `{s}` (expected deepseek_v3, deepseek_v31, hermes or \
                 llama3_json)"
            )),
        }
    }
}

impl std::fmt::Display for ToolParserKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ToolParserKind::DeepSeekV3 => "deepseek_v3",
            ToolParserKind::DeepSeekV31 => "deepseek_v31",
            ToolParserKind::Hermes => "hermes",
            ToolParserKind::Llama3Json => "llama3_json",
        })
    }
}

pub(crate) const DS_CALLS_BEGIN: &str = "<｜tool▁calls▁begin｜>";
pub(crate) const DS_CALLS_END: &str = "<｜tool▁calls▁end｜>";
pub(crate) const DS_CALL_BEGIN: &str = "<｜tool▁call▁begin｜>";
pub(crate) const DS_CALL_END: &str = "<｜tool▁call▁end｜>";
pub(crate) const DS_SEP: &str = "<｜tool▁sep｜>";
pub(crate) const HERMES_BEGIN: &str = "<tool_call>";
pub(crate) const HERMES_END: &str = "</tool_call>";
pub(crate) const PYTHON_TAG: &str = "<|python_tag|>";

impl ToolParserKind {
    /// The format a chat template writes tool calls in, if it writes any we know.
    pub fn detect(template: &str) -> Option<Self> {
        if template.contains(DS_CALL_BEGIN) && template.contains(DS_SEP) {
            // V3/R1 wrap the arguments in a ```json fence; V3.1 writes them bare.
            return Some(if template.contains("```json") {
                ToolParserKind::DeepSeekV3
            } else {
                ToolParserKind::DeepSeekV31
            });
        }
        if template.contains(HERMES_BEGIN) {
            return Some(ToolParserKind::Hermes);
        }
        if template.contains("<|start_header_id|>")
            && (template.contains(PYTHON_TAG) || template.contains("\"parameters\""))
        {
            return Some(ToolParserKind::Llama3Json);
        }
        None
    }

    /// Texts that open a tool-call region anywhere in the output.
    fn markers(self) -> &'static [&'static str] {
        match self {
            ToolParserKind::DeepSeekV3 | ToolParserKind::DeepSeekV31 => {
                &[DS_CALLS_BEGIN, DS_CALL_BEGIN]
            }
            ToolParserKind::Hermes => &[HERMES_BEGIN],
            ToolParserKind::Llama3Json => &[PYTHON_TAG],
        }
    }

    /// Marker texts that must reach the parser: if the tokenizer has them as special tokens,
    /// the request must not skip special tokens.
    pub fn special_markers(self) -> &'static [&'static str] {
        match self {
            ToolParserKind::DeepSeekV3 | ToolParserKind::DeepSeekV31 => &[
                DS_CALLS_BEGIN,
                DS_CALLS_END,
                DS_CALL_BEGIN,
                DS_CALL_END,
                DS_SEP,
            ],
            ToolParserKind::Hermes => &[HERMES_BEGIN, HERMES_END],
            ToolParserKind::Llama3Json => &[PYTHON_TAG],
        }
    }

    /// The calls in a tool-call region (`region` starts at a marker, or at the JSON for
    /// llama3). `done`: no more text comes, so an unterminated last call is judged as is.
    fn scan(self, region: &str, done: bool) -> Vec<Scanned> {
        match self {
            ToolParserKind::DeepSeekV3 => deepseek::scan(region, done, false),
            ToolParserKind::DeepSeekV31 => deepseek::scan(region, done, true),
            ToolParserKind::Hermes => hermes::scan(region, done),
            ToolParserKind::Llama3Json => llama3::scan(region, done),
        }
    }

    /// Where the tool-call region starts in `text`.
    fn region_start(self, text: &str) -> RegionStart {
        if matches!(self, ToolParserKind::Llama3Json | ToolParserKind::Hermes) {
            // Llama 3 answers with a bare JSON call, and small Qwen2.5 models often drop the
            // <tool_call> tags (or, Hermes only, put the call in a ```json fence): a `{` at the
            // very start (only there), bare or fenced, opens the region.
            let lead = text.len() - text.trim_start().len();
            let t = &text[lead..];
            let hermes = self == ToolParserKind::Hermes;
            match strip_json_fence(t) {
                Some(body) if hermes && body.starts_with('{') => return RegionStart::At(lead),
                Some(body) if hermes && body.is_empty() => return RegionStart::Maybe(lead),
                _ => {}
            }
            if t.starts_with('{') {
                return RegionStart::At(lead);
            }
            if t.is_empty() || (hermes && JSON_FENCE.starts_with(t)) {
                return RegionStart::Maybe(lead);
            }
        }
        let mut best: Option<usize> = None;
        for m in self.markers() {
            if let Some(p) = text.find(m) {
                best = Some(best.map_or(p, |b: usize| b.min(p)));
            }
        }
        if let Some(p) = best {
            return RegionStart::At(p);
        }
        // The longest tail of `text` that could still grow into a marker.
        let mut hold = text.len();
        for m in self.markers() {
            for (i, _) in text.char_indices() {
                if i < hold && m.starts_with(&text[i..]) {
                    hold = i;
                    break;
                }
            }
        }
        if hold < text.len() {
            RegionStart::Maybe(hold)
        } else {
            RegionStart::None
        }
    }
}

const JSON_FENCE: &str = "```json";

/// The text after an opening Markdown code fence (```` ```json ```` or a bare ```` ``` ````)
/// and the whitespace that follows it; `None` when `t` does not open with a fence.
fn strip_json_fence(t: &str) -> Option<&str> {
    let rest = t
        .strip_prefix(JSON_FENCE)
        .or_else(|| t.strip_prefix("```"))?;
    Some(rest.trim_start())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RegionStart {
    /// A marker starts here.
    At(usize),
    /// No marker yet, but the text from here on could become one.
    Maybe(usize),
    None,
}

/// One call as a scanner sees it so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Scanned {
    /// `None` until the whole name has been seen.
    pub name: Option<String>,
    /// The arguments so far; while the call is open, always a prefix of the final text.
    pub args: String,
    pub complete: bool,
}

/// One parsed call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedCall {
    pub name: String,
    /// A JSON text.
    pub arguments: String,
}

/// A whole output, split.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedOutput {
    /// The text around the calls (`None` when there is none).
    pub content: Option<String>,
    pub calls: Vec<ParsedCall>,
}

/// Parse a whole output. Text before the first call is the content; an output whose
/// tool-call region holds no well-formed call is all content (the model wrote something
/// that only looked like a call).
pub fn parse(kind: ToolParserKind, text: &str) -> ParsedOutput {
    let (content, calls) = match kind.region_start(text) {
        RegionStart::At(p) => {
            let calls: Vec<ParsedCall> = complete_calls(kind.scan(&text[p..], true));
            if calls.is_empty() {
                (text.trim(), calls)
            } else {
                (text[..p].trim(), calls)
            }
        }
        _ => (text.trim(), Vec::new()),
    };
    ParsedOutput {
        content: (!content.is_empty()).then(|| content.to_string()),
        calls,
    }
}

fn complete_calls(scanned: Vec<Scanned>) -> Vec<ParsedCall> {
    scanned
        .into_iter()
        .filter(|c| c.complete)
        .filter_map(|c| {
            Some(ParsedCall {
                name: c.name?,
                arguments: c.args,
            })
        })
        .collect()
}

/// The longest suffix of `text` that is a proper prefix of `marker`, removed.
pub(crate) fn strip_partial<'a>(text: &'a str, marker: &str) -> &'a str {
    for (i, _) in text.char_indices() {
        let tail = &text[i..];
        if tail.len() < marker.len() && marker.starts_with(tail) {
            return &text[..i];
        }
    }
    text
}

#[cfg(test)]
mod tests;
