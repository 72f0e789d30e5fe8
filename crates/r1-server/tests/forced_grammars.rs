//! The grammars that force a tool call compile with the real grammar engine for every parser
//! format, one function or a choice of several, with `parallel_tool_calls`, after `</think>`,
//! and with markers written as special tokens (`<[id]>`), against qwen05's vocabulary.

use r1_engine::constraint::{ConstraintCompiler, ConstraintSpec, Grammar};
use r1_engine::tokenizer::Tokenizer;
use r1_server::tool_types::FunctionDef;
use r1_server::tools::{grammar::forced_call, ToolParserKind};
use serde_json::json;

fn tokenizer() -> Option<Tokenizer> {
    let dir = std::env::var_os("R1SERVE_FIXTURES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            format!("{}/../../../shared/fixtures", env!("CARGO_MANIFEST_DIR")).into()
        })
        .join("qwen05-tokenizer");
    if !dir.is_dir() {
        eprintln!(
            "SKIP: {} is absent (set R1SERVE_FIXTURES to the shared fixtures)",
            dir.display()
        );
        return None;
    }
    Some(Tokenizer::from_hf_dir(&dir).unwrap())
}

#[test]
fn forced_call_grammars_compile() {
    let Some(tok) = tokenizer() else { return };
    let compiler = ConstraintCompiler::new(&tok).unwrap();
    let functions = vec![
        FunctionDef {
            name: "get_weather".into(),
            parameters: json!({"type": "object",
                "properties": {"city": {"type": "string"},
                               "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                "required": ["city"]}),
        },
        FunctionDef {
            name: "get_time".into(),
            parameters: json!({"type": "object"}),
        },
    ];
    // A real special token of this vocabulary stands in for DeepSeek's markers, so the
    // `<[id]>` form is compiled too.
    let im_end = tok.token_to_id("<|im_end|>").unwrap();
    assert!(tok.is_special(im_end));
    let as_special = move |s: &str| s.contains("tool▁calls▁begin").then_some(im_end);
    let none = |_: &str| None;
    let kinds = [
        ToolParserKind::DeepSeekV3,
        ToolParserKind::DeepSeekV31,
        ToolParserKind::Hermes,
        ToolParserKind::Llama3Json,
    ];
    for kind in kinds {
        for (only, parallel) in [(Some(0), false), (None, false), (None, true)] {
            for special in [&as_special as &dyn Fn(&str) -> Option<u32>, &none] {
                let lark = forced_call(kind, &functions, only, parallel, special);
                for after in [None, Some("</think>".to_string())] {
                    let spec = ConstraintSpec {
                        grammar: Grammar::Lark(lark.clone()),
                        after,
                    };
                    if let Err(e) = compiler.compile(&spec) {
                        panic!("{kind} only={only:?} parallel={parallel}: {e}\n{lark}");
                    }
                }
            }
        }
    }
}
