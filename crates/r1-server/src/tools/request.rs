//! A chat request's tools and structured output, from the typed request to what the engine
//! and the writers need: whether the tools go into the prompt, which parser reads the
//! output, and the one constraint (from `response_format`/`guided_*`, or a forced call).

use r1_engine::constraint::{Constraint, Grammar};
use r1_engine::engine::Finish;
use r1_engine::tokenizer::Tokenizer;
use serde_json::Value;

use crate::error::ApiError;
use crate::model::ModelState;
use crate::openai_types::ChatCompletionRequest;
use crate::structured;
use crate::tool_types::{
    new_call_id, parse_tools, FunctionCall, FunctionCallDelta, ToolCall, ToolCallDelta, ToolChoice,
    ToolsRequest,
};

use super::{grammar, ParsedOutput, ToolEvent, ToolParserKind};

/// What the chat route does about tools for one request.
#[derive(Debug)]
pub struct ChatTools {
    pub tools: Option<ToolsRequest>,
    /// The parser for the output (`None`: no tools, or `tool_choice: "none"`).
    pub parser: Option<ToolParserKind>,
}

impl ChatTools {
    /// Check the tool fields against the model. Tools with any choice but `none` need a
    /// known output format: without one the calls could not be read back, so that is a 400
    /// rather than text that silently holds unparsed calls.
    pub fn new(m: &ModelState, req: &ChatCompletionRequest) -> Result<Self, ApiError> {
        let tools = parse_tools(
            req.tools.as_ref(),
            req.tool_choice.as_ref(),
            req.parallel_tool_calls,
        )?;
        let parser = match &tools {
            Some(t) if t.choice != ToolChoice::None => Some(m.tool_parser.ok_or_else(|| {
                ApiError::bad_request(
                    "This model's chat template writes tool calls in no format r1serve knows; \
                     start the server with --tool-call-parser deepseek_v3, deepseek_v31, hermes \
                     or llama3_json.",
                    Some("tools"),
                )
            })?),
            _ => None,
        };
        Ok(ChatTools { tools, parser })
    }

    /// The `tools` to render into the prompt. With `tool_choice: "none"` they are left out:
    /// the model cannot call what it has not been shown (vLLM renders them by default; a
    /// small model shown tools tends to call them anyway).
    pub fn render_tools<'a>(&self, req: &'a ChatCompletionRequest) -> Option<&'a Value> {
        self.tools
            .as_ref()
            .filter(|t| t.choice != ToolChoice::None)
            .and(req.tools.as_ref())
    }

    /// The request's constraint, if it has one: `response_format`/`guided_*`, or the
    /// grammar of a forced call. Both at once is a 400.
    pub fn constraint(
        &self,
        m: &ModelState,
        req: &ChatCompletionRequest,
        rendered: &str,
    ) -> Result<Option<Constraint>, ApiError> {
        let asked = structured::requested(req.structured())?;
        let after = structured::start_after(m, rendered);
        let forced = self.tools.as_ref().and_then(|t| match t.choice {
            ToolChoice::Required => Some((t, None, t.parallel)),
            ToolChoice::Named(i) => Some((t, Some(i), false)),
            _ => None,
        });
        match (asked, forced) {
            (Some(a), Some(_)) => Err(ApiError::bad_request(
                format!(
                    "`{}` cannot be combined with a `tool_choice` that forces a call.",
                    a.param
                ),
                Some(a.param.split('.').next().unwrap_or("response_format")),
            )),
            (Some(a), None) => Ok(Some(structured::compile(m, a.grammar, after, &a.param)?)),
            (None, Some((t, only, parallel))) => {
                let Some(kind) = self.parser else {
                    return Ok(None);
                };
                let tok = &m.tokenizer;
                let lark = grammar::forced_call(kind, &t.functions, only, parallel, &|s| {
                    special_id(tok, s)
                });
                tracing::debug!(grammar = %lark, "forced tool call");
                Ok(Some(structured::compile(
                    m,
                    Grammar::Lark(lark),
                    after,
                    "tool_choice",
                )?))
            }
            (None, None) => Ok(None),
        }
    }

    /// Whether the output must keep special tokens for the parser to see its markers
    /// (DeepSeek's tool tokens are special in some conversions).
    pub fn needs_special_tokens(&self, tok: &Tokenizer) -> bool {
        self.parser.is_some_and(|k| {
            k.special_markers()
                .iter()
                .any(|mk| special_id(tok, mk).is_some())
        })
    }
}

/// The id of `text` when it is a single special token of the vocabulary.
pub fn special_id(tok: &Tokenizer, text: &str) -> Option<u32> {
    tok.token_to_id(text).filter(|&id| tok.is_special(id))
}

/// The parsed calls as `message.tool_calls`, each with a fresh id.
pub fn tool_calls(parsed: &ParsedOutput) -> Option<Vec<ToolCall>> {
    (!parsed.calls.is_empty()).then(|| {
        parsed
            .calls
            .iter()
            .map(|c| ToolCall {
                id: new_call_id(),
                kind: "function",
                function: FunctionCall {
                    name: c.name.clone(),
                    arguments: c.arguments.clone(),
                },
            })
            .collect()
    })
}

