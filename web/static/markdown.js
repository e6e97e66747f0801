/*
 * A small Markdown renderer for Claude's replies: it escapes first, then adds a small, fixed
 * set of tags, so its output is safe to give to innerHTML.
 */

const MD_MAX_DEPTH = 6;

const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
export const escapeHTML = (s) => String(s).replace(/[&<>"']/g, (c) => ESC[c]);

const FENCE_RE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING_RE = /^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/;
const HR_RE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE_RE = /^ {0,3}>\s?/;
const LIST_RE = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;

const indentOf = (line) => line.length - line.trimStart().length;
const isBlank = (line) => line.trim() === '';

function isBlockStart(line) {
  return FENCE_RE.test(line) || HEADING_RE.test(line) || HR_RE.test(line) ||
    QUOTE_RE.test(line) || LIST_RE.test(line);
}

export function renderMarkdown(src, depth = 0) {
  // NUL marks inline placeholders below; a NUL in the input must not be able to fake one.
  const lines = String(src).replace(/\u0000/g, '\uFFFD').replace(/\r\n?/g, '\n').split('\n');
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (isBlank(line)) { i++; continue; }
    const fence = FENCE_RE.exec(line);
    if (fence) { i = parseFence(lines, i, fence, out); continue; }
    if (HR_RE.test(line)) { out.push('<hr>'); i++; continue; }
    if (depth < MD_MAX_DEPTH && QUOTE_RE.test(line)) { i = parseQuote(lines, i, depth, out); continue; }
    if (depth < MD_MAX_DEPTH && LIST_RE.test(line)) { i = parseList(lines, i, depth, out); continue; }
    const heading = HEADING_RE.exec(line);
    if (heading) {
      // Chat text sits under the page's own headings, so # maps to h3.
      const level = Math.min(6, heading[1].length + 2);
      out.push(`<h${level}>${inline(heading[2])}</h${level}>`);
      i++;
      continue;
    }
    i = parseParagraph(lines, i, out);
  }
  return out.join('');
}

function parseFence(lines, i, fence, out) {
  const marker = fence[1];
  const body = [];
  let j = i + 1;
  const closeRe = new RegExp(`^ {0,3}${marker[0] === '`' ? '`' : '~'}{${marker.length},}\\s*$`);
  while (j < lines.length && !closeRe.test(lines[j])) body.push(lines[j++]);
  // An unclosed fence (text still streaming) renders what it has as code.
  out.push(codeBlockHTML(body.join('\n'), fence[2]));
  return j + 1;
}

function codeBlockHTML(code, lang) {
  return '<div class="codeblock"><div class="codeblock-head"><span>' + escapeHTML(lang || 'text') +
    '</span><button type="button" class="copy-btn" data-copy>Copy</button></div>' +
    '<pre><code>' + escapeHTML(code) + '</code></pre></div>';
}

function parseQuote(lines, i, depth, out) {
  const inner = [];
  while (i < lines.length && !isBlank(lines[i]) && (QUOTE_RE.test(lines[i]) || !isBlockStart(lines[i]))) {
    inner.push(lines[i].replace(QUOTE_RE, ''));
    i++;
  }
  out.push(`<blockquote>${renderMarkdown(inner.join('\n'), depth + 1)}</blockquote>`);
  return i;
}

function parseList(lines, i, depth, out) {
  const first = LIST_RE.exec(lines[i]);
  const base = first[1].length;
  const ordered = /\d/.test(first[2]);
  const start = ordered ? parseInt(first[2], 10) : 1;
  const items = [];
  let loose = false;
  while (i < lines.length) {
    const line = lines[i];
    const m = LIST_RE.exec(line);
    if (m && m[1].length <= base + 1 && /\d/.test(m[2]) === ordered) {
      // Continuation lines are dedented by the item's content offset, so nested lists
      // parse recursively as top-level lists of the item.
      items.push({ lines: [m[3]], offset: m[1].length + m[2].length + 1 });
      i++;
      continue;
    }
    const item = items[items.length - 1];
    if (isBlank(line)) {
      const next = lines[i + 1];
      if (next !== undefined && !isBlank(next) && (indentOf(next) > base || (LIST_RE.test(next) && indentOf(next) <= base + 1 && /\d/.test(LIST_RE.exec(next)[2]) === ordered))) {
        if (indentOf(next) <= base + 1) loose = true;
        item.lines.push('');
        i++;
        continue;
      }
      break;
    }
    if (indentOf(line) > base) {
      item.lines.push(line.slice(Math.min(indentOf(line), item.offset)));
      i++;
      continue;
    }
    if (!isBlockStart(line) && item.lines[item.lines.length - 1] !== '') {
      item.lines.push(line.trim()); // lazy continuation of the item's paragraph
      i++;
      continue;
    }
    break;
  }
  const tag = ordered ? 'ol' : 'ul';
  const startAttr = ordered && start !== 1 ? ` start="${start}"` : '';
  const lis = items.map((item) => `<li>${renderListItem(item.lines, loose, depth)}</li>`);
  out.push(`<${tag}${startAttr}>${lis.join('')}</${tag}>`);
  return i;
}

function renderListItem(itemLines, loose, depth) {
  const simple = !loose && itemLines.every((l, k) => k === 0 || (!isBlank(l) && !isBlockStart(l)));
  if (simple) return inline(itemLines.join('\n'));
  return renderMarkdown(itemLines.join('\n'), depth + 1);
}

function parseParagraph(lines, i, out) {
  const para = [];
  while (i < lines.length && !isBlank(lines[i]) && (para.length === 0 || !isBlockStart(lines[i]))) {
    para.push(lines[i].trim());
    i++;
  }
  out.push(`<p>${inline(para.join('\n'))}</p>`);
  return i;
}

// Code spans, [text](url) links and bare URLs are cut out as placeholders first, so
// emphasis can wrap them and nothing inside them is touched by later rules.
const INLINE_TOKEN_RE = /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)|\[([^\]\n]+)\]\(\s*(https?:\/\/[^\s()]+(?:\([^\s()]*\))?[^\s()]*)\s*\)|(https?:\/\/[^\s<>()"'`]*[^\s<>()"'`.,:;!?*_])/g;

function inline(text) {
  const tokens = [];
  const hold = (html) => `\u0000${tokens.push(html) - 1}\u0000`;
  let s = text.replace(INLINE_TOKEN_RE, (m, ticks, code, label, url, bare) => {
    if (ticks) return hold(`<code>${escapeHTML(code.replace(/^ (.*) $/s, '$1'))}</code>`);
    if (label) return hold(linkHTML(url, emphasis(escapeHTML(label))));
    return hold(linkHTML(bare, escapeHTML(bare)));
  });
  s = emphasis(escapeHTML(s)).replace(/\n/g, '<br>');
  return s.replace(/\u0000(\d+)\u0000/g, (_, n) => tokens[Number(n)]);
}

function linkHTML(url, labelHTML) {
  // The regexes only admit http(s) URLs; check again so a future regex change cannot let
  // javascript: through.
  if (!/^https?:\/\//i.test(url)) return labelHTML;
  return `<a href="${escapeHTML(url)}" target="_blank" rel="noopener noreferrer">${labelHTML}</a>`;
}

// Runs on already-escaped text: it only wraps runs in tags.
function emphasis(s) {
  return s
    .replace(/\*\*(?=\S)([\s\S]*?\S)\*\*/g, '<strong>$1</strong>')
    .replace(/(^|[^\w])__(?=\S)([\s\S]*?\S)__(?!\w)/g, '$1<strong>$2</strong>')
    .replace(/(^|[^\w*])\*([^\s*](?:[^*\n]*?[^\s*])?)\*(?![\w*])/g, '$1<em>$2</em>')
    .replace(/(^|[^\w])_([^\s_](?:[^_\n]*?[^\s_])?)_(?!\w)/g, '$1<em>$2</em>')
    .replace(/~~(?=\S)([^~\n]*?\S)~~/g, '<del>$1</del>');
}
