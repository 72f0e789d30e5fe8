// The operations dashboard: every 2 s it reads /metrics (Prometheus text) and /v1/scaling and
// draws figures and 5-minute charts. When API keys are on it needs an admin key: it first
// asks /admin/config (role `admin`, permission system:configure), and shows nothing else
// until that succeeds.

import { api, failure, explain, getKey, setKey, el, compact, duration, ApiFailure } from "/ui/common.js";
import * as prom from "/ui/prometheus.js";

const PERIOD_MS = 2000;
const HISTORY = 150; // points: 5 minutes at 2 s
const WINDOW_S = 30; // latency quantiles and hit rate in the charts: the last 30 s

const $ = (id) => document.getElementById(id);
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2"];

let timer = null;
let modelInfo = null;
const scrapes = []; // {t (s, browser clock), samples}
const series = new Map(); // chart id → {name → [values]}

// ------------------------------------------------------------------ access

async function start() {
  clearTimeout(timer);
  $("live").textContent = "connecting…";
  try {
    const r = await api("/admin/config");
    if (!r.ok) throw await failure(r);
    const cfg = await r.json();
    const m = await api("/v1/models");
    modelInfo = m.ok ? (await m.json()).data[0] : { id: cfg.served_model_name };
  } catch (e) {
    denied(e);
    return;
  }
  $("banner").hidden = true;
  $("key-panel").hidden = true;
  $("board").hidden = false;
  document.body.setAttribute("data-access", "granted");
  tick();
}

function denied(e) {
  $("board").hidden = true;
  let ex = explain(e);
  if (e instanceof ApiFailure && e.status === 403) {
    ex = {
      title: "This key cannot open the dashboard (403)",
      detail: "The dashboard needs a key with the admin role. " + e.message,
    };
  }
  if (e instanceof ApiFailure && (e.status === 401 || e.status === 403)) {
    $("key-panel").hidden = false;
    $("key-button").setAttribute("aria-expanded", "true");
  }
  const b = $("banner");
  b.replaceChildren(el("strong", { text: ex.title }), el("div", { text: ex.detail }));
  b.hidden = false;
  b.setAttribute("data-status", String(e.status || 0));
  $("live").textContent = "no access";
  document.body.setAttribute("data-access", "denied");
}

// ------------------------------------------------------------------ polling

async function tick() {
  const t = Date.now() / 1000;
  try {
    const [mr, sr] = await Promise.all([api("/metrics"), api("/v1/scaling")]);
    if (!mr.ok) throw await failure(mr);
    const samples = prom.parse(await mr.text());
    // /v1/scaling answers 503 until the advisor's first evaluation.
    const scaling = sr.ok ? await sr.json() : null;
    scrapes.push({ t, samples });
    while (scrapes.length > 2 && scrapes[0].t < t - Math.max(WINDOW_S, 10) - 5) scrapes.shift();
    update(samples, scaling, t);
    $("live").textContent = "live · updated " + new Date().toLocaleTimeString();
    $("banner").hidden = true;
  } catch (e) {
    if (e instanceof ApiFailure && (e.status === 401 || e.status === 403)) {
      denied(e);
      return;
    }
    const ex = explain(e);
    $("live").textContent = "update failed: " + ex.title;
  }
  timer = setTimeout(tick, PERIOD_MS);
}

/** The scrape closest to `secs` before `t` (for rates and windows). */
function before(t, secs) {
  let best = null;
  for (const s of scrapes) if (s.t <= t - secs + 0.5) best = s;
  return best || (scrapes.length > 1 ? scrapes[0] : null);
}

function rate(samples, prev, name, t) {
  if (!prev || prev.t >= t) return null;
  const now = prom.sum(samples, name);
  const was = prom.sum(prev.samples, name);
  if (now === null || was === null) return null;
  return Math.max(0, now - was) / (t - prev.t);
}

// ------------------------------------------------------------------ figures

