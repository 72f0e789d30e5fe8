//! The DeepSeek-R1 reasoning parser: splits generated text into `reasoning_content` (inside
//! `<think>…</think>`) and `content` (after it), streaming, one delta at a time.
//!
//! It copes with what R1-family models and templates really do:
//! * tags split across tokens or deltas (`</th` + `ink>`): a partial tag is held back until
//!   the next delta says whether it completes;
//! * templates that end the prompt with `<think>\n` (DeepSeek-R1-Distill, R1-0528): the model
//!   then emits only `</think>`, so the parser starts in reasoning mode
//!   ([`ReasoningParser::for_prompt`]);
//! * templates that don't: the model opens with `<think>` itself; output that does not start
//!   with `<think>` is plain content.
//!
//! Whitespace around the sections is trimmed as DeepSeek's API does: the `\n` after `<think>`,
//! the `\n` before `</think>` and the `\n\n` after it are not part of either text.

pub const THINK_OPEN: &str = "<think>";
pub const THINK_CLOSE: &str = "</think>";

/// Which parser `--reasoning-parser` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReasoningMode {
    /// On when the chat template mentions `<think>` or `</think>`.
    #[default]
    Auto,
    DeepSeekR1,
    None,
}

impl std::str::FromStr for ReasoningMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(ReasoningMode::Auto),
            "deepseek-r1" | "deepseek_r1" => Ok(ReasoningMode::DeepSeekR1),
            "none" | "off" => Ok(ReasoningMode::None),
            _ => Err(format!(
                "unknown reasoning parser `{s}` (expected auto, deepseek-r1 or none)"
            )),
        }
    }
}

impl ReasoningMode {
    /// Whether chat responses get split, given the chat template in use.
    pub fn enabled_for(self, template: Option<&str>) -> bool {
        match self {
            ReasoningMode::DeepSeekR1 => true,
            ReasoningMode::None => false,
            ReasoningMode::Auto => {
                template.is_some_and(|t| t.contains(THINK_OPEN) || t.contains(THINK_CLOSE))
            }
        }
    }
}

/// Whether a rendered prompt leaves the model inside a `<think>` section.
pub fn prompt_opens_reasoning(prompt: &str) -> bool {
    let t = prompt.trim_end();
    match t.rfind(THINK_OPEN) {
        Some(i) => i + THINK_OPEN.len() == t.len(),
        None => false,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Nothing but whitespace seen yet: a `<think>` may still open.
    Start,
    Reasoning,
    Content,
}

/// What one pushed delta contributes to each text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReasoningDelta {
    pub reasoning: String,
    pub content: String,
}

impl ReasoningDelta {
    pub fn is_empty(&self) -> bool {
        self.reasoning.is_empty() && self.content.is_empty()
    }

    fn append(&mut self, other: ReasoningDelta) {
        self.reasoning.push_str(&other.reasoning);
        self.content.push_str(&other.content);
    }
}

#[derive(Clone, Debug)]
pub struct ReasoningParser {
    mode: Mode,
    /// Text not yet released: a possible partial tag and the whitespace before it.
    pending: String,
    /// Leading whitespace of the current section is dropped.
    section_start: bool,
}

impl ReasoningParser {
    /// `start_in_reasoning`: the prompt already opened `<think>`.
    pub fn new(start_in_reasoning: bool) -> Self {
        ReasoningParser {
            mode: if start_in_reasoning {
                Mode::Reasoning
            } else {
                Mode::Start
            },
            pending: String::new(),
            section_start: true,
        }
    }

    /// A parser for the completion of `prompt` (the rendered chat prompt).
    pub fn for_prompt(prompt: &str) -> Self {
        Self::new(prompt_opens_reasoning(prompt))
    }

    /// Whether text pushed now would be reasoning.
    pub fn in_reasoning(&self) -> bool {
        self.mode == Mode::Reasoning
    }

