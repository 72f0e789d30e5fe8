//! The token environment and the matcher on qwen05's real vocabulary (151k tokens, control
//! tokens, added tool-call tokens), driven token by token without a model.

use std::sync::OnceLock;
use std::time::Instant;

use serde_json::json;

use super::*;
use crate::tokenizer::Tokenizer;

struct Env {
    tok: Tokenizer,
    compiler: ConstraintCompiler,
}

fn env() -> Option<&'static Env> {
    static ENV: OnceLock<Option<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = r1_model::testdata::model("qwen05.gguf")?;
        let file = r1_model::gguf::GgufFile::open(&path).unwrap();
        let tok = Tokenizer::from_gguf(&file).unwrap();
        let compiler = ConstraintCompiler::new(&tok).unwrap();
        eprintln!(
            "token index for {} tokens built in {:.1} ms",
            tok.vocab_size(),
            compiler.build_time().as_secs_f64() * 1e3
        );
        Some(Env { tok, compiler })
    })
    .as_ref()
}

fn spec(grammar: Grammar) -> ConstraintSpec {
    ConstraintSpec {
        grammar,
        after: None,
    }
}

/// The ids a mask allows.
fn allowed(m: &mut SeqMatcher, vocab: usize) -> Vec<u32> {
    let mut logits = vec![0.0f32; vocab + 7];
    m.mask_logits(&mut logits).unwrap();
    assert!(logits[vocab..].iter().all(|l| *l == f32::NEG_INFINITY));
    (0..vocab as u32)
        .filter(|&i| logits[i as usize].is_finite())
        .collect()
}

/// Write `text` the way a model that wants it would under the mask: each step the longest
/// allowed token that spells the next bytes. Returns the last commit, the number of tokens
/// and the total mask time.
fn drive(e: &Env, m: &mut SeqMatcher, text: &str) -> Result<(Commit, usize), String> {
    let mut rest = text.as_bytes();
    let mut last = Commit::Continue;
    let mut n = 0;
    while !rest.is_empty() {
        let ids: Vec<u32> = if m.is_active() {
            allowed(m, e.tok.vocab_size())
        } else {
            (0..e.tok.vocab_size() as u32).collect()
        };
        let best = ids
            .iter()
            .copied()
            .filter(|&t| !e.tok.is_stop(t))
            .filter(|&t| {
                let b = m.token_bytes(t);
                !b.is_empty() && rest.starts_with(b)
            })
            .max_by_key(|&t| m.token_bytes(t).len())
            .ok_or_else(|| {
                format!(
                    "no allowed token spells {:?} ({} allowed)",
                    String::from_utf8_lossy(rest),
                    ids.len()
                )
            })?;
        rest = &rest[m.token_bytes(best).len()..];
        last = m.commit(best)?;
        n += 1;
        if last == Commit::Done && !rest.is_empty() {
            return Err(format!(
                "grammar finished with {:?} left",
                String::from_utf8_lossy(rest)
            ));
        }
    }
    Ok((last, n))
}

#[test]
fn token_env_marks_control_tokens_and_keeps_text_tokens() {
    let Some(e) = env() else { return };
    let c = &e.compiler;
    let im_end = e.tok.token_to_id("<|im_end|>").unwrap();
    assert!(e.tok.is_special(im_end));
    assert_eq!(c.lark_token("<|im_end|>").as_deref(), Some("<|im_end|>"));
    // Qwen's <tool_call> is a user-defined added token: text, named by id.
    let tool_call = e.tok.token_to_id("<tool_call>").unwrap();
    assert!(!e.tok.is_special(tool_call));
    assert_eq!(
        c.lark_token("<tool_call>"),
        Some(format!("<[{tool_call}]>"))
    );
    assert_eq!(c.lark_token("no such single token, surely"), None);
    // Plain tokens keep their bytes; the matcher sees control tokens by name.
    let m = c
        .compile(&spec(Grammar::Regex("x".into())))
        .unwrap()
        .matcher();
    for id in [0u32, 100, 9707, 151_000, im_end, tool_call] {
        assert_eq!(
            m.token_bytes(id),
            &e.tok.token_bytes(id).unwrap()[..],
            "token {id}"
        );
    }
    assert_eq!(c.vocab_size(), e.tok.vocab_size());
}

