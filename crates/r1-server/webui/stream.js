// The streaming side of an answer: the SSE reader for /v1/chat/completions, tool-call deltas
// merged into whole calls, and the per-answer token figures shown under it.

/** The JSON payloads of an SSE body (`data: …` events until `[DONE]`). */
export async function* sse(stream) {
  const reader = stream.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buf.indexOf("\n\n")) !== -1) {
      const event = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const data = event
        .split("\n")
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data) continue; // a comment (keep-alive)
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

export function mergeToolCalls(msg, deltas) {
  msg.tool_calls = msg.tool_calls || [];
  for (const d of deltas) {
    const i = d.index ?? msg.tool_calls.length;
    const t = (msg.tool_calls[i] = msg.tool_calls[i] || { id: "", type: "function", function: { name: "", arguments: "" } });
    if (d.id) t.id = d.id;
    if (d.type) t.type = d.type;
    if (d.function) {
      if (d.function.name) t.function.name += d.function.name;
      if (d.function.arguments) t.function.arguments += d.function.arguments;
    }
  }
}

export function statsText(s) {
  const parts = [];
  if (s.prompt_tokens !== undefined) parts.push(`${s.prompt_tokens} prompt`);
  if (s.completion_tokens !== undefined) {
    parts.push(`${s.completion_tokens} completion tokens` + (s.approximate ? " (approx.)" : ""));
  }
  if (s.reasoning_tokens) parts.push(`${s.reasoning_tokens} thinking`);
  if (s.tps) parts.push(`${s.tps.toFixed(1)} tokens/s`);
  if (s.ttft !== undefined) parts.push(`first token ${s.ttft.toFixed(2)} s`);
  return parts.join(" · ");
}
