/**
 * The metering contract between the enforcement points (sidecars count allowed API calls and
 * enforce the monthly limit) and the catalog API (rolls the counts up into `account_usage` and
 * publishes the limits) — docs/CONTRACTS.md, "Metering". Kept here because both sides use it and
 * neither may import the other.
 *
 * Redis keys (`<prefix>` = METERING_KEY_PREFIX, default `metering`; `{<p>}` is a Redis Cluster hash
 * tag, so every key of one publisher — and so every key one script touches — is on one slot):
 * - `<prefix>:{<p>}:day:<yyyy-mm-dd>` hash: `calls` = allowed calls of publisher p that UTC day,
 *   `client:<uuid>` = calls of that API client, `seq:<instance>` = the last flush of that sidecar
 *   process applied to this hash (the replay guard);
 * - `<prefix>:{<p>}:month:<yyyy-mm>` string: the month's total (the sum of its days);
 * - `<prefix>:{<p>}:dirty` sorted set: days changed since the roll-up last wrote them (score = a
 *   change counter);
 * - `<prefix>:limits` hash: publisher id → `<calls per month> <block|warn>`, written by the catalog
 *   API; a publisher without an entry is unlimited.
 * Day, month and dirty keys live {@link METERING_TTL_S} after their last change.
 */
import type { RedisClient } from './redis.ts';

/** Default key prefix. */
export const DEFAULT_METERING_PREFIX = 'metering';

/** Life of the day, month and dirty keys after their last flush, seconds (40 days). */
export const METERING_TTL_S = 40 * 86_400;

const DAY_MS = 86_400_000;

/** `<prefix>:{<publisher>}:day:<day>` (day `YYYY-MM-DD`, UTC). */
export function dayKey(prefix: string, publisherId: string, day: string): string {
  return `${prefix}:{${publisherId}}:day:${day}`;
}

/** `<prefix>:{<publisher>}:month:<month>` (month `YYYY-MM`, UTC). */
export function monthKey(prefix: string, publisherId: string, month: string): string {
  return `${prefix}:{${publisherId}}:month:${month}`;
}

/** `<prefix>:{<publisher>}:dirty`. */
export function dirtyKey(prefix: string, publisherId: string): string {
  return `${prefix}:{${publisherId}}:dirty`;
}

/** `<prefix>:limits`. */
export function limitsKey(prefix: string): string {
  return `${prefix}:limits`;
}

/** The UTC day of `ms` (ms since the epoch) as `YYYY-MM-DD`. */
export function utcDayOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** The UTC month of a day `YYYY-MM-DD` (or of an ISO timestamp) as `YYYY-MM`. */
export function monthOfDay(day: string): string {
  return day.slice(0, 7);
}

/** Start of the UTC day after the one containing `ms`, ms since the epoch. */
export function nextDayStartMs(ms: number): number {
  return (Math.floor(ms / DAY_MS) + 1) * DAY_MS;
}

/** Start of the UTC month after the one containing `ms`, ms since the epoch. */
export function nextMonthStartMs(ms: number): number {
  const d = new Date(ms);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1);
}

/** A publisher's monthly API-call limit as the sidecars enforce it. */
export type CallLimit = { callsPerMonth: number; overLimit: 'block' | 'warn' };

/** One field value of the limits hash: `<calls> <block|warn>`. */
export function encodeLimit(l: CallLimit): string {
  return `${l.callsPerMonth} ${l.overLimit}`;
}

/**
 * Decode a field of the limits hash.
 * @returns undefined for anything malformed (the sidecar then treats the publisher as unlimited)
 */
export function decodeLimit(text: string): CallLimit | undefined {
  const m = /^(\d{1,15}) (block|warn)$/.exec(text);
  return m ? { callsPerMonth: Number(m[1]), overLimit: m[2] as 'block' | 'warn' } : undefined;
}

/**
 * One flush of one publisher-day (keys: day hash, month counter, dirty set; args: instance, seq,
 * calls, ttl, day, then client id / count pairs). Applied only when `seq` is above the instance's
 * last applied seq in the day hash — a retried flush (same instance and seq) changes nothing.
 * Returns {applied 1|0, the month total after it}.
 */
