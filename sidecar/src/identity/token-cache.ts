/**
 * Cache of successful access-token verifications, so a client that sends the same bearer token on
 * every request pays the ES256 signature check (~120 µs CPU) once per `maxTtlMs` instead of per
 * request. Only *successes* are stored; a token that failed verification is never stored, so it
 * is verified (and rejected) again each time.
 *
 * - Key: sha256 (base64url) of the compact token — the token itself is never kept as a key.
 * - An entry lives until the earliest of: the token's `exp` (no clock tolerance), `maxTtlMs` after
 *   it was verified, LRU eviction beyond `maxEntries`.
 * - An entry also remembers the key (CryptoKey object) that verified the signature. The caller
 *   re-resolves the key for every hit (cheap: jose keeps imported keys) and treats a different
 *   key object as a miss, so a JWKS reload that removes or replaces the key ends the entry
 *   exactly when jose itself would stop accepting the key (see authenticate.ts).
 */
import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';

/** One cached verification. `V` is what the authenticator derived from the verified claims. */
export type VerifiedToken<V> = {
  value: V;
  /** The key object that verified the signature (identity compared on hits). */
  key: unknown;
  /** `alg` and `kid` of the token's protected header, to re-resolve the key on a hit. */
  header: { alg: string; kid?: string };
  /** The token's `exp` in ms since the epoch. */
  expMs: number;
};

/** The cache's interface; `now` values are ms since the epoch. */
export type TokenCache<V> = {
  /** The cache key of `token` (sha256, base64url). */
  keyOf(token: string): string;
  /** The entry for `key` when present and not past its `exp`, else undefined. */
  get(key: string): VerifiedToken<V> | undefined;
  /** Store a verified token; ignored when its `exp` is already past or the cache is off. */
  set(key: string, entry: VerifiedToken<V>): void;
  delete(key: string): void;
  readonly size: number;
};

/**
 * Create a token cache.
 * @param opts.maxTtlMs upper bound of an entry's life in ms (0 turns the cache off);
 *   opts.maxEntries LRU size; opts.now clock in ms since the epoch (tests), default `Date.now`.
 */
export function createTokenCache<V>(opts: { maxTtlMs: number; maxEntries: number; now?: () => number }): TokenCache<V> {
  const now = opts.now ?? Date.now;
  const off = opts.maxTtlMs <= 0 || opts.maxEntries <= 0;
  // lru-cache's own TTL uses performance.now(); the `exp` check below uses the injected clock, so
  // both bounds hold whichever clock a test moves.
  const lru = new LRUCache<string, VerifiedToken<V> & { untilMs: number }>({ max: Math.max(1, opts.maxEntries) });
  return {
    keyOf: (token) => createHash('sha256').update(token).digest('base64url'),
    get(key) {
      if (off) return undefined;
      const e = lru.get(key);
      if (!e) return undefined;
      if (now() >= Math.min(e.expMs, e.untilMs)) {
        lru.delete(key);
        return undefined;
      }
      return e;
    },
    set(key, entry) {
      if (off) return;
      const t = now();
      if (entry.expMs <= t) return;
      lru.set(key, { ...entry, untilMs: t + opts.maxTtlMs });
    },
    delete: (key) => void lru.delete(key),
    get size() {
      return lru.size;
    },
  };
}
