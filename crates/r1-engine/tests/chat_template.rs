//! Chat templates rendered with minijinja against what Python jinja2 renders under HF's
//! settings (trim_blocks, lstrip_blocks, loop controls, json.dumps-style tojson). The
//! DeepSeek-R1-Distill cases come from the shared fixtures (rendered by jinja2); the SmolLM2 and
//! Qwen2.5 expectations were derived by reading the templates and agree with jinja2 3.1.6.

use std::path::{Path, PathBuf};

use r1_engine::chat_template::{ChatMessage, ChatTemplate, TemplateError};
use r1_engine::tokenizer::Tokenizer;
use r1_model::gguf::GgufFile;
use r1_model::testdata;
use serde_json::{json, Value};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(data(name)).unwrap()
}

fn msgs(list: &[(&str, &str)]) -> Vec<ChatMessage> {
    list.iter().map(|(r, c)| ChatMessage::new(*r, *c)).collect()
}

const SMOL_SYSTEM: &str =
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n";
const QWEN_SYSTEM: &str =
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n";
const CONVERSATION: &str =
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n";

fn multi_turn() -> Vec<ChatMessage> {
    msgs(&[
        ("system", "Be brief."),
        ("user", "Hi"),
        ("assistant", "Hello!"),
        ("user", "Bye"),
    ])
}

/// The four ChatML cases for a template whose default system prompt is `default_system`.
fn check_chatml(tpl: &ChatTemplate, default_system: &str, what: &str) {
    let hi = msgs(&[("user", "Hi")]);
    let user_hi = "<|im_start|>user\nHi<|im_end|>\n";
    let gen = "<|im_start|>assistant\n";
    assert_eq!(
        tpl.render(&hi, true).unwrap(),
        format!("{default_system}{user_hi}{gen}"),
        "{what}"
    );
    assert_eq!(
        tpl.render(&hi, false).unwrap(),
        format!("{default_system}{user_hi}"),
        "{what}"
    );
    assert_eq!(
        tpl.render(&multi_turn(), false).unwrap(),
        CONVERSATION,
        "{what}"
    );
    assert_eq!(
        tpl.render(&multi_turn(), true).unwrap(),
        format!("{CONVERSATION}{gen}"),
        "{what}"
    );
}

#[test]
fn deepseek_r1_distill_cases_match_jinja2() {
    let tpl_src = read("deepseek-r1-distill.jinja");
    let cases: Value = serde_json::from_str(&read("deepseek-r1-distill.cases.json")).unwrap();
    let cases = cases.as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let bos = case["bos_token"].as_str().unwrap();
        let tpl = ChatTemplate::new(&tpl_src, bos, "<｜end▁of▁sentence｜>").unwrap();
        let want = case["rendered"].as_str().unwrap();
        let gen = case["add_generation_prompt"].as_bool().unwrap();
        let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
        assert_eq!(tpl.render(&messages, gen).unwrap(), want);
        assert_eq!(
            tpl.render_json(&case["messages"], gen, None, None).unwrap(),
            want
        );
    }
    // The reasoning of earlier assistant turns is dropped; the prompt opens a new <think>.
    let tpl = ChatTemplate::new(&tpl_src, "<｜begin▁of▁sentence｜>", "").unwrap();
    let out = tpl
        .render(
            &msgs(&[
                ("user", "a"),
                ("assistant", "<think>x</think>b"),
                ("user", "c"),
            ]),
            true,
        )
        .unwrap();
    assert_eq!(
        out,
        "<｜begin▁of▁sentence｜><｜User｜>a<｜Assistant｜>b<｜end▁of▁sentence｜><｜User｜>c<｜Assistant｜><think>\n"
    );
}

#[test]
fn smollm2_template_renders_chatml() {
    let tpl = ChatTemplate::new(
        &read("smollm2-chat_template.jinja"),
        "<|im_start|>",
        "<|im_end|>",
    )
    .unwrap();
    check_chatml(&tpl, SMOL_SYSTEM, "smollm2");
}