function update(s, scaling, t) {
  const prev = scrapes.length > 1 ? scrapes[scrapes.length - 2] : null;
  const win = before(t, WINDOW_S);
  const running = prom.sum(s, "r1serve_num_requests_running");
  const waiting = prom.sum(s, "r1serve_num_requests_waiting");
  const queues = prom.byLabel(s, "r1serve_admission_queue_length", "class");
  const kv = prom.sum(s, "r1serve_kv_cache_usage_ratio");
  const blocks = prom.sum(s, "r1serve_kv_cache_blocks");
  const hits = prom.sum(s, "r1serve_prefix_cache_hits_total");
  const queries = prom.sum(s, "r1serve_prefix_cache_queries_total");
  const promptRate = rate(s, prev, "r1serve_prompt_tokens_total", t);
  const genRate = rate(s, prev, "r1serve_generation_tokens_total", t);
  const ttft = prom.buckets(s, "r1serve_time_to_first_token_seconds");
  const itl = prom.buckets(s, "r1serve_inter_token_latency_seconds");
  const codes = prom.byLabel(s, "r1serve_http_requests_total", "code");
  const n429 = codes["429"] || 0;
  const n503 = codes["503"] || 0;
  const started = prom.sum(s, "r1serve_process_start_time_seconds");
  const build = prom.select(s, "r1serve_build_info")[0];

  $("fact-model").textContent = modelInfo
    ? modelInfo.id + (modelInfo.max_model_len ? ` (context ${modelInfo.max_model_len})` : "")
    : "–";
  $("fact-build").textContent = build ? "r1serve " + build.labels.version : "–";
  // Uptime from the server's own clock would need its time; the start stamp against this
  // browser's clock is right whenever the clocks agree (same machine, NTP).
  $("fact-uptime").textContent = started !== null ? duration(Date.now() / 1000 - started) : "–";
  $("fact-kv-blocks").textContent = blocks !== null ? `${compact(blocks)} blocks` : "–";

  if (scaling) {
    $("advice-decision").textContent = scaling.decision.replace("_", " ");
    $("advice-replicas").textContent = String(scaling.desired_replicas);
    $("advice-qps").textContent = scaling.qps.toFixed(2);
    $("advice-util").textContent = (scaling.utilisation * 100).toFixed(0) + " %";
    $("advice-reason").textContent = scaling.reason;
  } else {
    $("advice-reason").textContent = "No advice yet (the advisor has not run its first evaluation).";
  }

  const q = (p, b) => prom.quantile(p, b);
  const secs = (v) => (v === null ? "–" : v < 1 ? (v * 1000).toFixed(v < 0.01 ? 2 : 0) + " ms" : v.toFixed(2) + " s");
  const tiles = [
    ["running", "Running requests", running, compact(running)],
    ["waiting", "Waiting requests", waiting, compact(waiting)],
    ["queued", "Admission queue", sumValues(queues), compact(sumValues(queues)), Object.entries(queues).map(([k, v]) => `${k} ${v}`).join(" · ")],
    ["prompt-tps", "Prompt tokens/s", promptRate, promptRate === null ? "–" : promptRate.toFixed(1)],
    ["gen-tps", "Generation tokens/s", genRate, genRate === null ? "–" : genRate.toFixed(1)],
    ["kv", "KV-cache use", kv, kv === null ? "–" : (kv * 100).toFixed(1) + " %"],
    ["prefix-hit", "Prefix-cache hit rate", queries ? hits / queries : null, queries ? ((100 * hits) / queries).toFixed(1) + " %" : "–", "since start, by token"],
    ["ttft-p50", "TTFT p50", q(0.5, ttft), secs(q(0.5, ttft)), "since start"],
    ["ttft-p99", "TTFT p99", q(0.99, ttft), secs(q(0.99, ttft)), "since start"],
    ["itl-p50", "ITL p50", q(0.5, itl), secs(q(0.5, itl)), "since start"],
    ["itl-p99", "ITL p99", q(0.99, itl), secs(q(0.99, itl)), "since start"],
    ["http-429", "429 answers", n429, compact(n429), "since start"],
    ["http-503", "503 answers", n503, compact(n503), "since start"],
    ["requests", "Requests", prom.sum(s, "r1serve_requests_total"), compact(prom.sum(s, "r1serve_requests_total")), "since start"],
  ];
  drawTiles(tiles);

  // Charts: windowed figures where a cumulative one would hide the present.
  const wt = win ? prom.bucketDelta(ttft, prom.buckets(win.samples, "r1serve_time_to_first_token_seconds")) : ttft;
  const wi = win ? prom.bucketDelta(itl, prom.buckets(win.samples, "r1serve_inter_token_latency_seconds")) : itl;
  let hitRate = null;
  if (win) {
    const dq = queries - prom.sum(win.samples, "r1serve_prefix_cache_queries_total");
    const dh = hits - prom.sum(win.samples, "r1serve_prefix_cache_hits_total");
    hitRate = dq > 0 ? (100 * dh) / dq : null;
  }
  const prev429 = prev ? prom.byLabel(prev.samples, "r1serve_http_requests_total", "code") : null;
  const perClassQueue = {};
  for (const [k, v] of Object.entries(queues)) perClassQueue[k] = v;
  push("queue", "Admission queue by priority class", "requests", perClassQueue);
  push("load", "Running and waiting requests", "requests", { running, waiting });
  push("tps", "Tokens per second", "tokens/s", { prompt: promptRate, generation: genRate });
  push("ttft", `Time to first token (last ${WINDOW_S} s)`, "s", { p50: q(0.5, wt), p99: q(0.99, wt) });
  push("itl", `Inter-token latency (last ${WINDOW_S} s)`, "s", { p50: q(0.5, wi), p99: q(0.99, wi) });
  push("kv", "KV-cache use", "%", { used: kv === null ? null : kv * 100 }, 100);
  push("prefix", `Prefix-cache hit rate (last ${WINDOW_S} s)`, "%", { hits: hitRate }, 100);
  push("refused", "429 and 503 answers per refresh", "answers", {
    429: prev429 ? n429 - (prev429["429"] || 0) : 0,
    503: prev429 ? n503 - (prev429["503"] || 0) : 0,
  });
  document.body.setAttribute("data-refreshes", String(Number(document.body.getAttribute("data-refreshes") || 0) + 1));
}

