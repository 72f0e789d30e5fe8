// The chat page: conversations kept in localStorage, answers streamed over SSE from
// /v1/chat/completions, the model's reasoning in a "Thinking…" block (open while it streams,
// folded after), Stop (aborting the fetch closes the connection, and the server cancels the
// request and frees its KV cache), regenerate, edit-and-resend, settings, and the API key.

import { api, failure, explain, getKey, setKey, el, ApiFailure } from "/ui/common.js";
import { render } from "/ui/markdown.js";
import { sse, mergeToolCalls, statsText } from "/ui/stream.js";

const CONV_STORE = "r1serve.conversations";
const SETTINGS_STORE = "r1serve.settings";
const DEFAULTS = { system: "", temperature: 0.7, top_p: 0.95, max_tokens: 1024, model: "" };

const $ = (id) => document.getElementById(id);

let settings = loadSettings();
let conversations = loadConversations();
let current = null; // the open conversation
let streaming = null; // {controller, conv, msg} while an answer streams
let retryTimer = null;

function loadSettings() {
  try {
    return { ...DEFAULTS, ...JSON.parse(localStorage.getItem(SETTINGS_STORE) || "{}") };
  } catch (_) {
    return { ...DEFAULTS };
  }
}

function loadConversations() {
  try {
    const c = JSON.parse(localStorage.getItem(CONV_STORE) || "[]");
    return Array.isArray(c) ? c : [];
  } catch (_) {
    return [];
  }
}

function save() {
  try {
    localStorage.setItem(CONV_STORE, JSON.stringify(conversations));
  } catch (e) {
    showBanner({ title: "Could not save the conversation", detail: String(e) });
  }
}

function newId() {
  return Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
}

// ---------------------------------------------------------------- conversations list

function renderList() {
  const ul = $("conversations");
  ul.replaceChildren();
  for (const c of [...conversations].sort((a, b) => b.updated - a.updated)) {
    const li = el("li", { class: c === current ? "active" : "", "data-id": c.id });
    const title = el("button", {
      type: "button",
      class: "conv-title",
      text: c.title || "New chat",
      title: c.title || "New chat",
      "aria-current": c === current ? "true" : null,
      onclick: () => open(c),
    });
    const rename = el("button", {
      type: "button",
      class: "link",
      text: "Rename",
      "aria-label": `Rename “${c.title || "New chat"}”`,
      onclick: () => startRename(li, c),
    });
    const del = el("button", {
      type: "button",
      class: "link",
      text: "Delete",
      "aria-label": `Delete “${c.title || "New chat"}”`,
      onclick: () => remove(c),
    });
    li.append(title, rename, del);
    ul.append(li);
  }
}

function startRename(li, c) {
  const input = el("input", { type: "text", value: c.title || "", "aria-label": "New title" });
  let finished = false;
  const done = (keep) => {
    // Enter ends the edit, and the redraw that follows blurs the input: act once.
    if (finished) return;
    finished = true;
    if (keep && input.value.trim()) {
      c.title = input.value.trim();
      save();
    }
    renderList();
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") done(true);
    else if (e.key === "Escape") done(false);
  });
  input.addEventListener("blur", () => done(true));
  li.replaceChildren(input);
  input.focus();
  input.select();
}

function remove(c) {
  if (!confirm(`Delete the conversation “${c.title || "New chat"}”?`)) return;
  if (streaming && streaming.conv === c) stop();
  conversations = conversations.filter((x) => x !== c);
  save();
  if (current === c) current = null;
  renderList();
  renderMessages();
}

function open(c) {
  current = c;
  renderList();
  renderMessages();
  $("sidebar").classList.remove("open");
  $("prompt").focus();
}

function newChat() {
  current = null;
  renderList();
  renderMessages();
  $("sidebar").classList.remove("open");
  $("prompt").focus();
}

// ---------------------------------------------------------------- messages