#[test]
fn qwen05_template_renders_chatml() {
    let tpl = ChatTemplate::new(
        &read("qwen05-chat_template.jinja"),
        "<|endoftext|>",
        "<|im_end|>",
    )
    .unwrap();
    check_chatml(&tpl, QWEN_SYSTEM, "qwen05");
}

#[test]
fn qwen05_template_renders_tools_and_tool_calls() {
    let tpl = ChatTemplate::new(&read("qwen05-chat_template.jinja"), "", "<|im_end|>").unwrap();
    // Keys in alphabetical order, so the JSON map order cannot matter.
    let tools = json!([{"function": {"description": "Get the weather", "name": "get_weather",
        "parameters": {"properties": {"city": {"type": "string"}}, "required": ["city"],
        "type": "object"}}, "type": "function"}]);
    let messages = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"function": {"arguments":
            {"city": "Paris"}, "name": "get_weather"}, "id": "call_1", "type": "function"}]},
        {"role": "tool", "content": "18°C, sunny"}
    ]);
    let want = concat!(
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
        "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n",
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n",
        r#"{"function": {"description": "Get the weather", "name": "get_weather", "parameters": "#,
        r#"{"properties": {"city": {"type": "string"}}, "required": ["city"], "type": "object"}}, "#,
        r#""type": "function"}"#,
        "\n</tools>\n\nFor each function call, return a json object with function name and ",
        "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n",
        r#"{"name": <function-name>, "arguments": <args-json-object>}"#,
        "\n</tool_call><|im_end|>\n<|im_start|>user\nWeather in Paris?<|im_end|>\n",
        "<|im_start|>assistant\n<tool_call>\n",
        r#"{"name": "get_weather", "arguments": {"city": "Paris"}}"#,
        "\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n18°C, sunny\n",
        "</tool_response><|im_end|>\n<|im_start|>assistant\n",
    );
    assert_eq!(
        tpl.render_json(&messages, true, Some(&tools), None)
            .unwrap(),
        want
    );
}

#[test]
fn gguf_templates_render_like_the_fixture_copies() {
    for (name, system) in [("smollm2", SMOL_SYSTEM), ("qwen05", QWEN_SYSTEM)] {
        let Some(path) = testdata::model(&format!("{name}.gguf")) else {
            return;
        };
        let tok = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
        let src = tok.chat_template().expect("the GGUF has a chat template");
        let tpl = ChatTemplate::new(src, &tok.bos_token(), &tok.eos_token()).unwrap();
        check_chatml(&tpl, system, name);
        let copy =
            ChatTemplate::new(&read(&format!("{name}-chat_template.jinja")), "", "").unwrap();
        assert_eq!(
            tpl.render(&multi_turn(), true).unwrap(),
            copy.render(&multi_turn(), true).unwrap()
        );
        // The rendered prompt tokenizes with the control tokens as single ids.
        let ids = tok
            .encode(&tpl.render(&multi_turn(), true).unwrap(), false, true)
            .unwrap();
        let start = tok.token_to_id("<|im_start|>").unwrap();
        assert_eq!(ids.iter().filter(|&&i| i == start).count(), 5);
    }
}

