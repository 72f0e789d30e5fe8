//! Tool conversations rendered by r1serve's chat templates equal what HF transformers renders
//! (tests/data/tool-templates.json, made by tests/data/make_tool_templates.py): the `tools`
//! in the Jinja context, assistant `tool_calls` (their JSON-string arguments prepared the way
//! each template reads them) and `tool` messages, for Qwen2.5's template (qwen05) and
//! DeepSeek-R1's.

use r1_engine::chat_template::ChatTemplate;
use serde_json::Value;

fn data(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn fixtures() -> std::path::PathBuf {
    std::env::var_os("R1SERVE_FIXTURES")
        .map(Into::into)
        .unwrap_or_else(|| {
            format!("{}/../../../shared/fixtures", env!("CARGO_MANIFEST_DIR")).into()
        })
}

#[test]
fn tool_conversations_render_as_hf_does() {
    let reference: Value = serde_json::from_str(&data("tool-templates.json")).unwrap();
    let qwen_path = fixtures().join("qwen05-tokenizer/chat_template.jinja");
    let qwen = std::fs::read_to_string(&qwen_path).ok();
    if qwen.is_none() {
        eprintln!(
            "SKIP: qwen05 cases: {} is absent (set R1SERVE_FIXTURES to the shared fixtures)",
            qwen_path.display()
        );
    }
    let r1 = data("deepseek-r1-distill.jinja");
    let mut checked = 0;
    for case in reference["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let src = match case["template"].as_str().unwrap() {
            "qwen05" => match &qwen {
                Some(s) => s.as_str(),
                None => continue,
            },
            _ => r1.as_str(),
        };
        let t = ChatTemplate::new(
            src,
            case["bos_token"].as_str().unwrap(),
            case["eos_token"].as_str().unwrap(),
        )
        .unwrap();
        let mut msgs = case["messages"].clone();
        r1_server::tools::prepare_messages(&mut msgs, Some(src)).unwrap();
        assert_eq!(
            msgs, case["hf_messages"],
            "{name}: messages as the template gets them"
        );
        let got = t
            .render_json(&msgs, true, Some(&case["tools"]), None)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, case["rendered"].as_str().unwrap(), "{name}");
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} cases ran");
}

/// The R1 format end to end without a model: R1's template renders an assistant tool call,
/// and the deepseek_v3 parser reads the rendered call back.
#[test]
fn r1_template_output_parses_back() {
    let reference: Value = serde_json::from_str(&data("tool-templates.json")).unwrap();
    let case = reference["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "deepseek-r1-distill/parallel_round_trip")
        .unwrap();
    let rendered = case["rendered"].as_str().unwrap();
    let start = rendered.find("<｜tool▁calls▁begin｜>").unwrap();
    let end = rendered.find("<｜tool▁calls▁end｜>").unwrap() + "<｜tool▁calls▁end｜>".len();
    let kind =
        r1_server::tools::ToolParserKind::detect(&data("deepseek-r1-distill.jinja")).unwrap();
    let out = r1_server::tools::parse(kind, &rendered[start..end]);
    let calls: Vec<(&str, Value)> = out
        .calls
        .iter()
        .map(|c| (c.name.as_str(), serde_json::from_str(&c.arguments).unwrap()))
        .collect();
    let sent: Vec<(&str, Value)> = case["messages"][2]["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["function"]["name"].as_str().unwrap(),
                serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    assert_eq!(calls, sent);
}
