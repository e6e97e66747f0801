/*
 * Nightona web console: the bot's local chat surface.
 *
 * Plain ES2020 in one IIFE, no build step and no dependencies, because the Go binary embeds
 * this file as is and the console must work offline.
 *
 * Safety rule for this file: text that comes from the server or the user only ever reaches the
 * DOM through textContent / text nodes, or through renderMarkdown(), which escapes everything
 * before it adds its own tags. innerHTML is used in exactly one place (renderBlock) and only
 * with renderMarkdown's output.
 */
(() => {
  'use strict';

  // ---------------------------------------------------------------------------------------
  // Constants
  // ---------------------------------------------------------------------------------------

  const STORE_KEY = 'nightona.console.threads.v1';
  const TIPS_HIDDEN_KEY = 'nightona.console.tips-hidden';
  const TITLE_MAX = 60;
  const OUTPUT_MAX_LINES = 40;
  // A single enormous line would defeat the line limit, so characters are capped too.
  const OUTPUT_MAX_CHARS = 6000;
  const BACKOFF_MIN_MS = 250;
  const BACKOFF_MAX_MS = 5000;
  const DEFAULT_MAX_PROMPT_BYTES = 32768;
  // Thread keys end up in URLs and hrefs; anything else in localStorage or the hash is junk.
  const THREAD_KEY_RE = /^[A-Za-z0-9_:.@-]{1,200}$/;
  const SPINNING_STAGES = new Set(['sandbox_starting', 'sandbox_waking']);
  const BUSY_STATES = new Set(['running', 'starting']);
  const NEAR_BOTTOM_PX = 48;
  const MD_MAX_DEPTH = 6;

  // ---------------------------------------------------------------------------------------
  // DOM helpers
  // ---------------------------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  // h builds an element. Strings become text nodes, so they are never parsed as HTML.
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c == null || c === false) continue;
      el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }

  // Icon paths are constants of this file (24×24, stroked), built with createElementNS so no
  // markup is parsed.
  const ICONS = {
    check: ['M20 6 9 17l-5-5'],
    x: ['M18 6 6 18', 'M6 6l12 12'],
    stop: ['M7 7h10v10H7z'],
    chevron: ['M9 6l6 6-6 6'],
    terminal: ['M4 17l6-6-6-6', 'M12 19h8'],
    filePlus: ['M14 3H6a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V9z', 'M14 3v6h6', 'M12 12v6', 'M9 15h6'],
    file: ['M14 3H6a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V9z', 'M14 3v6h6', 'M8 13h8', 'M8 17h5'],
    pencil: ['M12 20h9', 'M16.5 3.5a2.1 2.1 0 0 1 3 3L7 19l-4 1 1-4z'],
    search: ['M11 4a7 7 0 1 0 0 14 7 7 0 0 0 0-14z', 'M20 20l-4-4'],
    globe: ['M12 3a9 9 0 1 0 0 18 9 9 0 0 0 0-18z', 'M3 12h18', 'M12 3a14 14 0 0 1 0 18', 'M12 3a14 14 0 0 0 0 18'],
    list: ['M9 6h11', 'M9 12h11', 'M9 18h11', 'M4 6h.01', 'M4 12h.01', 'M4 18h.01'],
    wrench: ['M14.7 6.3a1 1 0 0 0 0 1.4l1.6 1.6a1 1 0 0 0 1.4 0l3.8-3.8a6 6 0 0 1-7.9 7.9l-6.9 6.9a2.1 2.1 0 0 1-3-3l6.9-6.9a6 6 0 0 1 7.9-7.9z'],
    sparkle: ['M12 2.5l2.2 6.3 6.3 2.2-6.3 2.2L12 19.5l-2.2-6.3L3.5 11l6.3-2.2z'],
    bot: ['M12 8V4', 'M5 8h14a1 1 0 0 1 1 1v9a1 1 0 0 1-1 1H5a1 1 0 0 1-1-1V9a1 1 0 0 1 1-1z', 'M9 13h.01', 'M15 13h.01'],
    clock: ['M12 3a9 9 0 1 0 0 18 9 9 0 0 0 0-18z', 'M12 7v5l3 2'],
    alert: ['M10.3 3.9 1.8 18a2 2 0 0 0 1.7 3h17a2 2 0 0 0 1.7-3L13.7 3.9a2 2 0 0 0-3.4 0z', 'M12 9v4', 'M12 17h.01'],
    info: ['M12 3a9 9 0 1 0 0 18 9 9 0 0 0 0-18z', 'M12 11v5', 'M12 8h.01'],
    dot: ['M12 11a1 1 0 1 0 0 2 1 1 0 0 0 0-2z'],
    play: ['M7 5v14l11-7z'],
    refresh: ['M20 11a8 8 0 0 0-14.9-4', 'M4 5v4h4', 'M4 13a8 8 0 0 0 14.9 4', 'M20 19v-4h-4'],
    ban: ['M12 3a9 9 0 1 0 0 18 9 9 0 0 0 0-18z', 'M5.6 5.6l12.8 12.8'],
  };
  const SVG_NS = 'http://www.w3.org/2000/svg';

  function icon(name, extraClass) {
    const svg = document.createElementNS(SVG_NS, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('class', 'icon' + (extraClass ? ' ' + extraClass : ''));
    svg.setAttribute('aria-hidden', 'true');
    for (const d of ICONS[name] || ICONS.dot) {
      const path = document.createElementNS(SVG_NS, 'path');
      path.setAttribute('d', d);
      svg.append(path);
    }
    return svg;
  }

  const spinner = () => h('span', { class: 'spinner', 'aria-hidden': 'true' });

  // ---------------------------------------------------------------------------------------
  // Formatting
  // ---------------------------------------------------------------------------------------

  const numberFmt = new Intl.NumberFormat();

  function plural(n, one, many) {
    return `${numberFmt.format(n)} ${n === 1 ? one : many}`;
  }

  function fmtCost(usd) {
    return '$' + (Number(usd) || 0).toFixed(4);
  }

  function fmtDuration(ms) {
    const s = (Number(ms) || 0) / 1000;
    if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
    const m = Math.floor(s / 60);
    return `${m} min ${String(Math.round(s % 60)).padStart(2, '0')} s`;
  }

  function fmtBytes(n) {
    if (n < 1024) return plural(n, 'byte', 'bytes');
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
    return `${(n / 1024 / 1024).toFixed(1)} MB`;
  }

  function fmtClock(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return '';
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  function relTime(ms) {
    if (!ms) return '';
    const diff = Math.max(0, Date.now() - ms) / 1000;
    if (diff < 60) return 'just now';
    if (diff < 3600) return `${Math.floor(diff / 60)} min ago`;
    if (diff < 86400) return `${Math.floor(diff / 3600)} h ago`;
    return new Date(ms).toLocaleDateString([], { month: 'short', day: 'numeric' });
  }

  const utf8 = new TextEncoder();
  const byteLength = (s) => utf8.encode(s).length;

  function titleFrom(text) {
    const flat = String(text || '').replace(/\s+/g, ' ').trim();
    return flat.length > TITLE_MAX ? flat.slice(0, TITLE_MAX - 1).trimEnd() + '…' : flat;
  }

  function firstLine(s) {
    const str = String(s == null ? '' : s);
    const i = str.indexOf('\n');
    return i < 0 ? str : str.slice(0, i) + ' …';
  }

  // ---------------------------------------------------------------------------------------
  // Markdown: escape first, then add a small, fixed set of tags.
  // ---------------------------------------------------------------------------------------

  const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
  const escapeHTML = (s) => String(s).replace(/[&<>"']/g, (c) => ESC[c]);

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

  function renderMarkdown(src, depth = 0) {
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

  // ---------------------------------------------------------------------------------------
  // App state
  // ---------------------------------------------------------------------------------------

  const ui = {};
  const app = {
    info: null,
    maxPromptBytes: DEFAULT_MAX_PROMPT_BYTES,
    threads: [],
    current: null,
    session: null,
    view: null,
    ws: null,
    connGen: 0,
    backoff: BACKOFF_MIN_MS,
    reconnectTimer: 0,
    connectingTimer: 0,
    sending: false,
    stopping: false,
    stickToBottom: true,
    pendingActivity: false, // something was added while the user was scrolled up
  };

  // Everything the transcript of the selected thread needs; thrown away on thread switch.
  function newView() {
    return {
      lastSeq: 0,
      turns: [],
      open: [],               // turns waiting for their result, oldest first
      blocks: new Map(),      // message id → [{kind, index, el, text, final, ...}]
      curMsgId: '',
      tools: new Map(),       // tool_use id → card
      spinners: [],           // status lines whose spinner waits for the next event
      dirty: new Set(),       // text blocks to re-render on the next frame
      denied: new Set(),      // tool_use ids the CLI reported as permission_denied
      perms: new Map(),       // permission request id → card
      queuedIds: new Set(),   // prompt ids the server said were queued
      promptTurns: new Map(), // prompt id → turn
      cwd: '',
      processCost: 0,         // the CLI process's running total_cost_usd at its last result
      known: false,           // true once we know whether the thread has history
      sessionFromSocket: false,
      sessionId: '',          // the session whose log this view shows (seqs are per session)
    };
  }

  // ---------------------------------------------------------------------------------------
  // Thread list (localStorage)
  // ---------------------------------------------------------------------------------------

  function loadThreads() {
    try {
      const raw = JSON.parse(localStorage.getItem(STORE_KEY) || '[]');
      if (!Array.isArray(raw)) return [];
      return raw
        .filter((t) => t && typeof t.key === 'string' && THREAD_KEY_RE.test(t.key))
        .map((t) => ({ key: t.key, title: typeof t.title === 'string' ? t.title : '', updated: Number(t.updated) || 0 }));
    } catch {
      return [];
    }
  }

  function saveThreads() {
    try {
      localStorage.setItem(STORE_KEY, JSON.stringify(app.threads));
    } catch {
      // Private mode or a full quota: the list just won't survive a reload.
    }
  }

  function findThread(key) {
    return app.threads.find((t) => t.key === key);
  }

  function rememberThread(key) {
    let t = findThread(key);
    if (!t) {
      t = { key, title: '', updated: Date.now() };
      app.threads.push(t);
      saveThreads();
    }
    return t;
  }

  function touchThread(key, title, bump = true) {
    const t = rememberThread(key);
    if (title && !t.title) t.title = titleFrom(title);
    if (bump) t.updated = Date.now();
    saveThreads();
    renderThreadList();
    renderThreadTitle();
  }

  function forgetThread(key) {
    app.threads = app.threads.filter((t) => t.key !== key);
    saveThreads();
    if (key === app.current) {
      const next = sortedThreads()[0];
      selectThread(next ? next.key : null);
    } else {
      renderThreadList();
    }
  }

  const sortedThreads = () => [...app.threads].sort((a, b) => b.updated - a.updated);

  function renderThreadList() {
    const items = sortedThreads().map((t) => {
      const active = t.key === app.current;
      const name = t.title || 'Untitled thread';
      return h('li', { class: 'thread-item' + (active ? ' active' : '') + (t.title ? '' : ' untitled') },
        h('a', { class: 'thread-link', href: '#' + t.key, 'aria-current': active ? 'page' : null, title: t.key },
          h('span', { class: 'thread-name', text: name }),
          h('span', { class: 'thread-meta', text: relTime(t.updated) })),
        h('button', {
          class: 'icon-btn thread-remove', type: 'button', title: 'Remove from this list (the thread stays on the bot)',
          'aria-label': `Remove ${name} from this list`, dataset: { key: t.key },
        }, icon('x')));
    });
    ui.threadList.replaceChildren(...items);
    ui.sideEmpty.hidden = items.length > 0;
  }

  function renderThreadTitle() {
    const t = app.current && findThread(app.current);
    const title = (t && t.title) || (app.current ? 'Untitled thread' : 'New thread');
    ui.threadTitle.textContent = title;
    ui.threadTitle.title = app.current || '';
    updateDocumentTitle();
  }

  function updateDocumentTitle() {
    const t = app.current && findThread(app.current);
    const busy = app.session && BUSY_STATES.has(app.session.state);
    document.title = `${busy ? '● ' : ''}${(t && t.title) || 'Nightona'}${t && t.title ? ' · Nightona' : ' console'}`;
  }

  // ---------------------------------------------------------------------------------------
  // HTTP API
  // ---------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(message, code, status) {
      super(message);
      this.code = code || '';
      this.status = status || 0;
    }
  }

  async function api(method, path, body) {
    const opts = { method, headers: { Accept: 'application/json' } };
    if (body !== undefined) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, opts);
    } catch {
      throw new ApiError('Could not reach the bot. Check that it is still running, then try again.', 'network', 0);
    }
    let data = null;
    try {
      data = await res.json();
    } catch {
      // Not JSON (a proxy error page, say): fall back to the status line below.
    }
    if (!res.ok) {
      const msg = data && typeof data.error === 'string' && data.error
        ? data.error
        : `The bot answered ${res.status}${res.statusText ? ' ' + res.statusText : ''}.`;
      throw new ApiError(msg, data && data.code, res.status);
    }
    return data || {};
  }

  // Thread keys contain a colon; it is legal in a path segment and reads better unescaped.
  const threadPath = (key) => '/api/threads/' + encodeURIComponent(key).replace(/%3A/gi, ':');

  async function loadInfo(attempt = 0) {
    try {
      app.info = await api('GET', '/api/info');
    } catch {
      renderBadges(null);
      // The bot may still be starting; try again quietly.
      setTimeout(() => loadInfo(attempt + 1), Math.min(10000, 1000 * 2 ** attempt));
      return;
    }
    const max = Number(app.info.max_prompt_bytes);
    if (max > 0) app.maxPromptBytes = max;
    renderBadges(app.info);
    renderOfflineBanner(app.info);
    ui.version.textContent = app.info.version ? `Nightona ${app.info.version}` : '';
    updateCounter();
  }

  function renderBadges(info) {
    if (!info) {
      ui.badges.replaceChildren(h('span', { class: 'badge is-down', text: 'bot unreachable' }));
      return;
    }
    const offline = info.mode === 'offline';
    // In offline mode the badge is a button that brings back the scenario tips once hidden.
    const mode = h(offline ? 'button' : 'span', {
      class: 'badge ' + (offline ? 'is-offline badge-btn' : 'is-live'),
      type: offline ? 'button' : null,
      id: offline ? 'mode-badge' : null,
      'aria-controls': offline ? 'offline-banner' : null,
      text: offline ? 'offline model' : info.mode === 'anthropic' ? 'Anthropic API' : String(info.mode || 'unknown mode'),
      title: offline ? 'Claude Code talks to a scripted model on this machine. Click for scenarios.' : 'Claude Code talks to the Anthropic API',
    });
    if (offline) mode.addEventListener('click', () => setTipsHidden(!ui.offlineBanner.hidden));
    const providerName = { local: 'local sandbox', daytona: 'Daytona' }[info.provider] || String(info.provider || '');
    const provider = providerName ? h('span', { class: 'badge', text: providerName, title: 'Sandbox provider' }) : null;
    ui.badges.replaceChildren(...[mode, provider].filter(Boolean));
  }

  function renderOfflineBanner(info) {
    const scenarios = Array.isArray(info.scenarios) ? info.scenarios : [];
    ui.offlineBanner.hidden = info.mode !== 'offline' || readFlag(TIPS_HIDDEN_KEY);
    ui.chips.replaceChildren(...scenarios
      .filter((s) => s && typeof s.keyword === 'string' && s.keyword)
      .map((s) => h('button', {
        class: 'chip', type: 'button', text: s.keyword,
        title: typeof s.summary === 'string' ? s.summary : null,
        dataset: { keyword: s.keyword },
      })));
  }

  function readFlag(key) {
    try { return localStorage.getItem(key) === '1'; } catch { return false; }
  }

  function setTipsHidden(hidden) {
    ui.offlineBanner.hidden = hidden;
    try { localStorage.setItem(TIPS_HIDDEN_KEY, hidden ? '1' : '0'); } catch { /* not remembered */ }
    const badge = $('mode-badge');
    if (badge) badge.setAttribute('aria-expanded', String(!hidden));
    if (hidden && badge) badge.focus();
  }

  // ---------------------------------------------------------------------------------------
  // Thread selection and the event socket
  // ---------------------------------------------------------------------------------------

  function threadFromHash() {
    let key = '';
    try {
      key = decodeURIComponent(location.hash.slice(1));
    } catch {
      return null;
    }
    return THREAD_KEY_RE.test(key) ? key : null;
  }

  function selectThread(key, force = false) {
    if (key === app.current && app.view && !force) return;
    closeSocket();
    app.current = key;
    app.session = null;
    app.stopping = false;
    resetTranscript();
    if (key) rememberThread(key);
    const hash = key ? '#' + key : '';
    if (location.hash !== hash) history.replaceState(null, '', location.pathname + location.search + hash);
    renderThreadList();
    renderThreadTitle();
    updateStatus();
    updateEmptyState();
    if (key) {
      connect();
      fetchSession(key);
    }
  }

  function resetTranscript() {
    app.view = newView();
    app.stickToBottom = true;
    ui.turns.replaceChildren();
    ui.newActivity.hidden = true;
  }

  // The socket usually sends a session frame first; this covers servers that only send it on
  // change, and lets the empty state show without waiting for the socket.
  async function fetchSession(key) {
    let res;
    try {
      res = await api('GET', threadPath(key));
    } catch (err) {
      // An unknown thread (say, the bot's store was wiped) simply has no history.
      if (err.status === 404) res = { session: null };
      else return;
    }
    if (key !== app.current || app.view.sessionFromSocket) return;
    setSession(res.session || null);
  }

  function socketURL(key, after) {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${proto}//${location.host}${threadPath(key)}/events?after=${after}`;
  }

  function connect() {
    clearTimeout(app.reconnectTimer);
    const key = app.current;
    if (!key) return;
    // A generation number lets late callbacks of an old socket recognise they are stale.
    const gen = ++app.connGen;
    let ws;
    try {
      ws = new WebSocket(socketURL(key, app.view.lastSeq));
    } catch {
      scheduleReconnect(gen);
      return;
    }
    app.ws = ws;
    clearTimeout(app.connectingTimer);
    app.connectingTimer = setTimeout(() => {
      if (gen === app.connGen && ws.readyState === WebSocket.CONNECTING) setConnState('connecting');
    }, 800);
    ws.onopen = () => {
      if (gen === app.connGen) setConnState('open');
    };
    ws.onmessage = (e) => {
      if (gen !== app.connGen) return;
      // Reset the backoff on data, not on open: a server that accepts and then drops us at
      // once must not be hammered every 250 ms.
      app.backoff = BACKOFF_MIN_MS;
      setConnState('open');
      handleFrame(e.data);
    };
    ws.onclose = () => {
      if (gen !== app.connGen) return;
      app.ws = null;
      setConnState('reconnecting');
      scheduleReconnect(gen);
    };
    // onerror is always followed by onclose, which does the work.
    ws.onerror = () => {};
  }

  function scheduleReconnect(gen) {
    if (gen !== app.connGen) return;
    clearTimeout(app.reconnectTimer);
    const delay = app.backoff;
    app.backoff = Math.min(BACKOFF_MAX_MS, app.backoff * 2);
    app.reconnectTimer = setTimeout(() => {
      if (gen === app.connGen) connect();
    }, delay);
  }

  function closeSocket() {
    app.connGen++;
    clearTimeout(app.reconnectTimer);
    clearTimeout(app.connectingTimer);
    app.backoff = BACKOFF_MIN_MS;
    if (app.ws) {
      try { app.ws.close(1000, 'switching threads'); } catch { /* already closed */ }
      app.ws = null;
    }
    setConnState('open');
  }

  function setConnState(state) {
    clearTimeout(state === 'open' ? app.connectingTimer : 0);
    ui.conn.hidden = state === 'open';
    ui.connText.textContent = state === 'connecting' ? 'connecting…' : 'reconnecting…';
  }

  function handleFrame(raw) {
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch {
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    const v = app.view;
    if (msg.type === 'event') handleEvent(msg);
    else if (msg.type === 'session') {
      const s = msg.session && typeof msg.session === 'object' ? msg.session : null;
      if (s && s.id && v.sessionId && s.id !== v.sessionId) return restartThread();
      if (s && s.id) v.sessionId = s.id;
      v.sessionFromSocket = true;
      setSession(s);
    } else if (msg.type === 'waiting') {
      if (v.sessionId || v.lastSeq > 0) return restartThread();
      v.known = true;
      updateEmptyState();
    }
    return undefined;
  }

  // The thread's session was destroyed (and maybe started afresh): its log is gone and the
  // new one counts from seq 1 again, so the view starts over from after=0.
  function restartThread() {
    selectThread(app.current, true);
  }

  function setSession(session) {
    app.session = session && typeof session === 'object' ? session : null;
    // With no session, or nothing in its log beyond what is shown, the thread's history is
    // fully known and the empty state may show; otherwise events are still on their way.
    if (!app.session || !(Number(app.session.last_seq) > app.view.lastSeq)) {
      app.view.known = true;
      updateEmptyState();
    }
    if (!app.session || !BUSY_STATES.has(app.session.state)) app.stopping = false;
    updateStatus();
    updateDocumentTitle();
  }

  // ---------------------------------------------------------------------------------------
  // Status line
  // ---------------------------------------------------------------------------------------

  function usageText(s) {
    const u = (s && s.usage) || {};
    const turns = Number(u.turns) || 0;
    if (!turns) return '';
    return ` · ${plural(turns, 'turn', 'turns')} · ${fmtCost(u.cost_usd)}`;
  }

  function describeSession() {
    const s = app.session;
    if (!app.current) return { text: 'No thread yet · your first prompt creates one', tone: '' };
    if (!s) return { text: app.view.known ? 'Ready · your first prompt starts a sandbox' : 'Loading…', tone: '' };
    switch (s.state) {
      case 'new': return { text: 'Getting ready…', tone: 'busy' };
      case 'starting': return { text: 'Starting a sandbox…', tone: 'busy' };
      case 'running': return { text: app.stopping ? 'Stopping Claude…' : 'Claude is working…', tone: 'busy' };
      case 'idle': return { text: 'Idle' + usageText(s), tone: 'ok' };
      case 'stopped': return { text: 'Sandbox stopped · the next prompt wakes it' + usageText(s), tone: '' };
      case 'failed': return { text: 'The sandbox could not start · the next prompt tries again', tone: 'err' };
      case 'closed': return { text: 'Closed · the next prompt starts afresh', tone: '' };
      default: return { text: String(s.state || 'Unknown state'), tone: '' };
    }
  }

  function updateStatus() {
    const { text, tone } = describeSession();
    // Only touch the live region when the words change, so screen readers are not spammed.
    if (ui.statusText.textContent !== text) ui.statusText.textContent = text;
    ui.status.className = 'status' + (tone ? ' is-' + tone : '');
    const busy = !!(app.session && BUSY_STATES.has(app.session.state));
    ui.stopBtn.hidden = !busy;
    ui.stopBtn.disabled = app.stopping;
    ui.stopLabel.textContent = app.stopping ? 'Stopping…' : 'Stop';
  }

  // ---------------------------------------------------------------------------------------
  // Events → transcript
  // ---------------------------------------------------------------------------------------

  function handleEvent(msg) {
    const v = app.view;
    const seq = Number(msg.seq);
    // Belt and braces: the server promises order, but a replay must never render twice.
    if (!(seq > v.lastSeq)) return;
    v.lastSeq = seq;
    v.known = true;
    try {
      renderEvent(msg);
    } catch (err) {
      // One odd event must not stop the stream; it is skipped and the rest still renders.
      console.error('nightona: could not render event', seq, err);
    }
    updateEmptyState();
    if (!app.stickToBottom) app.pendingActivity = true;
    scheduleFlush();
  }

  function renderEvent(msg) {
    const data = msg.data && typeof msg.data === 'object' ? msg.data : {};
    if (msg.kind !== 'prompt') stopSpinners();
    switch (msg.kind) {
      case 'prompt': return onPrompt(data, msg.time);
      case 'status': return onStatus(data);
      case 'agent': return onAgent(data);
      case 'notice': return onNotice(data);
      case 'error': return onError(data);
      case 'decision': return onDecision(data);
      default: return undefined;
    }
  }

  // --- turns -----------------------------------------------------------------------------

  function addTurn(prompt, time) {
    const v = app.view;
    const turn = { el: null, body: null, open: !!prompt, head: null, queuedEl: null, userRow: null };
    turn.body = h('div', { class: 'assistant' });
    if (prompt) {
      turn.userRow = h('div', { class: 'user-row' },
        h('div', { class: 'user-meta' },
          h('span', { class: 'who', text: prompt.user || 'you' }),
          time ? h('time', { datetime: time, text: fmtClock(time) }) : null),
        h('div', { class: 'user-bubble', text: prompt.text || '' }));
    }
    turn.el = h('section', { class: 'turn' }, turn.userRow, turn.body);
    ui.turns.append(turn.el);
    v.turns.push(turn);
    if (turn.open) v.open.push(turn);
    return turn;
  }

  // Agent output belongs to the oldest turn still waiting for its result: a prompt queued
  // behind a running turn gets its bubble at once, but the running turn's output must keep
  // flowing into the turn above it.
  function currentTurn() {
    const v = app.view;
    return v.open[0] || v.turns[v.turns.length - 1] || addTurn(null);
  }

  function setQueued(turn, queued) {
    if (!turn.userRow) return;
    if (queued && !turn.queuedEl) {
      const cancel = turn.promptId
        ? h('button', { class: 'link-btn', type: 'button', text: 'Cancel' })
        : null;
      turn.queuedEl = h('div', { class: 'queued-note' }, icon('clock'),
        h('span', { text: 'queued: Claude will take this after the current turn' }), cancel);
      if (cancel) {
        cancel.addEventListener('click', async () => {
          cancel.disabled = true;
          try {
            await api('POST', `${threadPath(app.current)}/prompts/${encodeURIComponent(turn.promptId)}/cancel`, {});
          } catch (e) {
            cancel.disabled = false;
            cancel.textContent = e.message;
          }
        });
      }
      turn.userRow.append(turn.queuedEl);
    } else if (!queued && turn.queuedEl) {
      turn.queuedEl.remove();
      turn.queuedEl = null;
    }
  }

  function markQueued(promptId) {
    const v = app.view;
    v.queuedIds.add(promptId);
    const turn = v.promptTurns.get(promptId);
    if (turn && turn.open && v.open[0] !== turn) setQueued(turn, true);
  }

  function closeTurn(turn) {
    const v = app.view;
    turn.open = false;
    v.open = v.open.filter((t) => t !== turn);
    for (const card of v.tools.values()) {
      if (card.turn === turn && (card.state === 'running' || card.state === 'preparing')) card.setState('stopped');
    }
    for (const entries of v.blocks.values()) {
      for (const b of entries) {
        if (b.turn === turn && !b.final) { b.final = true; markDirty(b); }
      }
    }
    // The next queued prompt is now the one Claude works on.
    if (v.open[0]) setQueued(v.open[0], false);
  }

  function ensureHead(turn, init) {
    if (!turn.head) {
      turn.headMeta = h('span', { class: 'claude-meta' });
      turn.head = h('div', { class: 'claude-head' },
        h('span', { class: 'claude-avatar' }, icon('sparkle')),
        h('span', { class: 'claude-name', text: 'Claude Code' }),
        turn.headMeta);
      turn.body.append(turn.head);
    }
    if (init && !turn.headMeta.textContent) {
      const parts = [init.model, init.permissionMode].filter((p) => typeof p === 'string' && p);
      turn.headMeta.textContent = parts.join(' · ');
    }
    return turn.head;
  }

  // Sub-agent messages (parent_tool_use_id) go inside their Task card instead of the turn.
  function containerFor(data, turn) {
    const parent = data.parent_tool_use_id && app.view.tools.get(data.parent_tool_use_id);
    if (parent) {
      parent.children.hidden = false;
      return parent.children;
    }
    ensureHead(turn);
    return turn.body;
  }

  // --- simple lines ----------------------------------------------------------------------

  function addLine(container, text, opts = {}) {
    const lead = opts.spin ? spinner() : icon(opts.icon || 'dot');
    const el = h('div', { class: 'line' + (opts.tone ? ' ' + opts.tone : '') + (opts.mono ? ' mono' : '') },
      lead, h('span', { class: 'line-text', text }));
    container.append(el);
    return el;
  }

  function stopSpinners() {
    const v = app.view;
    for (const line of v.spinners) {
      const sp = line.querySelector('.spinner');
      if (sp) sp.replaceWith(icon('check'));
    }
    v.spinners = [];
  }

  function addAlert(container, message, code) {
    const el = h('div', { class: 'alert', role: 'alert' }, icon('alert'),
      h('div', { class: 'alert-body' }, message, code ? h('span', { class: 'alert-code', text: code }) : null));
    container.append(el);
    return el;
  }

  // --- prompt / status / notice / error --------------------------------------------------

  function onPrompt(p, time) {
    const v = app.view;
    const queued = v.open.length > 0 || v.queuedIds.has(p.id);
    const turn = addTurn(p, time);
    turn.promptId = p.id || '';
    if (queued && v.open[0] !== turn) setQueued(turn, true);
    if (p.id) v.promptTurns.set(p.id, turn);
    const t = findThread(app.current);
    if (t && !t.title && p.text) touchThread(app.current, p.text, false);
  }

  const STAGE_ICONS = { sandbox_ready: 'check', sandbox_stopped: 'stop', output_gap: 'alert' };

  function onStatus(d) {
    if (d.stage === 'prompt_cancelled' && d.prompt_id) {
      const cancelled = app.view.promptTurns.get(String(d.prompt_id));
      if (cancelled) {
        setQueued(cancelled, false);
        if (cancelled.userRow) cancelled.userRow.classList.add('cancelled');
        if (cancelled.open) closeTurn(cancelled);
        addLine(cancelled.body, String(d.message || 'Cancelled'), { icon: 'stop' });
        return;
      }
    }
    const turn = currentTurn();
    const spin = SPINNING_STAGES.has(d.stage);
    const line = addLine(turn.body, String(d.message || d.stage || 'Status update'), {
      spin,
      icon: STAGE_ICONS[d.stage] || 'info',
      tone: d.stage === 'output_gap' || d.stage === 'preview_crashed' ? 'warn' : '',
    });
    if (d.stage === 'preview_crashed') line.classList.add('pre-line');
    const url = safeURL(d.url);
    if (url) {
      line.append(h('a', { class: 'btn btn-small', href: url, target: '_blank', rel: 'noopener', text: 'Open preview' }));
    }
    if (spin) app.view.spinners.push(line);
  }

  // safeURL returns an http(s) URL to link to, or '' for anything else.
  function safeURL(u) {
    if (typeof u !== 'string') return '';
    try {
      const parsed = new URL(u);
      return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed.href : '';
    } catch {
      return '';
    }
  }

  // --- permission requests -----------------------------------------------------------------

  // A can_use_tool request of the CLI: Claude waits until someone approves or denies it here
  // (or it times out), so the card says what the tool would do and offers both.
  function onPermissionRequest(d, turn) {
    const v = app.view;
    const req = d.request || {};
    const id = String(d.request_id || '');
    if (!id || v.perms.has(id)) return;
    const name = String(req.tool_name || req.display_name || 'a tool');
    const summary = toolSummary(name, req.input || {});
    const status = h('span', { class: 'perm-status', text: 'Waiting for approval' });
    const approve = h('button', { class: 'btn btn-primary btn-small', type: 'button', text: 'Approve' });
    const deny = h('button', { class: 'btn btn-small', type: 'button', text: 'Deny' });
    const err = h('div', { class: 'perm-error', role: 'alert', hidden: true });
    const actions = h('div', { class: 'perm-actions' }, approve, deny);
    const card = {
      id, actions, status, err, resolved: false,
      el: h('div', { class: 'perm-card', role: 'group', 'aria-label': 'Permission request for ' + name },
        h('div', { class: 'perm-head' }, icon('alert'),
          h('span', { class: 'perm-title', text: `Claude wants to use ${name}` }), status),
        summary ? h('pre', { class: 'perm-input wrap', text: summary }) : null,
        actions, err),
    };
    const decide = async (behavior) => {
      approve.disabled = deny.disabled = true;
      err.hidden = true;
      try {
        await api('POST', threadPath(app.current) + '/permissions/' + encodeURIComponent(id), { behavior });
      } catch (e) {
        approve.disabled = deny.disabled = card.resolved;
        err.textContent = e.message;
        err.hidden = false;
      }
    };
    approve.addEventListener('click', () => decide('allow'));
    deny.addEventListener('click', () => decide('deny'));
    v.perms.set(id, card);
    containerFor(d, turn).append(card.el);
  }

  const RESOLUTIONS = {
    answered: { allow: 'Approved', deny: 'Denied' },
    timeout: 'Timed out: nobody answered, so the tool did not run',
    cancelled: 'Withdrawn: the turn was stopped',
    agent_exited: 'Ended: Claude Code stopped',
  };

  function onPermissionResolved(d) {
    const card = app.view.perms.get(String(d.request_id || ''));
    if (!card || card.resolved) return;
    card.resolved = true;
    const r = RESOLUTIONS[d.reason];
    const text = typeof r === 'object' ? (r[d.behavior] || 'Answered') : (r || 'Resolved');
    card.status.textContent = card.by ? `${text} by ${card.by}` : text;
    card.el.classList.add(d.behavior === 'allow' ? 'allowed' : 'denied');
    card.actions.remove();
    card.err.hidden = true;
  }

  // The bot's record of who answered; it may come before or after the relay's resolution.
  function onDecision(d) {
    const card = app.view.perms.get(String(d.request_id || ''));
    if (!card) return;
    card.by = String(d.user || '');
    if (card.resolved) {
      card.status.textContent = `${d.behavior === 'allow' ? 'Approved' : 'Denied'} by ${card.by}`;
    }
  }

  function onNotice(d) {
    const body = currentTurn().body;
    switch (d.event) {
      case 'agent_started':
        app.view.processCost = 0; // a new CLI process starts its running total again
        addLine(body, d.resume ? 'Claude Code started, resuming the conversation' : 'Claude Code started',
          { icon: 'play' });
        return;
      case 'agent_exited': return onAgentExited(body, d);
      case 'agent_error':
        addLine(body, 'Claude Code error: ' + String(d.message || 'unknown'), { icon: 'alert', tone: 'warn' });
        return;
      case 'agent_output':
        addLine(body, String(d.line || ''), { icon: 'terminal', mono: true });
        return;
      case 'permission_resolved': return onPermissionResolved(d);
      case 'permission_mode':
        addLine(body, 'Permission mode is now ' + String(d.mode || ''), { icon: 'info' });
        return;
      case 'preview': return; // the bot's own status lines say when the preview is ready or crashed
      case 'line_too_long':
        addLine(body, `Dropped a ${fmtBytes(Number(d.bytes) || 0)} output line from Claude Code (over the size limit)`,
          { icon: 'alert', tone: 'warn' });
        return;
      default:
        if (d.event) addLine(body, 'Relay: ' + String(d.event), { icon: 'info' });
    }
  }

  function onAgentExited(body, d) {
    const code = d.code == null ? null : Number(d.code);
    const bad = code !== 0;
    const pending = Number(d.pending_turns) || 0;
    let text = bad ? `Claude Code exited with status ${code == null ? 'unknown' : code}` : 'Claude Code exited';
    if (pending) text += ` (${plural(pending, 'turn', 'turns')} unfinished)`;
    const line = addLine(body, text, { icon: bad ? 'alert' : 'stop', tone: bad ? 'warn' : '' });
    if (d.stderr) {
      const wrap = h('div', { class: 'line-block' });
      line.replaceWith(wrap);
      wrap.append(line, h('details', { class: 'stderr' },
        h('summary', { text: 'stderr' }), h('pre', { class: 'wrap', text: String(d.stderr) })));
    }
  }

  function onError(d) {
    const v = app.view;
    const turn = currentTurn();
    addAlert(turn.body, String(d.message || 'Something went wrong.'), d.code ? String(d.code) : '');
    // An error ends the turn that is running, and the server drops the prompts queued
    // behind it as well, so every open turn is closed.
    for (const t of [...v.open]) {
      setQueued(t, false);
      closeTurn(t);
    }
  }

  // --- agent (Claude Code stream-json) ---------------------------------------------------

  function onAgent(d) {
    const turn = currentTurn();
    switch (d.type) {
      case 'stream_event': return onStreamEvent(d, turn);
      case 'assistant': return onAssistant(d, turn);
      case 'user': return onUser(d, turn);
      case 'result': return onResult(d, turn);
      case 'system': return onSystem(d, turn);
      case 'control_request':
        if (d.request && d.request.subtype === 'can_use_tool') return onPermissionRequest(d, turn);
        return undefined;
      default: return undefined; // control responses and cancels: the relay's notices say it all
    }
  }

  function onSystem(d, turn) {
    if (d.subtype === 'init') {
      if (typeof d.cwd === 'string') app.view.cwd = d.cwd;
      ensureHead(turn, d);
    } else if (d.subtype === 'api_retry') {
      const status = Number(d.error_status) || 0;
      const what = status === 529 ? 'API busy' : status === 429 ? 'Rate limited' : 'API error';
      const code = status ? ` (${status})` : '';
      const delay = d.retry_delay_ms ? ` in ${fmtDuration(d.retry_delay_ms)}` : '';
      addLine(turn.body, `${what}${code}, retry ${d.attempt} of ${d.max_retries}${delay}…`, { icon: 'refresh', tone: 'warn' });
    } else if (d.subtype === 'permission_denied' && d.tool_use_id) {
      app.view.denied.add(d.tool_use_id);
    }
  }

  function entriesFor(msgId) {
    const v = app.view;
    let list = v.blocks.get(msgId);
    if (!list) {
      list = [];
      v.blocks.set(msgId, list);
    }
    return list;
  }

  function onStreamEvent(d, turn) {
    const v = app.view;
    const ev = d.event || {};
    if (ev.type === 'message_start') {
      v.curMsgId = (ev.message && ev.message.id) || d.api_message_id || '';
      return;
    }
    const msgId = d.api_message_id || v.curMsgId;
    if (ev.type === 'content_block_start') startBlock(msgId, ev.index, ev.content_block || {}, d, turn);
    else if (ev.type === 'content_block_delta') deltaBlock(msgId, ev.index, ev.delta || {});
    else if (ev.type === 'content_block_stop') {
      const b = entriesFor(msgId).find((e) => e.index === ev.index);
      if (b && (b.kind === 'text' || b.kind === 'thinking') && !b.final) { b.final = true; markDirty(b); }
    }
  }

  function startBlock(msgId, index, cb, d, turn) {
    const container = containerFor(d, turn);
    const list = entriesFor(msgId);
    if (cb.type === 'text') {
      const b = { kind: 'text', index, turn, text: cb.text || '', final: false, el: h('div', { class: 'md streaming' }) };
      container.append(b.el);
      list.push(b);
      markDirty(b);
    } else if (cb.type === 'thinking') {
      list.push(newThinkingBlock(container, index, turn, cb.thinking || ''));
    } else if (cb.type === 'tool_use' && cb.id) {
      const card = ensureTool(cb.id, cb.name, turn, container);
      if (!card.state) card.setState('preparing');
      list.push({ kind: 'tool', index, turn, toolId: cb.id, json: '', final: true });
    }
  }

  function deltaBlock(msgId, index, delta) {
    const b = entriesFor(msgId).find((e) => e.index === index);
    if (!b) return;
    if (delta.type === 'text_delta' && b.kind === 'text') {
      b.text += delta.text || '';
      markDirty(b);
    } else if (delta.type === 'thinking_delta' && b.kind === 'thinking') {
      b.text += delta.thinking || '';
      markDirty(b);
    } else if (delta.type === 'input_json_delta' && b.kind === 'tool') {
      b.json += delta.partial_json || '';
      const card = app.view.tools.get(b.toolId);
      if (card && card.state === 'preparing') card.peekPartial(b.json);
    }
  }

  function newThinkingBlock(container, index, turn, text) {
    const textEl = h('div', { class: 'thinking-text' });
    const el = h('details', { class: 'thinking' }, h('summary', { text: 'Thinking' }), textEl);
    container.append(el);
    const b = { kind: 'thinking', index, turn, text, final: false, el, textEl };
    markDirty(b);
    return b;
  }

  function onAssistant(d, turn) {
    const msg = d.message || {};
    const content = Array.isArray(msg.content) ? msg.content : [];
    if (msg.model === '<synthetic>') {
      // The CLI's own message when the API failed ("API Error: 400 …"): an error, not a reply.
      const text = content.filter((c) => c && c.type === 'text').map((c) => c.text).join('\n');
      addAlert(turn.body, text || 'Claude Code reported an API error.');
      return;
    }
    const container = containerFor(d, turn);
    for (const block of content) {
      if (!block || typeof block !== 'object') continue;
      if (block.type === 'text') finishText(msg.id || '', block.text, container, turn);
      else if (block.type === 'thinking') finishThinking(msg.id || '', block.thinking, container, turn);
      else if (block.type === 'tool_use' && block.id) {
        const card = ensureTool(block.id, block.name, turn, container);
        card.setInput(block.name, block.input && typeof block.input === 'object' ? block.input : {});
        if (!card.state || card.state === 'preparing') card.setState('running');
      }
    }
  }

  // The CLI prints one assistant line per content block and the line carries no index, so the
  // final text replaces the first streamed text block of that message not yet finalised.
  function finishText(msgId, text, container, turn) {
    const list = entriesFor(msgId);
    let b = list.find((e) => e.kind === 'text' && !e.done);
    if (!b) {
      if (!text) return;
      b = { kind: 'text', index: -1, turn, text: '', el: h('div', { class: 'md' }) };
      container.append(b.el);
      list.push(b);
    }
    b.text = String(text || '');
    b.final = true;
    b.done = true;
    markDirty(b);
  }

  function finishThinking(msgId, text, container, turn) {
    const list = entriesFor(msgId);
    let b = list.find((e) => e.kind === 'thinking' && !e.done);
    if (!b) {
      if (!text) return;
      b = newThinkingBlock(container, -1, turn, '');
      list.push(b);
    }
    b.text = String(text || '');
    b.final = true;
    b.done = true;
    markDirty(b);
  }

  function onUser(d, turn) {
    const content = d.message && d.message.content;
    const blocks = Array.isArray(content) ? content : typeof content === 'string' ? [{ type: 'text', text: content }] : [];
    for (const block of blocks) {
      if (!block || typeof block !== 'object') continue;
      if (block.type === 'tool_result') {
        const card = app.view.tools.get(block.tool_use_id);
        if (card) card.setResult(toolResultText(block.content), !!block.is_error, app.view.denied.has(block.tool_use_id));
      } else if (block.type === 'text' && /^\[Request interrupted by user/.test(block.text || '')) {
        addLine(turn.body, block.text.includes('tool use') ? 'Interrupted by you during a tool call' : 'Interrupted by you',
          { icon: 'stop', tone: 'warn' });
      }
      // Other user text is the prompt echoed back; the prompt event already shows it.
    }
  }

  function toolResultText(content) {
    if (typeof content === 'string') return content;
    if (!Array.isArray(content)) return content == null ? '' : JSON.stringify(content, null, 2);
    return content.map((c) => {
      if (c && c.type === 'text') return c.text || '';
      if (c && c.type === 'image') return '[image]';
      return JSON.stringify(c);
    }).join('\n');
  }

  // turnCost is what this turn cost. total_cost_usd is the CLI process's running total; newer
  // CLIs also report this result's own share in model_usage_since_last_result.
  function turnCost(d) {
    const total = Number(d.total_cost_usd) || 0;
    let cost = total - app.view.processCost;
    const since = d.model_usage_since_last_result;
    if (since && typeof since === 'object') {
      cost = Object.values(since).reduce((sum, m) => sum + (Number(m && m.costUSD) || 0), 0);
    }
    app.view.processCost = total;
    return cost < 0 ? total : cost;
  }

  function onResult(d, turn) {
    const interrupted = d.subtype === 'error_during_execution';
    const limits = { error_max_turns: 'Stopped at the turn limit', error_max_budget_usd: 'Stopped at the budget limit' };
    let label = 'Done';
    let tone = '';
    let mark = 'check';
    if (interrupted) { label = 'Interrupted'; tone = 'warn'; mark = 'stop'; }
    else if (limits[d.subtype]) { label = limits[d.subtype]; tone = 'warn'; mark = 'stop'; }
    else if (d.is_error || (d.subtype && d.subtype !== 'success')) { label = 'Failed'; tone = 'err'; mark = 'x'; }

    const parts = [];
    if (d.duration_ms != null) parts.push(`${label} ${tone ? 'after' : 'in'} ${fmtDuration(d.duration_ms)}`);
    else parts.push(label);
    if (Number(d.num_turns) > 0) parts.push(plural(Number(d.num_turns), 'turn', 'turns'));
    const cost = turnCost(d);
    if (cost > 0) parts.push(fmtCost(cost));

    turn.body.append(h('div', { class: 'result' + (tone ? ' ' + tone : '') }, icon(mark),
      h('span', { text: parts.join(' · ') })));
    if (turn.open) closeTurn(turn);
  }

  // --- tool cards ------------------------------------------------------------------------

  const TOOL_ICONS = {
    Write: 'filePlus', Edit: 'pencil', MultiEdit: 'pencil', NotebookEdit: 'pencil', Read: 'file',
    Bash: 'terminal', BashOutput: 'terminal', KillShell: 'terminal', Monitor: 'terminal',
    Glob: 'search', Grep: 'search', ToolSearch: 'search', WebFetch: 'globe', WebSearch: 'globe',
    Task: 'bot', Agent: 'bot', TodoWrite: 'list',
  };

  const STATE_LABELS = {
    preparing: 'preparing', running: 'running', done: 'done', failed: 'failed', denied: 'denied', stopped: 'stopped',
  };
  const STATE_ICONS = { done: 'check', failed: 'x', denied: 'ban', stopped: 'stop' };

  function ensureTool(id, name, turn, container) {
    const v = app.view;
    let card = v.tools.get(id);
    if (!card) {
      card = createToolCard(id, name, turn);
      container.append(card.el);
      v.tools.set(id, card);
    }
    return card;
  }

  function createToolCard(id, name, turn) {
    const iconBox = h('span', { class: 'tool-icon' }, icon(TOOL_ICONS[name] || 'wrench'));
    const nameEl = h('span', { class: 'tool-name', text: name || 'Tool' });
    const summaryEl = h('span', { class: 'tool-summary' });
    const stateEl = h('span', { class: 'tool-state' });
    const inputSec = h('div', { class: 'tool-section' }, h('div', { class: 'tool-note', text: 'Claude is preparing this call…' }));
    const children = h('div', { class: 'tool-children', hidden: true });
    const outputSec = h('div', { class: 'tool-section', hidden: true });
    const el = h('details', { class: 'tool' },
      h('summary', null, icon('chevron', 'chev'), iconBox, nameEl, summaryEl, stateEl),
      h('div', { class: 'tool-body' }, inputSec, children, outputSec));

    const card = { id, name, turn, el, children, state: '' };

    card.setState = (state) => {
      card.state = state;
      el.dataset.state = state;
      stateEl.replaceChildren(state === 'running' || state === 'preparing' ? spinner() : icon(STATE_ICONS[state] || 'dot'),
        h('span', { text: STATE_LABELS[state] || state }));
    };

    card.setInput = (toolName, input) => {
      card.name = toolName || card.name;
      nameEl.textContent = card.name || 'Tool';
      iconBox.replaceChildren(icon(TOOL_ICONS[card.name] || 'wrench'));
      summaryEl.textContent = toolSummary(card.name, input);
      summaryEl.title = summaryEl.textContent;
      inputSec.replaceChildren(...renderToolInput(card.name, input));
    };

    // While the input streams in, show the path or command as soon as it is complete.
    card.peekPartial = (json) => {
      const m = /"(file_path|notebook_path|command|pattern|url|query|description)"\s*:\s*"((?:[^"\\]|\\.)*)"/.exec(json);
      if (!m) return;
      let value = m[2];
      try { value = JSON.parse(`"${m[2]}"`); } catch { /* keep the raw text */ }
      summaryEl.textContent = /path$/.test(m[1]) ? displayPath(value) : firstLine(value);
    };

    card.setResult = (text, isError, denied) => {
      card.setState(isError ? (denied ? 'denied' : 'failed') : 'done');
      outputSec.hidden = false;
      outputSec.replaceChildren(
        h('div', { class: 'tool-label', text: isError ? (denied ? 'Denied' : 'Error') : 'Output' }),
        trimmedPre(text.trim() ? text : '(no output)', isError ? 'wrap err' : 'wrap'));
    };

    return card;
  }

  // Sandbox paths are long and all share the working directory; show them relative to it.
  function displayPath(p) {
    if (typeof p !== 'string' || !p) return '';
    const cwd = app.view.cwd.replace(/\/+$/, '');
    if (cwd && p.startsWith(cwd + '/')) return p.slice(cwd.length + 1);
    const parts = p.split('/').filter(Boolean);
    return parts.length > 3 ? '…/' + parts.slice(-3).join('/') : p;
  }

  function toolSummary(name, input) {
    const str = (v) => (typeof v === 'string' ? v : '');
    switch (name) {
      case 'Write': case 'Edit': case 'MultiEdit': case 'Read':
        return displayPath(str(input.file_path));
      case 'NotebookEdit':
        return displayPath(str(input.notebook_path));
      case 'Bash':
        return firstLine(str(input.command));
      case 'Glob': case 'Grep':
        return str(input.pattern) + (input.path ? ` in ${displayPath(str(input.path))}` : '');
      case 'TodoWrite':
        return Array.isArray(input.todos) ? plural(input.todos.length, 'item', 'items') : '';
      default: {
        const first = Object.values(input).find((v) => typeof v === 'string' && v.trim());
        return first ? firstLine(first) : '';
      }
    }
  }

  function renderToolInput(name, input) {
    const str = (v) => (typeof v === 'string' ? v : '');
    const pathLabel = (label, p) => h('div', { class: 'tool-label' }, label, h('span', { class: 'path', text: p }));
    switch (name) {
      case 'Write':
        return [h('div', { class: 'tool-section' }, pathLabel('Write', str(input.file_path)),
          trimmedPre(str(input.content), 'code'))];
      case 'Edit':
        return [h('div', { class: 'tool-section' },
          pathLabel(input.replace_all ? 'Edit (all occurrences)' : 'Edit', str(input.file_path)),
          diffPre([{ old_string: input.old_string, new_string: input.new_string }]))];
      case 'MultiEdit':
        return [h('div', { class: 'tool-section' }, pathLabel('Edit', str(input.file_path)),
          diffPre(Array.isArray(input.edits) ? input.edits : []))];
      case 'Read': {
        const range = [input.offset != null ? `from line ${input.offset}` : '', input.limit != null ? `${input.limit} lines` : '']
          .filter(Boolean).join(', ');
        return [h('div', { class: 'tool-section' }, pathLabel('Read', str(input.file_path)),
          range ? h('div', { class: 'tool-note', text: range }) : null)];
      }
      case 'Bash':
        return [h('div', { class: 'tool-section' },
          h('div', { class: 'tool-label', text: 'Command' }),
          input.description ? h('div', { class: 'tool-note', text: str(input.description) }) : null,
          trimmedPre('$ ' + str(input.command), 'wrap'))];
      default:
        return [h('div', { class: 'tool-section' },
          h('div', { class: 'tool-label', text: 'Input' }),
          trimmedPre(JSON.stringify(input, null, 2), 'wrap'))];
    }
  }

  function diffPre(edits) {
    const pre = h('pre', { class: 'diff' });
    edits.forEach((e, k) => {
      if (k) pre.append(h('span', { class: 'gap', text: '⋯' }));
      for (const l of String(e.old_string == null ? '' : e.old_string).split('\n')) pre.append(h('span', { class: 'del', text: '-' + l }));
      for (const l of String(e.new_string == null ? '' : e.new_string).split('\n')) pre.append(h('span', { class: 'add', text: '+' + l }));
    });
    return pre;
  }

  // Long output stays readable: the first lines, and a toggle for the rest.
  function trimmedPre(text, cls) {
    const full = String(text);
    const lines = full.split('\n');
    let short = lines.slice(0, OUTPUT_MAX_LINES).join('\n');
    if (short.length > OUTPUT_MAX_CHARS) short = short.slice(0, OUTPUT_MAX_CHARS);
    const pre = h('pre', { class: cls || '', text: short });
    if (short.length === full.length) return pre;
    let expanded = false;
    const label = () => (expanded ? 'Show less' : `Show all ${plural(lines.length, 'line', 'lines')}`);
    const btn = h('button', { class: 'more-btn', type: 'button', 'aria-expanded': 'false', text: label() });
    btn.addEventListener('click', () => {
      expanded = !expanded;
      pre.textContent = expanded ? full : short;
      pre.classList.toggle('expanded', expanded);
      btn.textContent = label();
      btn.setAttribute('aria-expanded', String(expanded));
    });
    return h('div', { class: 'tool-section' }, pre, btn);
  }

  // ---------------------------------------------------------------------------------------
  // Rendering on animation frames
  // ---------------------------------------------------------------------------------------

  let flushQueued = false;

  function markDirty(block) {
    app.view.dirty.add(block);
    scheduleFlush();
  }

  // Deltas arrive many times a frame during replay; markdown is re-rendered at most once a
  // frame per block, and scrolling is settled after that.
  function scheduleFlush() {
    if (flushQueued) return;
    flushQueued = true;
    requestAnimationFrame(flush);
  }

  function flush() {
    flushQueued = false;
    const v = app.view;
    const grew = v.dirty.size > 0 || app.pendingActivity;
    for (const b of v.dirty) renderBlock(b);
    v.dirty.clear();
    app.pendingActivity = false;
    if (app.stickToBottom) scrollToBottom();
    else if (grew) ui.newActivity.hidden = false;
  }

  function renderBlock(b) {
    if (b.kind === 'text') {
      b.el.innerHTML = renderMarkdown(b.text); // the one innerHTML: renderMarkdown escapes
      b.el.classList.toggle('streaming', !b.final);
    } else if (b.kind === 'thinking') {
      b.textEl.textContent = b.text;
    }
  }

  function isNearBottom() {
    const t = ui.transcript;
    return t.scrollHeight - t.scrollTop - t.clientHeight <= NEAR_BOTTOM_PX;
  }

  function scrollToBottom(smooth) {
    const t = ui.transcript;
    t.scrollTo({ top: t.scrollHeight, behavior: smooth ? 'smooth' : 'auto' });
    ui.newActivity.hidden = true;
  }

  function onTranscriptScroll() {
    app.stickToBottom = isNearBottom();
    if (app.stickToBottom) ui.newActivity.hidden = true;
  }

  function updateEmptyState() {
    const v = app.view;
    const hasTurns = v.turns.length > 0;
    ui.empty.hidden = hasTurns || (!!app.current && !v.known);
    ui.loading.hidden = hasTurns || !app.current || v.known;
  }

  // ---------------------------------------------------------------------------------------
  // Composer
  // ---------------------------------------------------------------------------------------

  function autosize() {
    const ta = ui.prompt;
    ta.style.height = 'auto';
    ta.style.height = ta.scrollHeight + 2 + 'px';
  }

  function updateCounter() {
    const bytes = byteLength(ui.prompt.value);
    const max = app.maxPromptBytes;
    const show = bytes > max * 0.8;
    ui.counter.hidden = !show;
    if (show) {
      ui.counter.textContent = `${numberFmt.format(bytes)} / ${numberFmt.format(max)} bytes`;
      ui.counter.classList.toggle('over', bytes > max);
    }
  }

  function showError(message) {
    ui.errorText.textContent = message;
    ui.error.hidden = false;
  }

  function clearError() {
    ui.error.hidden = true;
    ui.errorText.textContent = '';
  }

  function updateSendButton() {
    ui.sendBtn.disabled = app.sending;
  }

  async function createThread() {
    const res = await api('POST', '/api/threads', {});
    const key = res && res.thread;
    if (typeof key !== 'string' || !THREAD_KEY_RE.test(key)) throw new ApiError('The bot returned an unusable thread id.', 'bad_response', 0);
    touchThread(key);
    selectThread(key);
    return key;
  }

  async function onNewThread() {
    closeDrawer();
    ui.newThread.disabled = true;
    try {
      await createThread();
      clearError();
      ui.prompt.focus();
    } catch (err) {
      showError(err.message);
    } finally {
      ui.newThread.disabled = false;
    }
  }

  async function send() {
    const text = ui.prompt.value;
    if (app.sending) return;
    if (!text.trim()) {
      ui.prompt.focus();
      return;
    }
    const bytes = byteLength(text);
    if (bytes > app.maxPromptBytes) {
      showError(`This prompt is ${numberFmt.format(bytes)} bytes and the limit is ${numberFmt.format(app.maxPromptBytes)} bytes. Shorten it or send it in parts.`);
      return;
    }
    app.sending = true;
    updateSendButton();
    try {
      const thread = app.current || (await createThread());
      const res = await api('POST', `${threadPath(thread)}/prompts`, { text });
      // Only clear what was sent: the user may have typed on while the request was out.
      if (ui.prompt.value === text) {
        ui.prompt.value = '';
        autosize();
        updateCounter();
      }
      clearError();
      touchThread(thread, text);
      if (thread === app.current) {
        app.stickToBottom = true;
        if (res.queued && res.prompt_id) markQueued(res.prompt_id);
        scheduleFlush();
      }
    } catch (err) {
      showError(err.message || 'Could not send the prompt.');
    } finally {
      app.sending = false;
      updateSendButton();
    }
  }

  async function interrupt() {
    if (!app.current || app.stopping) return;
    app.stopping = true;
    updateStatus();
    try {
      await api('POST', `${threadPath(app.current)}/interrupt`, {});
    } catch (err) {
      app.stopping = false;
      showError(err.message);
      updateStatus();
      return;
    }
    // If the turn ends the session frame clears this; if nothing happens, allow another try.
    setTimeout(() => {
      if (app.stopping) {
        app.stopping = false;
        updateStatus();
      }
    }, 6000);
  }

  function insertKeyword(keyword) {
    const ta = ui.prompt;
    const start = ta.selectionStart == null ? ta.value.length : ta.selectionStart;
    const end = ta.selectionEnd == null ? start : ta.selectionEnd;
    const before = ta.value.slice(0, start);
    const after = ta.value.slice(end);
    const lead = before && !/\s$/.test(before) ? ' ' : '';
    const trail = after && /^\s/.test(after) ? '' : ' ';
    ta.value = before + lead + keyword + trail + after;
    const caret = (before + lead + keyword + trail).length;
    ta.focus();
    ta.setSelectionRange(caret, caret);
    autosize();
    updateCounter();
  }

  function onPromptKeydown(e) {
    if (e.key !== 'Enter' || e.isComposing || e.keyCode === 229) return;
    if (e.shiftKey || e.altKey) return; // Shift+Enter: newline
    e.preventDefault();
    send();
  }

  // ---------------------------------------------------------------------------------------
  // Drawer (phone layout)
  // ---------------------------------------------------------------------------------------

  const drawerOpen = () => ui.app.classList.contains('drawer-open');

  function openDrawer() {
    ui.app.classList.add('drawer-open');
    ui.scrim.hidden = false;
    ui.menuBtn.setAttribute('aria-expanded', 'true');
    ui.newThread.focus();
  }

  function closeDrawer() {
    if (!drawerOpen()) return;
    ui.app.classList.remove('drawer-open');
    ui.scrim.hidden = true;
    ui.menuBtn.setAttribute('aria-expanded', 'false');
    if (ui.sidebar.contains(document.activeElement)) ui.menuBtn.focus();
  }

  // ---------------------------------------------------------------------------------------
  // Copy buttons in code blocks
  // ---------------------------------------------------------------------------------------

  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // Clipboard API needs a secure context; plain http on a LAN address is not one.
      const ta = h('textarea', { style: 'position:fixed;opacity:0;top:0;left:0' });
      ta.value = text;
      document.body.append(ta);
      ta.select();
      let ok = false;
      try { ok = document.execCommand('copy'); } catch { ok = false; }
      ta.remove();
      return ok;
    }
  }

  async function onTranscriptClick(e) {
    const btn = e.target.closest('[data-copy]');
    if (!btn) return;
    const code = btn.closest('.codeblock') && btn.closest('.codeblock').querySelector('code');
    if (!code) return;
    const ok = await copyText(code.textContent);
    btn.textContent = ok ? 'Copied' : 'Copy failed';
    btn.classList.toggle('copied', ok);
    setTimeout(() => {
      btn.textContent = 'Copy';
      btn.classList.remove('copied');
    }, 1500);
  }

  // ---------------------------------------------------------------------------------------
  // Wiring
  // ---------------------------------------------------------------------------------------

  function bindUI() {
    Object.assign(ui, {
      app: $('app'), menuBtn: $('menu-btn'), badges: $('badges'), conn: $('conn'), connText: $('conn-text'),
      sidebar: $('sidebar'), drawerClose: $('drawer-close'), newThread: $('new-thread'),
      threadList: $('thread-list'), sideEmpty: $('side-empty'), version: $('version'), scrim: $('scrim'),
      threadTitle: $('thread-title'), status: $('status'), statusText: $('status-text'),
      offlineBanner: $('offline-banner'), chips: $('scenario-chips'),
      transcript: $('transcript'), empty: $('empty'), loading: $('loading'), turns: $('turns'),
      newActivity: $('new-activity'), composer: $('composer'), prompt: $('prompt'), counter: $('counter'),
      stopBtn: $('stop-btn'), stopLabel: $('stop-label'), sendBtn: $('send-btn'),
      error: $('composer-error'), errorText: $('composer-error-text'), errorClose: $('composer-error-close'),
    });
  }

  function wireEvents() {
    ui.composer.addEventListener('submit', (e) => { e.preventDefault(); send(); });
    ui.prompt.addEventListener('keydown', onPromptKeydown);
    ui.prompt.addEventListener('input', () => { autosize(); updateCounter(); });
    ui.stopBtn.addEventListener('click', interrupt);
    $('banner-close').addEventListener('click', () => setTipsHidden(true));
    ui.errorClose.addEventListener('click', () => { clearError(); ui.prompt.focus(); });
    ui.newThread.addEventListener('click', onNewThread);
    ui.menuBtn.addEventListener('click', () => (drawerOpen() ? closeDrawer() : openDrawer()));
    ui.drawerClose.addEventListener('click', closeDrawer);
    ui.scrim.addEventListener('click', closeDrawer);
    ui.newActivity.addEventListener('click', () => { app.stickToBottom = true; scrollToBottom(true); });
    ui.transcript.addEventListener('scroll', onTranscriptScroll, { passive: true });
    ui.transcript.addEventListener('click', onTranscriptClick);
    ui.chips.addEventListener('click', (e) => {
      const chip = e.target.closest('[data-keyword]');
      if (chip) insertKeyword(chip.dataset.keyword);
    });
    ui.threadList.addEventListener('click', (e) => {
      const remove = e.target.closest('.thread-remove');
      if (remove) { e.preventDefault(); forgetThread(remove.dataset.key); return; }
      if (e.target.closest('.thread-link')) closeDrawer();
    });
    window.addEventListener('hashchange', () => {
      const key = threadFromHash();
      if (key && key !== app.current) selectThread(key);
    });
    document.addEventListener('keydown', (e) => {
      if (e.key !== 'Escape' || e.defaultPrevented) return;
      if (drawerOpen()) { closeDrawer(); return; }
      if (!ui.stopBtn.hidden) { e.preventDefault(); interrupt(); }
    });
    // Another tab may have added or renamed threads.
    window.addEventListener('storage', (e) => {
      if (e.key !== STORE_KEY) return;
      app.threads = loadThreads();
      if (app.current) rememberThread(app.current);
      renderThreadList();
      renderThreadTitle();
    });
    // Coming back online: reconnect now instead of waiting out the backoff.
    window.addEventListener('online', () => { if (app.current && !app.ws) connect(); });
    setInterval(renderThreadList, 60000);
    // The transcript shrinks when the composer grows or a phone keyboard opens; stay pinned.
    if ('ResizeObserver' in window) {
      new ResizeObserver(() => { if (app.stickToBottom) scrollToBottom(); }).observe(ui.transcript);
    }
  }

  function start() {
    bindUI();
    wireEvents();
    app.threads = loadThreads();
    renderThreadList();
    updateCounter();
    loadInfo();
    const initial = threadFromHash() || (sortedThreads()[0] || {}).key || null;
    selectThread(initial);
    if (!initial) updateEmptyState();
    autosize();
    if (window.matchMedia('(min-width: 721px)').matches) ui.prompt.focus();
  }

  // Exposed for tests of the renderer only; nothing in the page uses it.
  window.NightonaConsole = Object.freeze({ renderMarkdown });

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
