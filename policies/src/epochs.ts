/**
 * Decision-cache keys and invalidation epochs (docs/CONTRACTS.md, "Decision cache and epochs").
 *
 * A cached decision's key contains the current values of three generation counters (global, user,
 * object). Writing a relationship bumps the counters whose decisions it may change, so every later
 * lookup computes a new key and misses; old entries are simply never read again and expire by TTL.
 * Pure functions: no Redis access here (the sidecar reads with one MGET, the writer INCRs).
 */
import { createHash } from 'node:crypto';

/**
 * Object types whose relationships decide other objects' relations (policies/model.fga): parents
 * reached by tuple-to-userset (`publisher`, `system`, `department`) and custom roles, reached as the
 * userset `role#assignee`.
 */
export const PARENT_TYPES: readonly string[] = ['publisher', 'system', 'department', 'role'];

/**
 * `authz:{<storeId>}:epoch:` — `{<storeId>}` is a Redis Cluster hash tag
 * (https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/#hash-tags): every
 * epoch of a store is on one slot, so the decision cache's MGET of [global, user, object] and the
 * active-model MULTI (policies/src/active-model.ts) stay single-slot commands.
 */
export function epochKeyPrefix(storeId: string): string {
  return `authz:{${storeId}}:epoch:`;
}

/** `authz:{<storeId>}:epoch:global`. */
export function globalEpochKey(storeId: string): string {
  return `${epochKeyPrefix(storeId)}global`;
}

/** `authz:{<storeId>}:epoch:user:<userId>`; `userId` is the bare id (no `user:` prefix). */
export function userEpochKey(storeId: string, userId: string): string {
  return `${epochKeyPrefix(storeId)}user:${userId}`;
}

/** `authz:{<storeId>}:epoch:object:<type>:<id>`; `object` is the OpenFGA object `<type>:<id>`. */
export function objectEpochKey(storeId: string, object: string): string {
  return `${epochKeyPrefix(storeId)}object:${object}`;
}

/** The bare id of an OpenFGA user that is a concrete `user:<id>` (not a wildcard or userset), else undefined. */
function concreteUserId(user: string): string | undefined {
  const m = /^user:([^#*][^#]*)$/.exec(user);
  return m ? m[1] : undefined;
}

/**
 * The three epoch keys a decision for (`user`, `object`) depends on, in the order the decision key
 * uses them: [global, user, object]. Read them with one MGET; a missing key counts as 0.
 * @param user the checked subject, `user:<uuid>`.
 * @param object the checked object, `<type>:<id>`.
 * @throws Error when `user` is not `user:<id>` or `object` has no `<type>:` prefix.
 */
export function epochKeys(storeId: string, user: string, object: string): [string, string, string] {
  const userId = concreteUserId(user);
  if (!userId) throw new Error(`epochKeys: user must be "user:<id>", got "${user}"`);
  if (!/^[^:#]+:[^#]+$/.test(object)) throw new Error(`epochKeys: object must be "<type>:<id>", got "${object}"`);
  return [globalEpochKey(storeId), userEpochKey(storeId, userId), objectEpochKey(storeId, object)];
}

/** A relationship tuple as written to or deleted from OpenFGA. */
export type TupleLike = { user: string; relation: string; object: string };

/**
 * The epoch keys to INCR after writing or deleting `tuples` (each key once, first-seen order).
 * Rules (CONTRACTS.md): a tuple whose user is `user:<id>` bumps that user's epoch (the change can
 * only alter that user's decisions). Any other user (an object such as `publisher:<p>`, a userset
 * `publisher:<p>#admin`, or the wildcard `user:*`) bumps the tuple object's epoch, plus the global
 * epoch when the object's type is a parent type (`publisher`, `system`), because decisions on every
 * child object and for every user may change. `user:*` also bumps global, since it reaches all users.
 */
export function epochKeysToBump(storeId: string, tuples: readonly TupleLike[]): string[] {
  const keys = new Set<string>();
  for (const t of tuples) {
    const userId = concreteUserId(t.user);
    if (userId) {
      keys.add(userEpochKey(storeId, userId));
      continue;
    }
    keys.add(objectEpochKey(storeId, t.object));
    const type = t.object.slice(0, t.object.indexOf(':'));
    if (PARENT_TYPES.includes(type) || t.user.startsWith('user:*')) keys.add(globalEpochKey(storeId));
  }
  return [...keys];
}

/** JSON with object keys sorted at every level, so equal values hash equally. */
function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.keys(value)
      .sort()
      .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${stableJson((value as Record<string, unknown>)[k])}`);
    return `{${entries.join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/**
 * sha256 hex of a Check's ABAC context and contextual tuples (stable JSON: key order does not matter).
 * @returns '' when both are absent or empty, so plain checks share one form.
 */
export function contextHash(context?: Record<string, unknown>, contextualTuples?: readonly TupleLike[]): string {
  const hasContext = context !== undefined && Object.keys(context).length > 0;
  const hasTuples = contextualTuples !== undefined && contextualTuples.length > 0;
  if (!hasContext && !hasTuples) return '';
  return createHash('sha256')
    .update(stableJson({ context: context ?? {}, tuples: contextualTuples ?? [] }))
    .digest('hex');
}

/**
 * Redis key of a cached decision: `authz:decision:<sha256 hex>` over storeId, modelId, user,
 * relation, object, contextHash ('' when none) and the epochs (as read by MGET; null → '0').
 * The parts are JSON-encoded as an array before hashing, so no separator can make two part lists collide.
 */
export function decisionKey(parts: {
  storeId: string;
  modelId: string;
  user: string;
  relation: string;
  object: string;
  contextHash?: string;
  epochs: readonly (string | number | null)[];
}): string {
  const epochs = parts.epochs.map((e) => (e === null || e === undefined ? '0' : String(e)));
  const material = JSON.stringify([
    parts.storeId,
    parts.modelId,
    parts.user,
    parts.relation,
    parts.object,
    parts.contextHash ?? '',
    ...epochs,
  ]);
  return `authz:decision:${createHash('sha256').update(material).digest('hex')}`;
}