    /// Feed the next piece of generated text.
    pub fn push(&mut self, text: &str) -> ReasoningDelta {
        self.pending.push_str(text);
        let mut out = ReasoningDelta::default();
        loop {
            match self.mode {
                Mode::Start => {
                    let t = self.pending.trim_start();
                    if t.starts_with(THINK_OPEN) {
                        let cut = self.pending.len() - t.len() + THINK_OPEN.len();
                        self.pending.drain(..cut);
                        self.mode = Mode::Reasoning;
                        self.section_start = true;
                        continue;
                    }
                    if t.is_empty() || THINK_OPEN.starts_with(t) {
                        break; // could still become `<think>`
                    }
                    self.mode = Mode::Content;
                    self.section_start = true;
                }
                Mode::Reasoning => {
                    if !self.skip_section_whitespace() {
                        break;
                    }
                    if let Some(i) = self.pending.find(THINK_CLOSE) {
                        out.reasoning.push_str(self.pending[..i].trim_end());
                        self.pending.drain(..i + THINK_CLOSE.len());
                        self.mode = Mode::Content;
                        self.section_start = true;
                        continue;
                    }
                    let hold = partial_tag_start(&self.pending, THINK_CLOSE);
                    let emit = self.pending[..hold].trim_end().len();
                    out.reasoning.push_str(&self.pending[..emit]);
                    self.pending.drain(..emit);
                    break;
                }
                Mode::Content => {
                    if !self.skip_section_whitespace() {
                        break;
                    }
                    out.content.push_str(&self.pending);
                    self.pending.clear();
                    break;
                }
            }
        }
        out
    }

    /// The end of generation: release whatever is held.
    pub fn finish(&mut self) -> ReasoningDelta {
        let rest = std::mem::take(&mut self.pending);
        let mut out = ReasoningDelta::default();
        match self.mode {
            Mode::Reasoning => {
                out.reasoning = if self.section_start {
                    rest.trim().to_string()
                } else {
                    rest.trim_end().to_string()
                }
            }
            Mode::Start | Mode::Content => {
                if !(self.section_start && rest.trim().is_empty()) {
                    out.content = if self.section_start {
                        rest.trim_start().to_string()
                    } else {
                        rest
                    };
                }
            }
        }
        self.section_start = false;
        out
    }

    /// Split a whole text at once (non-streaming responses).
    pub fn split(mut self, text: &str) -> ReasoningDelta {
        let mut out = self.push(text);
        out.append(self.finish());
        out
    }

    /// Drop the section's leading whitespace; false when nothing else is pending yet.
    fn skip_section_whitespace(&mut self) -> bool {
        if self.section_start {
            let t = self.pending.trim_start();
            let cut = self.pending.len() - t.len();
            self.pending.drain(..cut);
            if self.pending.is_empty() {
                return false;
            }
            self.section_start = false;
        }
        true
    }
}

/// A [`ReasoningParser`] fed one generated token's text at a time, counting the tokens that
/// belong to the reasoning (`completion_tokens_details.reasoning_tokens`): a token counts when
/// it is produced inside `<think>…</think>`, the tags included.
#[derive(Clone, Debug)]
pub struct ReasoningStream {
    parser: ReasoningParser,
    reasoning_tokens: usize,
    /// Tokens seen while it is not yet known whether the output opens with `<think>` (a tag
    /// split across tokens): they count once the tag completes.
    undecided: usize,
}

impl ReasoningStream {
    pub fn new(parser: ReasoningParser) -> Self {
        ReasoningStream {
            parser,
            reasoning_tokens: 0,
            undecided: 0,
        }
    }

    /// The text one generated token added (may be empty: held bytes or stop-string text).
    pub fn token(&mut self, text: &str) -> ReasoningDelta {
        let before = self.parser.in_reasoning();
        let d = self.parser.push(text);
        if before || self.parser.in_reasoning() || !d.reasoning.is_empty() {
            self.reasoning_tokens += 1 + self.undecided;
            self.undecided = 0;
        } else if self.parser.mode == Mode::Start {
            self.undecided += 1;
        } else {
            self.undecided = 0;
        }
        d
    }

    /// The end of the choice, with the text the engine released at the end.
    pub fn finish(&mut self, tail: &str) -> ReasoningDelta {
        let mut d = self.parser.push(tail);
        d.append(self.parser.finish());
        d
    }

