// The setup API, as the console calls it: every request goes to /api/v1 with the token of this
// tab as `Authorization: Bearer`. The token lives in sessionStorage only (this tab, until it
// closes): never in a URL, a cookie or local storage.

const KEY = "hookline.console.token";

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  sessionStorage.setItem(KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(KEY);
}

/** An answer that is not 2xx: `status`, the API's `code` and `field`, and its message. */
export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
  describe() {
    return this.field ? `${this.message} (${this.field})` : this.message;
  }
}

let unauthorized = () => {};

/** What to do when the API refuses the token (401): back to the login page. */
export function onUnauthorized(f) {
  unauthorized = f;
}

/**
 * Calls `method path` under /api/v1 with `body` as JSON; resolves to the parsed answer (null for
 * 204) or rejects with an ApiError. `options.token` signs in with a token not stored yet.
 */
export async function call(method, path, body, options = {}) {
  const bearer = options.token ?? token();
  const headers = { Accept: "application/json" };
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error", referrerPolicy: "no-referrer" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(`/api/v1${path}`, init);
  } catch (e) {
    throw new ApiError(0, "unreachable", "the setup API did not answer");
  }
  if (response.status === 401 && options.token === undefined) {
    unauthorized();
    throw new ApiError(401, "unauthorized", "the token was refused: sign in again");
  }
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (e) {
      data = null;
    }
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ApiError(response.status, error.code || `http_${response.status}`, error.message || `HTTP ${response.status}`, error.field);
  }
  return data;
}

export const get = (path, options) => call("GET", path, undefined, options);
export const post = (path, body) => call("POST", path, body ?? {});
export const patch = (path, body) => call("PATCH", path, body);
export const del = (path) => call("DELETE", path);

/** `?a=1&b=2` of the parameters that have a value ("" when none). */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

/** A path segment, escaped. */
export const seg = (s) => encodeURIComponent(s);
