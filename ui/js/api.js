// The node's REST API as the console uses it: the user's token (kept in sessionStorage), problem
// documents turned into errors that say what went wrong, and event streams that carry the token
// in a header like every other request (see sse.js).

import { TokenStream } from './sse.js';

const TOKEN_KEY = 'concord.console.token';

/** An API failure: the problem document's status, title and detail, or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, title, detail, type = '') {
    super(status ? `${status} ${title}: ${detail}` : `${title}: ${detail}`);
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.type = type;
  }
}

let token = null;
try {
  token = sessionStorage.getItem(TOKEN_KEY);
} catch {
  token = null;
}

/** Called on a 401 from any request made with the stored token (it expired or was revoked). */
let onUnauthorized = () => {};
export function setUnauthorizedHandler(f) {
  onUnauthorized = f;
}

export function getToken() {
  return token;
}

export function setToken(t) {
  token = t || null;
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage refused (private mode): the token lives for this page only.
  }
}

/** `/v1/collections/<c>/docs/<id>` with each part percent-encoded. */
export function docPath(collection, id, rest = '') {
  return `/v1/collections/${encodeURIComponent(collection)}/docs/${encodeURIComponent(id)}${rest}`;
}

export function collPath(collection, rest = '') {
  return `/v1/collections/${encodeURIComponent(collection)}${rest}`;
}

/** A query string from an object, leaving out undefined, null and '' values. */
export function qs(params) {
  const parts = [];
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === '') continue;
    parts.push(`${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`);
  }
  return parts.length ? `?${parts.join('&')}` : '';
}

/** An ETag header's value without its quotes (a document version). */
export function unquote(etag) {
  if (!etag) return '';
  return etag.replace(/^W\//, '').replace(/^"|"$/g, '');
}

async function problemOf(res) {
  let title = res.statusText || 'Error';
  let detail = '';
  let type = '';
  const ct = res.headers.get('content-type') || '';
  try {
    if (ct.includes('json')) {
      const p = await res.json();
      title = p.title || title;
      detail = p.detail || '';
      type = p.type || '';
    } else {
      detail = (await res.text()).slice(0, 500);
    }
  } catch {
    // An unreadable body: the status says enough.
  }
  return new ApiError(res.status, title, detail || title, type);
}

/**
 * One request. Options: method, body (JSON-encoded), headers, as ('json' | 'text' | 'none'),
 * token (overrides the stored one; null sends none). Resolves to {status, etag, data, headers};
 * rejects with an ApiError.
 */
export async function api(path, opts = {}) {
  const { method = 'GET', body, headers = {}, as = 'json' } = opts;
  const useToken = 'token' in opts ? opts.token : token;
  const h = { Accept: as === 'text' ? 'text/plain' : 'application/json', ...headers };
  if (useToken) h.Authorization = `Bearer ${useToken}`;
  const init = { method, headers: h, cache: 'no-store' };
  if (body !== undefined) {
    h['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'Network error', `the node did not answer ${method} ${path} (${e.message || e})`);
  }
  if (!res.ok) {
    const err = await problemOf(res);
    if (res.status === 401 && !('token' in opts)) onUnauthorized(err);
    throw err;
  }
  let data = null;
  if (as === 'json' && res.status !== 204) {
    try {
      data = await res.json();
    } catch (e) {
      throw new ApiError(res.status, 'Unreadable answer', `${method} ${path} did not return JSON (${e.message})`);
    }
  } else if (as === 'text') {
    data = await res.text();
  }
  return { status: res.status, etag: unquote(res.headers.get('etag')), data, headers: res.headers };
}

/** A Server-Sent Events stream of `path`, sent with the current token. */
export function eventStream(path) {
  return new TokenStream(path, {
    headers: () => (token ? { Authorization: `Bearer ${token}` } : {}),
    onUnauthorized: (status) => onUnauthorized(new ApiError(status, 'Unauthorized', `${path}: the token was refused`)),
  });
}
