use super::*;

/// The stream's view of `text` cut into the given pieces: content and calls put together.
fn streamed(kind: ToolParserKind, pieces: &[&str]) -> (ParsedOutput, Vec<ToolEvent>) {
    let mut s = ToolStream::new(kind);
    let mut events = Vec::new();
    for p in pieces {
        events.extend(s.push(p));
    }
    events.extend(s.finish());
    let mut content = String::new();
    let mut calls: Vec<ParsedCall> = Vec::new();
    for e in &events {
        match e {
            ToolEvent::Content(c) => content.push_str(c),
            ToolEvent::Start { index, name } => {
                assert_eq!(*index, calls.len(), "calls start in order");
                calls.push(ParsedCall {
                    name: name.clone(),
                    arguments: String::new(),
                });
            }
            ToolEvent::Args { index, fragment } => calls[*index].arguments.push_str(fragment),
        }
    }
    let out = ParsedOutput {
        content: (!content.is_empty()).then_some(content),
        calls,
    };
    (out, events)
}

/// xorshift: splits without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Whole parse == one-piece stream == character-by-character == 200 random splits.
fn check_splits(kind: ToolParserKind, text: &str) -> ParsedOutput {
    let whole = parse(kind, text);
    assert_eq!(streamed(kind, &[text]).0, whole, "one piece");
    let chars: Vec<String> = text.chars().map(String::from).collect();
    let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
    assert_eq!(streamed(kind, &refs).0, whole, "char by char");
    let bounds: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain([text.len()])
        .collect();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..200 {
        let mut cuts: Vec<usize> = (0..(rng.next() % 8))
            .map(|_| bounds[(rng.next() % bounds.len() as u64) as usize])
            .collect();
        cuts.push(0);
        cuts.push(text.len());
        cuts.sort_unstable();
        cuts.dedup();
        let pieces: Vec<&str> = cuts.windows(2).map(|w| &text[w[0]..w[1]]).collect();
        assert_eq!(streamed(kind, &pieces).0, whole, "split at {cuts:?}");
    }
    whole
}

fn call(name: &str, args: &str) -> ParsedCall {
    ParsedCall {
        name: name.into(),
        arguments: args.into(),
    }
}

