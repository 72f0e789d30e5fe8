//! Constrained decoding through the engine on a real model (qwen05): every grammar kind's
//! output is what it must be; n = 2; the `after` phase; preemption; free requests beside
//! constrained ones are unchanged (batch invariance); compile and mid-decode errors.

use std::sync::{Arc, OnceLock};

use serde_json::{json, Value};

use r1_engine::block_pool::KvCacheMem;
use r1_engine::constraint::{ConstraintCompiler, ConstraintError, ConstraintSpec, Grammar};
use r1_engine::engine::{
    spawn_engine, EngineConfig, EngineError, EngineEvent, EngineHandle, Finish, GenerateRequest,
    RequestStream,
};
use r1_engine::tokenizer::Tokenizer;
use r1_model::testdata;

struct Loaded {
    model: Arc<dyn r1_model::Model>,
    tok: Arc<Tokenizer>,
    compiler: ConstraintCompiler,
}

fn load() -> Option<&'static Loaded> {
    static L: OnceLock<Option<Loaded>> = OnceLock::new();
    L.get_or_init(|| {
        let path = testdata::model("qwen05.gguf")?;
        let (file, model) = r1_model::load_gguf(&path, 2, &mut |_, _| {}).unwrap();
        let tok = Tokenizer::from_gguf(&file).unwrap();
        let compiler = ConstraintCompiler::new(&tok).unwrap();
        Some(Loaded {
            model: Arc::from(model),
            tok: Arc::new(tok),
            compiler,
        })
    })
    .as_ref()
}

fn engine(l: &Loaded, f: impl FnOnce(&mut EngineConfig)) -> EngineHandle {
    let mut cfg = EngineConfig {
        kv_cache_mem: KvCacheMem::Bytes(64 << 20),
        ..Default::default()
    };
    f(&mut cfg);
    spawn_engine(l.model.clone(), l.tok.clone(), cfg).unwrap().0
}

/// A chat prompt in Qwen's format.
fn chat(l: &Loaded, user: &str) -> Vec<u32> {
    let text = format!(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    );
    l.tok.encode(&text, false, true).unwrap()
}

fn constrained(l: &Loaded, prompt: Vec<u32>, max: usize, g: Grammar) -> GenerateRequest {
    let mut r = GenerateRequest::new(prompt, max);
    r.constraint = Some(
        l.compiler
            .compile(&ConstraintSpec {
                grammar: g,
                after: None,
            })
            .unwrap(),
    );
    r
}

#[derive(Debug, Default, Clone, PartialEq)]
struct Output {
    tokens: Vec<u32>,
    text: String,
    finish: Option<Finish>,
}

/// Every choice's output, or the request's error.
fn collect_n(mut s: RequestStream, n: usize) -> Result<Vec<Output>, EngineError> {
    let mut outs = vec![Output::default(); n];
    let mut done = 0;
    while let Some(ev) = s.blocking_recv() {
        match ev {
            EngineEvent::Admitted { .. } => {}
            EngineEvent::Token {
                index, token, text, ..
            } => {
                outs[index as usize].tokens.push(token);
                outs[index as usize].text.push_str(&text);
            }
            EngineEvent::Finished {
                index,
                reason,
                text,
                ..
            } => {
                outs[index as usize].text.push_str(&text);
                outs[index as usize].finish = Some(reason);
                done += 1;
                if done == n {
                    break;
                }
            }
            EngineEvent::Error(e) => return Err(e),
        }
    }
    Ok(outs)
}

fn collect(s: RequestStream) -> Output {
    collect_n(s, 1).unwrap().pop().unwrap()
}

