//! Results of `r1serve bench serve`: per-class percentiles, counts by status, throughput and
//! goodput, as a markdown table, JSON, and an SVG plot of time to first token over the run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::bench_serve::ServeBenchArgs;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// 429
    Refused,
    /// 503
    Unavailable,
    /// Any other 4xx.
    ClientError,
    /// Any other 5xx.
    ServerError,
    /// Transport failure, timeout, broken stream.
    Error,
}

impl Outcome {
    pub fn from_status(code: u16) -> Self {
        match code {
            200..=299 => Outcome::Ok,
            429 => Outcome::Refused,
            503 => Outcome::Unavailable,
            400..=499 => Outcome::ClientError,
            500..=599 => Outcome::ServerError,
            _ => Outcome::Error,
        }
    }
}

/// One request's measurements (seconds).
#[derive(Clone, Debug)]
pub struct Record {
    pub class: String,
    /// Send time since the start of the run.
    pub start: f64,
    pub outcome: Outcome,
    pub status: u16,
    pub ttft: Option<f64>,
    pub itl: Vec<f64>,
    pub e2e: f64,
    pub output_tokens: usize,
    /// A 200 stream that ended without its finish_reason and [DONE].
    pub truncated: bool,
    pub error: Option<String>,
}

/// The `p`-th percentile (0–100) by linear interpolation; `None` for no samples.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64))
}

fn pcts(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    let ms = |p| percentile(&v, p).map(|s| (s * 1e5).round() / 100.0);
    json!({"p50": ms(50.0), "p90": ms(90.0), "p99": ms(99.0), "n": v.len()})
}

pub struct Report {
    pub json: Value,
    pub markdown: String,
    pub classes: Vec<String>,
}

fn summarize(recs: &[&Record], wall: f64, a: &ServeBenchArgs) -> Value {
    let count = |o: Outcome| recs.iter().filter(|r| r.outcome == o).count();
    let ok: Vec<&&Record> = recs.iter().filter(|r| r.outcome == Outcome::Ok).collect();
    let good = ok
        .iter()
        .filter(|r| {
            let ttft_ok = r.ttft.is_some_and(|t| t * 1e3 <= a.slo_ttft_ms);
            let itl = if r.itl.is_empty() {
                0.0
            } else {
                r.itl.iter().sum::<f64>() / r.itl.len() as f64
            };
            ttft_ok && itl * 1e3 <= a.slo_itl_ms
        })
        .count();
    let tokens: usize = ok.iter().map(|r| r.output_tokens).sum();
    let five_xx = recs.iter().filter(|r| r.status >= 500).count();
    json!({
        "requests": recs.len(),
        "ok": ok.len(),
        "status_429": count(Outcome::Refused),
        "status_503": count(Outcome::Unavailable),
        "status_5xx": five_xx,
        "client_errors": count(Outcome::ClientError),
        "errors": count(Outcome::Error) + count(Outcome::ServerError),
        "truncated_streams": recs.iter().filter(|r| r.truncated).count(),
        "ttft_ms": pcts(ok.iter().filter_map(|r| r.ttft).collect()),
        "itl_ms": pcts(ok.iter().flat_map(|r| r.itl.iter().copied()).collect()),
        "e2e_ms": pcts(ok.iter().map(|r| r.e2e).collect()),
        "refusal_ms": pcts(recs.iter().filter(|r| r.outcome == Outcome::Refused).map(|r| r.e2e).collect()),
        "output_tokens": tokens,
        "output_tok_per_s": tokens as f64 / wall.max(1e-9),
        "goodput_req_per_s": good as f64 / wall.max(1e-9),
        "goodput_requests": good,
    })
}

pub fn report(
    records: &[Record],
    wall: f64,
    a: &ServeBenchArgs,
    rate: Option<f64>,
    concurrency: Option<usize>,
) -> Report {
    let mut by_class: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
    for r in records {
        let c = if r.class.is_empty() {
            "default"
        } else {
            &r.class
        };
        by_class.entry(c.to_string()).or_default().push(r);
    }
    let all: Vec<&Record> = records.iter().collect();
    let mut classes_json = serde_json::Map::new();
    for (c, recs) in &by_class {
        classes_json.insert(c.clone(), summarize(recs, wall, a));
    }
    let total = summarize(&all, wall, a);
    let json = json!({
        "url": a.url,
        "endpoint": a.endpoint,
        "request_rate": rate,
        "concurrency": concurrency,
        "stream": !a.no_stream,
        "duration_s": wall,
        "slo": {"ttft_ms": a.slo_ttft_ms, "itl_ms": a.slo_itl_ms},
        "all": total,
        "classes": classes_json,
    });
    let mut md = String::new();
    let _ = writeln!(
        md,
        "rate {} req/s, concurrency {}, {} requests in {:.1} s, {}",
        rate.map_or("inf".into(), |r| format!("{r:.2}")),
        concurrency.map_or("unlimited".into(), |c| c.to_string()),
        records.len(),
        wall,
        if a.no_stream {
            "non-streaming"
        } else {
            "streaming"
        }
    );
    md.push('\n');
    md.push_str(
        "| class | sent | 200 | 429 | 503 | err | trunc | TTFT p50/p90/p99 ms | ITL p50/p90/p99 ms | \
         e2e p50/p90/p99 ms | 429 p50/p99 ms | out tok/s | goodput req/s |\n",
    );
    md.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    let row = |md: &mut String, name: &str, s: &Value| {
        let p = |v: &Value| {
            let f = |k: &str| v[k].as_f64().map_or("-".into(), |x| format!("{x:.0}"));
            format!("{} / {} / {}", f("p50"), f("p90"), f("p99"))
        };
        let r = |v: &Value| {
            let f = |k: &str| v[k].as_f64().map_or("-".into(), |x| format!("{x:.1}"));
            format!("{} / {}", f("p50"), f("p99"))
        };
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.2} |",
            s["requests"],
            s["ok"],
            s["status_429"],
            s["status_503"],
            s["errors"].as_u64().unwrap_or(0) + s["client_errors"].as_u64().unwrap_or(0),
            s["truncated_streams"],
            p(&s["ttft_ms"]),
            p(&s["itl_ms"]),
            p(&s["e2e_ms"]),
            r(&s["refusal_ms"]),
            s["output_tok_per_s"].as_f64().unwrap_or(0.0),
            s["goodput_req_per_s"].as_f64().unwrap_or(0.0),
        );
    };
    for (c, s) in &classes_json {
        row(&mut md, c, s);
    }
    if classes_json.len() > 1 {
        row(&mut md, "all", &total);
    }
    Report {
        json,
        markdown: md,
        classes: by_class.keys().cloned().collect(),
    }
}

