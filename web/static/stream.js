/*
 * LogStream follows a session's event log over a WebSocket. The server sends every event once,
 * in order, after the seq the URL names; after a drop the stream reconnects (with backoff) from
 * the last seq the page has taken, so nothing is lost and nothing repeats.
 */

const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 5000;

export class LogStream {
  // url(after) is the socket's URL; after() is the last seq the page has taken; onFrame gets
  // every parsed frame; onState gets 'open', 'connecting' or 'reconnecting'.
  constructor({ url, after, onFrame, onState }) {
    this.url = url;
    this.after = after;
    this.onFrame = onFrame;
    this.onState = onState || (() => {});
    this.ws = null;
    this.gen = 0; // a generation number lets late callbacks of an old socket see they are stale
    this.backoff = BACKOFF_MIN_MS;
    this.reconnectTimer = 0;
    this.connectingTimer = 0;
    this.stopped = true;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  connect() {
    clearTimeout(this.reconnectTimer);
    if (this.stopped) return;
    const gen = ++this.gen;
    let ws;
    try {
      ws = new WebSocket(this.url(this.after()));
    } catch {
      this.scheduleReconnect(gen);
      return;
    }
    this.ws = ws;
    clearTimeout(this.connectingTimer);
    this.connectingTimer = setTimeout(() => {
      if (gen === this.gen && ws.readyState === WebSocket.CONNECTING) this.setState('connecting');
    }, 800);
    ws.onopen = () => {
      if (gen === this.gen) this.setState('open');
    };
    ws.onmessage = (e) => {
      if (gen !== this.gen) return;
      // Reset the backoff on data, not on open: a server that accepts and then drops us at
      // once must not be hammered every 250 ms.
      this.backoff = BACKOFF_MIN_MS;
      this.setState('open');
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return;
      }
      if (msg && typeof msg === 'object') this.onFrame(msg);
    };
    ws.onclose = () => {
      if (gen !== this.gen) return;
      this.ws = null;
      if (this.stopped) return;
      this.setState('reconnecting');
      this.scheduleReconnect(gen);
    };
    // onerror is always followed by onclose, which does the work.
    ws.onerror = () => {};
  }

  scheduleReconnect(gen) {
    if (gen !== this.gen || this.stopped) return;
    clearTimeout(this.reconnectTimer);
    const delay = this.backoff;
    this.backoff = Math.min(BACKOFF_MAX_MS, this.backoff * 2);
    this.reconnectTimer = setTimeout(() => {
      if (gen === this.gen) this.connect();
    }, delay);
  }

  // drop closes the socket as a network failure would; the stream reconnects and resumes.
  drop() {
    if (this.ws) this.ws.close(4000, 'dropped');
  }

  // reconnectNow skips the backoff (the browser came back online, say).
  reconnectNow() {
    if (!this.stopped && !this.ws) this.connect();
  }

  stop() {
    this.stopped = true;
    this.gen++;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.connectingTimer);
    this.backoff = BACKOFF_MIN_MS;
    if (this.ws) {
      try { this.ws.close(1000, 'done'); } catch { /* already closed */ }
      this.ws = null;
    }
    this.setState('open');
  }

  setState(state) {
    if (state === 'open') clearTimeout(this.connectingTimer);
    this.onState(state);
  }
}

// socketURL turns a path of this origin into a ws(s): URL.
export function socketURL(path) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}${path}`;
}
