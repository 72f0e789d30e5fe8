//! `r1serve bench serve --url URL`: load an OpenAI-compatible server over HTTP the way users
//! do. Open-loop Poisson arrivals (`--request-rate`) or a fixed number of requests in flight
//! (`--concurrency`), synthetic or JSONL prompts, a mix of priority classes, streaming. Each
//! request's status, time to first token, inter-token gaps and end-to-end time are recorded;
//! `bench_serve_report` turns them into per-class percentiles, a markdown table, JSON and an
//! SVG plot of latency over time.
//!
//! Clients are plain threads with blocking HTTP (one per request in flight): simple, and the
//! timing of a thread blocked on a socket is what a client sees.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::bench_serve_report::{report, Outcome, Record};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "r1serve bench serve",
    about = "Benchmark a running OpenAI-compatible server: TTFT, inter-token latency, \
             end-to-end latency, throughput, goodput and refusals per priority class"
)]
pub struct ServeBenchArgs {
    /// The server, e.g. http://127.0.0.1:8080
    #[arg(long)]
    pub url: String,
    /// Model name to send (default: the first of GET /v1/models).
    #[arg(long)]
    pub model: Option<String>,
    /// `chat` (/v1/chat/completions) or `completions` (/v1/completions).
    #[arg(long, default_value = "chat", value_parser = ["chat", "completions"])]
    pub endpoint: String,
    /// Poisson arrival rate in requests/s, or `inf` to send as fast as `--concurrency` allows.
    #[arg(long, default_value = "inf")]
    pub request_rate: String,
    /// Most requests in flight (closed loop when the rate is `inf`). Default: unlimited for
    /// a finite rate, 8 otherwise.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Requests to send (with `--duration`, whichever ends first).
    #[arg(long)]
    pub num_requests: Option<usize>,
    /// Stop sending after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// JSONL prompts: each line {"prompt": "..."} or {"messages": [...]}, optional
    /// "max_tokens". Default: synthetic prompts.
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Words in a synthetic prompt (about as many tokens).
    #[arg(long, default_value_t = 64)]
    pub prompt_words: usize,
    /// max_tokens of each request (a dataset line's own wins).
    #[arg(long, default_value_t = 64)]
    pub max_tokens: u32,
    /// Sampling temperature sent (synthetic prompts are all different, so a response cache
    /// never answers them).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Share of each priority class, e.g. vip=0.2,normal=0.8 (sent as `priority`).
    #[arg(long)]
    pub priority_mix: Option<String>,
    /// Send non-streaming requests (TTFT is then the whole response time).
    #[arg(long)]
    pub no_stream: bool,
    /// Goodput SLO: time to first token, milliseconds.
    #[arg(long, default_value_t = 2000.0)]
    pub slo_ttft_ms: f64,
    /// Goodput SLO: mean inter-token latency, milliseconds.
    #[arg(long, default_value_t = 200.0)]
    pub slo_itl_ms: f64,
    /// Per-request timeout, seconds.
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
    /// Print the result as JSON instead of a markdown table.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
    /// Also write the JSON result here.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Also write the markdown table here.
    #[arg(long)]
    pub md_out: Option<PathBuf>,
    /// Write an SVG plot of TTFT (and refusals) over the run here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Random seed (arrivals, class mix, synthetic prompts).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Entry point from `main` (`r1serve bench serve ARGS`).
pub fn main(args: Vec<std::ffi::OsString>) -> anyhow::Result<()> {
    let a = ServeBenchArgs::parse_from(
        std::iter::once(std::ffi::OsString::from("r1serve bench serve")).chain(args),
    );
    run(&a)
}

/// A parsed `--priority-mix`: class names and cumulative shares.
fn parse_mix(s: Option<&str>) -> anyhow::Result<Vec<(String, f64)>> {
    let Some(s) = s else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut total = 0.0;
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, share) = part
            .split_once('=')
            .with_context(|| format!("--priority-mix: `{part}` is not CLASS=SHARE"))?;
        let share: f64 = share
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| *v >= 0.0 && v.is_finite())
            .with_context(|| format!("--priority-mix: `{part}`: the share must be a number ≥ 0"))?;
        total += share;
        out.push((name.trim().to_string(), total));
    }
    if out.is_empty() || total <= 0.0 {
        bail!("--priority-mix: give at least one class with a positive share");
    }
    for e in &mut out {
        e.1 /= total;
    }
    Ok(out)
}

