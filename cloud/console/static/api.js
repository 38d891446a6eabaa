// The cloud's REST API as the console uses it: every call sends `Authorization: Bearer <key>`;
// every failure becomes an ApiError carrying the API's {code, message} and the HTTP status.

const STORAGE_KEY = 'braid.apiKey';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function getKey() {
  return localStorage.getItem(STORAGE_KEY);
}

export function setKey(key) {
  localStorage.setItem(STORAGE_KEY, key);
}

/** A 401 from any call: the app shows the key prompt with the error. */
let unauthorized = () => {};
export function onUnauthorized(fn) {
  unauthorized = fn;
}

/**
 * Call `path` (under /api/v1) with `params` as the query string. Resolves with
 * `{ status, body }` for a 2xx; rejects with ApiError otherwise (status 0 for a network error).
 */
export async function api(path, { method = 'GET', params, body } = {}) {
  const key = getKey();
  if (!key) {
    const err = new ApiError(401, 'BRAID_ERR_UNAUTHORIZED', 'no API key given');
    unauthorized(err);
    throw err;
  }
  const qs = params ? `?${new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ''))}` : '';
  const headers = { authorization: `Bearer ${key}`, accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch(`/api/v1/${path}${qs}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, 'NETWORK_ERROR', `the cloud did not answer (${e.message})`);
  }
  const text = await res.text();
  let doc = null;
  try { doc = text ? JSON.parse(text) : null; } catch { /* not JSON: reported below */ }
  if (!res.ok) {
    const err = new ApiError(res.status, doc?.code ?? `HTTP_${res.status}`, doc?.message ?? (text.slice(0, 200) || res.statusText));
    if (res.status === 401) unauthorized(err);
    throw err;
  }
  if (doc === null) throw new ApiError(res.status, 'BAD_ANSWER', `GET ${path}: the answer is not JSON`);
  return { status: res.status, body: doc };
}
