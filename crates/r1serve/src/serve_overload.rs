//! The `serve` flags of overload handling: priority classes, queue caps and waits, wait
//! mode, latency targets, rate limits and the response cache (crate `r1-server`, module
//! `overload`).

use std::time::Duration;

use anyhow::{bail, Context};
use r1_engine::block_pool::{parse_kv_cache_mem, KvCacheMem};
use r1_server::overload::classes::{parse_class_list, split_assignment, ClassConfig};
use r1_server::overload::OverloadConfig;

#[derive(clap::Args, Debug, Clone)]
pub struct OverloadArgs {
    /// Priority classes and their scheduler priorities (higher runs first and may preempt
    /// lower ones).
    #[arg(long, default_value = "vip=100,normal=0,batch=-100")]
    pub priority_classes: String,
    /// The class of requests that name none (and have no API-key tier).
    #[arg(long, default_value = "normal")]
    pub default_class: String,
    /// Whether a request may choose its class with its `priority` field (a class name, or a
    /// number: the highest class at or below it). An API key's tier always wins.
    #[arg(long, default_value = "allow", value_parser = ["allow", "deny"])]
    pub request_priority: String,
    /// Most requests of a class waiting for the engine, CLASS=N (repeatable); a full queue
    /// answers 429 with Retry-After. Default: unbounded.
    #[arg(long = "max-queue", value_name = "CLASS=N")]
    pub max_queue: Vec<String>,
    /// Longest a request of a class waits to be scheduled before it gets 503, CLASS=SECS
    /// (repeatable).
    #[arg(long = "max-queue-wait", value_name = "CLASS=SECS")]
    pub max_queue_wait: Vec<String>,
    /// Classes whose requests wait (keep-alives on streams) for a place in a full queue,
    /// up to their max queue wait (default 60 s), instead of getting 429 (repeatable).
    #[arg(long = "queue-wait-mode", value_name = "CLASS")]
    pub queue_wait_mode: Vec<String>,
    /// Adaptive batching: the inter-token latency to hold for a class, CLASS=MS (repeatable).
    #[arg(long = "target-itl", value_name = "CLASS=MS")]
    pub target_itl: Vec<String>,
    /// Requests per minute per API key (per client IP without keys); 0 = no limit.
    #[arg(long, default_value_t = 0)]
    pub rate_limit_rpm: u32,
    /// Tokens (prompt + max_tokens) per minute per API key or client IP; 0 = no limit.
    #[arg(long, default_value_t = 0)]
    pub rate_limit_tpm: u32,
    /// Response cache for deterministic requests (temperature 0 or a seed): bytes ("64MiB");
    /// 0 turns it off.
    #[arg(long, default_value = "0")]
    pub response_cache_mem: String,
    /// Seconds a cached response stays valid.
    #[arg(long, default_value_t = 600.0)]
    pub response_cache_ttl: f64,
}

fn secs(flag: &str, v: &str) -> anyhow::Result<Duration> {
    let f: f64 = v
        .parse()
        .map_err(|_| anyhow::anyhow!("--{flag}: `{v}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(f).map_err(|_| anyhow::anyhow!("--{flag}: `{v}` is not a duration"))
}

impl OverloadArgs {
    pub fn config(&self) -> anyhow::Result<OverloadConfig> {
        let mut classes = parse_class_list(&self.priority_classes)
            .map_err(|e| anyhow::anyhow!("--priority-classes: {e}"))?;
        fn class<'a>(
            classes: &'a mut [ClassConfig],
            flag: &str,
            name: &str,
        ) -> anyhow::Result<&'a mut ClassConfig> {
            let known = classes.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
            classes.iter_mut().find(|c| c.name == name).ok_or_else(|| {
                anyhow::anyhow!(
                    "--{flag}: `{name}` is not a priority class ({})",
                    known.join(", ")
                )
            })
        }
        for a in &self.max_queue {
            let (name, v) = split_assignment(a).map_err(|e| anyhow::anyhow!("--max-queue: {e}"))?;
            let n: usize = v
                .parse()
                .map_err(|_| anyhow::anyhow!("--max-queue {a}: `{v}` is not a count"))?;
            class(&mut classes, "max-queue", name)?.max_queue = Some(n);
        }
        for a in &self.max_queue_wait {
            let (name, v) =
                split_assignment(a).map_err(|e| anyhow::anyhow!("--max-queue-wait: {e}"))?;
            class(&mut classes, "max-queue-wait", name)?.max_queue_wait =
                Some(secs("max-queue-wait", v)?);
        }
        for name in &self.queue_wait_mode {
            class(&mut classes, "queue-wait-mode", name)?.wait_mode = true;
        }
        for a in &self.target_itl {
            let (name, v) =
                split_assignment(a).map_err(|e| anyhow::anyhow!("--target-itl: {e}"))?;
            let ms: f64 = v
                .trim_end_matches("ms")
                .parse()
                .ok()
                .filter(|m: &f64| *m > 0.0 && m.is_finite())
                .ok_or_else(|| anyhow::anyhow!("--target-itl {a}: `{v}` is not milliseconds"))?;
            class(&mut classes, "target-itl", name)?.target_itl =
                Some(Duration::from_secs_f64(ms / 1e3));
        }
        let cache_bytes = match self.response_cache_mem.trim() {
            "0" | "" | "off" => 0,
            s => {
                match parse_kv_cache_mem(s).with_context(|| format!("--response-cache-mem {s}"))? {
                    KvCacheMem::Bytes(b) => b as usize,
                    KvCacheMem::FractionOfRam(_) => {
                        bail!("--response-cache-mem {s}: give a size in bytes (\"64MiB\")")
                    }
                }
            }
        };
        let cfg = OverloadConfig {
            classes,
            default_class: self.default_class.clone(),
            allow_request_priority: self.request_priority == "allow",
            requests_per_min: (self.rate_limit_rpm > 0).then_some(self.rate_limit_rpm),
            tokens_per_min: (self.rate_limit_tpm > 0).then_some(self.rate_limit_tpm),
            response_cache_bytes: cache_bytes,
            response_cache_ttl: secs("response-cache-ttl", &self.response_cache_ttl.to_string())?,
        };
        cfg.validate()
            .map_err(|e| anyhow::anyhow!("--default-class: {e}"))?;
        Ok(cfg)
    }
}