function sumValues(o) {
  return Object.values(o).reduce((a, b) => a + b, 0);
}

function drawTiles(tiles) {
  const box = $("tiles");
  for (const [id, label, raw, text, sub] of tiles) {
    let t = box.querySelector(`[data-metric="${id}"]`);
    if (!t) {
      t = el(
        "div",
        { class: "tile", "data-metric": id },
        el("div", { class: "label", text: label }),
        el("div", { class: "value" }),
        el("div", { class: "sub" }),
      );
      box.append(t);
    }
    t.querySelector(".sub").textContent = sub || "";
    const v = t.querySelector(".value");
    v.textContent = text || "–";
    // The exact figure, for tests and for a hover tooltip.
    if (raw === null || raw === undefined || !Number.isFinite(raw)) {
      v.removeAttribute("data-value");
      v.removeAttribute("title");
    } else {
      v.setAttribute("data-value", String(raw));
      v.setAttribute("title", String(raw));
    }
  }
}

// ------------------------------------------------------------------ charts

function push(id, title, unit, values, fixedMax) {
  let c = series.get(id);
  if (!c) {
    const canvas = el("canvas", { role: "img", "aria-label": title });
    const legend = el("div", { class: "legend" });
    const box = el("figure", { class: "chart", "data-chart": id }, el("h3", { text: title }), canvas, legend);
    box.style.margin = "0";
    $("charts").append(box);
    c = { canvas, legend, lines: new Map(), unit, fixedMax };
    series.set(id, c);
  }
  for (const [name, v] of Object.entries(values)) {
    if (!c.lines.has(name)) c.lines.set(name, new Array(c.lines.size ? c.lines.values().next().value.length : 0).fill(null));
    c.lines.get(name).push(v === undefined || !Number.isFinite(v) ? null : v);
  }
  for (const arr of c.lines.values()) while (arr.length > HISTORY) arr.shift();
  draw(c);
}

function draw(c) {
  const { canvas } = c;
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 400;
  const h = canvas.clientHeight || 150;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const g = canvas.getContext("2d");
  g.scale(dpr, dpr);
  const style = getComputedStyle(document.documentElement);
  const fg = style.getPropertyValue("--muted").trim() || "#555";
  const grid = style.getPropertyValue("--border").trim() || "#ccc";
  let max = c.fixedMax || 0;
  for (const arr of c.lines.values()) for (const v of arr) if (v !== null && v > max) max = v;
  if (!c.fixedMax) max = niceMax(max);
  const left = 44, right = 6, top = 6, bottom = 16;
  const pw = w - left - right, ph = h - top - bottom;
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = fg;
  g.strokeStyle = grid;
  g.lineWidth = 1;
  for (let k = 0; k <= 2; k++) {
    const y = top + ph - (ph * k) / 2;
    g.beginPath();
    g.moveTo(left, y);
    g.lineTo(left + pw, y);
    g.stroke();
    g.fillText(fmtAxis((max * k) / 2, c.unit), 2, y + 4);
  }
  g.fillText("−5 min", left, h - 3);
  g.fillText("now", left + pw - 22, h - 3);
  let i = 0;
  c.legend.replaceChildren();
  for (const [name, arr] of c.lines) {
    const color = PALETTE[i++ % PALETTE.length];
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.beginPath();
    let pen = false;
    arr.forEach((v, j) => {
      const x = left + (pw * (HISTORY - arr.length + j)) / (HISTORY - 1);
      if (v === null) {
        pen = false;
        return;
      }
      const y = top + ph - (max > 0 ? (ph * Math.min(v, max)) / max : 0);
      if (pen) g.lineTo(x, y);
      else g.moveTo(x, y);
      pen = true;
    });
    g.stroke();
    const last = [...arr].reverse().find((v) => v !== null);
    const sw = el("span", { class: "swatch" });
    sw.style.background = color;
    c.legend.append(el("span", {}, sw, `${name} ${last === undefined ? "–" : fmtAxis(last, c.unit)}`));
  }
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function fmtAxis(v, unit) {
  if (unit === "s") return v < 1 ? (v * 1000).toPrecision(3).replace(/\.0+$/, "") + " ms" : v.toFixed(2) + " s";
  if (unit === "%") return v.toFixed(0) + "%";
  return compact(Math.round(v * 10) / 10);
}

// ------------------------------------------------------------------ key form

$("api-key").value = getKey();
$("key-button").addEventListener("click", () => {
  const p = $("key-panel");
  p.hidden = !p.hidden;
  $("key-button").setAttribute("aria-expanded", String(!p.hidden));
});
$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  setKey($("api-key").value);
  start();
});
$("key-forget").addEventListener("click", () => {
  setKey("");
  $("api-key").value = "";
  start();
});
start();
