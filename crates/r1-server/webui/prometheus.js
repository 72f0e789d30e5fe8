// Prometheus text format (0.0.4) → samples, and the sums, rates and histogram quantiles the
// dashboard draws. Quantiles interpolate linearly inside the bucket, as PromQL's
// histogram_quantile does, so the figures match what Grafana would show.

/** Text → [{name, labels: {k: v}, value}], comments and blank lines skipped. */
export function parse(text) {
  const out = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    let name, labels = {}, rest;
    const brace = line.indexOf("{");
    const space = line.indexOf(" ");
    if (brace !== -1 && (space === -1 || brace < space)) {
      name = line.slice(0, brace);
      const end = labelsEnd(line, brace);
      labels = parseLabels(line.slice(brace + 1, end));
      rest = line.slice(end + 1).trim();
    } else {
      name = line.slice(0, space);
      rest = line.slice(space + 1).trim();
    }
    const value = parseValue(rest.split(/\s+/)[0]);
    out.push({ name, labels, value });
  }
  return out;
}

function parseValue(v) {
  if (v === "+Inf") return Infinity;
  if (v === "-Inf") return -Infinity;
  return Number(v);
}

/** Index of the `}` closing the label set that opens at `start` (quotes respected). */
function labelsEnd(line, start) {
  let inQuote = false;
  for (let i = start + 1; i < line.length; i++) {
    const c = line[i];
    if (inQuote) {
      if (c === "\\") i++;
      else if (c === '"') inQuote = false;
    } else if (c === '"') inQuote = true;
    else if (c === "}") return i;
  }
  return line.length;
}

function parseLabels(s) {
  const labels = {};
  const re = /\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?/g;
  let m;
  while ((m = re.exec(s))) {
    labels[m[1]] = m[2].replace(/\\(["\\n])/g, (_, c) => (c === "n" ? "\n" : c));
  }
  return labels;
}

/** Samples of one metric whose labels include `match`. */
export function select(samples, name, match = {}) {
  return samples.filter(
    (s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v),
  );
}

/** Sum of one metric's samples (null when the metric is absent). */
export function sum(samples, name, match = {}) {
  const sel = select(samples, name, match);
  if (!sel.length) return null;
  return sel.reduce((a, s) => a + s.value, 0);
}

/** {labelValue: sum} of a metric grouped by one label. */
export function byLabel(samples, name, label) {
  const out = {};
  for (const s of select(samples, name)) {
    const k = s.labels[label];
    if (k !== undefined) out[k] = (out[k] || 0) + s.value;
  }
  return out;
}

/** A histogram's cumulative buckets [{le, count}] sorted by le, summed over other labels. */
export function buckets(samples, name) {
  const m = new Map();
  for (const s of select(samples, name + "_bucket")) {
    const le = parseValue(s.labels.le);
    m.set(le, (m.get(le) || 0) + s.value);
  }
  return [...m.entries()].sort((a, b) => a[0] - b[0]).map(([le, count]) => ({ le, count }));
}

/** Bucket counts of `now` minus `before` (the observations in between). */
export function bucketDelta(now, before) {
  if (!before) return now;
  const prev = new Map(before.map((b) => [b.le, b.count]));
  return now.map((b) => ({ le: b.le, count: Math.max(0, b.count - (prev.get(b.le) || 0)) }));
}

/** PromQL's histogram_quantile over cumulative buckets; null with no observations. */
export function quantile(q, bs) {
  if (!bs.length) return null;
  const total = bs[bs.length - 1].count;
  if (!(total > 0)) return null;
  const rank = q * total;
  let prevLe = 0,
    prevCount = 0;
  for (let i = 0; i < bs.length; i++) {
    const { le, count } = bs[i];
    if (count >= rank) {
      if (le === Infinity) return i > 0 ? bs[i - 1].le : null;
      if (i === 0 && le <= 0) return le;
      const inBucket = count - prevCount;
      if (inBucket <= 0) return le;
      return prevLe + (le - prevLe) * ((rank - prevCount) / inBucket);
    }
    prevLe = le;
    prevCount = count;
  }
  return bs[bs.length - 1].le;
}