#[test]
fn tojson_writes_what_python_json_dumps_writes() {
    let x = json!({"a": "é \"q\" \n\t\\ </tag> & ü \u{1}",
        "b": [1.0, 0.5, 1e20, -3, 1e-7, true, null], "c": {}, "d": [],
        "e": {"y": [{"k": "v"}], "z": 1}});
    let extra = json!({"x": x});
    let render = |src: &str| {
        let tpl = ChatTemplate::new(src, "", "").unwrap();
        tpl.render_json(&json!([]), false, None, extra.as_object())
            .unwrap()
    };
    // Expected texts from Python: json.dumps(x, ensure_ascii=False, ...), as HF's tojson does.
    assert_eq!(
        render("{{ x | tojson }}"),
        r#"{"a": "é \"q\" \n\t\\ </tag> & ü \u0001", "b": [1.0, 0.5, 1e+20, -3, 1e-07, true, null], "c": {}, "d": [], "e": {"y": [{"k": "v"}], "z": 1}}"#
    );
    assert_eq!(
        render("{{ x | tojson(indent=2) }}"),
        "{\n  \"a\": \"é \\\"q\\\" \\n\\t\\\\ </tag> & ü \\u0001\",\n  \"b\": [\n    1.0,\n    0.5,\n    \
         1e+20,\n    -3,\n    1e-07,\n    true,\n    null\n  ],\n  \"c\": {},\n  \"d\": [],\n  \"e\": {\n    \
         \"y\": [\n      {\n        \"k\": \"v\"\n      }\n    ],\n    \"z\": 1\n  }\n}"
    );
    assert_eq!(
        render("{{ x | tojson(sort_keys=true, ensure_ascii=true, separators=[',', ':']) }}"),
        r#"{"a":"\u00e9 \"q\" \n\t\\ </tag> & \u00fc \u0001","b":[1.0,0.5,1e+20,-3,1e-07,true,null],"c":{},"d":[],"e":{"y":[{"k":"v"}],"z":1}}"#
    );
}

#[test]
fn python_methods_loop_controls_and_globals() {
    let src = "{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}\
{{ m.content.strip().upper() }}|{{ m.content.split(',')[-1] }}|{{ m.content.startswith(' a') }};\
{% endfor %}{{ bos_token }}{{ eos_token }}{{ tools is none }}{{ flag }}";
    let tpl = ChatTemplate::new(src, "<s>", "</s>").unwrap();
    let extra = json!({"flag": "!"});
    let out = tpl
        .render_json(
            &json!([{"role": "user", "content": " a,b "}, {"role": "user", "content": "c"},
                    {"role": "user", "content": "never"}]),
            false,
            None,
            extra.as_object(),
        )
        .unwrap();
    assert_eq!(out, "A,B|b |True;C|c|False;<s></s>True!");
    let year = ChatTemplate::new("{{ strftime_now('%Y') }}", "", "")
        .unwrap()
        .render(&[], false)
        .unwrap();
    assert!(year.len() == 4 && year.as_str() >= "2024", "{year}");
}

#[test]
fn raise_exception_gives_its_message() {
    let src = "{% if messages[0]['role'] != 'user' %}\
{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}\
{% endif %}ok";
    let tpl = ChatTemplate::new(src, "", "").unwrap();
    assert_eq!(tpl.render(&msgs(&[("user", "x")]), false).unwrap(), "ok");
    match tpl.render(&msgs(&[("assistant", "x")]), false) {
        Err(TemplateError::Raised(m)) => {
            assert_eq!(
                m,
                "Conversation roles must alternate user/assistant/user/assistant/..."
            )
        }
        other => panic!("expected the raised message, got {other:?}"),
    }
}

#[test]
fn bad_templates_are_errors_not_panics() {
    assert!(matches!(
        ChatTemplate::new("{% if %}", "", ""),
        Err(TemplateError::Syntax(_))
    ));
    assert!(matches!(
        ChatTemplate::new("{% for m in messages %}", "", ""),
        Err(TemplateError::Syntax(_))
    ));
    let tpl = ChatTemplate::new("{{ messages[0].content.no_such_method() }}", "", "").unwrap();
    let e = tpl.render(&msgs(&[("user", "x")]), false).unwrap_err();
    assert!(matches!(e, TemplateError::Render(_)), "{e:?}");
    let tpl = ChatTemplate::new("{{ 1 + messages }}", "", "").unwrap();
    assert!(tpl.render(&[], false).is_err());
    let tpl = ChatTemplate::new("{{ messages }}", "", "").unwrap();
    assert!(tpl
        .render_json(&json!({"role": "user"}), false, None, None)
        .is_err());
}
