/**
 * Leases of rate-limit tokens (stages/rate-limit.ts): a sidecar reserves several requests of a
 * key's budget in Redis with one command and spends them in process, so a busy key costs one Redis
 * round trip per lease instead of one per request.
 *
 * The idea is capacity leasing as in YouTube's Doorman (github.com/youtube/doorman: clients lease
 * capacity from a shared server and refresh it) applied to fixed-window counters: the shared
 * counter in Redis is incremented by the lease's size, so every token a sidecar spends was counted
 * in Redis before — the sidecars together never admit more than the limit (no over-admission, unlike
 * batching counts after the fact). The cost is the other direction: tokens leased by a sidecar that
 * then gets no more requests of that key are lost until the window ends (under-admission).
 *
 * The lease size keeps that loss small and the limits exact where it matters: it is
 * `clamp(floor(remaining / LEASE_DIVISOR), 1, maxLease)`, where `remaining` is what Redis said was
 * left at this key's previous lease (the whole limit before the first), so
 * - a key far from its limit takes up to `maxLease` tokens per round trip;
 * - near the limit leases shrink, and under `LEASE_DIVISOR` requests left every request is counted
 *   in Redis one by one, exactly as without leases (small limits are always exact);
 * - at most 1/LEASE_DIVISOR of what was left sits unused per sidecar.
 *
 * Concurrent requests of one key share one reservation in flight (no stampede of leases). A
 * reservation that fails (Redis error) is not remembered: each waiter gets the error.
 */
import { LRUCache } from 'lru-cache';

/** A lease is at most 1/LEASE_DIVISOR of the requests the key had left. */
export const LEASE_DIVISOR = 32;

/** What one reservation in the shared store gave: tokens granted (0..n), the counter after it, and the window's end. */
export type Reservation = { granted: number; consumed: number; resetMs: number };

/** What one request got: allowed with what is left (this sidecar's view), or refused; `resetMs` until the window ends. */
export type LeaseTake = { allowed: boolean; remaining: number; resetMs: number };

/** One key's lease in this process. */
type LeaseState = {
  /** Tokens reserved in Redis and not spent yet. */
  left: number;
  /** The key's counter in Redis after the latest reservation. */
  consumed: number;
  /** When the key's window ends (ms since the epoch); the lease dies with it. */
  expiresAt: number;
  /** Redis refused the latest reservation (the key is over): refuse until `expiresAt`. */
  over: boolean;
  /** The reservation in flight, shared by every request of the key that waits for it. */
  pending?: Promise<void>;
};

/** Options of {@link TokenLeases}. */
export type TokenLeasesOptions = {
  /** Largest lease (tokens); 1 = every request counted in Redis. */
  maxLease: number;
  /** Most keys held (an LRU; a key pushed out loses its unspent tokens: under-admission only). */
  maxKeys?: number;
  /** The clock (ms since the epoch); tests move it. */
  now?: () => number;
};

/**
 * The leases of one limiter (one kind and bucket, one `points` per window).
 * @example
 *   const leases = new TokenLeases({ maxLease: 64 });
 *   const took = await leases.take(key, 6000, reserveInRedis); // reserveInRedis(key, n)
 */
export class TokenLeases {
  readonly #maxLease: number;
  readonly #now: () => number;
  readonly #states: LRUCache<string, LeaseState>;

  constructor(opts: TokenLeasesOptions) {
    if (!Number.isInteger(opts.maxLease) || opts.maxLease < 1) throw new Error(`maxLease must be a positive integer, got ${opts.maxLease}`);
    this.#maxLease = opts.maxLease;
    this.#now = opts.now ?? Date.now;
    this.#states = new LRUCache({ max: opts.maxKeys ?? 100_000 });
  }

  /** The size of the next lease of a key with `remaining` requests left (at least 1, at most maxLease). */
  leaseSize(remaining: number): number {
    return Math.max(1, Math.min(this.#maxLease, Math.floor(remaining / LEASE_DIVISOR)));
  }

  /**
   * Spend one request of `key`'s budget: from this process's lease when it has tokens (no await),
   * else after one reservation of a new lease (shared with concurrent requests of the key).
   * @param points the limit per window
   * @param reserve reserves `n` requests of `key` in the shared counter (rate-limit.ts: RateLimiterRedis
   *   `consume(key, n)`); rejects only on a store failure. One function per limiter: nothing is
   *   allocated for a request its lease serves
   * @returns allowed, with `remaining` = the limit − the shared counter at the latest reservation +
   *   this process's unspent tokens, and `resetMs` until the window ends; or refused (remaining 0)
   * @throws what `reserve` throws (not remembered: the next request reserves again)
   */
  take(key: string, points: number, reserve: (key: string, n: number) => Promise<Reservation>): LeaseTake | Promise<LeaseTake> {
    const now = this.#now();
    let st = this.#states.get(key);
    if (st && st.expiresAt <= now && !st.pending) {
      this.#states.delete(key);
      st = undefined;
    }
    if (st && st.left > 0) {
      st.left--;
      return { allowed: true, remaining: Math.max(0, points - st.consumed) + st.left, resetMs: st.expiresAt - now };
    }
    if (st?.over && !st.pending) return { allowed: false, remaining: 0, resetMs: st.expiresAt - now };
    if (!st?.pending) {
      const state: LeaseState = st ?? { left: 0, consumed: 0, expiresAt: 0, over: false };
      const n = this.leaseSize(points - state.consumed);
      state.pending = reserve(key, n).then(
        (r) => {
          const at = this.#now();
          if (state.expiresAt <= at) state.left = 0; // an earlier window's tokens
          state.left += r.granted;
          state.consumed = r.consumed;
          state.expiresAt = at + r.resetMs;
          state.over = r.granted < n;
          state.pending = undefined;
        },
        (err: unknown) => {
          state.pending = undefined;
          throw err;
        },
      );
      this.#states.set(key, state);
      st = state;
    }
    // once it is in: its tokens, or refused, or (the other waiters took them all) another lease
    return st.pending!.then(() => this.take(key, points, reserve));
  }
}
