/*
 * Nightona web pages: DOM helpers and formatting shared by the console, the session page and
 * the dashboard.
 *
 * Safety rule for every page script: text that comes from the server or the user only reaches
 * the DOM through textContent / text nodes (h() below), or through renderMarkdown(), which
 * escapes everything before it adds its own tags.
 */

export const $ = (id) => document.getElementById(id);

// h builds an element. Strings become text nodes, so they are never parsed as HTML.
export function h(tag, props, ...children) {
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
  external: ['M14 4h6v6', 'M20 4l-9 9', 'M18 14v5a1 1 0 0 1-1 1H5a1 1 0 0 1-1-1V7a1 1 0 0 1 1-1h5'],
  monitor: ['M3 5h18v12H3z', 'M8 21h8', 'M12 17v4'],
  power: ['M12 3v9', 'M6.3 7.3a8 8 0 1 0 11.4 0'],
  trash: ['M4 7h16', 'M10 11v6', 'M14 11v6', 'M6 7l1 13h10l1-13', 'M9 7V4h6v3'],
  shield: ['M12 3l8 3v6c0 4.5-3.4 8.2-8 9-4.6-.8-8-4.5-8-9V6z'],
};
const SVG_NS = 'http://www.w3.org/2000/svg';

export function icon(name, extraClass) {
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

export const spinner = () => h('span', { class: 'spinner', 'aria-hidden': 'true' });

// ---------------------------------------------------------------------------------------
// Formatting
// ---------------------------------------------------------------------------------------

export const numberFmt = new Intl.NumberFormat();

export function plural(n, one, many) {
  return `${numberFmt.format(n)} ${n === 1 ? one : many}`;
}

export function fmtCost(usd) {
  return '$' + (Number(usd) || 0).toFixed(4);
}

export function fmtDuration(ms) {
  const s = (Number(ms) || 0) / 1000;
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${String(Math.round(s % 60)).padStart(2, '0')} s`;
}

export function fmtBytes(n) {
  if (n < 1024) return plural(n, 'byte', 'bytes');
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export function fmtClock(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

export function relTime(ms) {
  if (!ms) return '';
  const diff = Math.max(0, Date.now() - ms) / 1000;
  if (diff < 60) return 'just now';
  if (diff < 3600) return `${Math.floor(diff / 60)} min ago`;
  if (diff < 86400) return `${Math.floor(diff / 3600)} h ago`;
  return new Date(ms).toLocaleDateString([], { month: 'short', day: 'numeric' });
}

const utf8 = new TextEncoder();
export const byteLength = (s) => utf8.encode(s).length;

const TITLE_MAX = 60;

export function titleFrom(text) {
  const flat = String(text || '').replace(/\s+/g, ' ').trim();
  return flat.length > TITLE_MAX ? flat.slice(0, TITLE_MAX - 1).trimEnd() + '…' : flat;
}

export function firstLine(s) {
  const str = String(s == null ? '' : s);
  const i = str.indexOf('\n');
  return i < 0 ? str : str.slice(0, i) + ' …';
}

// safeURL returns an http(s) URL to link to, or '' for anything else.
export function safeURL(u) {
  if (typeof u !== 'string') return '';
  try {
    const parsed = new URL(u);
    return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed.href : '';
  } catch {
    return '';
  }
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // Clipboard API needs a secure context; plain http on a LAN address is not one.
    const ta = h('textarea', { class: 'copy-scratch' });
    ta.value = text;
    document.body.append(ta);
    ta.select();
    let ok = false;
    try { ok = document.execCommand('copy'); } catch { ok = false; }
    ta.remove();
    return ok;
  }
}
