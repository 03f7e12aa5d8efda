/**
 * Two-level decision cache in front of the PDP: an in-process LRU (lru-cache) and Redis (ioredis),
 * keyed by `decisionKey(storeId, modelId, user, relation, object, contextHash, epochs)` from
 * policies/src/epochs.ts (docs/CONTRACTS.md, "Decision cache and epochs").
 *
 * Epochs [global, user, object] (missing = 0): from the in-process epoch view (pdp/epoch-view.ts,
 * kept current by pushed bumps, policies/src/epoch-push.ts) while it is fresh — a decision served
 * from the LRU then costs no Redis round trip; a key the view does not hold yet is read once (MGET).
 * Without a view, or while it is stale (push channel down or unverified beyond EPOCH_STALENESS_MS),
 * one MGET of the three keys per decision. Because the epochs are part of the key, an epoch bump by
 * any writer invalidates in every process as soon as it is seen there.
 * Then LRU → Redis GET → PDP Check; a PDP answer is stored in both (PX / ttl = DECISION_CACHE_TTL_MS),
 * a Redis hit is copied into the LRU with its remaining TTL. Errors are never cached. A Check's
 * condition context is part of the key (`contextKey`, else a hash of `context`): see
 * pdp/condition-context.ts for how the sidecar buckets the request time so that caching still works.
 *
 * Coalescing (issue 8): concurrent misses of one decision key share one Redis GET and one PDP
 * Check; its error is every waiter's error and is not cached (`sidecar_pdp_coalesced_total`
 * counts the waiters). No stale allow across a bump: when the view's epochs of a decision moved
 * while its Redis GET or Check was in flight, the decision is made again under the new key (at
 * most twice; then the PDP's answer, which is newer than the bump, is used).
 *
 * OpenFGA's own caches (check query and iterator caches, scripts/services.sh) may answer from
 * before a tuple change for up to their TTL. A decision made right after a bump would then cache a
 * stale answer under the new epochs. So while `cacheBypassMs` > 0 (OPENFGA_CACHE_BYPASS_MS ≥
 * OpenFGA's cache TTL + its request timeout), a Check is sent with consistency HIGHER_CONSISTENCY
 * (OpenFGA reads its datastore, not its caches; docs: "Query Consistency Modes") whenever one of
 * the decision's epochs changed, or was first seen, within that time (epoch-view.ts
 * `recentlyChanged`), and whenever the epochs are not known from a fresh view (no view, a stale
 * one, Redis down). Every other Check may be answered from OpenFGA's caches: its epochs have not
 * moved for longer than any cached entry older than the latest change can live.
 * `sidecar_openfga_check_consistency_total{consistency}` counts both kinds.
 *
 * Redis is only a cache: when it fails (down, slow beyond `commandTimeout`, offline queue disabled)
 * the epochs are unknown, so the decision is made by the PDP directly, bypassing the LRU too (a
 * revocation could not be seen). The outage is logged once, and its end once.
 *
 * When Redis answers again after an outage (a failed command, or the connection dropped), the
 * epochs it holds cannot be trusted: a writer that changed a tuple in OpenFGA during the outage
 * could not bump them (policies/src/relationships.ts retries, but only later). So before the first
 * cached decision after an outage the LRU is cleared and the global epoch is bumped and pushed
 * (every cached decision, in every process, is then missed once): no decision cached before the
 * outage is served after it (test/faults/redis.test.ts).
 */
import { LRUCache } from 'lru-cache';
import type { Cluster, Redis } from 'ioredis';
import { contextHash, decisionKey, epochKeys, globalEpochKey } from '../../../policies/src/epochs.ts';
import { bumpEpochs } from '../../../policies/src/epoch-push.ts';
import type { EpochView } from './epoch-view.ts';
import type { CheckQuery, Pdp } from './openfga.ts';
import type { ModelRef } from '../../../policies/src/active-model.ts';
import type { DecisionSource, SidecarMetrics } from '../metrics.ts';

/** Minimal logger (pino-compatible). */
export type Log = { warn(obj: object, msg?: string): void; info(obj: object, msg?: string): void };

/** A decision, where it came from and the authorization model id it was decided (and cached) by. */
export type Decision = { allowed: boolean; source: DecisionSource; modelId: string };