    pub fn reasoning_tokens(&self) -> usize {
        self.reasoning_tokens
    }
}

/// Where a suffix of `text` that is a proper prefix of `tag` starts (`text.len()` if none).
fn partial_tag_start(text: &str, tag: &str) -> usize {
    for k in (1..tag.len()).rev() {
        if k <= text.len() {
            let at = text.len() - k;
            if text.is_char_boundary(at) && tag.starts_with(&text[at..]) {
                return at;
            }
        }
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mut p: ReasoningParser, deltas: &[&str]) -> (String, String) {
        let mut all = ReasoningDelta::default();
        for d in deltas {
            all.append(p.push(d));
        }
        all.append(p.finish());
        (all.reasoning, all.content)
    }

    #[test]
    fn detects_prefilled_prompts() {
        assert!(prompt_opens_reasoning("<｜Assistant｜><think>\n"));
        assert!(prompt_opens_reasoning("x<think>"));
        assert!(!prompt_opens_reasoning("<think>a</think>\n<｜Assistant｜>"));
        assert!(!prompt_opens_reasoning("<|im_start|>assistant\n"));
    }

    #[test]
    fn splits_at_every_byte_boundary() {
        let text = "<think>\nLet me think.\nOK.\n</think>\n\nThe answer is 4.";
        for cut in 0..=text.len() {
            if !text.is_char_boundary(cut) {
                continue;
            }
            let (r, c) = run(ReasoningParser::new(false), &[&text[..cut], &text[cut..]]);
            assert_eq!(r, "Let me think.\nOK.", "cut {cut}");
            assert_eq!(c, "The answer is 4.", "cut {cut}");
        }
    }

    #[test]
    fn char_by_char_with_prefilled_think() {
        let text = "Hmm, 2+2.\n</think>\n\nIt is 4.";
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = chars.iter().map(|s| s.as_str()).collect();
        let (r, c) = run(ReasoningParser::new(true), &refs);
        assert_eq!((r.as_str(), c.as_str()), ("Hmm, 2+2.", "It is 4."));
    }

    #[test]
    fn no_think_is_plain_content() {
        let (r, c) = run(ReasoningParser::new(false), &["<", "b>bold</b> text"]);
        assert_eq!((r.as_str(), c.as_str()), ("", "<b>bold</b> text"));
        let (r, c) = run(ReasoningParser::new(false), &["Hello ", "world"]);
        assert_eq!((r.as_str(), c.as_str()), ("", "Hello world"));
    }

    #[test]
    fn unclosed_reasoning_stays_reasoning() {
        let (r, c) = run(ReasoningParser::new(true), &["still thinking </th"]);
        assert_eq!((r.as_str(), c.as_str()), ("still thinking </th", ""));
        let (r, c) = run(ReasoningParser::new(false), &["<thi"]);
        assert_eq!((r.as_str(), c.as_str()), ("", "<thi"));
    }

    #[test]
    fn inner_whitespace_is_kept_and_released_in_order() {
        let mut p = ReasoningParser::new(true);
        assert_eq!(p.push("a\n").reasoning, "a");
        assert_eq!(p.push("\nb").reasoning, "\n\nb");
        let d = p.push(" </think>  x");
        assert_eq!((d.reasoning.as_str(), d.content.as_str()), ("", "x"));
        assert!(!p.in_reasoning());
    }

    #[test]
    fn modes() {
        assert_eq!("auto".parse(), Ok(ReasoningMode::Auto));
        assert_eq!("deepseek-r1".parse(), Ok(ReasoningMode::DeepSeekR1));
        assert_eq!("none".parse(), Ok(ReasoningMode::None));
        assert!("x".parse::<ReasoningMode>().is_err());
        assert!(ReasoningMode::Auto.enabled_for(Some("{{'<think>\\n'}}")));
        assert!(!ReasoningMode::Auto.enabled_for(Some("<|im_start|>")));
        assert!(!ReasoningMode::Auto.enabled_for(None));
        assert!(ReasoningMode::DeepSeekR1.enabled_for(None));
    }
}
