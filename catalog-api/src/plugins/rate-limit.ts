/**
 * Rate limits (@fastify/rate-limit), off by default and switched on per route through
 * `config.rateLimit` (e.g. the sign-in routes: a number of attempts per client IP per minute).
 *
 * Counters live in Redis, so every catalog API process shares them; when Redis fails (down, slower
 * than its command timeout) a request is counted in this process instead — limits get looser by the
 * number of processes, never disappear. Headers follow the RateLimit header fields draft
 * (`RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`) plus `Retry-After` on 429, whose
 * body is problem+json `too-many-requests`.
 */
import fp from 'fastify-plugin';
import rateLimit, { type FastifyRateLimitStore, type RateLimitPluginOptions } from '@fastify/rate-limit';
import RedisStore from '@fastify/rate-limit/store/RedisStore.js';
import LocalStore from '@fastify/rate-limit/store/LocalStore.js';
import type { FastifyInstance } from 'fastify';
import type { RedisClient } from '../../../policies/src/redis.ts';
import { ProblemError } from '../errors.ts';

/** Options of {@link rateLimitPlugin}. */
export type RateLimitOptions = {
  /** A client that fails fast (enableOfflineQueue false, a command timeout); null = in-process only. */
  redis: RedisClient | null;
  /** Redis key prefix. */
  nameSpace?: string;
};

type StoreOptions = { continueExceeding: boolean; exponentialBackoff: boolean };

/** A store that counts in Redis and falls back to this process's memory while Redis fails. */
function fallbackStore(redis: RedisClient | null, nameSpace: string) {
  const pair = (remote: FastifyRateLimitStore | null, local: FastifyRateLimitStore): FastifyRateLimitStore => ({
    incr(key, cb, timeWindow, max) {
      if (!remote) return local.incr(key, cb, timeWindow, max);
      remote.incr(key, (err, res) => (err ? local.incr(key, cb, timeWindow, max) : cb(null, res)), timeWindow, max);
    },
    child(routeOptions) {
      return pair(remote?.child(routeOptions) ?? null, local.child(routeOptions));
    },
  });
  return class {
    constructor(opts: StoreOptions) {
      const remote = redis ? new RedisStore(opts.continueExceeding, opts.exponentialBackoff, redis, nameSpace) : null;
      return pair(remote, new LocalStore(opts.continueExceeding, opts.exponentialBackoff, 10_000));
    }
  } as unknown as NonNullable<RateLimitPluginOptions['store']>;
}

/** Fastify plugin: registers @fastify/rate-limit with the fallback store, no global limit. */
export const rateLimitPlugin = fp(
  async (app: FastifyInstance, opts: RateLimitOptions) => {
    await app.register(rateLimit, {
      global: false,
      store: fallbackStore(opts.redis, opts.nameSpace ?? 'catalog-rate-limit:'),
      enableDraftSpec: true,
      errorResponseBuilder: (_req, ctx) =>
        new ProblemError(429, 'too-many-requests', `Too many requests: at most ${ctx.max} per window; retry in ${ctx.after}.`),
    });
  },
  { name: 'catalog-rate-limit' },
);
