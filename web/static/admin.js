/*
 * The admin dashboard: every session with Stop, Wake and Destroy, usage per user and channel,
 * and the health of the bot's parts. It polls the bot every few seconds.
 */

import { $, h, icon, fmtCost, numberFmt } from './dom.js';
import { api } from './api.js';

const REFRESH_MS = 4000;
const STATE_TONES = { running: 'busy', starting: 'busy', new: 'busy', idle: 'ok', failed: 'err', stopped: '', closed: '' };
const ui = {};
const dash = { data: null, day: '', busy: new Set(), timer: 0 };

function fmtAge(seconds) {
  const s = Math.max(0, Number(seconds) || 0);
  if (s < 60) return `${Math.floor(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

async function refresh() {
  clearTimeout(dash.timer);
  try {
    dash.data = await api('GET', '/admin/api/overview' + (dash.day ? `?day=${encodeURIComponent(dash.day)}` : ''));
    ui.error.hidden = true;
    render();
  } catch (err) {
    showError(err.message);
    if (err.status === 401) return; // logged out: nothing more to poll
  }
  dash.timer = setTimeout(refresh, REFRESH_MS);
}

function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = false;
}

function render() {
  const d = dash.data;
  ui.who.textContent = d.user ? `as ${d.user}` : '';
  ui.logout.hidden = !d.user || d.user.startsWith('web:');
  ui.updated.textContent = 'updated ' + new Date(d.now).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  renderHealth(Array.isArray(d.health) ? d.health : []);
  renderSessions(Array.isArray(d.sessions) ? d.sessions : [], !!d.can_wake);
  renderUsage(d.usage || {});
}

function renderHealth(checks) {
  ui.health.replaceChildren(...checks.map((c) => h('li', { class: 'check' + (c.ok ? ' is-ok' : ' is-bad'), dataset: { kind: c.kind || '' } },
    icon(c.ok ? 'check' : 'alert'),
    h('span', { class: 'check-name', text: c.name || '' }),
    h('span', { class: 'check-detail', text: c.detail || (c.ok ? 'ok' : 'down') }))));
  if (!checks.length) ui.health.replaceChildren(h('li', { class: 'check', text: 'No health checks on this bot.' }));
}

function renderSessions(rows, canWake) {
  ui.sessionsCount.textContent = rows.length ? `${numberFmt.format(rows.length)} in all` : '';
  ui.sessionsEmpty.hidden = rows.length > 0;
  ui.sessionsBody.replaceChildren(...rows.map((s) => sessionRow(s, canWake)));
}

function sessionRow(s, canWake) {
  const busy = dash.busy.has(s.id);
  const active = ['idle', 'running', 'starting'].includes(s.state);
  const action = (name, label, ic, cls, enabled, title) => h('button', {
    class: 'btn btn-small ' + (cls || ''), type: 'button', disabled: busy || !enabled, title,
    dataset: { action: name, id: s.id }, 'aria-label': `${label} ${s.thread}`,
  }, icon(ic), h('span', { text: label }));
  const state = h('span', { class: 'pill' + (STATE_TONES[s.state] ? ' is-' + STATE_TONES[s.state] : ''), text: s.state });
  const u = s.usage || {};
  return h('tr', { dataset: { id: s.id, state: s.state } },
    h('td', { class: 'thread', 'data-label': 'Thread' },
      h('a', { href: s.link, target: '_blank', rel: 'noopener', title: 'Open the session page', text: s.thread }),
      h('span', { class: 'platform', text: s.platform })),
    h('td', { 'data-label': 'Owner', class: 'owner', text: s.owner }),
    h('td', { 'data-label': 'State' }, state),
    h('td', { 'data-label': 'Age', title: new Date(s.created_at).toLocaleString(), text: fmtAge(s.age_seconds) }),
    h('td', { 'data-label': 'Cost', class: 'num', title: `${numberFmt.format(Number(u.turns) || 0)} turns`, text: fmtCost(u.cost_usd) }),
    h('td', { class: 'actions' },
      action('stop', 'Stop', 'stop', '', active, 'Stop the sandbox; the next prompt wakes it'),
      canWake ? action('wake', 'Wake', 'power', '', ['stopped', 'failed'].includes(s.state), 'Start the sandbox again, without a prompt') : null,
      action('destroy', 'Destroy', 'trash', 'btn-danger', true, 'Delete the sandbox, the session and its log')));
}

function renderUsage(u) {
  const all = u.all || {};
  ui.usageTotal.textContent = `${u.day || ''}: ${numberFmt.format(Number(all.turns) || 0)} turns, ${fmtCost(all.cost_usd)} in all`;
  if (!dash.day && u.day) ui.day.value = u.day;
  const rows = (list) => {
    const items = (Array.isArray(list) ? list : []).map((r) => h('tr', null,
      h('td', { text: r.key }),
      h('td', { class: 'num', text: numberFmt.format(Number(r.usage && r.usage.turns) || 0) }),
      h('td', { class: 'num', text: fmtCost(r.usage && r.usage.cost_usd) })));
    return items.length ? items : [h('tr', null, h('td', { colspan: '3', class: 'none', text: 'Nothing used that day.' }))];
  };
  ui.usageUsers.replaceChildren(...rows(u.users));
  ui.usageChannels.replaceChildren(...rows(u.channels));
}

async function act(btn) {
  const { action, id } = btn.dataset;
  const row = (dash.data.sessions || []).find((s) => s.id === id);
  if (!row) return;
  if (action === 'destroy' && !window.confirm(`Destroy the session of ${row.thread}? Its sandbox, record and transcript are deleted; the thread starts afresh.`)) return;
  dash.busy.add(id);
  render();
  try {
    await api('POST', `/admin/api/sessions/${encodeURIComponent(id)}/${action}`, {});
  } catch (err) {
    showError(err.message);
  } finally {
    dash.busy.delete(id);
    refresh();
  }
}

function start() {
  Object.assign(ui, {
    who: $('who'), logout: $('logout'), error: $('error'), health: $('health'), updated: $('updated'),
    sessionsBody: $('sessions-body'), sessionsCount: $('sessions-count'), sessionsEmpty: $('sessions-empty'),
    usageTotal: $('usage-total'), usageUsers: $('usage-users'), usageChannels: $('usage-channels'), day: $('day'),
  });
  ui.sessionsBody.addEventListener('click', (e) => {
    const btn = e.target.closest('button[data-action]');
    if (btn && !btn.disabled) act(btn);
  });
  ui.day.addEventListener('change', () => { dash.day = ui.day.value; refresh(); });
  ui.logout.addEventListener('click', async () => {
    try { await api('POST', '/admin/logout', {}); } catch { /* the page reload says what is left */ }
    location.reload();
  });
  document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(); });
  refresh();
}

start();
