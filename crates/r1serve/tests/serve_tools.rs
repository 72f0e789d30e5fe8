//! Tool calling and structured output over real HTTP on qwen05 (Qwen2.5-Coder-0.5B-Instruct,
//! whose template takes tools; its calls are parsed with the hermes parser): forced calls
//! (named and `required`, streamed and not), `auto`, a call → `tool` message → answer round
//! trip, `response_format`/`guided_*` output that obeys its schema, and the 400s.

mod serve_support;

use serde_json::{json, Value};
use serve_support::{Server, Sse};

const MODEL: &str = "qwen05";

fn start() -> Option<Server> {
    Server::start_model("qwen05.gguf", &["--max-model-len", "4096"])
}

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city",
            "parameters": {"type": "object",
                "properties": {
                    "city": {"type": "string", "description": "The city, e.g. Paris"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                "required": ["city"]}}},
        {"type": "function", "function": {
            "name": "get_time",
            "description": "The local time in a city",
            "parameters": {"type": "object",
                "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    ])
}

fn chat(messages: Value, extra: Value) -> Value {
    let mut b = json!({
        "model": MODEL,
        "messages": messages,
        "temperature": 0,
        "max_tokens": 96,
    });
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

fn ask_weather() -> Value {
    json!([{"role": "user", "content": "What is the weather like in Paris today?"}])
}

/// The stub compiler's answer before the grammar engine is built in: such tests skip.
fn engine_missing(code: u16, body: &Value) -> bool {
    let missing = code == 400
        && body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not built into this binary"));
    if missing {
        eprintln!("SKIP: constrained decoding is not built in yet: {body}");
    }
    missing
}

/// The calls of a streamed answer put together, checking OpenAI's chunk shapes on the way:
/// a call's first chunk has id, type, name and `arguments: ""`; later ones only fragments.
fn streamed_calls(sse: &Sse) -> (Vec<(String, String, String)>, Option<String>) {
    let mut calls: Vec<(String, String, String)> = Vec::new();
    let mut finish = None;
    for c in &sse.chunks {
        for ch in c["choices"].as_array().into_iter().flatten() {
            if let Some(f) = ch["finish_reason"].as_str() {
                finish = Some(f.to_string());
            }
            for tc in ch["delta"]["tool_calls"].as_array().into_iter().flatten() {
                let i = tc["index"].as_u64().unwrap() as usize;
                if i == calls.len() {
                    let id = tc["id"].as_str().expect("first chunk has the id");
                    assert!(id.starts_with("call_"), "{tc}");
                    assert_eq!(tc["type"], "function", "{tc}");
                    assert_eq!(tc["function"]["arguments"], "", "{tc}");
                    calls.push((
                        id.to_string(),
                        tc["function"]["name"].as_str().unwrap().to_string(),
                        String::new(),
                    ));
                } else {
                    assert!(i < calls.len(), "index {i} skips ahead: {tc}");
                    assert!(tc.get("id").is_none(), "{tc}");
                    calls[i].2 += tc["function"]["arguments"].as_str().unwrap();
                }
            }
        }
    }
    (calls, finish)
}

fn assert_weather_args(args: &str) -> Value {
    let v: Value = serde_json::from_str(args).unwrap_or_else(|e| panic!("{e}: {args}"));
    assert!(v["city"].is_string(), "{v}");
    if let Some(u) = v.get("unit") {
        assert!(u == "celsius" || u == "fahrenheit", "{v}");
    }
    v
}

#[test]
fn bad_requests_name_the_field() {
    let Some(s) = start() else { return };
    let cases = [
        (
            json!({"response_format": {"type": "yaml"}}),
            "response_format.type",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
            "response_format.json_schema.schema",
        ),
        (
            json!({"response_format": {"type": "json_object"}, "guided_regex": "[0-9]+"}),
            "response_format",
        ),
        (json!({"guided_choice": "yes"}), "guided_choice"),
        (
            json!({"tools": weather_tools(),
                   "tool_choice": {"type": "function", "function": {"name": "book_flight"}}}),
            "tool_choice.function.name",
        ),
        (
            json!({"tools": [{"type": "code_interpreter"}]}),
            "tools[0].type",
        ),
        (
            json!({"tools": weather_tools(), "tool_choice": "sometimes"}),
            "tool_choice",
        ),
        (
            json!({"tools": weather_tools(), "tool_choice": "required",
                   "response_format": {"type": "json_object"}}),
            "response_format",
        ),
        (
            json!({"messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{not json"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]}),
            "messages[1].tool_calls[0].function.arguments",
        ),
    ];
    for (extra, param) in cases {
        let (code, r) = s.post("/v1/chat/completions", &chat(ask_weather(), extra.clone()));
        assert_eq!(code, 400, "{extra}: {r}");
        assert_eq!(r["error"]["type"], "invalid_request_error", "{r}");
        assert_eq!(r["error"]["param"], param, "{extra}: {r}");
    }
    let (code, r) = s.post(
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "x", "max_tokens": 4,
                "response_format": {"type": "json_schema", "json_schema": {}}}),
    );
    assert_eq!(code, 400, "{r}");
    assert_eq!(r["error"]["param"], "response_format.json_schema.schema");
}