struct Job {
    body: Value,
    class: String,
}

const WORDS: &[&str] = &[
    "the", "river", "engine", "quietly", "builds", "a", "bright", "model", "of", "every", "winter",
    "garden", "under", "seven", "orange", "clouds", "while", "history", "moves", "toward",
    "careful", "numbers", "and", "small", "stories",
];

fn load_dataset(path: &PathBuf) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the dataset {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), i + 1))?;
        if v.get("prompt").is_none() && v.get("messages").is_none() {
            bail!(
                "{}:{}: a line needs a `prompt` or `messages` field",
                path.display(),
                i + 1
            );
        }
        out.push(v);
    }
    if out.is_empty() {
        bail!("{}: no prompts", path.display());
    }
    Ok(out)
}

fn make_job(
    a: &ServeBenchArgs,
    model: &str,
    i: usize,
    rng: &mut rand::rngs::StdRng,
    dataset: &[Value],
    mix: &[(String, f64)],
) -> Job {
    let class = if mix.is_empty() {
        String::new()
    } else {
        let u: f64 = rng.random();
        mix.iter()
            .find(|(_, c)| u < *c)
            .unwrap_or(&mix[mix.len() - 1])
            .0
            .clone()
    };
    let (prompt_text, messages, max_tokens) = if dataset.is_empty() {
        // Distinct synthetic prompts: a request number and random words.
        let mut s = format!("Request {i}:");
        for _ in 0..a.prompt_words.saturating_sub(2) {
            s.push(' ');
            s.push_str(WORDS[rng.random_range(0..WORDS.len())]);
        }
        (Some(s), None, a.max_tokens)
    } else {
        let d = &dataset[i % dataset.len()];
        let mt = d
            .get("max_tokens")
            .and_then(Value::as_u64)
            .map_or(a.max_tokens, |v| v as u32);
        (
            d.get("prompt").and_then(Value::as_str).map(str::to_string),
            d.get("messages").cloned(),
            mt,
        )
    };
    let stream = !a.no_stream;
    let mut body = json!({
        "model": model,
        "max_tokens": max_tokens,
        "temperature": a.temperature,
        "stream": stream,
    });
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    if a.endpoint == "chat" {
        body["messages"] = messages.unwrap_or_else(
            || json!([{"role": "user", "content": prompt_text.clone().unwrap_or_default()}]),
        );
    } else {
        body["prompt"] = json!(prompt_text.unwrap_or_default());
    }
    if !class.is_empty() {
        body["priority"] = json!(class);
    }
    Job { body, class }
}

fn first_model(agent: &ureq::Agent, url: &str) -> anyhow::Result<String> {
    let body = agent
        .get(&format!("{url}/v1/models"))
        .call()
        .with_context(|| format!("GET {url}/v1/models"))?
        .into_string()?;
    let v: Value = serde_json::from_str(&body).with_context(|| format!("{url}/v1/models"))?;
    v["data"][0]["id"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("{url}/v1/models lists no model"))
}

