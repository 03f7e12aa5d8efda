/**
 * One-time use of identity assertions (issue 9 §2; docs/CONTRACTS.md, "Identity assertion"): the
 * catalog API accepts each assertion `jti` once. The first request that presents a verified
 * assertion claims its `jti` in Redis with `SET <prefix><jti> 1 NX PX <ms>`, where `<ms>` is the
 * assertion's remaining lifetime including the verifier's clock tolerance (after that the assertion
 * is refused as expired anyway, so the key can go). A second request with the same `jti` — on this
 * process or any other sharing the Redis — finds the key and is refused with 401.
 *
 * Redis unavailable (down, or slower than REDIS_COMMAND_TIMEOUT_MS) → 503 `upstream-unavailable`
 * with `Retry-After: 1`: the API cannot tell a first use from a replay, so it fails closed rather
 * than accept a possible replay. This adds no new outage mode to the stack: the sidecars in front
 * already refuse session-bound tokens with 503 once Redis has been out of reach for
 * REVOCATION_MAX_STALENESS_MS. Public routes (sign-in, JWKS, health) carry no assertion and keep
 * working without Redis.
 */
import type { RedisClient } from '../../../policies/src/redis.ts';
import { ProblemError, problem } from '../errors.ts';

/** Claims `jti`s once. */
export type ReplayGuard = {
  /**
   * Claim `jti` for an assertion that expires at `expSec`.
   * @param jti the assertion's `jti` (already checked to be a short token)
   * @param expSec the assertion's `exp`, seconds since the epoch
   * @throws ProblemError 401 `unauthenticated` when the `jti` was claimed before (a replay);
   *   503 `upstream-unavailable` (with `Retry-After: 1`) when Redis cannot answer
   */
  claim(jti: string, expSec: number): Promise<void>;
  /**
   * Wait until the Redis client is ready, at most `timeoutMs` (the API's start: the first requests
   * should not meet a connection still being set up). Never rejects.
   */
  ready(timeoutMs: number): Promise<void>;
};

/** Options of {@link createReplayGuard}. */
export type ReplayGuardOptions = {
  /** a fail-fast client (redis.ts: no offline queue, a command timeout) */
  redis: RedisClient;
  /** key prefix (ASSERTION_JTI_PREFIX) */
  prefix: string;
  /** the verifier's clock tolerance, seconds: an assertion is accepted until exp + this */
  clockToleranceSec: number;
  /**
   * While the client is (re)connecting — e.g. right after start — wait at most this long (ms) for it
   * before answering 503 (REDIS_COMMAND_TIMEOUT_MS). A client that is waiting to reconnect after a
   * failure is not waited for.
   */
  connectWaitMs: number;
};

/**
 * Build the guard.
 * @returns the {@link ReplayGuard}
 */
export function createReplayGuard(opts: ReplayGuardOptions): ReplayGuard {
  const { redis } = opts;
  let connecting: Promise<void> | null = null;
  /** Resolves once the client is ready, at the latest after `connectWaitMs`; at once unless it is connecting. */
  const whenConnected = (): Promise<void> | undefined => {
    if (redis.status !== 'connecting' && redis.status !== 'connect') return undefined;
    connecting ??= new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        redis.off('ready', done);
        redis.off('close', done);
        connecting = null;
        resolve();
      };
      const timer = setTimeout(done, opts.connectWaitMs);
      redis.once('ready', done);
      redis.once('close', done);
    });
    return connecting;
  };
  const unavailable = (cause: unknown) =>
    Object.assign(
      new ProblemError(503, 'upstream-unavailable', 'The identity assertion replay check (Redis) is unavailable, so the request was not processed; retry shortly.', undefined, { 'retry-after': '1' }),
      { cause },
    );
  return {
    async claim(jti, expSec) {
      const ttlMs = Math.max(1, Math.ceil((expSec + opts.clockToleranceSec) * 1000 - Date.now()));
      await whenConnected();
      let result: string | null;
      try {
        result = await redis.set(opts.prefix + jti, '1', 'PX', ttlMs, 'NX');
      } catch (err) {
        throw unavailable(err);
      }
      if (result !== 'OK') throw problem.unauthenticated('The identity assertion was already used (jti); every request needs its own.');
    },
    async ready(timeoutMs) {
      if (redis.status === 'ready') return;
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          redis.off('ready', done);
          resolve();
        };
        const timer = setTimeout(done, timeoutMs);
        redis.once('ready', done);
      });
    },
  };
}