#[test]
fn lark_special_token_and_added_token_literal() {
    let Some(e) = env() else { return };
    let im_end = e.tok.token_to_id("<|im_end|>").unwrap();
    let tool_call = e.tok.token_to_id("<tool_call>").unwrap();
    // A control token by name: after "ok" it is the only token allowed.
    let g = Grammar::Lark("start: \"ok\" <|im_end|>".into());
    let mut m = e.compiler.compile(&spec(g)).unwrap().matcher();
    assert_eq!(drive(e, &mut m, "ok").unwrap().0, Commit::Continue);
    assert_eq!(allowed(&mut m, e.tok.vocab_size()), vec![im_end]);
    // The quoted text of a control token is text, which the control token does not spell.
    let g = Grammar::Lark("start: \"<|im_end|>\"".into());
    let mut m = e.compiler.compile(&spec(g)).unwrap().matcher();
    assert!(!allowed(&mut m, e.tok.vocab_size()).contains(&im_end));
    // An added (non-control) token as a quoted literal: the one token is allowed.
    let g = Grammar::Lark("start: \"<tool_call>\" /[a-z]+/ \"</tool_call>\"".into());
    let mut m = e.compiler.compile(&spec(g)).unwrap().matcher();
    assert!(allowed(&mut m, e.tok.vocab_size()).contains(&tool_call));
    assert_eq!(m.commit(tool_call).unwrap(), Commit::Continue);
    assert_eq!(drive(e, &mut m, "abc</tool_call>").unwrap().0, Commit::Done);
    // By id: exactly that token.
    let g = Grammar::Lark(format!(
        "start: {} \"x\"",
        e.compiler.lark_token("<tool_call>").unwrap()
    ));
    let mut m = e.compiler.compile(&spec(g)).unwrap().matcher();
    assert_eq!(allowed(&mut m, e.tok.vocab_size()), vec![tool_call]);
}

#[test]
fn json_schema_drives_to_done_and_allows_leading_whitespace() {
    let Some(e) = env() else { return };
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Z][a-z]+$"},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 1, "maxItems": 2},
            "pet": {"$ref": "#/$defs/pet"}
        },
        "required": ["name", "age", "tags", "pet"],
        "additionalProperties": false,
        "$defs": {"pet": {"type": "object", "properties": {"kind": {"const": "cat"}},
                  "required": ["kind"], "additionalProperties": false}}
    });
    let c = e
        .compiler
        .compile(&spec(Grammar::JsonSchema(schema)))
        .unwrap();
    let text = r#"{"name":"Ada","age":36,"tags":["a","b"],"pet":{"kind":"cat"}}"#;
    let mut m = c.matcher();
    let t0 = Instant::now();
    let (last, n) = drive(e, &mut m, &format!("\n\n{text}")).unwrap();
    assert_eq!(last, Commit::Done);
    let (masks, mask_time) = m.mask_stats();
    eprintln!(
        "{n} tokens, {masks} masks, {:.1} us per mask ({:.1} ms in all with the test's own work)",
        mask_time.as_secs_f64() * 1e6 / masks as f64,
        t0.elapsed().as_secs_f64() * 1e3
    );
    // Out of range, a third tag, a lower-case name, pretty-printing: each is refused.
    for bad in [
        r#"{"name":"Ada","age":151"#,
        r#"{"name":"Ada","age":3,"tags":["a","b","a""#,
        r#"{"name":"ada""#,
        "{ \"name\"",
        "\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n{",
    ] {
        let mut m = c.matcher();
        assert!(drive(e, &mut m, bad).is_err(), "{bad:?} was accepted");
    }
}