const FLUSH_LUA = `
local field = 'seq:' .. ARGV[1]
local seq = tonumber(ARGV[2])
local last = tonumber(redis.call('HGET', KEYS[1], field) or '0')
if seq <= last then
  return {0, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
local ttl = tonumber(ARGV[4])
redis.call('HSET', KEYS[1], field, seq)
redis.call('HINCRBY', KEYS[1], 'calls', ARGV[3])
for i = 6, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], 'client:' .. ARGV[i], ARGV[i + 1])
end
local month = redis.call('INCRBY', KEYS[2], ARGV[3])
redis.call('ZINCRBY', KEYS[3], 1, ARGV[5])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('EXPIRE', KEYS[3], ttl)
return {1, month}
`;

/** Remove the days (ARGV: day, score pairs) from the dirty set whose score is still the one read. */
const CLEAN_LUA = `
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
`;

/** One publisher-day's counts handed to Redis by one sidecar process. */
export type FlushBatch = {
  publisherId: string;
  /** UTC day `YYYY-MM-DD` the calls were made on */
  day: string;
  /** the sidecar process (random per start) */
  instance: string;
  /** increases with every batch of the instance; a retry sends the same seq */
  seq: number;
  calls: number;
  /** API client id → calls (of `calls`) */
  clients: ReadonlyMap<string, number> | null;
};

/** The scripts, bound to one client. */
export type MeteringScripts = {
  /**
   * Apply `batch` (once: see {@link FLUSH_LUA}).
   * @returns whether it was applied now (false: it had been already) and the month total after it
   * @throws the client's error (timeout, connection) — the outcome is then unknown: retry the same batch
   */
  flush(prefix: string, batch: FlushBatch): Promise<{ applied: boolean; monthTotal: number }>;
  /**
   * Remove `days` (day → the score read) from publisher p's dirty set where the score is unchanged.
   * @returns how many were removed
   */
  clean(prefix: string, publisherId: string, days: ReadonlyMap<string, string>): Promise<number>;
};

type WithScripts = RedisClient & {
  meteringFlush(k1: string, k2: string, k3: string, ...args: (string | number)[]): Promise<[number, number]>;
  meteringClean(k1: string, ...args: string[]): Promise<number>;
};

/**
 * Register the metering scripts on `redis` (ioredis `defineCommand`: EVALSHA, EVAL after a Redis
 * restart) and return typed callers.
 */
export function meteringScripts(redis: RedisClient): MeteringScripts {
  const r = redis as WithScripts;
  if (typeof r.meteringFlush !== 'function') {
    redis.defineCommand('meteringFlush', { numberOfKeys: 3, lua: FLUSH_LUA });
    redis.defineCommand('meteringClean', { numberOfKeys: 1, lua: CLEAN_LUA });
  }
  return {
    async flush(prefix, b) {
      const args: (string | number)[] = [b.instance, b.seq, b.calls, METERING_TTL_S, b.day];
      if (b.clients) for (const [id, n] of b.clients) args.push(id, n);
      const [applied, month] = await r.meteringFlush(
        dayKey(prefix, b.publisherId, b.day),
        monthKey(prefix, b.publisherId, monthOfDay(b.day)),
        dirtyKey(prefix, b.publisherId),
        ...args,
      );
      return { applied: applied === 1, monthTotal: Number(month) };
    },
    async clean(prefix, publisherId, days) {
      if (days.size === 0) return 0;
      const args: string[] = [];
      for (const [day, score] of days) args.push(day, score);
      return Number(await r.meteringClean(dirtyKey(prefix, publisherId), ...args));
    },
  };
}

/** One day of a publisher as the day hash holds it. */
export type DayCounts = { calls: number; clients: Map<string, number> };

/** Parse an HGETALL of a day hash (`seq:*` fields are ignored). */
export function parseDayHash(h: Record<string, string>): DayCounts {
  const clients = new Map<string, number>();
  for (const [k, v] of Object.entries(h)) if (k.startsWith('client:')) clients.set(k.slice(7), Number(v));
  return { calls: Number(h.calls ?? 0), clients };
}