/// A small JSON-schema checker for what the tests' schemas use (enough to catch a grammar
/// that lets through what it should not).
fn check(schema: &Value, root: &Value, v: &Value, path: &str) -> Result<(), String> {
    let fail = |m: String| Err(format!("{path}: {m} (value {v})"));
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/$defs/");
        return check(&root["$defs"][name], root, v, path);
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        if any.iter().any(|s| check(s, root, v, path).is_ok()) {
            return Ok(());
        }
        return fail("matches no anyOf branch".into());
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            return fail("not in enum".into());
        }
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let ok_type = match ty {
        None => true,
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some("null") => v.is_null(),
        Some(t) => return fail(format!("unknown type {t}")),
    };
    if !ok_type {
        return fail(format!("not of type {}", ty.unwrap_or("")));
    }
    if let Some(n) = v.as_f64() {
        if schema
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n < m)
        {
            return fail("below minimum".into());
        }
        if schema
            .get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n > m)
        {
            return fail("above maximum".into());
        }
    }
    if let Some(s) = v.as_str() {
        let len = s.chars().count() as u64;
        if schema
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| len < m)
            || schema
                .get("maxLength")
                .and_then(Value::as_u64)
                .is_some_and(|m| len > m)
        {
            return fail("length out of bounds".into());
        }
        // The one pattern the tests use: ^[A-Z]{2}-[0-9]{3}$.
        if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
            assert_eq!(p, "^[A-Z]{2}-[0-9]{3}$");
            let b = s.as_bytes();
            let ok = b.len() == 6
                && b[..2].iter().all(u8::is_ascii_uppercase)
                && b[2] == b'-'
                && b[3..].iter().all(u8::is_ascii_digit);
            if !ok {
                return fail("does not match the pattern".into());
            }
        }
    }
    if let Some(items) = v.as_array() {
        let n = items.len() as u64;
        if schema
            .get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| n < m)
            || schema
                .get("maxItems")
                .and_then(Value::as_u64)
                .is_some_and(|m| n > m)
        {
            return fail(format!("{n} items is out of bounds"));
        }
        if let Some(is) = schema.get("items") {
            for (i, it) in items.iter().enumerate() {
                check(is, root, it, &format!("{path}[{i}]"))?;
            }
        }
    }
    if let Some(obj) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !obj.contains_key(req.as_str().unwrap()) {
                return fail(format!("missing required {req}"));
            }
        }
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(s, root, val, &format!("{path}.{k}"))?,
                None if schema.get("additionalProperties") == Some(&json!(false)) => {
                    return fail(format!("unexpected property {k}"))
                }
                None => {}
            }
        }
    }
    Ok(())
}

fn order_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
            "customer": {"$ref": "#/$defs/person"},
            "items": {
                "type": "array",
                "minItems": 2,
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {
                        "sku": {"type": "string", "maxLength": 12},
                        "qty": {"type": "integer", "minimum": 1, "maximum": 9}
                    },
                    "required": ["sku", "qty"],
                    "additionalProperties": false
                }
            },
            "status": {"enum": ["new", "paid", "shipped"]},
            "note": {"anyOf": [{"type": "string", "maxLength": 20}, {"type": "null"}]}
        },
        "required": ["id", "customer", "items", "status", "note"],
        "additionalProperties": false,
        "$defs": {
            "person": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 16},
                    "age": {"type": "integer", "minimum": 18, "maximum": 99}
                },
                "required": ["name", "age"],
                "additionalProperties": false
            }
        }
    })
}

const ORDER_PROMPT: &str = "Write a JSON order for Jane (31) buying two books and a pen.";

