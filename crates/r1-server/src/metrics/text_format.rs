//! Writing the Prometheus text exposition format (version 0.0.4): `# HELP` and `# TYPE`
//! lines, then one line per series. Every series gets the encoder's constant labels first
//! (the served model's name, as vLLM labels its series with `model_name`).

use std::fmt::Write;

use r1_engine::engine_metrics::Histogram;

/// The content type Prometheus expects for this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

pub struct TextEncoder {
    out: String,
    const_labels: Vec<(String, String)>,
}

impl TextEncoder {
    pub fn new(const_labels: &[(&str, &str)]) -> Self {
        TextEncoder {
            out: String::with_capacity(16 << 10),
            const_labels: const_labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Start a metric family: its help text and type.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One series line of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        let all = self
            .const_labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(labels.iter().copied());
        let mut first = true;
        for (k, v) in all {
            self.out.push(if first { '{' } else { ',' });
            first = false;
            let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
        }
        if !first {
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_value(value));
    }

    /// A family with one unlabelled series.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The `_bucket`, `_sum` and `_count` series of one histogram (family written by caller).
    pub fn histogram_series(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let cumulative = h.cumulative();
        let bucket = format!("{name}_bucket");
        for (i, &c) in cumulative.iter().enumerate() {
            let le = h
                .bounds()
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| format_value(*b));
            let mut l: Vec<(&str, &str)> = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, c as f64);
        }
        self.sample(&format!("{name}_sum"), labels, h.sum());
        self.sample(&format!("{name}_count"), labels, h.count() as f64);
    }

    /// A histogram family with one unlabelled histogram.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.family(name, Kind::Histogram, help);
        self.histogram_series(name, &[], h);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_families_labels_and_histograms() {
        let mut e = TextEncoder::new(&[("model_name", "m\"1")]);
        e.single("x_total", Kind::Counter, "Things.\nCounted.", 3.0);
        let mut h = Histogram::new(&[0.5, 1.0]);
        h.observe(0.2);
        h.observe(2.0);
        e.histogram("lat_seconds", "Latency.", &h);
        let text = e.finish();
        let expected = "# HELP x_total Things.\\nCounted.\n\
            # TYPE x_total counter\n\
            x_total{model_name=\"m\\\"1\"} 3\n\
            # HELP lat_seconds Latency.\n\
            # TYPE lat_seconds histogram\n\
            lat_seconds_bucket{model_name=\"m\\\"1\",le=\"0.5\"} 1\n\
            lat_seconds_bucket{model_name=\"m\\\"1\",le=\"1\"} 1\n\
            lat_seconds_bucket{model_name=\"m\\\"1\",le=\"+Inf\"} 2\n\
            lat_seconds_sum{model_name=\"m\\\"1\"} 2.2\n\
            lat_seconds_count{model_name=\"m\\\"1\"} 2\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn no_braces_without_labels() {
        let mut e = TextEncoder::new(&[]);
        e.single("up_ratio", Kind::Gauge, "Up.", f64::INFINITY);
        assert!(e.finish().ends_with("\nup_ratio +Inf\n"));
    }
}
