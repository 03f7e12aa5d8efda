/**
 * Who can / what can: OpenFGA's ListUsers and StreamedListObjects with their server limits handled,
 * so an admin tool says when an answer is cut instead of passing a partial list off as complete.
 *
 * Sources: https://openfga.dev/docs/interacting/relationship-queries and the OpenFGA server flags
 * (`openfga run --help`, v1.18–v1.22): ListUsers returns at most `--listUsers-max-results` (env
 * OPENFGA_LIST_USERS_MAX_RESULTS, default 1000) within `--listUsers-deadline` (OPENFGA_LIST_USERS_DEADLINE,
 * default 3s); ListObjects at most `--listObjects-max-results` (OPENFGA_LIST_OBJECTS_MAX_RESULTS,
 * default 1000, non-streaming only) and StreamedListObjects everything found within
 * `--listObjects-deadline` (OPENFGA_LIST_OBJECTS_DEADLINE, default 3s). On either limit the server
 * answers with what it has found so far, so the client infers truncation: a full page, or an answer
 * that took (nearly) the whole deadline.
 */
import { ConsistencyPreference } from '@openfga/sdk';
import { fgaClient, readLatestModel } from './model.ts';

/** The server limits a query ran under: results at most (0 = none) and the deadline in ms (0 = none). */
export type ServerLimits = { maxResults: number; deadlineMs: number };

/**
 * A Go duration as OpenFGA flags take it ("3s", "500ms", "1m30s", "0") in ms.
 * @throws Error on anything else.
 */
export function parseGoDuration(text: string): number {
  if (/^\s*0\s*$/.test(text)) return 0;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  const unit: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let total = 0;
  let consumed = '';
  for (const m of text.trim().matchAll(re)) {
    total += Number(m[1]) * unit[m[2]!]!;
    consumed += m[0];
  }
  if (!consumed || consumed !== text.trim()) throw new Error(`not a duration: "${text}" (e.g. 3s, 500ms)`);
  return total;
}

/**
 * The limits of the OpenFGA server from the env that configures it (see the module doc), with the
 * server's defaults (1000 results, 3 s).
 * @param kind 'list-users' (ListUsers) or 'list-objects' (StreamedListObjects: no result limit, deadline only).
 */
export function serverLimits(kind: 'list-users' | 'list-objects', env: NodeJS.ProcessEnv = process.env): ServerLimits {
  const num = (v: string | undefined, d: number) => (v && /^\d+$/.test(v) ? Number(v) : d);
  if (kind === 'list-users') {
    return { maxResults: num(env.OPENFGA_LIST_USERS_MAX_RESULTS, 1000), deadlineMs: parseGoDuration(env.OPENFGA_LIST_USERS_DEADLINE || '3s') };
  }
  return { maxResults: 0, deadlineMs: parseGoDuration(env.OPENFGA_LIST_OBJECTS_DEADLINE || '3s') };
}

/**
 * The condition context of a query: `current_time` defaults to now (RFC 3339), as the sidecar sends
 * it with every Check (policies/model.fga, "Conditional grants"); `client_ip` has no default — a
 * publisher restricted to office networks needs it (OpenFGA answers 400 "missing context
 * parameters" without it).
 */
export function queryContext(context: Record<string, unknown> | undefined, now: Date = new Date()): Record<string, unknown> {
  return { current_time: now.toISOString(), ...context };
}

/** An answer that ran for this share of the deadline or more is taken as cut by it. */
const DEADLINE_SHARE = 0.9;

