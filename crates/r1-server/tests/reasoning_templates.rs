//! The reasoning parser driven the way the server drives it, by scripted token streams (no
//! model), behind the two kinds of R1 chat template: one that pre-fills `<think>\n` in the
//! prompt (DeepSeek-R1-Distill; the model then only emits `</think>`), and one that doesn't
//! (the original R1 form; the model opens `<think>` itself).

use r1_engine::chat_template::{ChatMessage, ChatTemplate};
use r1_server::{ReasoningDelta, ReasoningMode, ReasoningParser, ReasoningStream};

const BOS: &str = "<｜begin▁of▁sentence｜>";
const EOS: &str = "<｜end▁of▁sentence｜>";

fn distill_template() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/deepseek-r1-distill.jinja"
    ))
    .unwrap()
}

/// The same template with the generation prompt of the original R1 release (no pre-fill).
fn plain_template() -> String {
    let t = distill_template();
    let s = t.replace("{{'<｜Assistant｜><think>\\n'}}", "{{'<｜Assistant｜>'}}");
    assert_ne!(s, t, "the generation prompt was not found");
    s
}

fn render(src: &str) -> String {
    let t = ChatTemplate::new(src, BOS, EOS).unwrap();
    t.render(
        &[
            ChatMessage::new("system", "You are concise."),
            ChatMessage::new("user", "What is 2+2?"),
        ],
        true,
    )
    .unwrap()
}

/// Feed `tokens` as the engine's token texts, then `tail` as the final release; return the
/// concatenated split, the per-token deltas and the reasoning-token count.
fn drive(
    prompt: &str,
    tokens: &[&str],
    tail: &str,
) -> (ReasoningDelta, Vec<ReasoningDelta>, usize) {
    let mut s = ReasoningStream::new(ReasoningParser::for_prompt(prompt));
    let mut all = ReasoningDelta::default();
    let mut deltas = Vec::new();
    for t in tokens {
        let d = s.token(t);
        all.reasoning.push_str(&d.reasoning);
        all.content.push_str(&d.content);
        deltas.push(d);
    }
    let d = s.finish(tail);
    all.reasoning.push_str(&d.reasoning);
    all.content.push_str(&d.content);
    deltas.push(d);
    (all, deltas, s.reasoning_tokens())
}

#[test]
fn prefilled_template_model_emits_only_the_close_tag() {
    let src = distill_template();
    assert!(ReasoningMode::Auto.enabled_for(Some(&src)));
    let prompt = render(&src);
    assert!(prompt.ends_with("<｜Assistant｜><think>\n"), "{prompt:?}");
    // What R1-Distill really emits after that prompt, with the close tag split across tokens.
    let tokens = [
        "Okay", ",", " so", " 2", "+", "2", " is", " 4", ".\n", "</", "think", ">\n\n", "2", " +",
        " 2", " =", " **", "4", "**",
    ];
    let (all, deltas, n_reasoning) = drive(&prompt, &tokens, "");
    assert_eq!(all.reasoning, "Okay, so 2+2 is 4.");
    assert_eq!(all.content, "2 + 2 = **4**");
    // Tokens up to and including the close tag are reasoning tokens.
    assert_eq!(n_reasoning, 12);
    // Nothing of the tag leaks into either stream, at any step.
    for d in &deltas {
        assert!(
            !d.reasoning.contains('<') && !d.content.contains('<'),
            "{d:?}"
        );
    }
    // The first content arrives with the first answer token, not before.
    let first_content = deltas.iter().position(|d| !d.content.is_empty()).unwrap();
    assert_eq!(first_content, 12);
}

#[test]
fn template_without_prefill_model_opens_think_itself() {
    let src = plain_template();
    assert!(
        ReasoningMode::Auto.enabled_for(Some(&src)),
        "the template still mentions </think>"
    );
    let prompt = render(&src);
    assert!(prompt.ends_with("<｜Assistant｜>"), "{prompt:?}");
    let tokens = [
        "<th", "ink", ">\n", "Let", " me", " add", ".", "\n", "</think>", "\n\n", "It", " is",
        " 4", ".",
    ];
    let (all, _, n_reasoning) = drive(&prompt, &tokens, "");
    assert_eq!(all.reasoning, "Let me add.");
    assert_eq!(all.content, "It is 4.");
    assert_eq!(n_reasoning, 9);
    // A model that answers without thinking: everything is content, nothing is reasoning.
    let (all, _, n_reasoning) = drive(&prompt, &["It", " is", " 4", "."], "");
    assert_eq!(
        (all.reasoning.as_str(), all.content.as_str()),
        ("", "It is 4.")
    );
    assert_eq!(n_reasoning, 0);
}

#[test]
fn every_split_of_the_stream_gives_the_same_texts() {
    let src = distill_template();
    let prompt = render(&src);
    let out = "Hmm. <b>2</b> plus 2.\n\n</think>\n\nFour </thinking> <think> stays.";
    for cut in 1..out.len() {
        if !out.is_char_boundary(cut) {
            continue;
        }
        for (toks, tail) in [
            (vec![&out[..cut], &out[cut..]], ""),
            (vec![&out[..cut]], &out[cut..]),
        ] {
            let (all, _, _) = drive(&prompt, &toks, tail);
            assert_eq!(all.reasoning, "Hmm. <b>2</b> plus 2.", "cut {cut}");
            assert_eq!(all.content, "Four </thinking> <think> stays.", "cut {cut}");
        }
    }
}

#[test]
fn unfinished_reasoning_and_held_tag_prefixes() {
    let prompt = render(&distill_template());
    // Cut off by max_tokens inside the reasoning: all of it is reasoning.
    let (all, _, n) = drive(&prompt, &["Still", " thinking", " </th"], "");
    assert_eq!(
        (all.reasoning.as_str(), all.content.as_str()),
        ("Still thinking </th", "")
    );
    assert_eq!(n, 3);
    // The engine releases held text at the end (e.g. after a stop string that did not match).
    let (all, _, _) = drive(&prompt, &["a"], "b</think>c");
    assert_eq!((all.reasoning.as_str(), all.content.as_str()), ("ab", "c"));
}

#[test]
fn non_r1_templates_are_left_alone() {
    let chatml = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n";
    assert!(!ReasoningMode::Auto.enabled_for(Some(chatml)));
    assert!(!ReasoningMode::None.enabled_for(Some(&distill_template())));
    assert!(ReasoningMode::DeepSeekR1.enabled_for(Some(chatml)));
}
