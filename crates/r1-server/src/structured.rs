//! Structured output: `response_format` (OpenAI) and vLLM's `guided_json`, `guided_regex`,
//! `guided_choice` and `guided_grammar`, checked and turned into a [`ConstraintSpec`], then
//! compiled by the model's [`ConstraintCompiler`]. Whatever cannot be enforced is a 400 that
//! names the field: a request is never decoded unconstrained without saying so.

use r1_engine::constraint::{Constraint, ConstraintError, ConstraintSpec, Grammar};
use serde_json::Value;

use crate::error::ApiError;
use crate::model::ModelState;
use crate::reasoning::THINK_CLOSE;

/// The structured-output fields of a request (chat or completions), as sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct StructuredFields<'a> {
    pub response_format: Option<&'a Value>,
    pub guided_json: Option<&'a Value>,
    pub guided_regex: Option<&'a Value>,
    pub guided_choice: Option<&'a Value>,
    pub guided_grammar: Option<&'a Value>,
}

/// What a request asks its output to be: the grammar and the field that asked for it
/// (named in compile errors).
#[derive(Clone, Debug, PartialEq)]
pub struct Requested {
    pub grammar: Grammar,
    pub param: String,
}

fn bad(msg: impl Into<String>, param: &str) -> ApiError {
    ApiError::bad_request(msg, Some(param))
}

fn present(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

/// Read the fields. `Ok(None)`: free output (`response_format` absent or `{"type":"text"}`).
pub fn requested(f: StructuredFields<'_>) -> Result<Option<Requested>, ApiError> {
    let mut found: Vec<Requested> = Vec::new();
    if let Some(rf) = present(f.response_format) {
        if let Some(r) = response_format(rf)? {
            found.push(r);
        }
    }
    if let Some(s) = present(f.guided_json) {
        let schema = match s {
            // vLLM takes the schema as an object or as a JSON string.
            Value::String(text) => serde_json::from_str(text).map_err(|e| {
                bad(
                    format!("`guided_json` is a string that is not JSON: {e}"),
                    "guided_json",
                )
            })?,
            Value::Object(_) | Value::Bool(_) => s.clone(),
            _ => return Err(bad("`guided_json` must be a JSON schema.", "guided_json")),
        };
        found.push(Requested {
            grammar: Grammar::JsonSchema(schema),
            param: "guided_json".into(),
        });
    }
    if let Some(r) = present(f.guided_regex) {
        let r = r
            .as_str()
            .ok_or_else(|| bad("`guided_regex` must be a string.", "guided_regex"))?;
        found.push(Requested {
            grammar: Grammar::Regex(r.to_string()),
            param: "guided_regex".into(),
        });
    }
    if let Some(c) = present(f.guided_choice) {
        let items = c
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                bad(
                    "`guided_choice` must be a non-empty list of strings.",
                    "guided_choice",
                )
            })?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    bad(
                        format!("guided_choice[{i}] must be a string."),
                        &format!("guided_choice[{i}]"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        found.push(Requested {
            grammar: Grammar::Choice(items),
            param: "guided_choice".into(),
        });
    }
    if let Some(g) = present(f.guided_grammar) {
        let g = g.as_str().filter(|g| !g.trim().is_empty()).ok_or_else(|| {
            bad(
                "`guided_grammar` must be a non-empty string.",
                "guided_grammar",
            )
        })?;
        // GBNF defines rules with `::=`; Lark with `:`.
        let grammar = if g.contains("::=") {
            Grammar::Gbnf(g.to_string())
        } else {
            Grammar::Lark(g.to_string())
        };
        found.push(Requested {
            grammar,
            param: "guided_grammar".into(),
        });
    }
    if found.len() > 1 {
        let names: Vec<&str> = found.iter().map(|r| r.param.as_str()).collect();
        let first = names[0].split('.').next().unwrap_or(names[0]).to_string();
        return Err(bad(
            format!(
                "Only one of `response_format` (json_object or json_schema), `guided_json`, \
                 `guided_regex`, `guided_choice` and `guided_grammar` may be given; this request \
                 has {}.",
                names.join(" and ")
            ),
            &first,
        ));
    }
    Ok(found.pop())
}

fn response_format(rf: &Value) -> Result<Option<Requested>, ApiError> {
    let kind = rf.get("type").and_then(Value::as_str).ok_or_else(|| {
        bad(
            "`response_format.type` is missing (expected \"text\", \"json_object\" or \
             \"json_schema\").",
            "response_format.type",
        )
    })?;
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(Requested {
            grammar: Grammar::JsonSchema(serde_json::json!({"type": "object"})),
            param: "response_format".into(),
        })),
        "json_schema" => {
            let js = rf
                .get("json_schema")
                .filter(|v| v.is_object())
                .ok_or_else(|| {
                    bad(
                        "`response_format.json_schema` is missing; it holds `name` and `schema`.",
                        "response_format.json_schema",
                    )
                })?;
            // OpenAI's field is `schema`; some clients send `json_schema.json_schema`.
            let schema = js
                .get("schema")
                .or_else(|| js.get("json_schema"))
                .filter(|s| !s.is_null())
                .ok_or_else(|| {
                    bad(
                        "`response_format.json_schema.schema` is missing.",
                        "response_format.json_schema.schema",
                    )
                })?;
            if !schema.is_object() && !schema.is_boolean() {
                return Err(bad(
                    "`response_format.json_schema.schema` must be a JSON schema object.",
                    "response_format.json_schema.schema",
                ));
            }
            Ok(Some(Requested {
                grammar: Grammar::JsonSchema(schema.clone()),
                param: "response_format.json_schema.schema".into(),
            }))
        }
        other => Err(bad(
            format!(
                "Invalid `response_format.type` \"{other}\" (expected \"text\", \"json_object\" \
                 or \"json_schema\")."
            ),
            "response_format.type",
        )),
    }
}