pub fn run(a: &ServeBenchArgs) -> anyhow::Result<()> {
    let url = a.url.trim_end_matches('/').to_string();
    let rate: Option<f64> = match a.request_rate.as_str() {
        "inf" => None,
        r => Some(
            r.parse::<f64>()
                .ok()
                .filter(|v| *v > 0.0 && v.is_finite())
                .with_context(|| format!("--request-rate {r}: a positive number or `inf`"))?,
        ),
    };
    let concurrency = a
        .concurrency
        .or(if rate.is_none() { Some(8) } else { None });
    if concurrency == Some(0) {
        bail!("--concurrency must be at least 1");
    }
    let num = match (a.num_requests, a.duration) {
        (None, None) => 100,
        (Some(n), _) => n,
        (None, Some(_)) => usize::MAX,
    };
    let mix = parse_mix(a.priority_mix.as_deref())?;
    let dataset = match &a.dataset {
        Some(p) => load_dataset(p)?,
        None => Vec::new(),
    };
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs_f64(a.timeout))
        .max_idle_connections(1024)
        .max_idle_connections_per_host(1024)
        .build();
    let model = match &a.model {
        Some(m) => m.clone(),
        None => first_model(&agent, &url)?,
    };
    let path = if a.endpoint == "chat" {
        "/v1/chat/completions"
    } else {
        "/v1/completions"
    };
    let endpoint = format!("{url}{path}");
    let pb = if a.quiet {
        ProgressBar::hidden()
    } else {
        let pb = match (num, a.duration) {
            (usize::MAX, _) => ProgressBar::new_spinner(),
            (n, _) => ProgressBar::new(n as u64),
        };
        pb.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} done {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
    let (tx, rx) = mpsc::channel::<Record>();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let end = a.duration.map(|d| t0 + Duration::from_secs_f64(d));
    let mut next_at = t0;
    let mut sent = 0usize;
    let mut handles = Vec::new();
    let mut records = Vec::new();
    let stream = !a.no_stream;
    while sent < num {
        if let Some(r) = rate {
            let u: f64 = rng.random::<f64>().max(1e-12);
            next_at += Duration::from_secs_f64(-u.ln() / r);
            let now = Instant::now();
            if next_at > now {
                std::thread::sleep(next_at - now);
            }
        }
        if let Some(c) = concurrency {
            while in_flight.load(Ordering::SeqCst) >= c {
                while let Ok(r) = rx.try_recv() {
                    pb.inc(1);
                    records.push(r);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
        let job = make_job(a, &model, sent, &mut rng, &dataset, &mix);
        let (agent, endpoint, tx, inf) = (
            agent.clone(),
            endpoint.clone(),
            tx.clone(),
            in_flight.clone(),
        );
        inf.fetch_add(1, Ordering::SeqCst);
        let start = t0.elapsed().as_secs_f64();
        handles.push(std::thread::spawn(move || {
            let rec = one_request(&agent, &endpoint, job, start, stream);
            inf.fetch_sub(1, Ordering::SeqCst);
            let _ = tx.send(rec);
        }));
        sent += 1;
        while let Ok(r) = rx.try_recv() {
            pb.inc(1);
            records.push(r);
        }
        pb.set_message(format!("{} in flight", in_flight.load(Ordering::SeqCst)));
        if handles.len() > 256 {
            handles.retain(|h| !h.is_finished());
        }
    }
    if num == usize::MAX {
        pb.set_length(sent as u64);
    }
    drop(tx);
    for h in handles {
        let _ = h.join();
    }
    for r in rx.iter() {
        pb.inc(1);
        records.push(r);
    }
    pb.finish_and_clear();
    let wall = t0.elapsed().as_secs_f64();
    let rep = report(&records, wall, a, rate, concurrency);
    if a.output == "json" {
        println!("{}", serde_json::to_string_pretty(&rep.json)?);
    } else {
        print!("{}", rep.markdown);
    }
    if let Some(p) = &a.json_out {
        std::fs::write(p, serde_json::to_string_pretty(&rep.json)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &a.md_out {
        std::fs::write(p, &rep.markdown).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &a.plot {
        std::fs::write(p, crate::bench_serve_report::svg(&records, &rep.classes))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Send one request and time it.
fn one_request(agent: &ureq::Agent, endpoint: &str, job: Job, start: f64, stream: bool) -> Record {
    let t = Instant::now();
    let mut rec = Record {
        class: job.class,
        start,
        outcome: Outcome::Error,
        status: 0,
        ttft: None,
        itl: Vec::new(),
        e2e: 0.0,
        output_tokens: 0,
        truncated: false,
        error: None,
    };
    let resp = agent
        .post(endpoint)
        .set("Content-Type", "application/json")
        .send_string(&job.body.to_string());
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            rec.status = code;
            rec.e2e = t.elapsed().as_secs_f64();
            rec.outcome = Outcome::from_status(code);
            rec.error = Some(r.into_string().unwrap_or_default());
            return rec;
        }
        Err(e) => {
            rec.e2e = t.elapsed().as_secs_f64();
            rec.error = Some(e.to_string());
            return rec;
        }
    };
    rec.status = resp.status();
    if !stream {
        let v = resp
            .into_string()
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_str::<Value>(&b).map_err(|e| e.to_string()));
        rec.e2e = t.elapsed().as_secs_f64();
        rec.ttft = Some(rec.e2e);
        match v {
            Ok(v) => {
                rec.output_tokens = v["usage"]["completion_tokens"].as_u64().unwrap_or(0) as usize;
                rec.outcome = Outcome::Ok;
            }
            Err(e) => {
                rec.truncated = true;
                rec.error = Some(e);
            }
        }
        return rec;
    }
    let mut reader = BufReader::new(resp.into_reader());
    let mut line = String::new();
    let mut last_token_at: Option<Instant> = None;
    let mut done = false;
    let mut finished = false;
    let mut chunks = 0usize;
    let mut stream_error = None;
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                stream_error = Some(e.to_string());
                break;
            }
        }
        let Some(d) = line.trim_end().strip_prefix("data: ") else {
            continue;
        };
        if d == "[DONE]" {
            done = true;
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(d) else {
            continue;
        };
        if v.get("error").is_some() {
            stream_error = Some(d.to_string());
            continue;
        }
        if let Some(u) = v.get("usage").and_then(|u| u.get("completion_tokens")) {
            rec.output_tokens = u.as_u64().unwrap_or(0) as usize;
        }
        for ch in v["choices"].as_array().into_iter().flatten() {
            let text = ch["delta"]["content"]
                .as_str()
                .or(ch["delta"]["reasoning_content"].as_str())
                .or(ch["text"].as_str())
                .unwrap_or("");
            if !text.is_empty() {
                let now = Instant::now();
                match last_token_at {
                    None => rec.ttft = Some(t.elapsed().as_secs_f64()),
                    Some(p) => rec.itl.push((now - p).as_secs_f64()),
                }
                last_token_at = Some(now);
                chunks += 1;
            }
            if ch["finish_reason"].is_string() {
                finished = true;
            }
        }
    }
    rec.e2e = t.elapsed().as_secs_f64();
    if rec.output_tokens == 0 {
        rec.output_tokens = chunks;
    }
    if let Some(e) = stream_error {
        // An error event inside a 200 stream (e.g. a queue timeout in wait mode).
        rec.outcome = if e.contains("service_unavailable") || e.contains("queue_timeout") {
            Outcome::Unavailable
        } else {
            Outcome::Error
        };
        rec.truncated = !done;
        rec.error = Some(e);
    } else if done && finished {
        rec.outcome = Outcome::Ok;
    } else {
        rec.truncated = true;
        rec.error = Some("the stream ended without a finish_reason and [DONE]".into());
    }
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_mix_is_normalised_and_checked() {
        let m = parse_mix(Some("vip=1,normal=3")).unwrap();
        assert_eq!(m, vec![("vip".into(), 0.25), ("normal".into(), 1.0)]);
        assert!(parse_mix(Some("vip")).is_err());
        assert!(parse_mix(Some("vip=-1")).is_err());
        assert!(parse_mix(Some("vip=0")).is_err());
        assert!(parse_mix(None).unwrap().is_empty());
    }
}
