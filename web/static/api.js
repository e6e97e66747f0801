/*
 * The bot's JSON API, as every page calls it: errors come back as ApiError with the message
 * the bot wrote for people.
 */

export class ApiError extends Error {
  constructor(message, code, status) {
    super(message);
    this.code = code || '';
    this.status = status || 0;
  }
}

export async function api(method, path, body) {
  const opts = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
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
