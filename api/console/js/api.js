// The only way the console reaches the broker: the public REST API with a bearer token, so
// everything the console shows or does can be scripted with curl too.

const KEY = 'realmq.session';

/** The signed-in user, `{token, role, username}`, kept for this tab only. */
export function session() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY)) || null;
  } catch {
    return null;
  }
}

export function isAdmin() {
  return session()?.role === 'administrator';
}

export function signOut() {
  sessionStorage.removeItem(KEY);
}

/** An answer with a non-zero `code`: `message` is the API's own text. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};
/** What to do when the token is refused (expired, user deleted, password changed). */
export function setUnauthorizedHandler(f) {
  onUnauthorized = f;
}

/**
 * Calls `/api/v1/{path}`; resolves to the whole envelope (`data`, `meta`), rejects with an
 * ApiError carrying the API's message.
 */
export async function call(method, path, body) {
  const headers = {Accept: 'application/json'};
  const s = session();
  if (s) headers.Authorization = `Bearer ${s.token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(`/api/v1/${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, -1, `network error: ${e.message}`);
  }
  let json = null;
  try {
    json = await res.json();
  } catch {
    // A proxy's HTML error page, say: the status still tells what happened.
  }
  if (!res.ok || !json || json.code !== 0) {
    const message = json?.message || `HTTP ${res.status}`;
    if (res.status === 401 && s && path !== 'auth') onUnauthorized(message);
    throw new ApiError(res.status, json?.code ?? -1, message);
  }
  return json;
}

export const get = (path) => call('GET', path);
export const post = (path, body) => call('POST', path, body);
export const put = (path, body) => call('PUT', path, body);
export const del = (path) => call('DELETE', path);

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

export async function signIn(username, password) {
  const {data} = await post('auth', {username, password});
  sessionStorage.setItem(KEY, JSON.stringify({token: data.token, role: data.role, username}));
  return data;
}

/** `/console/env.json`: which WebSocket listeners this node has. */
export async function consoleEnv() {
  const res = await fetch('/console/env.json');
  return res.json();
}