function renderMessages() {
  const box = $("messages");
  box.replaceChildren();
  if (!current || !current.messages.length) {
    box.append(el("p", { class: "empty", text: "Ask anything. Answers stream here." }));
    return;
  }
  current.messages.forEach((m, i) => box.append(messageView(m, i)));
  box.scrollTop = box.scrollHeight;
}

function messageView(m, i) {
  const view = el("article", {
    class: "msg " + m.role,
    "data-index": String(i),
    "aria-label": m.role === "user" ? "Your message" : "Answer",
  });
  view.append(el("div", { class: "who", text: m.role === "user" ? "You" : m.model || "Assistant" }));
  if (m.role === "user") {
    view.append(el("div", { class: "body", text: m.content }));
    const actions = el("div", { class: "actions" });
    actions.append(
      el("button", {
        type: "button",
        class: "link edit",
        text: "Edit",
        "aria-label": "Edit this message and send it again",
        onclick: () => startEdit(view, i),
      }),
    );
    view.append(actions);
    return view;
  }
  fillAssistant(view, m, i);
  return view;
}

/** (Re)draws an assistant message in place: thinking block, tool calls, body, stats. */
function fillAssistant(view, m, i) {
  view.querySelectorAll(":scope > :not(.who)").forEach((n) => n.remove());
  const live = streaming && streaming.msg === m;
  if (m.reasoning) {
    const secs = thinkingSeconds(m);
    const thinking = live && !m.thinkingDone;
    const d = el("details", { class: "thinking", "data-testid": "thinking" });
    // Open while the model thinks, folded once it answers or ends; the user's own toggles win.
    d.open = thinking ? !m.thinkingClosedByUser : !!m.thinkingOpen;
    const label = thinking ? `Thinking… (${secs} s)` : `Thought for ${secs} s`;
    // Only the user's clicks (keyboard activation included) are remembered; the block is
    // redrawn on every delta, so its own toggle events say nothing.
    const summary = el("summary", {
      text: label,
      onclick: () => {
        const willOpen = !d.open;
        if (streaming && streaming.msg === m && !m.thinkingDone) m.thinkingClosedByUser = !willOpen;
        else m.thinkingOpen = willOpen;
      },
    });
    d.append(summary, el("div", { class: "think-body", text: m.reasoning }));
    view.append(d);
  }
  if (m.tool_calls && m.tool_calls.length) {
    const t = el("div", { class: "tool-calls", "data-testid": "tool-calls" });
    t.append(el("div", { class: "muted", text: "Tool calls" }));
    for (const c of m.tool_calls) {
      const fn = c.function || {};
      t.append(el("pre", {}, el("code", { text: `${fn.name || "?"}(${fn.arguments || ""})` })));
    }
    view.append(t);
  }
  const body = el("div", { class: "body" + (live ? " cursor" : "") });
  body.innerHTML = render(m.content || "");
  view.append(body);
  if (!live && !m.content && m.reasoning && !m.error && !m.stopped) {
    view.append(el("p", { class: "muted", text: "(The model gave no answer after its thinking.)" }));
  }
  if (m.stopped) view.append(el("p", { class: "stopped", text: "Stopped." }));
  if (m.error) view.append(errorView(m.error));
  if (!live) {
    const actions = el("div", { class: "actions" });
    if (m.stats) actions.append(el("span", { class: "stats", "data-testid": "stats", text: statsText(m.stats) }));
    if (current && i === current.messages.length - 1) {
      actions.append(
        el("button", { type: "button", class: "link regenerate", text: "Regenerate", onclick: regenerate }),
      );
    }
    if (m.content) {
      actions.append(
        el("button", {
          type: "button",
          class: "link",
          text: "Copy",
          "aria-label": "Copy this answer",
          onclick: (e) => copy(m.content, e.target),
        }),
      );
    }
    view.append(actions);
  }
}

function thinkingSeconds(m) {
  if (!m.thinkStart) return 0;
  const end = m.thinkEnd || Date.now();
  return Math.max(0, Math.round((end - m.thinkStart) / 1000));
}

