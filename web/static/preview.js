/*
 * The preview pane: the app's dev server in a frame, with reload and open-in-new-tab, and the
 * state of the sandbox and the dev server above it. The console and the session page both use it.
 */

import { h, icon, safeURL } from './dom.js';

const SANDBOX_STATES = {
  new: ['Getting ready', 'busy'],
  starting: ['Starting', 'busy'],
  idle: ['Up', 'ok'],
  running: ['Up · Claude is working', 'ok'],
  stopped: ['Stopped', ''],
  failed: ['Could not start', 'err'],
  closed: ['Closed', ''],
};

const DEV_STATES = {
  starting: ['Starting', 'busy'],
  ready: ['Serving', 'ok'],
  crashed: ['Crashed · restarting', 'err'],
  stopped: ['Not running', ''],
  '': ['Not running', ''],
};

// createPreview builds the pane into root. onClose, when given, adds a close button. The frame
// loads only once the pane is shown (show()), so a hidden pane costs nothing.
export function createPreview(root, { onClose } = {}) {
  const frame = h('iframe', {
    class: 'preview-frame', id: 'preview-frame', title: 'Preview of the app',
    referrerpolicy: 'no-referrer',
    sandbox: 'allow-scripts allow-forms allow-same-origin allow-popups allow-modals allow-downloads',
  });
  const empty = h('div', { class: 'preview-empty' });
  const emptyText = h('p', { class: 'preview-empty-text' });
  empty.append(icon('globe'), emptyText);
  const sandboxPill = h('span', { class: 'pill', id: 'sandbox-state' });
  const devPill = h('span', { class: 'pill', id: 'dev-state' });
  const reload = h('button', { class: 'icon-btn', type: 'button', id: 'preview-reload', title: 'Reload the preview', 'aria-label': 'Reload the preview' }, icon('refresh'));
  const open = h('a', { class: 'icon-btn', id: 'preview-open', target: '_blank', rel: 'noopener noreferrer', title: 'Open the preview in a new tab', 'aria-label': 'Open the preview in a new tab' }, icon('external'));
  const close = onClose ? h('button', { class: 'icon-btn', type: 'button', title: 'Close the preview', 'aria-label': 'Close the preview' }, icon('x')) : null;
  const urlText = h('span', { class: 'preview-url' });
  root.replaceChildren(
    h('div', { class: 'preview-head' },
      h('div', { class: 'preview-bar' },
        h('span', { class: 'preview-title', text: 'Preview' }), urlText, h('span', { class: 'spacer' }), reload, open, close),
      h('div', { class: 'preview-states' },
        h('span', { class: 'preview-state' }, h('span', { class: 'preview-state-name', text: 'Sandbox' }), sandboxPill),
        h('span', { class: 'preview-state' }, h('span', { class: 'preview-state-name', text: 'Dev server' }), devPill))),
    h('div', { class: 'preview-body' }, frame, empty));

  const st = { session: null, url: '', dev: '', shown: false, loaded: '' };

  function load(force) {
    if (!st.shown || !st.url) return;
    if (st.loaded === st.url && !force) return;
    st.loaded = st.url;
    // Setting src again reloads even a cross-origin frame, whose location we may not touch.
    frame.src = 'about:blank';
    frame.src = st.url;
  }

  function render() {
    const s = st.session;
    const state = s ? String(s.state || '') : '';
    let dev = st.dev;
    if (st.url && !dev) dev = 'ready';
    if (!st.url && dev === 'ready') dev = 'stopped';
    if (s && !['starting', 'idle', 'running'].includes(state)) dev = 'stopped';
    const [sText, sTone] = s ? (SANDBOX_STATES[state] || [state, '']) : ['None yet', ''];
    const [dText, dTone] = DEV_STATES[dev] || [dev, ''];
    sandboxPill.textContent = sText;
    sandboxPill.className = 'pill' + (sTone ? ' is-' + sTone : '');
    devPill.textContent = dText;
    devPill.className = 'pill' + (dTone ? ' is-' + dTone : '');
    root.dataset.sandbox = state;
    root.dataset.dev = dev;

    const live = !!st.url;
    frame.hidden = !live;
    empty.hidden = live;
    reload.disabled = !live;
    open.hidden = !live;
    if (live) open.href = st.url;
    else open.removeAttribute('href');
    urlText.textContent = live ? st.url.replace(/^https?:\/\//, '').replace(/\/$/, '') : '';
    urlText.title = live ? st.url : '';
    if (!live) {
      frame.removeAttribute('src');
      st.loaded = '';
      emptyText.textContent = emptyMessage(s, state, dev);
    } else {
      load(false);
    }
  }

  function emptyMessage(s, state, dev) {
    if (!s) return 'The app shows here once this thread has a sandbox and the app’s dev server answers.';
    if (state === 'stopped') return 'The sandbox is stopped, so the app is not running. The next prompt in the thread wakes it.';
    if (state === 'closed') return 'This session is closed; its sandbox is gone.';
    if (state === 'failed') return 'The sandbox could not start. The next prompt tries again.';
    if (dev === 'crashed') return 'The app’s dev server stopped and is being restarted.';
    if (state === 'new' || state === 'starting') return 'Starting the sandbox…';
    return 'Waiting for the app’s dev server to answer…';
  }

  reload.addEventListener('click', () => load(true));
  if (close) close.addEventListener('click', onClose);
  render();

  return {
    // setSession takes the session record (or null): its state and current preview URL.
    setSession(s) {
      st.session = s && typeof s === 'object' ? s : null;
      const url = st.session ? safeURL(st.session.preview_url) : '';
      if (url !== st.url) st.url = url;
      render();
    },
    // setEvent takes what the log says about the dev server ({state, url}).
    setEvent(p) {
      if (p && typeof p.state === 'string') st.dev = p.state;
      render();
    },
    show() {
      st.shown = true;
      render();
    },
    reset() {
      st.session = null;
      st.url = '';
      st.dev = '';
      render();
    },
  };
}
