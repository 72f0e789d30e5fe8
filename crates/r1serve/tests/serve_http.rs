//! `r1serve serve` over real HTTP on 127.0.0.1 with the real smollm2 model: the OpenAI routes,
//! streaming and not, n > 1, stop strings, logprobs, usage, and every error case.

mod serve_support;

use serde_json::{json, Value};
use serve_support::Server;

const MODEL: &str = "smollm2";

fn chat(content: &str, extra: Value) -> Value {
    let mut b = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": 24,
    });
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

fn usage_is_consistent(u: &Value) {
    let p = u["prompt_tokens"].as_u64().unwrap();
    let c = u["completion_tokens"].as_u64().unwrap();
    assert_eq!(u["total_tokens"].as_u64().unwrap(), p + c, "{u}");
    let hit = u["prompt_cache_hit_tokens"].as_u64().unwrap();
    assert_eq!(
        u["prompt_cache_miss_tokens"].as_u64().unwrap(),
        p - hit,
        "{u}"
    );
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], hit, "{u}");
    assert!(
        u["completion_tokens_details"]["reasoning_tokens"].is_u64(),
        "{u}"
    );
}

#[test]
fn chat_and_completions() {
    let Some(s) = Server::start(&[]) else { return };

    // Plain chat.
    let req = chat("What is the capital of France?", json!({}));
    let (code, r) = s.post("/v1/chat/completions", &req);
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["object"], "chat.completion");
    assert_eq!(r["model"], MODEL);
    assert!(r["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let msg = &r["choices"][0]["message"];
    assert_eq!(msg["role"], "assistant");
    let text = msg["content"].as_str().unwrap().to_string();
    assert!(!text.is_empty());
    assert!(
        msg.get("reasoning_content").is_none(),
        "no reasoning parser for smollm2's template: {msg}"
    );
    let fr = r["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(fr == "length" || fr == "stop", "{fr}");
    usage_is_consistent(&r["usage"]);
    let prompt_tokens = r["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt_tokens > 10);

    // The same request again: its prompt comes from the prefix cache (blocks of 16).
    let (_, r2) = s.post("/v1/chat/completions", &req);
    assert_eq!(r2["choices"][0]["message"]["content"], text.as_str());
    let hit = r2["usage"]["prompt_cache_hit_tokens"].as_u64().unwrap();
    assert!(hit >= 16, "{}", r2["usage"]);
    assert_eq!(hit, r2["usage"]["prompt_tokens_details"]["cached_tokens"]);

    // Streaming: role first, the same greedy text, a finish chunk, usage, [DONE].
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    sreq["stream_options"] = json!({"include_usage": true});
    let sse = s.stream("/v1/chat/completions", &sreq);
    assert!(sse.done && sse.after_done == 0, "{}", sse.raw);
    let first = &sse.chunks[0];
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(sse.text(0, "content"), text);
    assert_eq!(sse.finish_reason(0).as_deref(), Some(fr));
    let last = sse.chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    usage_is_consistent(&last["usage"]);
    assert_eq!(
        last["usage"]["completion_tokens"],
        r["usage"]["completion_tokens"]
    );
    for c in &sse.chunks[..sse.chunks.len() - 1] {
        assert!(c["usage"].is_null(), "usage on a content chunk: {c}");
    }
    // Without include_usage there is no usage at all.
    let mut plain = req.clone();
    plain["stream"] = json!(true);
    let sse2 = s.stream("/v1/chat/completions", &plain);
    assert!(sse2.chunks.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(sse2.text(0, "content"), text);

    // n = 2, sampled with a seed: two choices, each with its own finish.
    let (code, r) = s.post(
        "/v1/chat/completions",
        &chat(
            "Tell me a story.",
            json!({"n": 2, "temperature": 1.0, "seed": 7, "max_tokens": 12, "top_p": 0.9, "top_k": 40}),
        ),
    );
    assert_eq!(code, 200, "{r}");
    let choices = r["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    assert_eq!(
        (choices[0]["index"].as_u64(), choices[1]["index"].as_u64()),
        (Some(0), Some(1))
    );
    usage_is_consistent(&r["usage"]);
    let sse = s.stream(
        "/v1/chat/completions",
        &chat(
            "Tell me a story.",
            json!({"n": 2, "temperature": 1.0, "seed": 7, "max_tokens": 12, "stream": true}),
        ),
    );
    for i in 0..2 {
        let role = sse
            .chunks
            .iter()
            .find(|c| c["choices"][0]["index"] == i)
            .unwrap();
        assert_eq!(role["choices"][0]["delta"]["role"], "assistant");
        assert!(sse.finish_reason(i).is_some(), "choice {i}: {}", sse.raw);
    }

    // Stop strings: cut the greedy text at a word in its middle.
    let word = text
        .split_whitespace()
        .skip(2)
        .find(|w| w.len() >= 3 && text.find(w).unwrap() > 0)
        .expect("a word to stop at")
        .to_string();
    let cut = &text[..text.find(&word).unwrap()];
    for stop in [json!(word), json!(["zzzz-never", word])] {
        let (_, r) = s.post(
            "/v1/chat/completions",
            &chat("What is the capital of France?", json!({"stop": stop})),
        );
        assert_eq!(r["choices"][0]["message"]["content"], cut, "stop {stop}");
        assert_eq!(r["choices"][0]["finish_reason"], "stop");
    }
    let sse = s.stream(
        "/v1/chat/completions",
        &chat(
            "What is the capital of France?",
            json!({"stop": word, "stream": true}),
        ),
    );
    assert_eq!(sse.text(0, "content"), cut);
    assert_eq!(sse.finish_reason(0).as_deref(), Some("stop"));

    // Chat logprobs.
    let (_, r) = s.post(
        "/v1/chat/completions",
        &chat(
            "What is the capital of France?",
            json!({"logprobs": true, "top_logprobs": 3}),
        ),
    );
    let lp = r["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(
        lp.len() as u64,
        r["usage"]["completion_tokens"].as_u64().unwrap()
    );
    let joined: String = lp.iter().map(|t| t["token"].as_str().unwrap()).collect();
    assert_eq!(joined, text);
    for t in lp {
        assert!(t["logprob"].as_f64().unwrap() <= 0.0);
        let top = t["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        // Greedy: the chosen token is the most likely one.
        assert_eq!(top[0]["token"], t["token"], "{t}");
        assert!(t["bytes"].is_array());
    }
    let sse = s.stream(
        "/v1/chat/completions",
        &chat(
            "What is the capital of France?",
            json!({"logprobs": true, "stream": true}),
        ),
    );
    let n_lp: usize = sse
        .chunks
        .iter()
        .filter_map(|c| {
            c["choices"][0]["logprobs"]["content"]
                .as_array()
                .map(Vec::len)
        })
        .sum();
    assert_eq!(n_lp, lp.len());

    // Completions: plain, streamed, logprobs, echo, token-id prompt, a batch of prompts.
    let creq = json!({"model": MODEL, "prompt": "The capital of France is", "max_tokens": 12, "temperature": 0, "logprobs": 2});
    let (code, r) = s.post("/v1/completions", &creq);
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["object"], "text_completion");
    let ctext = r["choices"][0]["text"].as_str().unwrap().to_string();
    let lp = &r["choices"][0]["logprobs"];
    assert_eq!(
        lp["tokens"].as_array().unwrap().len() as u64,
        r["usage"]["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(lp["top_logprobs"][0].as_object().unwrap().len(), 2);
    assert_eq!(lp["text_offset"][0], 0);
    usage_is_consistent(&r["usage"]);
    let mut sc = creq.clone();
    sc["stream"] = json!(true);
    sc["stream_options"] = json!({"include_usage": true});
    let sse = s.stream("/v1/completions", &sc);
    assert!(sse.done);
    assert_eq!(sse.text(0, "text"), ctext);
    assert_eq!(
        sse.chunks.last().unwrap()["usage"]["completion_tokens"],
        r["usage"]["completion_tokens"]
    );
    let mut echo = creq.clone();
    echo["echo"] = json!(true);
    let (_, r) = s.post("/v1/completions", &echo);
    assert_eq!(
        r["choices"][0]["text"],
        format!("The capital of France is{ctext}")
    );
    let (_, t) = s.post("/tokenize", &json!({"prompt": "The capital of France is"}));
    let ids = t["tokens"].clone();
    assert_eq!(
        t["count"].as_u64().unwrap() as usize,
        ids.as_array().unwrap().len()
    );
    let (_, r) = s.post(
        "/v1/completions",
        &json!({"prompt": ids, "max_tokens": 12, "temperature": 0}),
    );
    assert_eq!(r["choices"][0]["text"], ctext.as_str());
    let (_, r) = s.post("/v1/completions", &json!({"prompt": ["The capital of France is", "1, 2, 3,"], "max_tokens": 4, "n": 2, "temperature": 0}));
    let choices = r["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    assert_eq!(choices[0]["text"], choices[1]["text"]);
    assert_eq!(choices[2]["text"], choices[3]["text"]);
    assert!(ctext.starts_with(choices[0]["text"].as_str().unwrap()));

    // Models, health, readiness, detokenize.
    let (code, m) = s.get("/v1/models");
    assert_eq!(code, 200);
    assert_eq!(m["object"], "list");
    assert_eq!(m["data"][0]["id"], MODEL);
    assert_eq!(m["data"][0]["object"], "model");
    assert_eq!(s.get("/v1/models/smollm2").0, 200);
    assert_eq!(s.get("/health"), (200, json!({"status": "ok"})));
    assert_eq!(s.get("/ready"), (200, json!({"status": "ready"})));
    // Request ids: a sane client id is echoed, otherwise one is generated.
    let r = ureq::get(&s.url("/health"))
        .set("x-request-id", "client-id-42")
        .call()
        .unwrap();
    assert_eq!(r.header("x-request-id"), Some("client-id-42"));
    let r = ureq::get(&s.url("/health"))
        .set("x-request-id", &"x".repeat(500))
        .call()
        .unwrap();
    let generated = r.header("x-request-id").unwrap().to_string();
    assert!(generated.starts_with("req-"), "{generated}");
    let (_, d) = s.post("/detokenize", &json!({"tokens": ids}));
    assert_eq!(d["prompt"], "The capital of France is");
    let (_, t) = s.post(
        "/tokenize",
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    );
    assert!(t["count"].as_u64().unwrap() > 3);
}

fn assert_error(r: &(u16, Value), code: u16, param: Option<&str>, contains: &[&str]) {
    let (c, body) = r;
    assert_eq!(*c, code, "{body}");
    let e = &body["error"];
    assert!(e["message"].is_string(), "{body}");
    assert!(e["type"].is_string(), "{body}");
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "{body}"
    );
    if let Some(p) = param {
        assert_eq!(e["param"], p, "{body}");
    }
    let msg = e["message"].as_str().unwrap();
    for w in contains {
        assert!(msg.contains(w), "`{w}` not in: {msg}");
    }
}

#[test]
fn errors() {
    let Some(s) = Server::start(&["--max-model-len", "256", "--max-num-seqs", "4"]) else {
        return;
    };
    let post = |body: &str| {
        let (c, ct, b) = s.post_raw("/v1/chat/completions", body);
        assert!(ct.starts_with("application/json"), "{ct}: {b}");
        (c, serde_json::from_str::<Value>(&b).unwrap())
    };
    // Malformed JSON.
    assert_error(
        &post(r#"{"model": "smollm2", "messages": ["#),
        400,
        None,
        &["JSON"],
    );
    assert_error(&post("not json"), 400, None, &["JSON"]);
    // Wrong types name the field.
    let msgs = r#""messages":[{"role":"user","content":"hi"}]"#;
    assert_error(
        &post(&format!(r#"{{{msgs},"temperature":"hot"}}"#)),
        400,
        Some("temperature"),
        &["temperature"],
    );
    assert_error(
        &post(&format!(r#"{{{msgs},"max_tokens":-1}}"#)),
        400,
        Some("max_tokens"),
        &["max_tokens"],
    );
    assert_error(
        &post(&format!(r#"{{{msgs},"stop":5}}"#)),
        400,
        Some("stop"),
        &["stop"],
    );
    assert_error(
        &post(r#"{"messages":[{"role":"user","content":5}]}"#),
        400,
        Some("messages[0].content"),
        &["messages[0].content"],
    );
    assert_error(
        &post(r#"{"model":"smollm2"}"#),
        400,
        Some("messages"),
        &["messages"],
    );
    // Unknown model.
    let r = post(&format!(r#"{{"model":"gpt-4",{msgs}}}"#));
    assert_error(&r, 404, Some("model"), &["gpt-4"]);
    assert_eq!(r.1["error"]["code"], "model_not_found");
    // Out-of-range values.
    assert_error(
        &post(&format!(r#"{{{msgs},"temperature":5}}"#)),
        400,
        Some("temperature"),
        &["temperature"],
    );
    assert_error(
        &post(&format!(r#"{{{msgs},"top_p":0}}"#)),
        400,
        Some("top_p"),
        &[],
    );
    assert_error(&post(&format!(r#"{{{msgs},"n":0}}"#)), 400, Some("n"), &[]);
    assert_error(
        &post(&format!(r#"{{{msgs},"logprobs":true,"top_logprobs":50}}"#)),
        400,
        Some("top_logprobs"),
        &[],
    );
    assert_error(
        &post(&format!(r#"{{{msgs},"top_logprobs":2}}"#)),
        400,
        Some("logprobs"),
        &[],
    );
    assert_error(
        &post(&format!(r#"{{{msgs},"logit_bias":{{"abc":1}}}}"#)),
        400,
        Some("logit_bias"),
        &[],
    );
    assert_error(
        &post(&format!(r#"{{{msgs},"logit_bias":{{"5":500}}}}"#)),
        400,
        Some("logit_bias"),
        &[],
    );
    assert_error(
        &post(r#"{"messages":[{"role":"wizard","content":"hi"}]}"#),
        400,
        Some("messages[0].role"),
        &["wizard"],
    );
    assert_error(&post(r#"{"messages":[]}"#), 400, Some("messages"), &[]);
    assert_error(
        &post(
            r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
        ),
        400,
        Some("messages[0].content[0]"),
        &["image_url"],
    );
    // Prompt + max_tokens over the context: both numbers in the message.
    let (_, t) = s.post(
        "/tokenize",
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
    );
    let plen = t["count"].as_u64().unwrap();
    let r = post(&format!(r#"{{{msgs},"max_tokens":300}}"#));
    assert_error(
        &r,
        400,
        Some("messages"),
        &[
            "256",
            "300",
            &format!("{plen} in the messages"),
            &(plen + 300).to_string(),
        ],
    );
    assert_eq!(r.1["error"]["code"], "context_length_exceeded");
    let long = "word ".repeat(400);
    let r = post(&json!({"messages": [{"role": "user", "content": long}]}).to_string());
    assert_error(&r, 400, None, &["256"]);
    let r = s.post(
        "/v1/completions",
        &json!({"prompt": "hello", "max_tokens": 1000}),
    );
    assert_error(&r, 400, Some("prompt"), &["256", "1000"]);
    // Engine rejection: more choices than the engine runs at once (plain and streaming).
    let r = post(&format!(r#"{{{msgs},"n":8,"max_tokens":4}}"#));
    assert_error(&r, 400, None, &["8"]);
    assert!(!r.1["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("request "));
    let r = post(&format!(r#"{{{msgs},"n":8,"max_tokens":4,"stream":true}}"#));
    assert_error(&r, 400, None, &["8"]);
    // Completions errors.
    let r = s.post("/v1/completions", &json!({"prompt": 3}));
    assert_error(&r, 400, Some("prompt"), &[]);
    let r = s.post("/v1/completions", &json!({"prompt": [1, 999999999]}));
    assert_error(&r, 400, Some("prompt"), &["999999999"]);
    let r = s.post("/v1/completions", &json!({"prompt": "x", "logprobs": 50}));
    assert_error(&r, 400, Some("logprobs"), &[]);
    let r = s.post("/v1/completions", &json!({"model": "nope", "prompt": "x"}));
    assert_error(&r, 404, Some("model"), &[]);
    // Unknown route, unknown model card, detokenize out of range.
    assert_error(&s.get("/v1/nothing"), 404, None, &["/v1/nothing"]);
    assert_error(&s.get("/v1/models/other"), 404, Some("model"), &[]);
    let r = s.post("/detokenize", &json!({"tokens": [999999999]}));
    assert_error(&r, 400, Some("tokens"), &[]);
    // Unknown fields are ignored; the server is still healthy after all that.
    let (c, r) = s.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "frobnicate": {"x": 1}, "user": "u1"}),
    );
    assert_eq!(c, 200, "{r}");
    assert_eq!(s.get("/health").0, 200);
}
