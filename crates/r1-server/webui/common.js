// Shared by the chat page and the dashboard: the API key the user typed (kept in this
// browser's localStorage), fetch with that key, and API errors turned into sentences people
// understand. No external code: everything the pages run is in the server binary.

const KEY_STORE = "r1serve.apiKey";

export function getKey() {
  return localStorage.getItem(KEY_STORE) || "";
}

export function setKey(k) {
  if (k) localStorage.setItem(KEY_STORE, k.trim());
  else localStorage.removeItem(KEY_STORE);
}

/** fetch() on this server with the stored key (if any) as `Authorization: Bearer`. */
export function api(path, opts = {}) {
  const headers = new Headers(opts.headers || {});
  const k = getKey();
  if (k) headers.set("Authorization", "Bearer " + k);
  if (opts.body && !headers.has("Content-Type")) headers.set("Content-Type", "application/json");
  return fetch(path, { ...opts, headers, cache: "no-store" });
}

/** An API error: status, the server's message and code, and Retry-After seconds. */
export class ApiFailure extends Error {
  constructor(status, message, code, retryAfter) {
    super(message);
    this.status = status;
    this.code = code || null;
    this.retryAfter = retryAfter;
  }
}

/** Reads a non-2xx response into an ApiFailure (the body is OpenAI-style JSON). */
export async function failure(resp) {
  let message = resp.statusText || "error";
  let code = null;
  try {
    const j = await resp.json();
    if (j && j.error) {
      message = j.error.message || message;
      code = j.error.code || j.error.type || null;
    }
  } catch (_) {
    /* not JSON: keep the status text */
  }
  const ra = resp.headers.get("Retry-After");
  let retryAfter = null;
  if (ra !== null) {
    const n = Number(ra);
    retryAfter = Number.isFinite(n) ? Math.max(0, Math.ceil(n)) : null;
  }
  return new ApiFailure(resp.status, message, code, retryAfter);
}

/** What to tell a person about a failure: {title, detail}. */
export function explain(err) {
  if (!(err instanceof ApiFailure)) {
    return {
      title: "Could not reach the server",
      detail: String(err && err.message ? err.message : err),
    };
  }
  const s = err.status;
  if (s === 401) {
    const missing = !getKey();
    return {
      title: missing ? "This server needs an API key" : "The API key was not accepted (401)",
      detail: missing
        ? "Enter your key in the API key field. Ask the server's operator for one."
        : "Check the key in the API key field: " + err.message,
    };
  }
  if (s === 403) {
    return { title: "Your key is not allowed to do this (403)", detail: err.message };
  }
  if (s === 429 || s === 503) {
    const what = s === 429 ? "Too many requests (429)" : "The server is busy (503)";
    return {
      title: what,
      detail: err.message + (err.retryAfter !== null ? "" : " Try again in a moment."),
      retryAfter: err.retryAfter,
    };
  }
  if (err.code === "context_length_exceeded") {
    return {
      title: "The conversation is too long for the model",
      detail:
        err.message +
        " Start a new conversation, shorten your message, or lower Max tokens in the settings.",
    };
  }
  return { title: "The server answered " + s, detail: err.message };
}

/** A DOM element: el("div", {class: "x", text: "y"}, child, ...). */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") e.textContent = v;
    else if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

/** 1234567 → "1.23 M"; small numbers as they are. */
export function compact(n, digits = 3) {
  if (n === null || n === undefined || !Number.isFinite(n)) return "–";
  const a = Math.abs(n);
  if (a >= 1e9) return (n / 1e9).toPrecision(digits) + " G";
  if (a >= 1e6) return (n / 1e6).toPrecision(digits) + " M";
  if (a >= 1e4) return (n / 1e3).toPrecision(digits) + " k";
  if (Number.isInteger(n)) return String(n);
  return n.toPrecision(digits);
}

/** Seconds → "3 d 4 h", "2 h 5 min", "4 min 7 s", "12 s". */
export function duration(s) {
  if (!Number.isFinite(s) || s < 0) return "–";
  s = Math.floor(s);
  const d = Math.floor(s / 86400),
    h = Math.floor((s % 86400) / 3600),
    m = Math.floor((s % 3600) / 60),
    sec = s % 60;
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${m} min`;
  if (m) return `${m} min ${sec} s`;
  return `${sec} s`;
}