/// Where the constraint starts for a chat prompt: after `</think>` when the rendered prompt
/// leaves the model inside its reasoning (R1 thinks freely, then the answer is constrained);
/// otherwise from the first token. A model that might or might not open `<think>` itself is
/// constrained from the start: a constraint waiting for a `</think>` that never comes would
/// be a free decode.
pub fn start_after(m: &ModelState, rendered_prompt: &str) -> Option<String> {
    start_after_for(m.reasoning, rendered_prompt)
}

fn start_after_for(reasoning: bool, rendered_prompt: &str) -> Option<String> {
    (reasoning && crate::reasoning::prompt_opens_reasoning(rendered_prompt))
        .then(|| THINK_CLOSE.to_string())
}

/// Compile `grammar` for the model; errors are 400s naming `param`.
pub fn compile(
    m: &ModelState,
    grammar: Grammar,
    after: Option<String>,
    param: &str,
) -> Result<Constraint, ApiError> {
    let compiler = m.constraints.as_ref().map_err(|e| {
        bad(
            format!("Constrained decoding is not available for this model ({e}), so `{param}` cannot be enforced."),
            param,
        )
    })?;
    let spec = ConstraintSpec { grammar, after };
    compiler.compile(&spec).map_err(|e| {
        let what = match &e {
            ConstraintError::Invalid(m) => format!("is invalid: {m}"),
            ConstraintError::Unsupported(m) => format!("cannot be enforced: {m}"),
        };
        bad(format!("`{param}` {what}"), param)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(body: Value) -> Result<Option<Requested>, ApiError> {
        requested(StructuredFields {
            response_format: body.get("response_format"),
            guided_json: body.get("guided_json"),
            guided_regex: body.get("guided_regex"),
            guided_choice: body.get("guided_choice"),
            guided_grammar: body.get("guided_grammar"),
        })
    }

    #[test]
    fn maps_each_form() {
        assert_eq!(req(json!({})).unwrap(), None);
        assert_eq!(
            req(json!({"response_format": {"type": "text"}})).unwrap(),
            None
        );
        let r = req(json!({"response_format": {"type": "json_object"}}))
            .unwrap()
            .unwrap();
        assert_eq!(r.grammar, Grammar::JsonSchema(json!({"type": "object"})));
        let s = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let r = req(json!({"response_format": {"type": "json_schema",
            "json_schema": {"name": "x", "schema": s, "strict": true}}}))
        .unwrap()
        .unwrap();
        assert_eq!(r.grammar, Grammar::JsonSchema(s.clone()));
        assert_eq!(r.param, "response_format.json_schema.schema");
        let r = req(json!({"guided_json": s.to_string()})).unwrap().unwrap();
        assert_eq!(r.grammar, Grammar::JsonSchema(s));
        let r = req(json!({"guided_regex": "[0-9]+"})).unwrap().unwrap();
        assert_eq!(r.grammar, Grammar::Regex("[0-9]+".into()));
        let r = req(json!({"guided_choice": ["yes", "no"]}))
            .unwrap()
            .unwrap();
        assert_eq!(r.grammar, Grammar::Choice(vec!["yes".into(), "no".into()]));
        let r = req(json!({"guided_grammar": "start: \"a\"+"}))
            .unwrap()
            .unwrap();
        assert!(matches!(r.grammar, Grammar::Lark(_)));
        let r = req(json!({"guided_grammar": "root ::= \"a\"+"}))
            .unwrap()
            .unwrap();
        assert!(matches!(r.grammar, Grammar::Gbnf(_)));
    }

    #[test]
    fn constraint_starts_after_the_reasoning() {
        let r1 = "<｜User｜>hi<｜Assistant｜><think>\n";
        assert_eq!(start_after_for(true, r1).as_deref(), Some("</think>"));
        // The parser is off, or the prompt does not open a reasoning section (the model may
        // answer at once): constrained from the first token.
        assert_eq!(start_after_for(false, r1), None);
        assert_eq!(start_after_for(true, "<｜User｜>hi<｜Assistant｜>"), None);
    }

    #[test]
    fn errors_name_the_field() {
        let e = req(json!({"response_format": {"type": "yaml"}})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("response_format.type"));
        let e = req(json!({"response_format": {"type": "json_schema",
            "json_schema": {"name": "x"}}}))
        .unwrap_err();
        assert_eq!(
            e.param.as_deref(),
            Some("response_format.json_schema.schema")
        );
        let e = req(json!({"response_format": {"type": "json_schema"}})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("response_format.json_schema"));
        let e = req(json!({"response_format": {"type": "json_object"}, "guided_regex": "a"}))
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("response_format"));
        assert!(e.message.contains("guided_regex"), "{}", e.message);
        let e = req(json!({"guided_choice": []})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("guided_choice"));
        let e = req(json!({"guided_choice": ["a", 1]})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("guided_choice[1]"));
        let e = req(json!({"guided_json": "{not json"})).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("guided_json"));
    }
}
