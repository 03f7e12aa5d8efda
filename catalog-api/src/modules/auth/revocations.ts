/**
 * Pushes session revocations to the enforcement points (policies/src/session-revocations.ts):
 * every revoked session not yet announced is added to the Redis sorted set and published on the
 * channel, then marked `revocation_published_at` — a transactional outbox on `user_sessions`, so a
 * revocation committed while Redis is down is announced as soon as Redis answers again, by whichever
 * catalog API process gets there first (rows are claimed FOR UPDATE SKIP LOCKED).
 *
 * A session's score is revocation time + access-token lifetime + 5 s (the sidecar's clock
 * tolerance): after that no access token of the session can verify anyway, and the entry is pruned.
 * Runs after every request that revokes (before the response) and on a timer.
 */
import { LockMode } from '@mikro-orm/core';
import type { EntityManager } from '@mikro-orm/postgresql';
import type { RedisClient } from '../../../../policies/src/redis.ts';
import { REVOKED_SESSIONS_KEY, SESSION_REVOKED_CHANNEL, encodeRevocation } from '../../../../policies/src/session-revocations.ts';
import type { Orm } from '../../db/orm.ts';
import { Session } from './session.entity.ts';
import type { Logger } from '../../logger.ts';

/** Clock tolerance the enforcement points allow on `exp` (ms). */
export const VERIFIER_SKEW_MS = 5000;

/** Minimal logger (pino-compatible). */
type Log = Pick<Logger, 'info' | 'warn'>;

/** Options of {@link RevocationPublisher}. */
export type RevocationPublisherOptions = {
  /** the sign-in service's pool (`catalog_auth`) */
  orm: Orm;
  redis: RedisClient;
  /** access-token lifetime (ms) */
  accessTokenTtlMs: number;
  /** timer period (ms) */
  intervalMs: number;
  log: Log;
  /** rows per batch (default 500) */
  batchSize?: number;
};

/** Announces revoked sessions; one instance per process. */
export class RevocationPublisher {
  readonly #o: RevocationPublisherOptions;
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<number> | null = null;
  #again = false;
  #failing = false;

  constructor(opts: RevocationPublisherOptions) {
    this.#o = opts;
  }

  /** Start the timer (idempotent; does not keep the process alive). */
  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => void this.publish(), this.#o.intervalMs);
    this.#timer.unref();
  }

  /** Stop the timer and wait for a run in progress. */
  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    await this.#running?.catch(() => undefined);
  }

  /**
   * Announce every pending revocation. Concurrent calls share the run in progress and queue one
   * more, so a revocation committed before the call is covered when it resolves (unless Redis
   * failed). Never throws.
   * @returns how many sessions were announced
   */
  async publish(): Promise<number> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = (async () => {
      let total = 0;
      do {
        this.#again = false;
        try {
          for (let n = -1; n !== 0; ) {
            n = await this.#batch();
            total += n;
          }
          if (this.#failing) this.#o.log.info({}, 'session revocations: Redis reachable again');
          this.#failing = false;
        } catch (err) {
          if (!this.#failing) this.#o.log.warn({ err: { message: (err as Error).message } }, 'session revocations: cannot announce, will retry');
          this.#failing = true;
          break;
        }
      } while (this.#again);
      return total;
    })();
    try {
      return await this.#running;
    } finally {
      this.#running = null;
    }
  }

  async #batch(): Promise<number> {
    return this.#o.orm.em.fork().transactional(async (em: EntityManager) => {
      const rows = await em.find(
        Session,
        { revokedAt: { $ne: null }, revocationPublishedAt: null },
        { orderBy: { revokedAt: 'asc' }, limit: this.#o.batchSize ?? 500, lockMode: LockMode.PESSIMISTIC_PARTIAL_WRITE },
      );
      if (rows.length === 0) return 0;
      const now = Date.now();
      const multi = this.#o.redis.multi();
      for (const s of rows) {
        const until = s.revokedAt!.getTime() + this.#o.accessTokenTtlMs + VERIFIER_SKEW_MS;
        multi.zadd(REVOKED_SESSIONS_KEY, until, s.id);
        multi.publish(SESSION_REVOKED_CHANNEL, encodeRevocation({ sid: s.id, until }));
      }
      multi.zremrangebyscore(REVOKED_SESSIONS_KEY, '-inf', now);
      const results = await multi.exec();
      const failed = results?.find(([err]) => err);
      if (!results || failed) throw failed?.[0] ?? new Error('Redis MULTI was discarded');
      for (const s of rows) s.revocationPublishedAt = new Date(now);
      return rows.length;
    });
  }
}
