/**
 * Two-level decision cache in front of the PDP: an in-process LRU (lru-cache) and Redis (ioredis),
 * keyed by `decisionKey(storeId, modelId, user, relation, object, contextHash, epochs)` from
 * policies/src/epochs.ts (docs/CONTRACTS.md, "Decision cache and epochs").
 *
 * Per decision: one MGET of the three epoch keys [global, user, object] (missing = 0). Because the
 * epochs are part of the key, an epoch bump by any writer invalidates at once in every process.
 * Then LRU → Redis GET → PDP Check; a PDP answer is stored in both (PX / ttl = DECISION_CACHE_TTL_MS),
 * a Redis hit is copied into the LRU with its remaining TTL. Errors are never cached. A Check's
 * condition context is part of the key (`contextKey`, else a hash of `context`): see
 * pdp/condition-context.ts for how the sidecar buckets the request time so that caching still works.
 *
 * Redis is only a cache: when it fails (down, slow beyond `commandTimeout`, offline queue disabled)
 * the epochs are unknown, so the decision is made by the PDP directly, bypassing the LRU too (a
 * revocation could not be seen). The outage is logged once, and its end once.
 *
 * When Redis answers again after an outage (a failed command, or the connection dropped), the
 * epochs it holds cannot be trusted: a writer that changed a tuple in OpenFGA during the outage
 * could not bump them (policies/src/relationships.ts retries, but only later). So before the first
 * cached decision after an outage the LRU is cleared and the global epoch is bumped (every cached
 * decision, in every process, is then missed once): no decision cached before the outage is served
 * after it (test/faults/redis.test.ts).
 */
import { LRUCache } from 'lru-cache';
import type { Redis } from 'ioredis';
import { contextHash, decisionKey, epochKeys, globalEpochKey } from '../../../policies/src/epochs.ts';
import type { CheckQuery, Pdp } from './openfga.ts';
import type { ModelRef } from '../../../policies/src/active-model.ts';
import type { DecisionSource, SidecarMetrics } from '../metrics.ts';

/** Minimal logger (pino-compatible). */
export type Log = { warn(obj: object, msg?: string): void; info(obj: object, msg?: string): void };

/** A decision, where it came from and the authorization model id it was decided (and cached) by. */
export type Decision = { allowed: boolean; source: DecisionSource; modelId: string };

/** The cache's interface. */
export type DecisionCache = {
  /**
   * Decide `q`, from cache when possible.
   * @throws PdpUnavailableError (from the PDP) when the cache has no answer and OpenFGA fails.
   */
  decide(q: CheckQuery): Promise<Decision>;
  /** True while the last Redis call failed. */
  readonly redisDown: boolean;
};

/**
 * Create the cache.
 * @param opts.redis an ioredis client configured to fail fast (commandTimeout, enableOfflineQueue
 *   false, maxRetriesPerRequest 1); opts.ttlMs decision TTL in ms (0 = no caching at all);
 *   opts.maxEntries LRU size; opts.modelId the model id, fixed or a {@link ModelRef} (the active-model
 *   watcher) read once per decision: the key and the PDP Check use the same id, so a decision made
 *   by one model is never cached under, or served for, another.
 */
export function createDecisionCache(opts: {
  redis: Redis;
  pdp: Pdp;
  storeId: string;
  modelId: string | ModelRef;
  ttlMs: number;
  maxEntries: number;
  metrics: SidecarMetrics;
  log: Log;
}): DecisionCache {
  const { redis, pdp, storeId, ttlMs, metrics, log } = opts;
  const model: ModelRef = typeof opts.modelId === 'string' ? { current: opts.modelId } : opts.modelId;
  const lru = new LRUCache<string, boolean>({ max: Math.max(1, opts.maxEntries), ttl: Math.max(1, ttlMs) });
  let down = false;
  /** Set by every outage; cleared once the LRU is emptied and the global epoch bumped after it. */
  let untrusted = false;
  const redisFailed = (err: unknown, op: string) => {
    if (!down) log.warn({ err: { message: (err as Error).message }, op }, 'redis unavailable: deciding without the decision cache');
    down = true;
    untrusted = true;
  };
  const redisOk = () => {
    if (down) log.info({}, 'redis available again: decision cache re-enabled');
    down = false;
  };
  // A dropped connection is an outage even when no decision was asked for meanwhile.
  redis.on('reconnecting', () => (untrusted = true));
  /** After an outage: forget the LRU and move every process to new keys (one INCR). @throws Redis errors */
  const distrustOldEntries = async () => {
    lru.clear();
    await redis.incr(globalEpochKey(storeId));
    untrusted = false;
  };
  const record = (allowed: boolean, source: DecisionSource, modelId: string): Decision => {
    metrics.decision(source, allowed);
    return { allowed, source, modelId };
  };

  return {
    get redisDown() {
      return down;
    },
    async decide(question) {
      const modelId = model.current; // once: a switch during this decision does not mix models
      const q = { ...question, modelId };
      // DECISION_CACHE_TTL_MS=0 turns the cache off (benchmarks, debugging): every request asks the PDP.
      if (ttlMs <= 0) return record(await pdp.check(q), 'pdp', modelId);
      let epochs: (string | null)[];
      try {
        if (untrusted) await distrustOldEntries();
        epochs = await redis.mget(...epochKeys(storeId, q.user, q.object));
        redisOk();
      } catch (err) {
        redisFailed(err, 'mget');
        return record(await pdp.check(q), 'pdp', modelId);
      }
      const ctxKey = q.contextKey ?? (q.context ? contextHash(q.context) : '');
      const key = decisionKey({ storeId, modelId, user: q.user, relation: q.relation, object: q.object, contextHash: ctxKey, epochs });
      const local = lru.get(key);
      if (local !== undefined) return record(local, 'lru', modelId);
      try {
        // GET + PTTL in one round trip: the LRU copy keeps the remaining TTL, so a decision never
        // outlives DECISION_CACHE_TTL_MS in total.
        const res = await redis.pipeline().get(key).pttl(key).exec();
        const [getRes, pttlRes] = res ?? [];
        if (getRes?.[0]) throw getRes[0];
        const shared = getRes?.[1];
        if (shared === '1' || shared === '0') {
          const remaining = typeof pttlRes?.[1] === 'number' && pttlRes[1] > 0 ? Math.min(pttlRes[1], ttlMs) : 1;
          lru.set(key, shared === '1', { ttl: remaining });
          return record(shared === '1', 'redis', modelId);
        }
      } catch (err) {
        redisFailed(err, 'get');
      }
      const allowed = await pdp.check(q); // throws on PDP failure: nothing is cached
      lru.set(key, allowed);
      redis.set(key, allowed ? '1' : '0', 'PX', ttlMs).then(redisOk, (err: unknown) => redisFailed(err, 'set'));
      return record(allowed, 'pdp', modelId);
    },
  };
}
