/*
 * Nightona web console: the bot's local chat surface. Several threads, each with its live
 * transcript, Stop, Approve and Deny, and the preview of the app beside it.
 *
 * Plain ES modules, no build step and no dependencies, because the Go binary embeds these
 * files as they are and the console must work offline. The transcript itself is transcript.js,
 * shared with the session page.
 */

import { $, h, icon, numberFmt, relTime, byteLength, titleFrom, plural, fmtCost } from './dom.js';
import { api, ApiError } from './api.js';
import { LogStream, socketURL } from './stream.js';
import { createTranscript } from './transcript.js';
import { createPreview } from './preview.js';
import { renderMarkdown } from './markdown.js';

const STORE_KEY = 'nightona.console.threads.v1';
const TIPS_HIDDEN_KEY = 'nightona.console.tips-hidden';
const DEFAULT_MAX_PROMPT_BYTES = 32768;
// Thread keys end up in URLs and hrefs; anything else in localStorage or the hash is junk.
const THREAD_KEY_RE = /^[A-Za-z0-9_:.@-]{1,200}$/;
const BUSY_STATES = new Set(['running', 'starting']);

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
  transcript: null, // the selected thread's (createTranscript)
  stream: null,     // its LogStream
  preview: null,    // the preview pane (createPreview)
  sending: false,
  stopping: false,
};

// view is the state of the selected thread's log (lastSeq, known, sessionId...).
const view = () => app.transcript.view;

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
  if (key === app.current && app.stream && !force) return;
  if (app.stream) app.stream.stop();
  app.stream = null;
  app.current = key;
  app.session = null;
  app.stopping = false;
  app.transcript.reset();
  app.preview.reset();
  if (key) rememberThread(key);
  const hash = key ? '#' + key : '';
  if (location.hash !== hash) history.replaceState(null, '', location.pathname + location.search + hash);
  renderThreadList();
  renderThreadTitle();
  updateStatus();
  updateEmptyState();
  if (key) {
    app.stream = new LogStream({
      url: (after) => socketURL(`${threadPath(key)}/events?after=${after}`),
      after: () => view().lastSeq,
      onFrame: handleFrame,
      onState: setConnState,
    });
    app.stream.start();
    fetchSession(key);
  }
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
  if (key !== app.current || view().sessionFromSocket) return;
  setSession(res.session || null);
}

function updateEmptyState() {
  const v = view();
  const hasTurns = app.transcript.hasTurns;
  ui.empty.hidden = hasTurns || (!!app.current && !v.known);
  ui.loading.hidden = hasTurns || !app.current || v.known;
}

function setConnState(state) {
  ui.conn.hidden = state === 'open';
  ui.connText.textContent = state === 'connecting' ? 'connecting…' : 'reconnecting…';
}

function handleFrame(msg) {
  const v = view();
  if (msg.type === 'event') app.transcript.handleEvent(msg);
  else if (msg.type === 'session') {
    const s = msg.session && typeof msg.session === 'object' ? msg.session : null;
    if (s && s.id && v.sessionId && s.id !== v.sessionId) return restartThread();
    if (s && s.id) v.sessionId = s.id;
    v.sessionFromSocket = true;
    setSession(s);
  } else if (msg.type === 'gone') {
    return restartThread();
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
  if (!app.session || !(Number(app.session.last_seq) > view().lastSeq)) {
    view().known = true;
    updateEmptyState();
  }
  app.preview.setSession(app.session);
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
  if (!s) return { text: view().known ? 'Ready · your first prompt starts a sandbox' : 'Loading…', tone: '' };
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
      app.transcript.stick();
      if (res.queued && res.prompt_id) app.transcript.markQueued(res.prompt_id);
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
    await api('POST', `${threadPath(app.current)}/interrupt`, { prompt_id: app.transcript.currentPromptId });
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
    previewBtn: $('preview-btn'), previewPane: $('preview-pane'),
  });
  app.transcript = createTranscript({
    turns: ui.turns, scroller: ui.transcript, newActivity: ui.newActivity,
    actions: {
      decide: (id, behavior) => api('POST', `${threadPath(app.current)}/permissions/${encodeURIComponent(id)}`, { behavior }),
      cancelPrompt: (promptId) => api('POST', `${threadPath(app.current)}/prompts/${encodeURIComponent(promptId)}/cancel`, {}),
    },
    onPrompt: (p) => {
      const t = findThread(app.current);
      if (t && !t.title && p.text) touchThread(app.current, p.text, false);
    },
    onPreview: (p) => app.preview.setEvent(p),
    onChange: updateEmptyState,
  });
  app.preview = createPreview(ui.previewPane, { onClose: () => setPreviewOpen(false) });
}

// ---------------------------------------------------------------------------------------
// Preview pane
// ---------------------------------------------------------------------------------------

const PREVIEW_OPEN_KEY = 'nightona.console.preview-open';

function setPreviewOpen(open) {
  ui.app.classList.toggle('preview-open', open);
  ui.previewPane.hidden = !open;
  ui.previewBtn.setAttribute('aria-pressed', String(open));
  try { localStorage.setItem(PREVIEW_OPEN_KEY, open ? '1' : '0'); } catch { /* not remembered */ }
  if (open) app.preview.show();
}

// ---------------------------------------------------------------------------------------
// Threads the bot knows: a console thread started in another browser shows here too.
// ---------------------------------------------------------------------------------------

async function loadServerThreads() {
  let res;
  try {
    res = await api('GET', '/api/threads');
  } catch {
    return; // the local list still works
  }
  let changed = false;
  for (const t of Array.isArray(res.threads) ? res.threads : []) {
    if (!t || typeof t.thread !== 'string' || !THREAD_KEY_RE.test(t.thread)) continue;
    const mine = findThread(t.thread);
    const updated = Date.parse(t.updated_at) || 0;
    if (!mine) {
      app.threads.push({ key: t.thread, title: titleFrom(t.title || ''), updated });
      changed = true;
    } else if (!mine.title && t.title) {
      mine.title = titleFrom(t.title);
      changed = true;
    }
  }
  if (changed) {
    saveThreads();
    renderThreadList();
    renderThreadTitle();
  }
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
  ui.previewBtn.addEventListener('click', () => setPreviewOpen(ui.previewPane.hidden));
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
    if (ui.app.classList.contains('preview-open') && window.matchMedia('(max-width: 720px)').matches) { setPreviewOpen(false); return; }
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
  window.addEventListener('online', () => { if (app.stream) app.stream.reconnectNow(); });
  setInterval(renderThreadList, 60000);
}

function start() {
  bindUI();
  wireEvents();
  app.threads = loadThreads();
  renderThreadList();
  updateCounter();
  loadInfo();
  loadServerThreads();
  setPreviewOpen(readFlag(PREVIEW_OPEN_KEY) && window.matchMedia('(min-width: 1101px)').matches);
  const initial = threadFromHash() || (sortedThreads()[0] || {}).key || null;
  selectThread(initial);
  if (!initial) updateEmptyState();
  autosize();
  if (window.matchMedia('(min-width: 721px)').matches) ui.prompt.focus();
}

// Exposed for tests only; nothing in the page uses it.
window.NightonaConsole = Object.freeze({
  renderMarkdown,
  seqs: () => (app.transcript ? [...app.transcript.view.seqs] : []),
  drop: () => app.stream && app.stream.drop(),
});

start(); // a module runs after the document is parsed

