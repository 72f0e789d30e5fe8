// A small Markdown renderer for model answers: headings, paragraphs, lists (nested by
// indent), block quotes, rules, fenced code (an unclosed fence, as while streaming, runs to
// the end), pipe tables, and inline code, bold, italic, strikethrough and links. Every piece of
// the source is HTML-escaped before any markup is added, so an answer cannot inject HTML;
// links keep only http(s), mailto and same-site targets.

export function escapeHtml(s) {
  return s
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

function safeUrl(u) {
  const t = u.trim();
  if (/^(https?:|mailto:)/i.test(t)) return t;
  if (/^[/#?]/.test(t) && !t.startsWith("//")) return t;
  return null;
}

/** Inline markup on one run of text (no newlines handled specially). */
export function inline(src) {
  // Code spans first: their content is literal.
  const parts = src.split(/(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/);
  let out = "";
  for (let i = 0; i < parts.length; i++) {
    if (i % 3 === 0) out += emphasis(parts[i]);
    else if (i % 3 === 2) out += "<code>" + escapeHtml(parts[i].trim() || parts[i]) + "</code>";
  }
  return out;
}

function emphasis(text) {
  let s = escapeHtml(text);
  // Links become placeholders first, so emphasis rules never touch a URL.
  const links = [];
  s = s.replace(/\[([^\]]+)\]\(([^)\s]+)\)/g, (m, label, url) => {
    // The URL was escaped with the rest; &amp; is unescaped for the scheme check only.
    if (!safeUrl(url.replace(/&amp;/g, "&"))) return m;
    links.push([label, url]);
    return "\u0000" + (links.length - 1) + "\u0000";
  });
  return marks(s).replace(/\u0000(\d+)\u0000/g, (_, n) => {
    const [label, url] = links[Number(n)];
    return `<a href="${url}" target="_blank" rel="noopener noreferrer">${marks(label)}</a>`;
  });
}

/** Bold, italic and strikethrough on already-escaped text. */
function marks(s) {
  s = s.replace(/\*\*(?=\S)([\s\S]*?\S)\*\*/g, "<strong>$1</strong>");
  s = s.replace(/__(?=\S)([\s\S]*?\S)__(?!\w)/g, "<strong>$1</strong>");
  s = s.replace(/(^|[^*\w])\*(?=[^\s*])([^*]*?[^\s*])\*(?!\*)/g, "$1<em>$2</em>");
  s = s.replace(/(^|[^_\w])_(?=[^\s_])([^_]*?[^\s_])_(?![_\w])/g, "$1<em>$2</em>");
  return s.replace(/~~(?=\S)([\s\S]*?\S)~~/g, "<del>$1</del>");
}

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const TABLE_SEP = /^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$/;

/** Markdown → HTML string (safe to assign to innerHTML). */
export function render(md) {
  const lines = md.replace(/\r\n?/g, "\n").split("\n");
  return blocks(lines);
}

function blocks(lines) {
  let html = "";
  let i = 0;
  let para = [];
  const flush = () => {
    if (para.length) html += "<p>" + para.map(inline).join("<br>") + "</p>";
    para = [];
  };
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if ((m = line.match(FENCE))) {
      flush();
      const fence = m[1];
      const lang = m[2] || "";
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trimStart().startsWith(fence)) body.push(lines[i++]);
      i++; // the closing fence (or past the end)
      html += codeBlock(body.join("\n"), lang);
      continue;
    }
    if (!line.trim()) {
      flush();
      i++;
      continue;
    }
    if ((m = line.match(HEADING))) {
      flush();
      const n = m[1].length;
      html += `<h${n}>${inline(m[2])}</h${n}>`;
      i++;
      continue;
    }
    if (RULE.test(line) && !para.length) {
      flush();
      html += "<hr>";
      i++;
      continue;
    }
    if (QUOTE.test(line)) {
      flush();
      const q = [];
      while (i < lines.length && (m = lines[i].match(QUOTE))) {
        q.push(m[1]);
        i++;
      }
      html += "<blockquote>" + blocks(q) + "</blockquote>";
      continue;
    }
    if (ITEM.test(line)) {
      flush();
      const start = i;
      while (
        i < lines.length &&
        (ITEM.test(lines[i]) || (lines[i].trim() && /^\s{2,}/.test(lines[i])))
      )
        i++;
      html += list(lines.slice(start, i));
      continue;
    }
    if (line.includes("|") && i + 1 < lines.length && TABLE_SEP.test(lines[i + 1])) {
      flush();
      const rows = [line];
      i += 2;
      while (i < lines.length && lines[i].includes("|") && lines[i].trim()) rows.push(lines[i++]);
      html += table(rows);
      continue;
    }
    para.push(line.trim());
    i++;
  }
  flush();
  return html;
}

function list(lines) {
  const first = lines[0].match(ITEM);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const items = [];
  for (const l of lines) {
    const m = l.match(ITEM);
    if (m && m[1].length <= indent) items.push([m[3]]);
    else if (items.length) items[items.length - 1].push(l.slice(Math.min(indent + 2, l.search(/\S/))));
  }
  const tag = ordered ? "ol" : "ul";
  const startAttr = ordered && parseInt(first[2], 10) !== 1 ? ` start="${parseInt(first[2], 10)}"` : "";
  let html = `<${tag}${startAttr}>`;
  for (const it of items) {
    const [head, ...rest] = it;
    html += "<li>" + inline(head) + (rest.length ? blocks(rest) : "") + "</li>";
  }
  return html + `</${tag}>`;
}

function cells(row) {
  let r = row.trim();
  if (r.startsWith("|")) r = r.slice(1);
  if (r.endsWith("|")) r = r.slice(0, -1);
  return r.split("|").map((c) => c.trim());
}

function table(rows) {
  const head = cells(rows[0]);
  let html = "<div class=\"table-wrap\"><table><thead><tr>";
  for (const h of head) html += "<th>" + inline(h) + "</th>";
  html += "</tr></thead><tbody>";
  for (const r of rows.slice(1)) {
    html += "<tr>";
    for (const c of cells(r)) html += "<td>" + inline(c) + "</td>";
    html += "</tr>";
  }
  return html + "</tbody></table></div>";
}

function codeBlock(code, lang) {
  const label = lang ? `<span class="code-lang">${escapeHtml(lang)}</span>` : "<span></span>";
  return (
    `<div class="code-block"><div class="code-head">${label}` +
    `<button type="button" class="copy-code" aria-label="Copy code">Copy</button></div>` +
    `<pre><code${lang ? ` data-lang="${escapeHtml(lang)}"` : ""}>${escapeHtml(code)}</code></pre></div>`
  );
}