function errorView(e) {
  const box = el("div", { class: "error", role: "alert", "data-testid": "error", "data-status": String(e.status || "") });
  box.append(el("strong", { text: e.title }), el("div", { text: e.detail }));
  if (e.retryAt) {
    const line = el("div", { class: "retry" });
    const tick = () => {
      const left = Math.ceil((e.retryAt - Date.now()) / 1000);
      if (left > 0) {
        line.textContent = `You can retry in ${left} s (the server's Retry-After).`;
        line.setAttribute("data-seconds", String(left));
      } else {
        line.replaceChildren(
          el("button", { type: "button", class: "primary retry-now", text: "Retry now", onclick: regenerate }),
        );
        clearInterval(retryTimer);
      }
    };
    tick();
    clearInterval(retryTimer);
    retryTimer = setInterval(() => {
      if (!line.isConnected) return clearInterval(retryTimer);
      tick();
    }, 250);
    box.append(line);
  }
  return box;
}

function startEdit(view, i) {
  if (streaming) return;
  const m = current.messages[i];
  const ta = el("textarea", { rows: "3", "aria-label": "Edit your message" });
  ta.value = m.content;
  const send = el("button", {
    type: "button",
    class: "primary",
    text: "Save & send",
    onclick: () => {
      const text = ta.value.trim();
      if (!text) return;
      // Everything after the edited message is dropped: the answer is made again.
      current.messages = current.messages.slice(0, i);
      current.messages.push({ role: "user", content: text });
      save();
      renderMessages();
      generate();
    },
  });
  const cancel = el("button", { type: "button", text: "Cancel", onclick: renderMessages });
  ta.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send.click();
    } else if (e.key === "Escape") renderMessages();
  });
  const box = el("div", { class: "edit-box" }, ta, el("div", { class: "row" }, send, cancel));
  view.querySelector(".body").replaceWith(box);
  view.querySelector(".actions").remove();
  ta.focus();
}

async function copy(text, button) {
  try {
    if (navigator.clipboard && window.isSecureContext) await navigator.clipboard.writeText(text);
    else {
      // Plain http on another host: the Clipboard API is off, the old way still works.
      const ta = el("textarea", { class: "visually-hidden" });
      ta.value = text;
      document.body.append(ta);
      ta.select();
      document.execCommand("copy");
      ta.remove();
    }
    const was = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => (button.textContent = was), 1200);
  } catch (_) {
    button.textContent = "Copy failed";
  }
}

// ---------------------------------------------------------------- sending and streaming

function send() {
  const ta = $("prompt");
  const text = ta.value.trim();
  if (!text || streaming) return;
  if (!current) {
    current = { id: newId(), title: text.slice(0, 60), messages: [], created: Date.now(), updated: Date.now() };
    conversations.push(current);
  }
  current.messages.push({ role: "user", content: text });
  ta.value = "";
  save();
  renderList();
  renderMessages();
  generate();
}

function regenerate() {
  if (streaming || !current) return;
  while (current.messages.length && current.messages[current.messages.length - 1].role === "assistant") {
    current.messages.pop();
  }
  if (!current.messages.length) return;
  save();
  renderMessages();
  generate();
}

function requestMessages(conv) {
  const msgs = [];
  if (settings.system.trim()) msgs.push({ role: "system", content: settings.system });
  for (const m of conv.messages) {
    if (m.role === "user") msgs.push({ role: "user", content: m.content });
    else if (!m.error && (m.content || (m.tool_calls && m.tool_calls.length))) {
      const a = { role: "assistant", content: m.content || "" };
      if (m.tool_calls && m.tool_calls.length) a.tool_calls = m.tool_calls;
      msgs.push(a);
    }
  }
  return msgs;
}