#[test]
fn json_schema_output_parses_and_satisfies_the_schema() {
    let Some(l) = load() else { return };
    let e = engine(l, |_| {});
    let schema = order_schema();
    let r = constrained(
        l,
        chat(l, ORDER_PROMPT),
        160,
        Grammar::JsonSchema(schema.clone()),
    );
    let o = collect(e.submit(r).unwrap());
    eprintln!("{}", o.text);
    assert_eq!(o.finish, Some(Finish::Stop), "{}", o.text);
    let v: Value = serde_json::from_str(o.text.trim_start()).unwrap();
    check(&schema, &schema, &v, "$").unwrap();
    let stats = e.stats();
    assert!(stats.constraint_masks >= o.tokens.len() as u64 - 1);
    eprintln!(
        "{} masks, {:.1} us each on the worker, {:.1} us per mask waited for after the forward",
        stats.constraint_masks,
        stats.constraint_mask_secs * 1e6 / stats.constraint_masks as f64,
        stats.constraint_wait_secs * 1e6 / stats.constraint_masks as f64
    );

    // json_object: any object.
    let r = constrained(
        l,
        chat(l, "Describe a cat as JSON."),
        60,
        Grammar::JsonSchema(json!({"type": "object"})),
    );
    let o = collect(e.submit(r).unwrap());
    if o.finish == Some(Finish::Stop) {
        let v: Value = serde_json::from_str(o.text.trim_start()).unwrap();
        assert!(v.is_object(), "{}", o.text);
    } else {
        // Cut by max_tokens: still an object's beginning.
        assert!(o.text.trim_start().starts_with('{'), "{}", o.text);
    }
}

#[test]
fn regex_choice_lark_and_gbnf_outputs() {
    let Some(l) = load() else { return };
    let e = engine(l, |_| {});
    let run = |user: &str, g: Grammar| {
        let o = collect(e.submit(constrained(l, chat(l, user), 40, g)).unwrap());
        assert_eq!(o.finish, Some(Finish::Stop), "{o:?}");
        o.text
    };
    let t = run(
        "What is the phone number of the pizza place?",
        Grammar::Regex(r"\(\d{3}\) \d{3}-\d{4}".into()),
    );
    let b = t.as_bytes();
    assert!(
        b.len() == 14 && b[0] == b'(' && b[4] == b')' && b[9] == b'-',
        "{t:?}"
    );
    let choices = vec![
        "positive".to_string(),
        "negative".to_string(),
        "neutral".to_string(),
    ];
    let t = run(
        "Sentiment of: 'I love this phone, best purchase ever!'",
        Grammar::Choice(choices.clone()),
    );
    assert!(choices.contains(&t), "{t:?}");
    let t = run(
        "What is 12 times 12?",
        Grammar::Lark("start: \"The answer is \" NUMBER \".\"\nNUMBER: /[0-9]{1,4}/\n".into()),
    );
    assert!(t.starts_with("The answer is ") && t.ends_with('.'), "{t:?}");
    let num = &t["The answer is ".len()..t.len() - 1];
    assert!(num.parse::<u32>().is_ok(), "{t:?}");
    // GBNF: a capitalised word and a two-digit number.
    let t = run(
        "Name a city and its rank, like 'Paris 01'.",
        Grammar::Gbnf("root ::= [A-Z] [a-z]{1,12} \" \" [0-9]{2}\n".into()),
    );
    let (word, num) = t.split_once(' ').unwrap();
    assert!(word.chars().next().unwrap().is_ascii_uppercase(), "{t:?}");
    assert!(
        word.chars().skip(1).all(|c| c.is_ascii_lowercase()),
        "{t:?}"
    );
    assert!(
        num.len() == 2 && num.bytes().all(|c| c.is_ascii_digit()),
        "{t:?}"
    );
    // A Lark grammar ending in a control token: the model must write it, and it ends the
    // sequence as the end-of-turn it is (stop ids are not part of the output).
    let o = collect(
        e.submit(constrained(
            l,
            chat(l, "Say yes."),
            10,
            Grammar::Lark("start: (\"yes\" | \"Yes\") /[.!]?/ <|im_end|>\n".into()),
        ))
        .unwrap(),
    );
    assert_eq!(o.finish, Some(Finish::Stop));
    assert!(
        ["yes", "Yes", "yes.", "Yes.", "yes!", "Yes!"].contains(&o.text.as_str()),
        "{o:?}"
    );
}

