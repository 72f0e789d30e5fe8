//! Reasoning smoke runs on the real smollm2 model: served with a chat template that pre-fills
//! `<think>\n` (as the R1 distills' does), its output is reasoning until it closes the tag; served
//! with its own template and the parser forced on, it never opens one, so all is content. Each
//! chat answer is checked against the raw completion of the same prompt tokens split by the
//! parser, and the streamed deltas against the whole answer.

mod serve_support;

use r1_server::{ReasoningParser, ReasoningStream};
use serde_json::{json, Value};
use serve_support::Server;

fn template_path() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../r1-server/tests/data/chatml-think.jinja"
    )
    .to_string()
}

fn messages() -> Value {
    json!([{"role": "user", "content": "Is 17 a prime number? Think first."}])
}

/// Chat (plain and streamed) and the raw completion of the same prompt tokens.
fn run(s: &Server, prefilled: bool) {
    let (_, t) = s.post("/tokenize", &json!({"messages": messages()}));
    let ids = t["tokens"].clone();
    let (_, raw) = s.post(
        "/v1/completions",
        &json!({"prompt": ids, "max_tokens": 24, "temperature": 0, "skip_special_tokens": true}),
    );
    let raw_text = raw["choices"][0]["text"].as_str().unwrap();
    let expect = ReasoningParser::new(prefilled).split(raw_text);

    let req = json!({"messages": messages(), "max_tokens": 24, "temperature": 0});
    let (code, r) = s.post("/v1/chat/completions", &req);
    assert_eq!(code, 200, "{r}");
    let msg = &r["choices"][0]["message"];
    assert_eq!(
        msg["reasoning_content"],
        expect.reasoning.as_str(),
        "raw: {raw_text:?}"
    );
    assert_eq!(msg["content"], expect.content.as_str(), "raw: {raw_text:?}");
    let completion = r["usage"]["completion_tokens"].as_u64().unwrap();
    let reasoning_tokens = r["usage"]["completion_tokens_details"]["reasoning_tokens"]
        .as_u64()
        .unwrap();
    if prefilled {
        assert!(!expect.reasoning.is_empty(), "raw: {raw_text:?}");
        assert!(reasoning_tokens > 0);
        if expect.content.is_empty() {
            assert_eq!(reasoning_tokens, completion);
        }
    } else {
        assert_eq!(reasoning_tokens, 0, "raw: {raw_text:?}");
    }
    assert!(reasoning_tokens <= completion);

    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    sreq["stream_options"] = json!({"include_usage": true});
    let sse = s.stream("/v1/chat/completions", &sreq);
    assert_eq!(sse.text(0, "reasoning_content"), expect.reasoning);
    assert_eq!(sse.text(0, "content"), expect.content);
    let u = &sse.chunks.last().unwrap()["usage"];
    assert_eq!(
        u["completion_tokens_details"]["reasoning_tokens"],
        reasoning_tokens
    );
    // A token's delta carries reasoning or content (both only where `</think>` falls).
    for c in &sse.chunks {
        let d = &c["choices"][0]["delta"];
        if prefilled && d.get("reasoning_content").is_some() {
            assert!(
                d["reasoning_content"]
                    .as_str()
                    .is_some_and(|t| !t.is_empty()),
                "{c}"
            );
        }
    }
    // The same count, derived from the token texts the model produced.
    let mut rs = ReasoningStream::new(ReasoningParser::new(prefilled));
    let (_, lp) = s.post(
        "/v1/completions",
        &json!({"prompt": t["tokens"], "max_tokens": 24, "temperature": 0, "logprobs": 0}),
    );
    for tok in lp["choices"][0]["logprobs"]["tokens"].as_array().unwrap() {
        rs.token(tok.as_str().unwrap());
    }
    assert_eq!(rs.reasoning_tokens() as u64, reasoning_tokens);
}

#[test]
fn prefilled_think_template_gives_reasoning_content() {
    let tpl = template_path();
    let Some(s) = Server::start(&["--chat-template", &tpl]) else {
        return;
    };
    // The log is read on another thread: the ready line may reach it after /ready does.
    serve_support::wait_until(10, "the ready line", || {
        s.log().contains("reasoning parser on")
    });
    run(&s, true);
}

#[test]
fn forced_parser_without_think_gives_plain_content() {
    let Some(s) = Server::start(&["--reasoning-parser", "deepseek-r1"]) else {
        return;
    };
    // The log is read on another thread: the ready line may reach it after /ready does.
    serve_support::wait_until(10, "the ready line", || {
        s.log().contains("reasoning parser on")
    });
    run(&s, false);
}
