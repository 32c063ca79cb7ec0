// The documented API (/api/v1, see GET /api/v1/openapi.json), over the session cookie with
// the session's CSRF token on every change. Nothing else is called.

let csrfToken = null;

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function setCsrf(token) {
  csrfToken = token;
}

export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const init = { method, headers, credentials: 'same-origin' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  if (method !== 'GET' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  const response = await fetch(`/api/v1${path}`, init);
  let data = null;
  if ((response.headers.get('Content-Type') || '').startsWith('application/json')) {
    data = await response.json();
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    // The session ended (expired, signed out everywhere, account disabled): the page
    // shows the sign-in form instead of failing action by action.
    if (response.status === 401 && path !== '/auth/login') {
      window.dispatchEvent(new CustomEvent('inboxhub:unauthorized'));
    }
    throw new ApiError(response.status, error.code || '', error.message || response.statusText);
  }
  return data;
}

// A file as the raw body (POST .../attachments?name=): the hub judges it by its bytes.
export async function upload(path, file) {
  const headers = { Accept: 'application/json', 'Content-Type': 'application/octet-stream' };
  if (csrfToken) headers['X-CSRF-Token'] = csrfToken;
  const response = await fetch(`/api/v1${path}`, { method: 'POST', headers, body: file, credentials: 'same-origin' });
  const data = (response.headers.get('Content-Type') || '').startsWith('application/json')
    ? await response.json() : null;
  if (!response.ok) {
    const error = (data && data.error) || {};
    if (response.status === 401) window.dispatchEvent(new CustomEvent('inboxhub:unauthorized'));
    throw new ApiError(response.status, error.code || '', error.message || response.statusText);
  }
  return data;
}

export const get = (path) => api('GET', path);
export const post = (path, body = {}) => api('POST', path, body);

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}
