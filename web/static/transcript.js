/*
 * The transcript: a session's event log folded into what people read (prompts, Claude's text
 * as it streams, every tool call with its input and output, diffs, permission requests and
 * who answered them, results with their cost). The console and the session page both use it,
 * so a log reads the same everywhere.
 *
 * Text from the log reaches the DOM through h() and textContent, or through renderMarkdown()
 * (which escapes first); innerHTML is used in exactly one place, renderBlock, with its output.
 */

import { h, icon, spinner, plural, fmtCost, fmtDuration, fmtBytes, fmtClock, firstLine, safeURL, copyText } from './dom.js';
import { renderMarkdown } from './markdown.js';

const OUTPUT_MAX_LINES = 40;
// A single enormous line would defeat the line limit, so characters are capped too.
const OUTPUT_MAX_CHARS = 6000;
const SPINNING_STAGES = new Set(['sandbox_starting', 'sandbox_waking']);
const NEAR_BOTTOM_PX = 48;

// createTranscript renders a log into turns (an element), scrolled by scroller, with a
// "new activity" button shown while the reader is scrolled up. actions.decide(requestId,
// behavior) and actions.cancelPrompt(promptId) are what the buttons do; without them the
// transcript is read-only (the session page: reviewers watch, the chat thread decides).
// onPrompt(prompt) is called for each prompt, onPreview({state, url}) when the dev server's
// state shows in the log, onChange() after every event.
export function createTranscript({ turns, scroller, newActivity, actions = {}, onPrompt: promptSeen = () => {}, onPreview = () => {}, onChange = () => {} }) {
  const ui = { turns, transcript: scroller, newActivity };
  const app = { view: null, stickToBottom: true, pendingActivity: false };

  // Everything the transcript of one log needs; thrown away on reset.
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
      known: false,           // true once we know whether the log has history
      sessionFromSocket: false,
      sessionId: '',          // the session whose log this view shows (seqs are per session)
      seqs: [],               // every seq received, in order (the pages' tests read it)
    };
  }


  // ---------------------------------------------------------------------------------------
  // Events → transcript
  // ---------------------------------------------------------------------------------------

  function handleEvent(msg) {
    const v = app.view;
    const seq = Number(msg.seq);
    v.seqs.push(seq);
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
    if (!app.stickToBottom) app.pendingActivity = true;
    scheduleFlush();
    onChange();
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
      const cancel = turn.promptId && actions.cancelPrompt
        ? h('button', { class: 'link-btn', type: 'button', text: 'Cancel' })
        : null;
      turn.queuedEl = h('div', { class: 'queued-note' }, icon('clock'),
        h('span', { text: 'queued: Claude will take this after the current turn' }), cancel);
      if (cancel) {
        cancel.addEventListener('click', async () => {
          cancel.disabled = true;
          try {
            await actions.cancelPrompt(turn.promptId);
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
    promptSeen(p);
  }

  const PREVIEW_STAGES = { preview_ready: 'ready', preview_crashed: 'crashed', sandbox_stopped: 'stopped', sandbox_starting: 'starting', sandbox_waking: 'starting', closed: 'stopped' };
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
    if (PREVIEW_STAGES[d.stage]) onPreview({ state: PREVIEW_STAGES[d.stage], url: safeURL(d.url) });
    const url = safeURL(d.url);
    if (url) {
      line.append(h('a', { class: 'btn btn-small', href: url, target: '_blank', rel: 'noopener', text: 'Open preview' }));
    }
    if (spin) app.view.spinners.push(line);
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
    const waiting = actions.decide ? 'Waiting for approval' : 'Waiting for an answer in the chat thread';
    const status = h('span', { class: 'perm-status', text: waiting });
    const approve = h('button', { class: 'btn btn-primary btn-small', type: 'button', text: 'Approve' });
    const deny = h('button', { class: 'btn btn-small', type: 'button', text: 'Deny' });
    const err = h('div', { class: 'perm-error', role: 'alert', hidden: true });
    const buttons = h('div', { class: 'perm-actions', hidden: !actions.decide }, approve, deny);
    const card = {
      id, actions: buttons, status, err, resolved: false,
      el: h('div', { class: 'perm-card', role: 'group', 'aria-label': 'Permission request for ' + name },
        h('div', { class: 'perm-head' }, icon('alert'),
          h('span', { class: 'perm-title', text: `Claude wants to use ${name}` }), status),
        summary ? h('pre', { class: 'perm-input wrap', text: summary }) : null,
        buttons, err),
    };
    const decide = async (behavior) => {
      approve.disabled = deny.disabled = true;
      err.hidden = true;
      try {
        await actions.decide(id, behavior);
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
      case 'preview': // the bot's own status lines say it in words; the preview pane shows the state
        onPreview({ state: String(d.state || ''), log: typeof d.log === 'string' ? d.log : '' });
        return;
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

  // ---------------------------------------------------------------------------------------
  // Copy buttons in code blocks
  // ---------------------------------------------------------------------------------------

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

  function reset() {
    app.view = newView();
    app.stickToBottom = true;
    ui.turns.replaceChildren();
    ui.newActivity.hidden = true;
  }

  ui.newActivity.addEventListener('click', () => { app.stickToBottom = true; scrollToBottom(true); });
  ui.transcript.addEventListener('scroll', onTranscriptScroll, { passive: true });
  ui.transcript.addEventListener('click', onTranscriptClick);
  // The transcript shrinks when a composer grows or a phone keyboard opens; stay pinned.
  if ('ResizeObserver' in window) {
    new ResizeObserver(() => { if (app.stickToBottom) scrollToBottom(); }).observe(ui.transcript);
  }
  reset();

  return {
    handleEvent,
    reset,
    markQueued,
    // view is the state of the log shown: lastSeq, known, sessionId and the rest.
    get view() { return app.view; },
    get hasTurns() { return app.view.turns.length > 0; },
    // currentPromptId is the prompt of the turn Claude works on ('' for none known): a Stop
    // names it, so one pressed as that turn ends leaves the next alone.
    get currentPromptId() { return (app.view.open[0] && app.view.open[0].promptId) || ''; },
    stick() { app.stickToBottom = true; scheduleFlush(); },
  };
}
