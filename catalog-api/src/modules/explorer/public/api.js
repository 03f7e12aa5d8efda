/**
 * The explorer's HTTP client. Every call goes to the same origin (the sidecar) with the signed-in
 * admin's access token, which lives in this module's memory only (never localStorage or a cookie:
 * a reload signs out), and the chosen publisher context as X-Publisher-Id (docs/CONTRACTS.md,
 * "Publisher context"). Errors are the API's problem details (RFC 9457).
 */

/** A failed call: `status` (HTTP) and the problem document (`type`, `title`, `detail`, …). */
export class ApiError extends Error {
  /**
   * @param {number} status HTTP status
   * @param {{type?: string, title?: string, detail?: string, [k: string]: unknown}} problem
   */
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }

  /** The problem's kind: the last segment of its `type` URI (`forbidden`, `shadow-changes`, …). */
  get kind() {
    return String(this.problem.type ?? '').split('/').pop() ?? '';
  }
}

let accessToken = null;
let publisherId = '';
let onUnauthenticated = () => {};

/** Call `fn()` when a call made with a token answers 401 (the session ended or was revoked). */
export function setUnauthenticatedHandler(fn) {
  onUnauthenticated = fn;
}

/** Keep `token` (a Bearer access token) for the next calls; null forgets it. */
export function setToken(token) {
  accessToken = token;
}

/** The publisher context sent as X-Publisher-Id ('' → none). */
export function setPublisher(id) {
  publisherId = id || '';
}

/** The current publisher context ('' when none). */
export function currentPublisher() {
  return publisherId;
}

/**
 * Call the API.
 * @param {string} method HTTP method
 * @param {string} path absolute path, e.g. '/api/v1/authz/users'
 * @param {{ query?: Record<string, string|number|boolean|undefined>, body?: unknown, publisher?: boolean }} [opts]
 *   `publisher: false` leaves X-Publisher-Id out (sign-in, the caller's own profile)
 * @returns {Promise<any>} the parsed JSON body (undefined for 204)
 * @throws {ApiError} on any status ≥ 400, or status 0 when the network fails
 */
export async function api(method, path, opts = {}) {
  const url = new URL(path, window.location.origin);
  for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined && v !== '') url.searchParams.set(k, String(v));
  const headers = { accept: 'application/json, application/problem+json' };
  if (accessToken) headers.authorization = `Bearer ${accessToken}`;
  if (opts.publisher !== false && publisherId) headers['x-publisher-id'] = publisherId;
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  let res;
  try {
    res = await fetch(url, { method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
  } catch (err) {
    throw new ApiError(0, { title: 'Network error', detail: String(err?.message ?? err) });
  }
  const text = await res.text();
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = { title: `HTTP ${res.status}`, detail: text.slice(0, 200) };
  }
  if (res.status === 401 && headers.authorization) onUnauthenticated();
  if (!res.ok) throw new ApiError(res.status, json ?? { title: `HTTP ${res.status}` });
  return json;
}

/**
 * A person-readable sentence for an error, naming access denials plainly (403 → "Access denied").
 * @param {unknown} err an ApiError or any error
 * @returns {string}
 */
export function describeError(err) {
  if (err instanceof ApiError) {
    const detail = err.problem.detail ? `: ${err.problem.detail}` : '';
    if (err.status === 403) return `Access denied (403)${detail}`;
    if (err.status === 401) return `Not signed in or the session ended (401)${detail}`;
    if (err.status === 0) return `The server could not be reached${detail}`;
    return `${err.problem.title ?? 'Error'} (${err.status})${detail}`;
  }
  return String(err?.message ?? err);
}