/// The API's finish reason: `tool_calls` when the model stopped after calling tools.
pub fn finish_reason(f: Option<Finish>, called: bool) -> Option<&'static str> {
    match f {
        Some(Finish::Stop) if called => Some("tool_calls"),
        other => crate::generation::finish_reason(other),
    }
}

/// Stream events as a chunk's `content` and `tool_calls`.
pub fn stream_delta(events: Vec<ToolEvent>) -> (String, Vec<ToolCallDelta>) {
    let mut content = String::new();
    let mut calls = Vec::new();
    for e in events {
        match e {
            ToolEvent::Content(c) => content.push_str(&c),
            ToolEvent::Start { index, name } => calls.push(ToolCallDelta {
                index: index as u32,
                id: Some(new_call_id()),
                kind: Some("function"),
                function: FunctionCallDelta {
                    name: Some(name),
                    arguments: String::new(),
                },
            }),
            ToolEvent::Args { index, fragment } => calls.push(ToolCallDelta {
                index: index as u32,
                id: None,
                kind: None,
                function: FunctionCallDelta {
                    name: None,
                    arguments: fragment,
                },
            }),
        }
    }
    (content, calls)
}

/// Assistant `tool_calls` in the form the template reads: HF templates mostly expect
/// `function.arguments` as an object (Qwen2.5 writes `arguments | tojson`), so, as vLLM does,
/// the JSON string is parsed; templates that splice the arguments into a string (DeepSeek-R1:
/// `tool['function']['arguments'] + '\n'`) keep the string.
pub fn prepare_messages(msgs: &mut Value, template: Option<&str>) -> Result<(), ApiError> {
    let keep_strings = template.is_some_and(concatenates_arguments);
    let Some(list) = msgs.as_array_mut() else {
        return Ok(());
    };
    for (i, msg) in list.iter_mut().enumerate() {
        let Some(calls) = msg.get_mut("tool_calls") else {
            continue;
        };
        if calls.is_null() {
            continue;
        }
        let Some(calls) = calls.as_array_mut() else {
            return Err(ApiError::bad_request(
                format!("messages[{i}].tool_calls must be a list."),
                Some(&format!("messages[{i}].tool_calls")),
            ));
        };
        for (j, call) in calls.iter_mut().enumerate() {
            let param = format!("messages[{i}].tool_calls[{j}].function");
            let f = call
                .get_mut("function")
                .filter(|f| f.get("name").is_some_and(Value::is_string))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        format!("{param} must be an object with a `name`."),
                        Some(&param),
                    )
                })?;
            let args = f.get("arguments").cloned().unwrap_or(Value::Null);
            let text = match &args {
                Value::String(s) => s.clone(),
                Value::Null => "{}".to_string(),
                other => serde_json::to_string(other).unwrap_or_default(),
            };
            f["arguments"] = if keep_strings {
                Value::String(text)
            } else {
                serde_json::from_str(&text).map_err(|e| {
                    ApiError::bad_request(
                        format!("{param}.arguments is not valid JSON: {e}"),
                        Some(&format!("{param}.arguments")),
                    )
                })?
            };
            if call.get("type").is_none() {
                call["type"] = Value::String("function".into());
            }
        }
    }
    Ok(())
}

/// Whether the template adds the arguments to a string (`arguments'] + …`, `arguments + …`).
fn concatenates_arguments(template: &str) -> bool {
    template.match_indices("arguments").any(|(i, m)| {
        let rest = &template[i + m.len()..];
        let rest = rest
            .strip_prefix("']")
            .or_else(|| rest.strip_prefix("\"]"))
            .unwrap_or(rest);
        rest.trim_start().starts_with('+')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_follow_the_template() {
        let msgs = json!([{"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "f", "arguments": "{\"a\": 1}"}}]}]);
        let mut m = msgs.clone();
        prepare_messages(&mut m, Some("{{ tool_call.arguments | tojson }}")).unwrap();
        assert_eq!(
            m[0]["tool_calls"][0]["function"]["arguments"],
            json!({"a": 1})
        );
        let mut m = msgs.clone();
        prepare_messages(
            &mut m,
            Some("{{ '```json' + '\\n' + tool['function']['arguments'] + '\\n' }}"),
        )
        .unwrap();
        assert_eq!(
            m[0]["tool_calls"][0]["function"]["arguments"],
            json!("{\"a\": 1}")
        );
        let mut bad = json!([{"role": "assistant", "tool_calls": [
            {"function": {"name": "f", "arguments": "{oops"}}]}]);
        let e = prepare_messages(&mut bad, None).unwrap_err();
        assert_eq!(
            e.param.as_deref(),
            Some("messages[0].tool_calls[0].function.arguments")
        );
    }
}
