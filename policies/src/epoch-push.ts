/**
 * Pushing decision-cache epoch bumps to every sidecar (docs/CONTRACTS.md, "Decision cache and
 * epochs"; issue 8). Sidecars hold the epochs in process (sidecar/src/pdp/epoch-view.ts) instead of
 * reading them with an MGET per decision, so every writer that bumps an epoch must also announce
 * the new value: {@link bumpEpochs} INCRs the keys and PUBLISHes `{"bumps":[[key, value], …]}` on
 * {@link epochChannel} in ONE Lua script, so a bump is never applied without being announced (a
 * client that dies between an INCR and a PUBLISH would otherwise leave every sidecar's view stale
 * while its push channel looks healthy).
 *
 * Redis Cluster: a script's keys must hash to one slot (the epoch keys of a store share the store's
 * hash tag, policies/src/epochs.ts); PUBLISH inside a script is propagated to every node like any
 * classic PUBLISH (https://redis.io/docs/latest/develop/interact/pubsub/#pubsub-and-redis-cluster).
 */
import type { Cluster, Redis } from 'ioredis';

/** `authz:epochs-changed:<storeId>`: pub/sub channel of epoch bumps; each message is {@link encodeEpochBumps}. */
export function epochChannel(storeId: string): string {
  return `authz:epochs-changed:${storeId}`;
}

/** One bump: the epoch key and its value right after the INCR. */
export type EpochBump = [key: string, value: number];

/** The message text of `bumps`: `{"bumps":[[key, value], …]}`. */
export function encodeEpochBumps(bumps: readonly EpochBump[]): string {
  return JSON.stringify({ bumps });
}

/**
 * Parse a message of {@link epochChannel}.
 * @returns the bumps, or undefined when `text` is not such a message (ignored by subscribers).
 */
export function decodeEpochBumps(text: string): EpochBump[] | undefined {
  try {
    const m = JSON.parse(text) as { bumps?: unknown };
    if (!Array.isArray(m.bumps)) return undefined;
    const out: EpochBump[] = [];
    for (const b of m.bumps) {
      if (!Array.isArray(b) || typeof b[0] !== 'string' || !Number.isSafeInteger(b[1])) return undefined;
      out.push([b[0], b[1] as number]);
    }
    return out;
  } catch {
    return undefined;
  }
}

/** INCR every KEYS[i], then PUBLISH ARGV[1] the bumps; returns the new values in KEYS order. */
const BUMP_SCRIPT = `
local bumps = {}
local values = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('INCR', k)
  values[i] = v
  bumps[i] = {k, v}
end
redis.call('PUBLISH', ARGV[1], cjson.encode({bumps = bumps}))
return values`;

/**
 * INCR the epoch `keys` of `storeId` and announce the new values on {@link epochChannel}, atomically
 * (one EVAL). No keys → nothing is sent.
 * @param keys epoch keys from policies/src/epochs.ts (`epochKeysToBump`, `globalEpochKey`, …).
 * @returns the bumps applied (key, new value), in `keys` order.
 * @throws the Redis client's error when Redis refuses or is unreachable (then it is unknown whether
 *   the bump was applied: retry — a second bump is harmless, it only costs cache misses).
 */
export async function bumpEpochs(redis: Redis | Cluster, storeId: string, keys: readonly string[]): Promise<EpochBump[]> {
  if (keys.length === 0) return [];
  const values = (await redis.eval(BUMP_SCRIPT, keys.length, ...keys, epochChannel(storeId))) as number[];
  return keys.map((k, i) => [k, Number(values[i])]);
}