#[test]
fn n2_each_choice_has_its_own_matcher() {
    let Some(l) = load() else { return };
    let e = engine(l, |_| {});
    let schema = json!({
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green", "blue", "yellow"]},
            "count": {"type": "integer", "minimum": 0, "maximum": 99}
        },
        "required": ["color", "count"],
        "additionalProperties": false
    });
    let mut r = constrained(
        l,
        chat(l, "Pick a color and a count, as JSON."),
        40,
        Grammar::JsonSchema(schema.clone()),
    );
    r.n = 2;
    r.params.temperature = 1.0;
    r.params.seed = Some(11);
    let outs = collect_n(e.submit(r).unwrap(), 2).unwrap();
    for o in &outs {
        assert_eq!(o.finish, Some(Finish::Stop), "{o:?}");
        let v: Value = serde_json::from_str(o.text.trim_start()).unwrap();
        check(&schema, &schema, &v, "$").unwrap();
    }
    eprintln!("{} | {}", outs[0].text, outs[1].text);
}

#[test]
fn after_leaves_the_thinking_free_then_constrains() {
    let Some(l) = load() else { return };
    let e = engine(l, |_| {});
    // A few-shot prompt the model continues with a `</think>`-style section of its own.
    let prompt = "Q: 2+2\nA: <think>two and two</think> {\"answer\":4}\n\
                  Q: 3+5\nA: <think>three and five</think> {\"answer\":8}\n\
                  Q: 6+1\nA: <think>";
    let schema = json!({
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
        "additionalProperties": false
    });
    let mut r = GenerateRequest::new(l.tok.encode(prompt, false, false).unwrap(), 40);
    r.constraint = Some(
        l.compiler
            .compile(&ConstraintSpec {
                grammar: Grammar::JsonSchema(schema.clone()),
                after: Some("</think>".into()),
            })
            .unwrap(),
    );
    let o = collect(e.submit(r).unwrap());
    eprintln!("{:?}", o.text);
    assert_eq!(o.finish, Some(Finish::Stop), "{:?}", o.text);
    let (thinking, answer) = o.text.split_once("</think>").unwrap();
    assert!(!thinking.is_empty());
    let v: Value = serde_json::from_str(answer.trim_start()).unwrap();
    check(&schema, &schema, &v, "$").unwrap();
}

#[test]
fn free_requests_beside_constrained_ones_are_unchanged() {
    let Some(l) = load() else { return };
    let e = engine(l, |_| {});
    let free_prompts = [
        "The capital of France is",
        "def fibonacci(n):",
        "Once upon a time",
    ];
    let free = |p: &str| {
        let mut r = GenerateRequest::new(l.tok.encode(p, false, false).unwrap(), 24);
        r.ignore_eos = true;
        r
    };
    let alone: Vec<Output> = free_prompts
        .iter()
        .map(|p| collect(e.submit(free(p)).unwrap()))
        .collect();
    let cons_alone = collect(
        e.submit(constrained(
            l,
            chat(l, ORDER_PROMPT),
            24,
            Grammar::JsonSchema(order_schema()),
        ))
        .unwrap(),
    );
    // Interleaved: constrained, free, constrained, free, ...
    let mut streams = Vec::new();
    for p in &free_prompts {
        streams.push(
            e.submit(constrained(
                l,
                chat(l, ORDER_PROMPT),
                24,
                Grammar::JsonSchema(order_schema()),
            ))
            .unwrap(),
        );
        streams.push(e.submit(free(p)).unwrap());
    }
    let outs: Vec<Output> = streams.into_iter().map(collect).collect();
    for (i, a) in alone.iter().enumerate() {
        assert_eq!(
            outs[2 * i + 1].tokens,
            a.tokens,
            "free prompt {i} in a mixed batch"
        );
        assert_eq!(
            outs[2 * i].tokens,
            cons_alone.tokens,
            "constrained copy {i}"
        );
    }
}

