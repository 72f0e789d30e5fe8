//! Chat-template rendering with the templates r1serve ships tests for (SmolLM2, Qwen2.5,
//! DeepSeek-R1-Distill): arbitrary request messages (JSON) must render or give a template
//! error, never a panic or a hang.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use r1_engine::chat_template::ChatTemplate;

fn templates() -> &'static [ChatTemplate] {
    static T: OnceLock<Vec<ChatTemplate>> = OnceLock::new();
    T.get_or_init(|| {
        [
            include_str!("../../crates/r1-engine/tests/data/smollm2-chat_template.jinja"),
            include_str!("../../crates/r1-engine/tests/data/qwen05-chat_template.jinja"),
            include_str!("../../crates/r1-engine/tests/data/deepseek-r1-distill.jinja"),
        ]
        .iter()
        .map(|src| ChatTemplate::new(src, "<s>", "</s>").expect("shipped template compiles"))
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let t = &templates()[which as usize % templates().len()];
    // Either a bare message list or {"messages", "tools", "kwargs"}.
    let (messages, tools, kwargs) = match &v {
        serde_json::Value::Object(o) => (
            o.get("messages").cloned().unwrap_or_default(),
            o.get("tools").cloned(),
            o.get("kwargs").and_then(|k| k.as_object()).cloned(),
        ),
        other => (other.clone(), None, None),
    };
    let _ = t.render_json(&messages, which & 0x80 != 0, tools.as_ref(), kwargs.as_ref());
});