const COLORS: &[&str] = &[
    "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// TTFT of each successful request against its send time, one colour per class; refusals
/// (429/503) as small crosses along the bottom.
pub fn svg(records: &[Record], classes: &[String]) -> String {
    let (w, h, ml, mb, mt, mr) = (900.0, 420.0, 70.0, 50.0, 30.0, 150.0);
    let pw = w - ml - mr;
    let ph = h - mt - mb;
    let tmax = records.iter().map(|r| r.start).fold(1.0, f64::max);
    let ymax = records
        .iter()
        .filter_map(|r| r.ttft.map(|t| t * 1e3))
        .fold(10.0, f64::max)
        * 1.05;
    let x = |t: f64| ml + t / tmax * pw;
    let y = |ms: f64| mt + ph - ms / ymax * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="18" text-anchor="middle">time to first token over the run (crosses: refused)</text>"#,
        ml + pw / 2.0
    );
    let _ = writeln!(
        s,
        r#"<line x1="{ml}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{ml}" y1="{mt}" x2="{ml}" y2="{}" stroke="black"/>"#,
        mt + ph,
        ml + pw,
        mt + ph,
        mt + ph
    );
    for i in 0..=5 {
        let v = ymax * i as f64 / 5.0;
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="end">{v:.0}</text><line x1="{ml}" y1="{}" x2="{}" y2="{}" stroke="#eee"/>"##,
            ml - 6.0,
            y(v) + 4.0,
            y(v),
            ml + pw,
            y(v)
        );
        let t = tmax * i as f64 / 5.0;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{t:.0}</text>"#,
            x(t),
            mt + ph + 18.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">seconds since start</text><text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">TTFT (ms)</text>"#,
        ml + pw / 2.0,
        h - 10.0,
        mt + ph / 2.0,
        mt + ph / 2.0
    );
    for (ci, c) in classes.iter().enumerate() {
        let col = COLORS[ci % COLORS.len()];
        for r in records.iter().filter(|r| {
            let rc = if r.class.is_empty() {
                "default"
            } else {
                &r.class
            };
            rc == c
        }) {
            match (r.outcome, r.ttft) {
                (Outcome::Ok, Some(t)) => {
                    let _ = writeln!(
                        s,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="2" fill="{col}" fill-opacity="0.6"/>"#,
                        x(r.start),
                        y(t * 1e3)
                    );
                }
                (Outcome::Refused | Outcome::Unavailable, _) => {
                    let (cx, cy) = (x(r.start), mt + ph - 4.0 - 6.0 * ci as f64);
                    let _ = writeln!(
                        s,
                        r#"<path d="M{} {} l4 4 M{} {} l-4 4" stroke="{col}" stroke-opacity="0.5"/>"#,
                        cx - 2.0,
                        cy - 2.0,
                        cx + 2.0,
                        cy - 2.0
                    );
                }
                _ => {}
            }
        }
        let ly = mt + 10.0 + 18.0 * ci as f64;
        let _ = writeln!(
            s,
            r#"<circle cx="{}" cy="{ly}" r="4" fill="{col}"/><text x="{}" y="{}">{c}</text>"#,
            ml + pw + 15.0,
            ml + pw + 25.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.5));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert!((percentile(&v, 99.0).unwrap() - 99.01).abs() < 1e-9);
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
    }

    #[test]
    fn outcomes_by_status() {
        assert_eq!(Outcome::from_status(200), Outcome::Ok);
        assert_eq!(Outcome::from_status(429), Outcome::Refused);
        assert_eq!(Outcome::from_status(503), Outcome::Unavailable);
        assert_eq!(Outcome::from_status(400), Outcome::ClientError);
        assert_eq!(Outcome::from_status(500), Outcome::ServerError);
    }
}