#[test]
fn constrained_requests_survive_preemption() {
    let Some(l) = load() else { return };
    let reference = engine(l, |_| {});
    let users = [
        "Pick a color and a count, as JSON.",
        "Give me a JSON object for a red car.",
        "Describe a dog as JSON.",
        "List two fruits as JSON.",
    ];
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 24},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 12},
                     "minItems": 2, "maxItems": 4}
        },
        "required": ["name", "tags"],
        "additionalProperties": false
    });
    let req = |u: &str| constrained(l, chat(l, u), 48, Grammar::JsonSchema(schema.clone()));
    let alone: Vec<Output> = users
        .iter()
        .map(|u| collect(reference.submit(req(u)).unwrap()))
        .collect();
    // 6 blocks of 16 tokens: too few for 4 sequences of ~80 tokens at once.
    let bytes = 6 * 16 * l.model.kv_layout().bytes_per_token(2) as u64;
    let small = engine(l, |c| {
        c.kv_cache_mem = KvCacheMem::Bytes(bytes);
        c.enable_prefix_caching = false;
    });
    let streams: Vec<_> = users
        .iter()
        .map(|u| small.submit(req(u)).unwrap())
        .collect();
    let outs: Vec<Output> = streams.into_iter().map(collect).collect();
    assert!(
        small.stats().preemptions > 0,
        "the test must actually preempt"
    );
    for (i, (o, a)) in outs.iter().zip(&alone).enumerate() {
        assert_eq!(o.tokens, a.tokens, "request {i} after preemption");
        if o.finish == Some(Finish::Stop) {
            let v: Value = serde_json::from_str(o.text.trim_start()).unwrap();
            check(&schema, &schema, &v, "$").unwrap();
        }
    }
    // Prefix caching: the same constrained request again hits the cache, same output.
    let again = collect(reference.submit(req(users[0])).unwrap());
    assert_eq!(again.tokens, alone[0].tokens);
}

#[test]
fn compile_errors_name_the_keyword_and_grammar_errors_end_the_request() {
    let Some(l) = load() else { return };
    let compile = |g: Grammar| {
        l.compiler.compile(&ConstraintSpec {
            grammar: g,
            after: None,
        })
    };
    let err = compile(Grammar::JsonSchema(json!({
        "type": "object",
        "properties": {"tags": {"type": "array", "uniqueItems": true}}
    })))
    .unwrap_err();
    assert!(
        matches!(&err, ConstraintError::Unsupported(m) if m.contains("`uniqueItems`")),
        "{err}"
    );
    let err = compile(Grammar::JsonSchema(
        json!({"type": "object", "not": {"type": "null"}}),
    ))
    .unwrap_err();
    assert!(
        matches!(&err, ConstraintError::Unsupported(m) if m.contains("`not`")),
        "{err}"
    );
    let err = compile(Grammar::JsonSchema(
        json!({"type": "integer", "minimum": "one"}),
    ))
    .unwrap_err();
    assert!(
        matches!(&err, ConstraintError::Invalid(m) if m.contains("minimum")),
        "{err}"
    );
    let err = compile(Grammar::Gbnf("root ::= item\n".into())).unwrap_err();
    assert!(err.to_string().contains("`item`"), "{err}");

    // Text generated in the same token as `after` that the grammar cannot take: the request
    // ends with an error event (no panic), and the engine goes on serving.
    let e = engine(l, |_| {});
    let prompt = l
        .tok
        .encode(
            "print(\"Hello, World!\")\nprint(\"Hello, World!\")\nprint(\"",
            false,
            false,
        )
        .unwrap();
    let mut r = GenerateRequest::new(prompt.clone(), 8);
    r.constraint = Some(
        l.compiler
            .compile(&ConstraintSpec {
                grammar: Grammar::Regex("[0-9]+".into()),
                after: Some("Hel".into()),
            })
            .unwrap(),
    );
    match collect_n(e.submit(r).unwrap(), 1) {
        Err(EngineError::Invalid(m)) => assert!(m.contains("Hel"), "{m}"),
        other => panic!("expected an error event, got {other:?}"),
    }
    let o = collect(e.submit(GenerateRequest::new(prompt, 4)).unwrap());
    assert_eq!(o.tokens.len(), 4);
}