async function generate() {
  const conv = current;
  const model = $("model").value || settings.model || undefined;
  const msg = { role: "assistant", content: "", reasoning: "", model };
  const body = {
    model,
    messages: requestMessages(conv),
    stream: true,
    stream_options: { include_usage: true },
    temperature: Number(settings.temperature),
    top_p: Number(settings.top_p),
    max_tokens: Number(settings.max_tokens),
  };
  conv.messages.push(msg);
  conv.updated = Date.now();
  const controller = new AbortController();
  streaming = { controller, conv, msg };
  setBusy(true);
  hideBanner();
  renderMessages();
  const view = () => $("messages").querySelector(`article[data-index="${conv.messages.indexOf(msg)}"]`);
  let pending = false;
  const redraw = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      const v = current === conv ? view() : null;
      if (!v) return;
      const box = $("messages");
      const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
      fillAssistant(v, msg, conv.messages.indexOf(msg));
      if (atBottom) box.scrollTop = box.scrollHeight;
    });
  };
  const thinkTicker = setInterval(() => {
    if (msg.reasoning && !msg.thinkingDone) redraw();
  }, 1000);

  const t0 = performance.now();
  let tFirst = null;
  let deltas = 0;
  let usage = null;
  try {
    const resp = await api("/v1/chat/completions", {
      method: "POST",
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!resp.ok) throw await failure(resp);
    for await (const chunk of sse(resp.body)) {
      if (chunk.error) {
        throw new ApiFailure(500, chunk.error.message || "error", chunk.error.code || chunk.error.type);
      }
      if (chunk.usage) usage = chunk.usage;
      const ch = chunk.choices && chunk.choices[0];
      if (!ch) continue;
      const d = ch.delta || {};
      if (d.reasoning_content) {
        if (!msg.thinkStart) msg.thinkStart = Date.now();
        msg.reasoning += d.reasoning_content;
      }
      if (d.content) {
        if (msg.thinkStart && !msg.thinkingDone) {
          msg.thinkingDone = true;
          msg.thinkEnd = Date.now();
        }
        msg.content += d.content;
      }
      if (d.tool_calls) mergeToolCalls(msg, d.tool_calls);
      if (d.reasoning_content || d.content || d.tool_calls) {
        deltas++;
        if (tFirst === null) tFirst = performance.now();
      }
      if (ch.finish_reason) msg.finish_reason = ch.finish_reason;
      redraw();
    }
  } catch (e) {
    if (controller.signal.aborted) msg.stopped = true;
    else {
      const ex = explain(e);
      msg.error = { title: ex.title, detail: ex.detail, status: e.status || 0 };
      if (ex.retryAfter !== undefined && ex.retryAfter !== null) msg.error.retryAt = Date.now() + ex.retryAfter * 1000;
      if (e.status === 401) openKeyPanel(ex.title);
    }
  } finally {
    clearInterval(thinkTicker);
  }
  const tEnd = performance.now();
  if (msg.thinkStart && !msg.thinkEnd) msg.thinkEnd = Date.now();
  msg.thinkingDone = true;
  if (usage || deltas) {
    const completion = usage ? usage.completion_tokens : deltas;
    const genSecs = tFirst !== null ? (tEnd - tFirst) / 1000 : 0;
    msg.stats = {
      prompt_tokens: usage ? usage.prompt_tokens : undefined,
      completion_tokens: completion,
      reasoning_tokens: usage && usage.completion_tokens_details ? usage.completion_tokens_details.reasoning_tokens : 0,
      approximate: !usage,
      // Tokens after the first over the time since the first: the decode speed.
      tps: genSecs > 0 && completion > 1 ? (completion - 1) / genSecs : undefined,
      ttft: tFirst !== null ? (tFirst - t0) / 1000 : undefined,
    };
  }
  streaming = null;
  conv.updated = Date.now();
  save();
  setBusy(false);
  if (current === conv) renderMessages();
  renderList();
}

function stop() {
  if (streaming) streaming.controller.abort();
}

function setBusy(b) {
  $("send").hidden = b;
  $("stop").hidden = !b;
  document.body.toggleAttribute("data-streaming", b);
}

// ---------------------------------------------------------------- banner, key, settings, models