#[test]
fn schema_errors_name_the_keyword() {
    let Some(e) = env() else { return };
    let compile = |s: serde_json::Value| e.compiler.compile(&spec(Grammar::JsonSchema(s)));
    let err = compile(json!({"type": "array", "uniqueItems": true})).unwrap_err();
    assert!(
        matches!(&err, ConstraintError::Unsupported(m) if m.contains("`uniqueItems`")),
        "{err}"
    );
    let err = compile(json!({"type": "string", "format": "credit-card"})).unwrap_err();
    assert!(
        matches!(&err, ConstraintError::Unsupported(m) if m.contains("credit-card")),
        "{err}"
    );
    let err = compile(json!({"type": "strnig"})).unwrap_err();
    assert_eq!(
        err,
        ConstraintError::Invalid("JSON schema: Invalid type: strnig".into())
    );
    let err = compile(json!({"oneOf": [{"type": "object"}, {"type": "object"}]})).unwrap_err();
    assert!(
        matches!(&err, ConstraintError::Unsupported(m) if m.contains("`oneOf`")),
        "{err}"
    );
    let err = compile(json!(["not", "a", "schema"])).unwrap_err();
    assert!(matches!(err, ConstraintError::Invalid(_)), "{err}");
    let err = compile(json!({"$ref": "#/$defs/missing"})).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    let err = e
        .compiler
        .compile(&spec(Grammar::Regex("(unclosed".into())))
        .unwrap_err();
    assert!(matches!(err, ConstraintError::Invalid(_)), "{err}");
    let err = e
        .compiler
        .compile(&spec(Grammar::Lark("start: nothing_here".into())))
        .unwrap_err();
    assert!(err.to_string().contains("nothing_here"), "{err}");
}

#[test]
fn regex_choice_and_gbnf() {
    let Some(e) = env() else { return };
    let mut m = e
        .compiler
        .compile(&spec(Grammar::Regex(r"\d{3}-[a-z]{2}".into())))
        .unwrap()
        .matcher();
    assert_eq!(drive(e, &mut m, "123-ab").unwrap().0, Commit::Done);
    let choices = vec!["yes".to_string(), "no \"way\"\n".to_string()];
    for ch in &choices {
        let mut m = e
            .compiler
            .compile(&spec(Grammar::Choice(choices.clone())))
            .unwrap()
            .matcher();
        assert_eq!(drive(e, &mut m, ch).unwrap().0, Commit::Done, "{ch:?}");
    }
    let mut m = e
        .compiler
        .compile(&spec(Grammar::Choice(choices.clone())))
        .unwrap()
        .matcher();
    assert!(drive(e, &mut m, "maybe").is_err());

    // llama.cpp's json.gbnf.
    let gbnf = r#"
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws

object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws

array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws

string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
  )* "\"" ws

number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws

# Optional space: by convention, applied in this grammar after literal chars when allowed
ws ::= | " " | "\n" [ \t]{0,20}
"#;
    let c = e
        .compiler
        .compile(&spec(Grammar::Gbnf(gbnf.into())))
        .unwrap();
    let doc = "{\"a\": [1, -2.5, \"x\\ny\", {\"b\": null}], \"c\": true}";
    let mut m = c.matcher();
    let (_, n) = drive(e, &mut m, doc).unwrap();
    assert!(m.is_accepting(), "after {n} tokens");
    let mut m = c.matcher();
    assert!(drive(e, &mut m, "{\"a\": [1,]}").is_err());
}

#[test]
fn after_text_starts_the_grammar() {
    let Some(e) = env() else { return };
    let c = e
        .compiler
        .compile(&ConstraintSpec {
            grammar: Grammar::JsonSchema(json!({"type": "object",
                "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]})),
            after: Some("</think>".into()),
        })
        .unwrap();
    let mut m = c.matcher();
    // Free: thinking may contain anything, braces included, and "</think" split by tokens.
    assert_eq!(
        drive(e, &mut m, "Let me think {[( about it... </thi")
            .unwrap()
            .0,
        Commit::Free
    );
    assert!(!m.is_active());
    assert_eq!(
        drive(e, &mut m, "nk>\n\n{\"ok\":true}").unwrap().0,
        Commit::Done
    );
    // Text right after `after` in the same token is fed to the grammar, and checked.
    let mut m = c.matcher();
    let err = drive(e, &mut m, "hmm</think>nope");
    assert!(err.is_err(), "{err:?}");
}
