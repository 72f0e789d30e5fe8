//! r1-engine: tokenizer, chat templates, sampling, scheduling and the engine loop of r1serve.

pub mod adaptive;
pub mod block_pool;
pub mod chat_template;
pub mod constraint;
pub mod detokenizer;
pub mod engine;
pub mod engine_metrics;
pub mod prefix_cache;
pub mod sampler;
pub mod scheduler;
pub mod session;
pub mod stop;
pub mod tokenizer;
