/*
 * The session page: one session's live transcript beside the preview of the app, for anyone
 * with the session's link. Read-only: the chat thread is where prompts and decisions happen,
 * because that is where the bot knows who is asking.
 *
 * The page's address is /s/{id}/; opening the link from the chat gave the browser a pass (a
 * cookie) for that path, which its API and WebSocket take.
 */

import { $, fmtCost, plural, relTime } from './dom.js';
import { api } from './api.js';
import { LogStream, socketURL } from './stream.js';
import { createTranscript } from './transcript.js';
import { createPreview } from './preview.js';

const base = location.pathname.replace(/\/+$/, '') + '/'; // /s/{id}/
const STATES = {
  new: ['Getting ready', 'busy'], starting: ['Starting the sandbox', 'busy'], idle: ['Idle', 'ok'],
  running: ['Claude is working', 'busy'], stopped: ['Sandbox stopped', ''], failed: ['Sandbox failed', 'err'],
  closed: ['Closed', ''],
};

const ui = {};
const page = { session: null, stream: null, transcript: null, preview: null, title: '', ended: false };

function setSession(s) {
  page.session = s && typeof s === 'object' ? s : null;
  page.preview.setSession(page.session);
  renderHead();
  updateEmpty();
}

function renderHead() {
  const s = page.session;
  const [text, tone] = s ? (STATES[s.state] || [String(s.state), '']) : ['Loading…', ''];
  ui.statePill.textContent = text;
  ui.statePill.className = 'pill' + (tone ? ' is-' + tone : '');
  if (!s) return;
  const u = s.usage || {};
  const parts = [s.owner ? `started by ${s.owner}` : '', relTime(Date.parse(s.created_at)),
    Number(u.turns) ? plural(Number(u.turns), 'turn', 'turns') : '', Number(u.turns) ? fmtCost(u.cost_usd) : '']
    .filter(Boolean);
  ui.meta.textContent = parts.join(' · ');
  ui.meta.title = s.thread || '';
  const busy = s.state === 'running' || s.state === 'starting';
  document.title = `${busy ? '● ' : ''}${page.title || 'Session'} · Nightona`;
}

function updateEmpty() {
  const v = page.transcript.view;
  const known = v.known || (page.session && !(Number(page.session.last_seq) > v.lastSeq));
  ui.loading.hidden = page.transcript.hasTurns || known;
  ui.empty.hidden = page.transcript.hasTurns || !known;
}

function onFrame(msg) {
  if (msg.type === 'event') page.transcript.handleEvent(msg);
  else if (msg.type === 'session') setSession(msg.session);
  else if (msg.type === 'gone') end('This session was destroyed, and its log with it. What you see is what had happened until then.');
}

function end(text) {
  page.ended = true;
  page.stream.stop();
  ui.ended.textContent = text;
  ui.ended.hidden = false;
  ui.statePill.textContent = 'Ended';
  ui.statePill.className = 'pill';
}

// When the socket drops, ask the API why: a pass that ran out must not retry for ever.
async function onConnState(state) {
  ui.conn.hidden = state === 'open';
  ui.connText.textContent = state === 'connecting' ? 'connecting…' : 'reconnecting…';
  if (state !== 'reconnecting' || page.ended) return;
  try {
    await api('GET', base + 'api/session');
  } catch (err) {
    if (err.status === 401) end(err.message);
    else if (err.status === 404) end(err.message);
  }
}

function setTab(tab) {
  ui.app.dataset.tab = tab;
  ui.tabTranscript.setAttribute('aria-pressed', String(tab === 'transcript'));
  ui.tabPreview.setAttribute('aria-pressed', String(tab === 'preview'));
  if (tab === 'transcript') page.transcript.stick();
}

async function start() {
  Object.assign(ui, {
    app: $('app'), title: $('session-title'), meta: $('session-meta'), statePill: $('state-pill'),
    conn: $('conn'), connText: $('conn-text'), ended: $('ended'), loading: $('loading'), empty: $('empty'),
    tabTranscript: $('tab-transcript'), tabPreview: $('tab-preview'),
  });
  page.preview = createPreview($('preview-pane'));
  page.preview.show();
  page.transcript = createTranscript({
    turns: $('turns'), scroller: $('transcript'), newActivity: $('new-activity'),
    onPrompt: (p) => {
      if (!page.title && p.text) {
        page.title = String(p.text).replace(/\s+/g, ' ').trim().slice(0, 80);
        ui.title.textContent = page.title;
        ui.title.title = p.text;
        renderHead();
      }
    },
    onPreview: (p) => page.preview.setEvent(p),
    onChange: updateEmpty,
  });
  ui.tabTranscript.addEventListener('click', () => setTab('transcript'));
  ui.tabPreview.addEventListener('click', () => setTab('preview'));
  page.stream = new LogStream({
    url: (after) => socketURL(`${base}api/events?after=${after}`),
    after: () => page.transcript.view.lastSeq,
    onFrame,
    onState: onConnState,
  });
  page.stream.start();
  window.addEventListener('online', () => page.stream.reconnectNow());
  setInterval(renderHead, 60000);
}

// Exposed for tests only; nothing in the page uses it.
window.NightonaSession = Object.freeze({
  seqs: () => [...page.transcript.view.seqs],
  drop: () => page.stream.drop(),
});

start();