function showBanner(ex) {
  const b = $("banner");
  b.replaceChildren(el("strong", { text: ex.title }), el("div", { text: ex.detail }));
  b.hidden = false;
}

function hideBanner() {
  $("banner").hidden = true;
}

function openKeyPanel(why) {
  $("key-panel").hidden = false;
  $("key-button").setAttribute("aria-expanded", "true");
  if (why) $("key-status").textContent = why;
  $("api-key").focus();
}

async function loadModels() {
  const sel = $("model");
  try {
    const r = await api("/v1/models");
    if (!r.ok) throw await failure(r);
    const j = await r.json();
    sel.replaceChildren(...j.data.map((m) => el("option", { value: m.id, text: m.id })));
    if (settings.model && j.data.some((m) => m.id === settings.model)) sel.value = settings.model;
    hideBanner();
    $("key-status").textContent = getKey() ? "Key accepted." : "";
    document.body.setAttribute("data-ready", "");
    return true;
  } catch (e) {
    const ex = explain(e);
    showBanner(ex);
    if (e instanceof ApiFailure && e.status === 401) openKeyPanel(ex.title);
    document.body.setAttribute("data-ready", "");
    return false;
  }
}

function fillSettings() {
  $("set-system").value = settings.system;
  $("set-temperature").value = settings.temperature;
  $("set-top-p").value = settings.top_p;
  $("set-max-tokens").value = settings.max_tokens;
}

function toggle(panelId, buttonId) {
  const p = $(panelId);
  p.hidden = !p.hidden;
  $(buttonId).setAttribute("aria-expanded", String(!p.hidden));
}

function init() {
  fillSettings();
  $("api-key").value = getKey();
  $("new-chat").addEventListener("click", newChat);
  $("open-sidebar").addEventListener("click", () => $("sidebar").classList.add("open"));
  $("close-sidebar").addEventListener("click", () => $("sidebar").classList.remove("open"));
  $("settings-button").addEventListener("click", () => toggle("settings", "settings-button"));
  $("key-button").addEventListener("click", () => toggle("key-panel", "key-button"));
  $("model").addEventListener("change", () => {
    settings.model = $("model").value;
    localStorage.setItem(SETTINGS_STORE, JSON.stringify(settings));
  });
  $("settings-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const num = (id, lo, hi, dflt) => {
      const v = Number($(id).value);
      return Number.isFinite(v) && v >= lo && v <= hi ? v : dflt;
    };
    settings.system = $("set-system").value;
    settings.temperature = num("set-temperature", 0, 2, DEFAULTS.temperature);
    settings.top_p = num("set-top-p", 0, 1, DEFAULTS.top_p);
    settings.max_tokens = Math.round(num("set-max-tokens", 1, 1e7, DEFAULTS.max_tokens));
    localStorage.setItem(SETTINGS_STORE, JSON.stringify(settings));
    fillSettings();
    toggle("settings", "settings-button");
  });
  $("settings-reset").addEventListener("click", () => {
    settings = { ...DEFAULTS, model: settings.model };
    fillSettings();
  });
  $("key-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    setKey($("api-key").value);
    $("key-status").textContent = "Checking…";
    if (await loadModels()) {
      $("key-panel").hidden = true;
      $("key-button").setAttribute("aria-expanded", "false");
    }
  });
  $("key-forget").addEventListener("click", () => {
    setKey("");
    $("api-key").value = "";
    $("key-status").textContent = "Key forgotten.";
  });
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  $("stop").addEventListener("click", stop);
  // Copy buttons of code blocks (rendered as HTML strings, so delegated here).
  $("messages").addEventListener("click", (e) => {
    const b = e.target.closest("button.copy-code");
    if (b) copy(b.closest(".code-block").querySelector("code").textContent, b);
  });
  if (conversations.length) current = [...conversations].sort((a, b) => b.updated - a.updated)[0];
  renderList();
  renderMessages();
  loadModels();
}

init();
