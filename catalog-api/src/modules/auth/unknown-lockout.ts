/**
 * Lockout state of emails that belong to no account, so that "5 failures lock the account" holds
 * for every email and a 429 tells nothing about which emails exist (lockout.ts has the rule).
 * Kept in Redis (`auth:lockout:<sha256 of the lower-cased email>`, a JSON value, expiring one day
 * after its last change); while Redis fails, in this process (bounded LRU).
 */
import { LRUCache } from 'lru-cache';
import type { RedisClient } from '../../../../policies/src/redis.ts';
import { CLEAR, afterFailure, type LockoutState } from './lockout.ts';
import { digest } from './secrets.ts';

const TTL_S = 24 * 3600;
type Stored = { c: number; f: number | null; u: number | null; l: number };

const toState = (s: Stored | undefined): LockoutState =>
  s ? { failedLoginCount: s.c, firstFailedAt: s.f === null ? null : new Date(s.f), lockedUntil: s.u === null ? null : new Date(s.u), lockoutLevel: s.l } : CLEAR;
const toStored = (s: LockoutState): Stored => ({
  c: s.failedLoginCount,
  f: s.firstFailedAt?.getTime() ?? null,
  u: s.lockedUntil?.getTime() ?? null,
  l: s.lockoutLevel,
});

/** The store of unknown emails' lockout state. */
export type UnknownEmailLockout = {
  state(email: string): Promise<LockoutState>;
  /** Count one failure at `now`. @returns the new state */
  fail(email: string, now: Date): Promise<LockoutState>;
};

/** Create the store on `redis` (falls back to memory per call when Redis fails). */
export function createUnknownEmailLockout(redis: RedisClient): UnknownEmailLockout {
  const local = new LRUCache<string, Stored>({ max: 10_000, ttl: TTL_S * 1000 });
  const keyOf = (email: string) => `auth:lockout:${digest(email.toLowerCase())}`;
  const read = async (key: string): Promise<Stored | undefined> => {
    try {
      const v = await redis.get(key);
      return v ? (JSON.parse(v) as Stored) : undefined;
    } catch {
      return local.get(key); // Redis unavailable: this process's view
    }
  };
  return {
    async state(email) {
      return toState(await read(keyOf(email)));
    },
    async fail(email, now) {
      const key = keyOf(email);
      const next = afterFailure(toState(await read(key)), now);
      const stored = toStored(next);
      local.set(key, stored);
      await redis.set(key, JSON.stringify(stored), 'EX', TTL_S).catch(() => undefined);
      return next;
    },
  };
}