#[test]
fn forced_calls_streamed_and_not() {
    let Some(s) = start() else { return };
    for choice in [
        json!({"type": "function", "function": {"name": "get_weather"}}),
        json!("required"),
    ] {
        let req = chat(
            ask_weather(),
            json!({"tools": weather_tools(), "tool_choice": choice, "parallel_tool_calls": false}),
        );
        let (code, r) = s.post("/v1/chat/completions", &req);
        if engine_missing(code, &r) {
            return;
        }
        assert_eq!(code, 200, "{r}");
        let ch = &r["choices"][0];
        assert_eq!(ch["finish_reason"], "tool_calls", "{r}");
        assert!(ch["message"]["content"].is_null(), "{r}");
        let calls = ch["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 1, "{r}");
        assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
        assert_eq!(calls[0]["type"], "function");
        assert_eq!(calls[0]["function"]["name"], "get_weather", "{r}");
        let args = calls[0]["function"]["arguments"].as_str().unwrap();
        assert_weather_args(args);

        let mut sreq = req.clone();
        sreq["stream"] = json!(true);
        let sse = s.stream("/v1/chat/completions", &sreq);
        assert!(sse.done);
        let (scalls, finish) = streamed_calls(&sse);
        assert_eq!(finish.as_deref(), Some("tool_calls"), "{}", sse.raw);
        assert_eq!(scalls.len(), 1, "{}", sse.raw);
        assert_eq!(scalls[0].1, "get_weather");
        // Greedy: the stream carries the same call, in pieces.
        assert_eq!(scalls[0].2, args, "{}", sse.raw);
        assert_eq!(sse.text(0, "content"), "", "{}", sse.raw);
    }
}

#[test]
fn auto_parses_what_the_model_writes() {
    let Some(s) = start() else { return };
    let req = chat(
        ask_weather(),
        json!({"tools": weather_tools(), "tool_choice": "auto"}),
    );
    let (code, r) = s.post("/v1/chat/completions", &req);
    assert_eq!(code, 200, "{r}");
    let ch = &r["choices"][0];
    let content = ch["message"]["content"].as_str().unwrap_or("");
    // Either a parsed call or plain text: never a call left as raw text.
    assert!(!content.contains("<tool_call>"), "{r}");
    match ch["message"]["tool_calls"].as_array() {
        Some(calls) => {
            assert_eq!(ch["finish_reason"], "tool_calls", "{r}");
            assert_eq!(calls[0]["function"]["name"], "get_weather", "{r}");
            assert_weather_args(calls[0]["function"]["arguments"].as_str().unwrap());
        }
        None => eprintln!("note: qwen05 answered without a call: {content}"),
    }
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    let sse = s.stream("/v1/chat/completions", &sreq);
    let (calls, finish) = streamed_calls(&sse);
    let streamed_content = sse.text(0, "content");
    assert!(!streamed_content.contains("<tool_call>"), "{}", sse.raw);
    match r["choices"][0]["message"]["tool_calls"].as_array() {
        Some(whole) => {
            assert_eq!(finish.as_deref(), Some("tool_calls"));
            assert_eq!(calls.len(), whole.len());
            for (c, w) in calls.iter().zip(whole) {
                assert_eq!(c.1, w["function"]["name"].as_str().unwrap());
                assert_eq!(c.2, w["function"]["arguments"].as_str().unwrap());
            }
        }
        None => assert_eq!(streamed_content, content),
    }
}

#[test]
fn tool_round_trip() {
    let Some(s) = start() else { return };
    let (code, r) = s.post(
        "/v1/chat/completions",
        &chat(
            ask_weather(),
            json!({"tools": weather_tools(),
                   "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
        ),
    );
    if engine_missing(code, &r) {
        return;
    }
    assert_eq!(code, 200, "{r}");
    let msg = r["choices"][0]["message"].clone();
    let call = msg["tool_calls"][0].clone();
    assert!(call["id"].is_string(), "{r}");
    // The assistant message goes back as the SDK sends it (content null, arguments a JSON
    // string), then the tool's answer.
    let messages = json!([
        {"role": "user", "content": "What is the weather like in Paris today?"},
        msg,
        {"role": "tool", "tool_call_id": call["id"], "content": "Sunny, 21 degrees celsius."}
    ]);
    // qwen05 is too small to answer freely after a tool result (it repeats calls as JSON):
    // a regex fixes the answer's shape, and the model fills it from the tool message, which
    // shows the message reached it through the template.
    for stream in [false, true] {
        let req = chat(
            messages.clone(),
            json!({"tools": weather_tools(), "tool_choice": "none", "stream": stream,
                   "guided_regex": "It is (sunny|cloudy|rainy) and [0-9]+ degrees in Paris\\."}),
        );
        let answer = if stream {
            let sse = s.stream("/v1/chat/completions", &req);
            let (calls, finish) = streamed_calls(&sse);
            assert!(calls.is_empty(), "{}", sse.raw);
            assert_eq!(finish.as_deref(), Some("stop"), "{}", sse.raw);
            sse.text(0, "content")
        } else {
            let (code, r) = s.post("/v1/chat/completions", &req);
            assert_eq!(code, 200, "{r}");
            assert_eq!(r["choices"][0]["finish_reason"], "stop", "{r}");
            assert!(
                r["choices"][0]["message"].get("tool_calls").is_none(),
                "{r}"
            );
            r["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(answer, "It is sunny and 21 degrees in Paris.");
    }
}

#[test]
fn structured_output_obeys() {
    let Some(s) = start() else { return };
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "languages": {"type": "array", "items": {"type": "string"},
                          "minItems": 1, "maxItems": 3}
        },
        "required": ["name", "age", "languages"],
        "additionalProperties": false
    });
    let req = chat(
        json!([{"role": "user", "content": "Describe a fictional programmer as JSON."}]),
        json!({"max_tokens": 120, "response_format": {"type": "json_schema",
            "json_schema": {"name": "person", "schema": schema, "strict": true}}}),
    );
    let (code, r) = s.post("/v1/chat/completions", &req);
    if engine_missing(code, &r) {
        return;
    }
    assert_eq!(code, 200, "{r}");
    let text = r["choices"][0]["message"]["content"].as_str().unwrap();
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(v["name"].is_string(), "{v}");
    let age = v["age"].as_i64().unwrap();
    assert!((0..=150).contains(&age), "{v}");
    let langs = v["languages"].as_array().unwrap();
    assert!((1..=3).contains(&langs.len()), "{v}");
    assert_eq!(v.as_object().unwrap().len(), 3, "{v}");

    let (code, r) = s.post(
        "/v1/chat/completions",
        &chat(
            json!([{"role": "user", "content": "Pick a number."}]),
            json!({"guided_regex": "[0-9]{3}", "max_tokens": 8}),
        ),
    );
    assert_eq!(code, 200, "{r}");
    let text = r["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        text.len() == 3 && text.bytes().all(|b| b.is_ascii_digit()),
        "{text:?}"
    );

    let (code, r) = s.post(
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "Is the sky blue? Answer:", "max_tokens": 4,
                "temperature": 0, "guided_choice": ["yes", "no"]}),
    );
    assert_eq!(code, 200, "{r}");
    let text = r["choices"][0]["text"].as_str().unwrap();
    assert!(text == "yes" || text == "no", "{text:?}");
}
