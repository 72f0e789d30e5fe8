//! r1-engine: tokenizer, chat templates, sampling and the generation loop of r1serve.

pub mod block_pool;
pub mod chat_template;
pub mod detokenizer;
pub mod prefix_cache;
pub mod sampler;
pub mod scheduler;
pub mod session;
pub mod tokenizer;