/** `type:id` → {type, id}. @throws Error when it is not of that form. */
function parseObject(object: string): { type: string; id: string } {
  const m = /^([^:#\s]+):([^#\s]+)$/.exec(object);
  if (!m) throw new Error(`object must be "<type>:<id>", got "${object}"`);
  return { type: m[1]!, id: m[2]! };
}

async function modelIdOf(apiUrl: string, storeId: string, modelId?: string): Promise<string> {
  if (modelId) return modelId;
  const latest = await readLatestModel(apiUrl, storeId);
  if (!latest) throw new Error(`store ${storeId} has no authorization model`);
  return latest.id;
}

/**
 * Who holds `relation` on `object`: OpenFGA ListUsers (POST /stores/{id}/list-users) with
 * `user_filters: [{type: userType}]`.
 * @param opts.userType the user type listed (default 'user').
 * @param opts.context condition context (e.g. `{client_ip}`; `current_time` defaults to now, {@link queryContext}).
 * @param opts.limits the server's limits (default {@link serverLimits}('list-users')).
 * @returns `users`: the `user:<id>` objects (sorted); `usersets`: wildcards (`user:*`) and usersets
 *   (`department:d#admin`) the answer names (sorted); `truncated`: the server's result limit was
 *   reached or the query took (nearly) its deadline.
 * @throws Error on a malformed object; the SDK's FgaApiError when OpenFGA rejects the query
 *   (unknown relation or type, …).
 */
export async function whoCan(opts: {
  apiUrl: string; storeId: string; modelId?: string; relation: string; object: string;
  userType?: string; context?: Record<string, unknown>; limits?: ServerLimits;
}): Promise<{ users: string[]; usersets: string[]; truncated: boolean }> {
  const object = parseObject(opts.object);
  const limits = opts.limits ?? serverLimits('list-users');
  const fga = fgaClient(opts.apiUrl, opts.storeId);
  const authorizationModelId = await modelIdOf(opts.apiUrl, opts.storeId, opts.modelId);
  const started = performance.now();
  const res = await fga.listUsers(
    { object, relation: opts.relation, user_filters: [{ type: opts.userType ?? 'user' }], context: queryContext(opts.context) },
    { authorizationModelId, consistency: ConsistencyPreference.HigherConsistency },
  );
  const elapsed = performance.now() - started;
  const users = new Set<string>();
  const usersets = new Set<string>();
  for (const u of res.users ?? []) {
    if (u.object) users.add(`${u.object.type}:${u.object.id}`);
    else if (u.wildcard) usersets.add(`${u.wildcard.type}:*`);
    else if (u.userset) usersets.add(`${u.userset.type}:${u.userset.id}#${u.userset.relation}`);
  }
  const count = (res.users ?? []).length;
  const truncated = (limits.maxResults > 0 && count >= limits.maxResults) || (limits.deadlineMs > 0 && elapsed >= limits.deadlineMs * DEADLINE_SHARE);
  return { users: [...users].sort(), usersets: [...usersets].sort(), truncated };
}

/**
 * Which objects of `type` the user holds `relation` on: OpenFGA StreamedListObjects
 * (POST /stores/{id}/streamed-list-objects), read as a stream and stopped after `maxResults`.
 * @param opts.user `user:<id>` (or any OpenFGA user).
 * @param opts.maxResults objects collected at most (default 1000).
 * @param opts.limits the server's limits (default {@link serverLimits}('list-objects')).
 * @returns `objects` (`type:id`, sorted, at most maxResults); `truncated`: more were available, or
 *   the stream ran (nearly) to the server's deadline or broke off after some results.
 * @throws the SDK's FgaError when OpenFGA rejects the query before any result.
 */
export async function whatCan(opts: {
  apiUrl: string; storeId: string; modelId?: string; user: string; relation: string; type: string;
  context?: Record<string, unknown>; maxResults?: number; limits?: ServerLimits;
}): Promise<{ objects: string[]; truncated: boolean }> {
  const max = opts.maxResults ?? 1000;
  if (!Number.isInteger(max) || max < 1) throw new Error(`maxResults must be a positive integer, got ${max}`);
  const limits = opts.limits ?? serverLimits('list-objects');
  const fga = fgaClient(opts.apiUrl, opts.storeId);
  const authorizationModelId = await modelIdOf(opts.apiUrl, opts.storeId, opts.modelId);
  const objects = new Set<string>();
  let truncated = false;
  const started = performance.now();
  try {
    for await (const item of fga.streamedListObjects(
      { user: opts.user, relation: opts.relation, type: opts.type, context: queryContext(opts.context) },
      { authorizationModelId, consistency: ConsistencyPreference.HigherConsistency },
    )) {
      if (objects.has(item.object)) continue;
      if (objects.size >= max) { truncated = true; break; }
      objects.add(item.object);
    }
  } catch (err) {
    if (objects.size === 0) throw err;
    truncated = true; // the stream broke off (deadline) after some results
  }
  if (limits.deadlineMs > 0 && performance.now() - started >= limits.deadlineMs * DEADLINE_SHARE) truncated = true;
  return { objects: [...objects].sort(), truncated };
}