#[test]
fn deepseek_recorded_output() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/deepseek-tool-call-output.txt"
    ))
    .unwrap();
    let out = check_splits(ToolParserKind::DeepSeekV3, &text);
    assert_eq!(out.content, None);
    assert_eq!(
        out.calls,
        vec![
            call("get_current_weather", r#"{"location": "Tokyo"}"#),
            call("get_current_weather", r#"{"location": "Paris"}"#),
        ]
    );
}

#[test]
fn deepseek_v3_with_text_before_and_streamed_arguments() {
    let text = "Let me check.\n\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\", \"unit\": \"c\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
    let out = check_splits(ToolParserKind::DeepSeekV3, text);
    assert_eq!(out.content.as_deref(), Some("Let me check."));
    assert_eq!(
        out.calls,
        vec![call("get_weather", r#"{"city": "Paris", "unit": "c"}"#)]
    );
    // Character by character, the arguments arrive in many pieces, the name first.
    let chars: Vec<String> = text.chars().map(String::from).collect();
    let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
    let (_, events) = streamed(ToolParserKind::DeepSeekV3, &refs);
    let first_call = events
        .iter()
        .position(|e| matches!(e, ToolEvent::Start { .. }))
        .unwrap();
    let fragments = events[first_call..]
        .iter()
        .filter(|e| matches!(e, ToolEvent::Args { .. }))
        .count();
    assert!(fragments > 5, "{events:?}");
}

#[test]
fn deepseek_v31() {
    let text = "normal text<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>foo<｜tool▁sep｜>{\"x\":1}<｜tool▁call▁end｜><｜tool▁call▁begin｜>bar<｜tool▁sep｜>{\"y\": [1, 2]}<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
    let out = check_splits(ToolParserKind::DeepSeekV31, text);
    assert_eq!(out.content.as_deref(), Some("normal text"));
    assert_eq!(
        out.calls,
        vec![call("foo", r#"{"x":1}"#), call("bar", r#"{"y": [1, 2]}"#)]
    );
}

#[test]
fn hermes() {
    let text = "I'll look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>";
    let out = check_splits(ToolParserKind::Hermes, text);
    assert_eq!(out.content.as_deref(), Some("I'll look."));
    assert_eq!(
        out.calls,
        vec![
            call("get_weather", r#"{"city":"Paris"}"#),
            call("get_time", "{}")
        ]
    );
    // Without the tags, at the start of the output (small Qwen2.5 models do this).
    let out = check_splits(
        ToolParserKind::Hermes,
        "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n{\"name\": \"g\", \"arguments\": {}}",
    );
    assert_eq!(out.content, None);
    assert_eq!(
        out.calls,
        vec![call("get_weather", r#"{"city":"Paris"}"#), call("g", "{}")]
    );
    // In a ```json fence (qwen05 offered two tools without a system prompt does this).
    let out = check_splits(
        ToolParserKind::Hermes,
        "```json\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n```",
    );
    assert_eq!(out.content, None);
    assert_eq!(out.calls, vec![call("get_weather", r#"{"city":"Paris"}"#)]);
    for answer in [
        "```json\n{\"answer\": 4}\n```",
        "```python\nprint(1)\n```",
        "``not a fence``",
    ] {
        let out = check_splits(ToolParserKind::Hermes, answer);
        assert_eq!(out.content.as_deref(), Some(answer));
        assert!(out.calls.is_empty());
    }
    for answer in ["{\"answer\": 4}", "{\"name\": \"Ada\", \"age\": 36}"] {
        let out = check_splits(ToolParserKind::Hermes, answer);
        assert_eq!(out.content.as_deref(), Some(answer));
        assert!(out.calls.is_empty());
    }
    // An unterminated last call is taken when the output ends.
    let out = check_splits(
        ToolParserKind::Hermes,
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": 1}}",
    );
    assert_eq!(out.calls, vec![call("f", r#"{"a":1}"#)]);
}

#[test]
fn llama3_json() {
    let out = check_splits(
        ToolParserKind::Llama3Json,
        "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}; {\"name\": \"g\", \"parameters\": {}}",
    );
    assert_eq!(out.content, None);
    assert_eq!(
        out.calls,
        vec![call("get_weather", r#"{"city":"Paris"}"#), call("g", "{}")]
    );
    let out = check_splits(
        ToolParserKind::Llama3Json,
        "<|python_tag|>{\"name\": \"f\", \"parameters\": {\"q\": \"x\"}}",
    );
    assert_eq!(out.calls, vec![call("f", r#"{"q":"x"}"#)]);
}

#[test]
fn plain_text_and_look_alikes_are_content() {
    for kind in [
        ToolParserKind::DeepSeekV3,
        ToolParserKind::DeepSeekV31,
        ToolParserKind::Hermes,
        ToolParserKind::Llama3Json,
    ] {
        let out = check_splits(kind, "  The answer is 4.\n\nDone.  ");
        assert_eq!(out.content.as_deref(), Some("The answer is 4.\n\nDone."));
        assert!(out.calls.is_empty());
    }
    // A region with no well-formed call is given back as text.
    let out = check_splits(ToolParserKind::Hermes, "Use <tool_call> tags like this.");
    assert_eq!(
        out.content.as_deref(),
        Some("Use <tool_call> tags like this.")
    );
    assert!(out.calls.is_empty());
    let out = check_splits(ToolParserKind::Llama3Json, "{not a call}");
    assert_eq!(out.content.as_deref(), Some("{not a call}"));
    // A `<` that does not grow into a marker is released.
    let out = check_splits(ToolParserKind::Hermes, "a < b and <tool> c");
    assert_eq!(out.content.as_deref(), Some("a < b and <tool> c"));
}

#[test]
fn detect_from_templates() {
    let r1 = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/deepseek-r1-distill.jinja"
    ))
    .unwrap();
    assert_eq!(
        ToolParserKind::detect(&r1),
        Some(ToolParserKind::DeepSeekV3)
    );
    let qwen = "{%- if tools %}<tool_call>\\n{\"name\": <function-name>}</tool_call>{% endif %}";
    assert_eq!(ToolParserKind::detect(qwen), Some(ToolParserKind::Hermes));
    assert_eq!(
        ToolParserKind::detect("<|start_header_id|>ipython<|python_tag|>"),
        Some(ToolParserKind::Llama3Json)
    );
    assert_eq!(ToolParserKind::detect("{{ messages }}"), None);
    assert_eq!(
        "deepseek_v31".parse::<ToolParserKind>(),
        Ok(ToolParserKind::DeepSeekV31)
    );
    assert!("xml".parse::<ToolParserKind>().is_err());
}

#[test]
fn forced_grammars_name_the_format() {
    use crate::tool_types::FunctionDef;
    let fns = vec![
        FunctionDef {
            name: "get_weather".into(),
            parameters: serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        },
        FunctionDef {
            name: "get_time".into(),
            parameters: serde_json::json!({"type": "object"}),
        },
    ];
    let special = |s: &str| (s == DS_CALLS_BEGIN).then_some(7u32);
    let g = grammar::forced_call(ToolParserKind::DeepSeekV3, &fns, Some(0), false, &special);
    assert!(g.starts_with("start: <[7]> call "), "{g}");
    assert!(g.contains("call: call_0\n"), "{g}");
    assert!(!g.contains("call_1"), "{g}");
    assert!(g.contains(r#""get_weather\n```json\n""#), "{g}");
    assert!(g.contains("args_0: %json {"), "{g}");
    assert!(g.contains(r#""city":{"type":"string"}"#), "{g}");
    let g = grammar::forced_call(ToolParserKind::Hermes, &fns, None, true, &|_| None);
    assert!(g.contains(r#"start:  call ("\n" call)* "#), "{g}");
    assert!(g.contains("call: call_0 | call_1\n"), "{g}");
    assert!(
        g.contains(r#""\n{\"name\": \"get_time\", \"arguments\": ""#),
        "{g}"
    );
}
