//! Request and response bodies of the OpenAI API (and DeepSeek's and vLLM's additions).
//! Requests ignore fields they don't know; `null` means "not given".

use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// `stop`: one string or a list of them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StopList(pub Vec<String>);

impl<'de> Deserialize<'de> for StopList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StopList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<StopList, E> {
                Ok(StopList(vec![s.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<StopList, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = a.next_element::<String>()? {
                    v.push(s);
                }
                Ok(StopList(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// A message's `content`: a string, or a list of parts of which only text is supported.
#[derive(Clone, Debug, PartialEq)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

impl<'de> Deserialize<'de> for MessageContent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = MessageContent;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or a list of content parts")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<MessageContent, E> {
                Ok(MessageContent::Text(s.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<MessageContent, A::Error> {
                let mut v = Vec::new();
                while let Some(p) = a.next_element::<ContentPart>()? {
                    v.push(p);
                }
                Ok(MessageContent::Parts(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct ChatMessageIn {
    pub role: String,
    #[serde(default)]
    pub content: Option<MessageContent>,
    pub name: Option<String>,
    pub tool_calls: Option<Value>,
    pub tool_call_id: Option<String>,
}

impl ChatMessageIn {
    /// Bytes of text in the message (for the tokens-per-minute estimate).
    pub fn text_len(&self) -> usize {
        match &self.content {
            None => 0,
            Some(MessageContent::Text(s)) => s.len(),
            Some(MessageContent::Parts(p)) => p
                .iter()
                .filter_map(|p| p.text.as_ref())
                .map(String::len)
                .sum(),
        }
    }
}

/// Sampling and limit fields shared by both generation endpoints.
#[derive(Clone, Debug, Default)]
pub struct CommonParams {
    pub model: Option<String>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub n: Option<u32>,
    pub stop: Option<StopList>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub logit_bias: Option<HashMap<String, f32>>,
    pub stream: bool,
    pub include_usage: bool,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub ignore_eos: bool,
    pub skip_special_tokens: Option<bool>,
    pub stop_token_ids: Option<Vec<u32>>,
    /// `Some(k)`: report logprobs with the top `k` alternatives.
    pub logprobs: Option<u32>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: Option<String>,
    pub messages: Vec<ChatMessageIn>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub n: Option<u32>,
    pub stop: Option<StopList>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub logit_bias: Option<HashMap<String, f32>>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u32>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub user: Option<String>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    /// A priority class name or number; admission control resolves it to a class.
    pub priority: Option<Value>,
    pub ignore_eos: Option<bool>,
    pub skip_special_tokens: Option<bool>,
    pub stop_token_ids: Option<Vec<u32>>,
    pub add_generation_prompt: Option<bool>,
    /// Extra template variables (vLLM), e.g. `{"enable_thinking": false}`.
    pub chat_template_kwargs: Option<serde_json::Map<String, Value>>,
    /// Tools and structured output are checked in `tool_types.rs` and `structured.rs`, where
    /// each problem gets a message naming the field.
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<Value>,
    pub guided_json: Option<Value>,
    pub guided_regex: Option<Value>,
    pub guided_choice: Option<Value>,
    pub guided_grammar: Option<Value>,
}

/// `prompt` of `/v1/completions`: text, token ids, or a batch of either.
#[derive(Clone, Debug, PartialEq)]
pub enum PromptInput {
    Texts(Vec<String>),
    Tokens(Vec<Vec<u32>>),
}

impl<'de> Deserialize<'de> for PromptInput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Item {
            Text(String),
            Tokens(Vec<u32>),
            Token(u32),
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = PromptInput;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, a list of strings, a list of token ids, or a list of lists of token ids")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<PromptInput, E> {
                Ok(PromptInput::Texts(vec![s.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<PromptInput, A::Error> {
                let mut texts = Vec::new();
                let mut batches = Vec::new();
                let mut flat = Vec::new();
                while let Some(item) = a.next_element::<Item>()? {
                    match item {
                        Item::Text(s) => texts.push(s),
                        Item::Tokens(t) => batches.push(t),
                        Item::Token(t) => flat.push(t),
                    }
                }
                let kinds = [!texts.is_empty(), !batches.is_empty(), !flat.is_empty()];
                if kinds.iter().filter(|&&k| k).count() > 1 {
                    return Err(serde::de::Error::custom(
                        "a prompt list must not mix strings, token ids and lists of token ids",
                    ));
                }
                Ok(if !texts.is_empty() {
                    PromptInput::Texts(texts)
                } else if !batches.is_empty() {
                    PromptInput::Tokens(batches)
                } else {
                    PromptInput::Tokens(vec![flat])
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl PromptInput {
    /// Bytes of prompt text, a token id counting as 4 (for the tokens-per-minute estimate).
    pub fn text_len(&self) -> usize {
        match self {
            PromptInput::Texts(t) => t.iter().map(String::len).sum(),
            PromptInput::Tokens(t) => t.iter().map(|p| 4 * p.len()).sum(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: PromptInput,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub n: Option<u32>,
    pub stop: Option<StopList>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub logit_bias: Option<HashMap<String, f32>>,
    pub logprobs: Option<u32>,
    pub echo: Option<bool>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub user: Option<String>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    /// A priority class name or number; admission control resolves it to a class.
    pub priority: Option<Value>,
    pub ignore_eos: Option<bool>,
    pub skip_special_tokens: Option<bool>,
    pub stop_token_ids: Option<Vec<u32>>,
    pub response_format: Option<Value>,
    pub guided_json: Option<Value>,
    pub guided_regex: Option<Value>,
    pub guided_choice: Option<Value>,
    pub guided_grammar: Option<Value>,
}

macro_rules! common_from {
    ($r:expr, $max_tokens:expr, $logprobs:expr) => {
        CommonParams {
            model: $r.model.clone(),
            max_tokens: $max_tokens,
            temperature: $r.temperature,
            top_p: $r.top_p,
            n: $r.n,
            stop: $r.stop.clone(),
            seed: $r.seed,
            presence_penalty: $r.presence_penalty,
            frequency_penalty: $r.frequency_penalty,
            logit_bias: $r.logit_bias.clone(),
            stream: $r.stream.unwrap_or(false),
            include_usage: $r
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
            top_k: $r.top_k,
            min_p: $r.min_p,
            repetition_penalty: $r.repetition_penalty,
            ignore_eos: $r.ignore_eos.unwrap_or(false),
            skip_special_tokens: $r.skip_special_tokens,
            stop_token_ids: $r.stop_token_ids.clone(),
            logprobs: $logprobs,
        }
    };
}

impl ChatCompletionRequest {
    pub fn common(&self) -> CommonParams {
        let logprobs = if self.logprobs == Some(true) {
            Some(self.top_logprobs.unwrap_or(0))
        } else {
            None
        };
        common_from!(
            self,
            self.max_completion_tokens.or(self.max_tokens),
            logprobs
        )
    }
}

impl CompletionRequest {
    pub fn common(&self) -> CommonParams {
        common_from!(self, self.max_tokens, self.logprobs)
    }
}

macro_rules! structured_fields {
    ($t:ty) => {
        impl $t {
            pub fn structured(&self) -> crate::structured::StructuredFields<'_> {
                crate::structured::StructuredFields {
                    response_format: self.response_format.as_ref(),
                    guided_json: self.guided_json.as_ref(),
                    guided_regex: self.guided_regex.as_ref(),
                    guided_choice: self.guided_choice.as_ref(),
                    guided_grammar: self.guided_grammar.as_ref(),
                }
            }
        }
    };
}
structured_fields!(ChatCompletionRequest);
structured_fields!(CompletionRequest);

// ---- responses ----

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct CompletionTokensDetails {
    pub reasoning_tokens: usize,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    /// DeepSeek's names for the prefix-cache split of the prompt.
    pub prompt_cache_hit_tokens: usize,
    pub prompt_cache_miss_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
    pub completion_tokens_details: CompletionTokensDetails,
}

impl Usage {
    pub fn new(prompt: usize, cached: usize, completion: usize, reasoning: usize) -> Self {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_cache_hit_tokens: cached,
            prompt_cache_miss_tokens: prompt.saturating_sub(cached),
            prompt_tokens_details: PromptTokensDetails {
                cached_tokens: cached,
            },
            completion_tokens_details: CompletionTokensDetails {
                reasoning_tokens: reasoning,
            },
        }
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ChatTokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ChatLogprobs {
    pub content: Vec<ChatTokenLogprob>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ChatMessageOut {
    pub role: &'static str,
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<crate::tool_types::ToolCall>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: ChatMessageOut,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChatCompletionResponse {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ChatDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<crate::tool_types::ToolCallDelta>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChatChunkChoice {
    pub index: u32,
    pub delta: ChatDelta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
}

/// Completions' logprobs (the legacy format).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f32>,
    pub top_logprobs: Vec<HashMap<String, f32>>,
    pub text_offset: Vec<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CompletionChoice {
    pub index: u32,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CompletionResponse {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: String,
    pub choices: Vec<CompletionChoice>,
    pub usage: Usage,
}

/// A streamed chunk: `choices` are chat or completion choices; `usage` is present (as null)
/// on every chunk when `include_usage` was asked, and set on the last one.
#[derive(Clone, Debug, Serialize)]
pub struct Chunk<C: Serialize> {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub system_fingerprint: String,
    pub choices: Vec<C>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

// ---- tokenize / detokenize (vLLM's shapes) ----

#[derive(Clone, Debug, Deserialize)]
pub struct TokenizeRequest {
    pub model: Option<String>,
    pub prompt: Option<String>,
    pub messages: Option<Vec<ChatMessageIn>>,
    pub add_special_tokens: Option<bool>,
    pub add_generation_prompt: Option<bool>,
    pub return_token_strs: Option<bool>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TokenizeResponse {
    pub count: usize,
    pub max_model_len: usize,
    pub tokens: Vec<u32>,
    pub token_strs: Option<Vec<String>>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct DetokenizeRequest {
    pub model: Option<String>,
    pub tokens: Vec<u32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DetokenizeResponse {
    pub prompt: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_forms() {
        let p: PromptInput = serde_json::from_str(r#""hi""#).unwrap();
        assert_eq!(p, PromptInput::Texts(vec!["hi".into()]));
        let p: PromptInput = serde_json::from_str(r#"["a","b"]"#).unwrap();
        assert_eq!(p, PromptInput::Texts(vec!["a".into(), "b".into()]));
        let p: PromptInput = serde_json::from_str("[1,2,3]").unwrap();
        assert_eq!(p, PromptInput::Tokens(vec![vec![1, 2, 3]]));
        let p: PromptInput = serde_json::from_str("[[1],[2,3]]").unwrap();
        assert_eq!(p, PromptInput::Tokens(vec![vec![1], vec![2, 3]]));
        assert!(serde_json::from_str::<PromptInput>(r#"["a",1]"#).is_err());
        assert!(serde_json::from_str::<PromptInput>("3").is_err());
    }

    #[test]
    fn stop_and_content_forms() {
        let s: StopList = serde_json::from_str(r#""x""#).unwrap();
        assert_eq!(s.0, vec!["x"]);
        let s: StopList = serde_json::from_str(r#"["x","y"]"#).unwrap();
        assert_eq!(s.0, vec!["x", "y"]);
        assert!(serde_json::from_str::<StopList>("1").is_err());
        let c: MessageContent =
            serde_json::from_str(r#"[{"type":"text","text":"a"},{"type":"text","text":"b"}]"#)
                .unwrap();
        assert!(matches!(c, MessageContent::Parts(p) if p.len() == 2));
    }

    #[test]
    fn chat_request_ignores_unknown_fields() {
        let r: ChatCompletionRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":"hi","x":1}],
                "max_completion_tokens":5,"max_tokens":9,"logprobs":true,"top_logprobs":2,
                "stream_options":{"include_usage":true},"stop":null,"whatever":{"a":1}}"#,
        )
        .unwrap();
        let c = r.common();
        assert_eq!(c.max_tokens, Some(5));
        assert_eq!(c.logprobs, Some(2));
        assert!(c.include_usage);
        assert!(c.stop.is_none());
    }
}