/** The cache's interface. */
export type DecisionCache = {
  /** The in-process epoch view in use, if any. */
  readonly epochs?: EpochView;
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
 *   by one model is never cached under, or served for, another; opts.epochView the in-process
 *   epoch view (absent: one MGET per decision).
 */
export function createDecisionCache(opts: {
  redis: Redis | Cluster;
  pdp: Pdp;
  storeId: string;
  modelId: string | ModelRef;
  ttlMs: number;
  maxEntries: number;
  metrics: SidecarMetrics;
  log: Log;
  epochView?: EpochView;
  /** OPENFGA_CACHE_BYPASS_MS: how long after an epoch change Checks bypass OpenFGA's caches (ms); 0 = OpenFGA has none. */
  cacheBypassMs?: number;
}): DecisionCache {
  const { redis, pdp, storeId, ttlMs, metrics, log, epochView: view } = opts;
  const bypass = (opts.cacheBypassMs ?? 0) > 0;
  /** Ask the PDP; `fresh` = HIGHER_CONSISTENCY (see the module doc). @throws PdpUnavailableError */
  const check = (q: CheckQuery, fresh: boolean): Promise<boolean> => {
    const higher = bypass && fresh;
    metrics.pdpConsistency(higher);
    return pdp.check(higher ? { ...q, consistency: 'HIGHER_CONSISTENCY' } : q);
  };
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
    view?.apply(await bumpEpochs(redis, storeId, [globalEpochKey(storeId)]));
    untrusted = false;
  };
  const record = (allowed: boolean, source: DecisionSource, modelId: string): Decision => {
    metrics.decision(source, allowed);
    return { allowed, source, modelId };
  };

  /** Misses in flight by decision key: concurrent identical misses share one GET + Check. */
  const inflight = new Map<string, Promise<{ allowed: boolean; source: DecisionSource }>>();
  /** The epochs of `keys`: from the view when fresh (no I/O when held), else one MGET. @throws Redis errors */
  const readEpochs = async (keys: [string, string, string]): Promise<{ epochs: (string | number | null)[]; viewed: boolean }> => {
    if (view?.fresh()) {
      const held = view.peek(keys);
      return { epochs: held ?? (await view.load(keys)), viewed: true };
    }
    return { epochs: await redis.mget(...keys), viewed: false };
  };
  /** Redis GET, else the PDP; the answer is stored in both. @throws PdpUnavailableError */
  const miss = async (key: string, q: CheckQuery, fresh: boolean): Promise<{ allowed: boolean; source: DecisionSource }> => {
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
        return { allowed: shared === '1', source: 'redis' };
      }
    } catch (err) {
      redisFailed(err, 'get');
    }
    const allowed = await check(q, fresh); // throws on PDP failure: nothing is cached
    lru.set(key, allowed);
    redis.set(key, allowed ? '1' : '0', 'PX', ttlMs).then(redisOk, (err: unknown) => redisFailed(err, 'set'));
    return { allowed, source: 'pdp' };
  };
  /**
   * Without the decision cache (DECISION_CACHE_TTL_MS=0) the epochs still tell whether OpenFGA's
   * caches can be trusted: from a fresh view that holds them (a key not held yet is read in the
   * background for the next time); otherwise HIGHER_CONSISTENCY.
   */
  const uncachedNeedsFresh = (keys: [string, string, string]): boolean => {
    if (!bypass) return false;
    if (!view?.fresh()) return true;
    if (view.peek(keys) === undefined) {
      view.load(keys).catch(() => undefined);
      return true;
    }
    return view.recentlyChanged(keys);
  };
  const sameEpochs = (keys: [string, string, string], used: (string | number | null)[]) => {
    const now = view!.peek(keys);
    return now !== undefined && now.every((v, i) => String(v) === String(used[i] ?? 0));
  };

  return {
    epochs: view,
    get redisDown() {
      return down;
    },
    async decide(question) {
      const modelId = model.current; // once: a switch during this decision does not mix models
      const q = { ...question, modelId };
      // DECISION_CACHE_TTL_MS=0 turns the cache off (benchmarks, debugging): every request asks the PDP.
      const keys = epochKeys(storeId, q.user, q.object);
      if (ttlMs <= 0) return record(await check(q, uncachedNeedsFresh(keys)), 'pdp', modelId);
      const ctxKey = q.contextKey ?? (q.context ? contextHash(q.context) : '');
      for (let attempt = 0; ; attempt++) {
        // the fast path: every epoch held by a fresh view — no Redis round trip
        const held = !untrusted && view?.fresh() ? view.peek(keys) : undefined;
        let read: Awaited<ReturnType<typeof readEpochs>> = { epochs: held ?? [], viewed: true };
        if (!held) {
          try {
            if (untrusted) {
              await distrustOldEntries();
              redisOk();
            }
            read = await readEpochs(keys);
            if (!read.viewed) redisOk();
          } catch (err) {
            redisFailed(err, 'mget');
            return record(await check(q, true), 'pdp', modelId);
          }
        }
        const key = decisionKey({ storeId, modelId, user: q.user, relation: q.relation, object: q.object, contextHash: ctxKey, epochs: read.epochs });
        const local = lru.get(key);
        if (local !== undefined) return record(local, 'lru', modelId);
        let pending = inflight.get(key);
        if (pending) metrics.pdpCoalesced.inc();
        else {
          pending = miss(key, q, !read.viewed || view!.recentlyChanged(keys)).finally(() => inflight.delete(key));
          inflight.set(key, pending);
        }
        const { allowed, source } = await pending;
        // the epochs moved while we waited: a bump seen now must not be answered from before it
        if (read.viewed && attempt < 2 && view!.fresh() && !sameEpochs(keys, read.epochs)) continue;
        return record(allowed, source, modelId);
      }
    },
  };
}
