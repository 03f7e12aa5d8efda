/**
 * The metering roll-up (docs/CONTRACTS.md, "Metering"; the Redis side: policies/src/metering.ts).
 *
 * {@link rollUp}, every few seconds:
 * 1. lists every publisher with its plan's API-call limit (`metering_publishers()`, migration 0010)
 *    and publishes the limited ones to the limits hash the sidecars re-read (one MULTI: DEL + HSET);
 * 2. per publisher, reads the days the sidecars changed (the dirty set) and their day hashes, and
 *    SETs those totals into `account_usage` / `api_client_usage` (`metering_set_api_calls`: a value
 *    only rises) — so running it twice, or in several processes at once, never double counts;
 * 3. after the commit, removes from the dirty set the days whose change counter is still the one it
 *    read (a flush in between keeps the day dirty for the next run).
 * One process works at a time (a transaction-level advisory lock; the others skip the run).
 *
 * {@link measure}, on a slower schedule: per publisher the seats used (`seatsOf`) and the catalog
 * storage (measured in `metering_record_measurements`) into today's row.
 */
import type { RedisClient } from '../../../../policies/src/redis.ts';
import { dirtyKey, dayKey, encodeLimit, limitsKey, parseDayHash, meteringScripts, utcDayOf } from '../../../../policies/src/metering.ts';
import { query, type Orm } from '../../db/orm.ts';
import { seatsOf } from '../users/members.service.ts';

/** What the roll-up needs. */
export type MeteringDeps = {
  /** the relays' and jobs' pool (`catalog_jobs`, JOBS_DATABASE_URL: EXECUTE on the metering functions) */
  orm: Orm;
  /** the sign-in service's pool (seats: every membership and invitation) */
  authOrm: Orm;
  redis: RedisClient;
  /** METERING_KEY_PREFIX */
  prefix: string;
};

/** What one roll-up did. */
export type RollupSummary = {
  publishers: number;
  /** publishers with a limit, as published */
  limited: number;
  /** publisher-days written */
  days: number;
};

type PublisherRow = { publisher_id: string; api_calls_per_month: string | null; over_limit: 'block' | 'warn' };

const DAY = /^\d{4}-\d{2}-\d{2}$/;

/** Reply of one pipelined command, or throw its error. */
function reply<T>(r: [Error | null, unknown] | undefined): T {
  if (!r) throw new Error('redis: missing pipeline reply');
  if (r[0]) throw r[0];
  return r[1] as T;
}

/** Publish the limits of `rows` (unlimited publishers have no entry). */
async function publishLimits(redis: RedisClient, prefix: string, rows: PublisherRow[]): Promise<number> {
  const fields: Record<string, string> = {};
  for (const r of rows) {
    if (r.api_calls_per_month !== null) fields[r.publisher_id] = encodeLimit({ callsPerMonth: Number(r.api_calls_per_month), overLimit: r.over_limit });
  }
  const key = limitsKey(prefix);
  const tx = redis.multi().del(key);
  if (Object.keys(fields).length > 0) tx.hset(key, fields);
  const results = await tx.exec();
  for (const r of results ?? []) reply(r);
  return Object.keys(fields).length;
}

/**
 * Run the roll-up once (see the module comment).
 * @returns what it did, or null when another process holds the roll-up lock
 * @throws on PostgreSQL or Redis errors (nothing is lost: the dirty days stay for the next run)
 */
export async function rollUp(deps: MeteringDeps): Promise<RollupSummary | null> {
  const { redis, prefix } = deps;
  const written = new Map<string, Map<string, string>>(); // publisher → day → dirty score read
  const summary = await deps.orm.em.fork().transactional(async (em) => {
    const [lock] = await query<{ got: boolean }>(em, `select pg_try_advisory_xact_lock(hashtextextended('metering:rollup', 0)) as got`);
    if (!lock?.got) return null;
    const rows = await query<PublisherRow>(em, 'select * from metering_publishers()');
    const limited = await publishLimits(redis, prefix, rows);

    // One command per key, not a pipeline: on a Redis Cluster each publisher's keys are on the
    // slot of its hash tag, and a pipeline must stay on one node.
    const dirty = await Promise.all(rows.map((r) => redis.zrange(dirtyKey(prefix, r.publisher_id), '0', '-1', 'WITHSCORES')));
    const todo: { publisherId: string; day: string; score: string }[] = [];
    rows.forEach((r, i) => {
      const flat = dirty[i]!;
      for (let j = 0; j + 1 < flat.length; j += 2) todo.push({ publisherId: r.publisher_id, day: flat[j]!, score: flat[j + 1]! });
    });

    const hashes = await Promise.all(todo.map((d) => redis.hgetall(dayKey(prefix, d.publisherId, d.day))));
    let days = 0;
    for (let i = 0; i < todo.length; i++) {
      const d = todo[i]!;
      const forPublisher = written.get(d.publisherId) ?? new Map<string, string>();
      written.set(d.publisherId, forPublisher);
      forPublisher.set(d.day, d.score);
      if (!DAY.test(d.day)) continue; // not ours: cleaned below
      const counts = parseDayHash(hashes[i]!);
      await query(em, 'select metering_set_api_calls($1, $2, $3, $4, $5)', [d.publisherId, d.day, counts.calls, [...counts.clients.keys()], [...counts.clients.values()]]);
      days++;
    }
    return { publishers: rows.length, limited, days };
  });
  if (summary) {
    const scripts = meteringScripts(redis);
    await Promise.all([...written].map(([publisherId, days]) => scripts.clean(prefix, publisherId, days)));
  }
  return summary;
}

/**
 * Measure every publisher's seats used and catalog storage into today's (UTC) row.
 * @param day the UTC day to write (default today)
 * @returns how many publishers were measured, or null when another process holds the lock
 * @throws on PostgreSQL errors
 */
export async function measure(deps: MeteringDeps, day = utcDayOf(Date.now())): Promise<number | null> {
  return deps.orm.em.fork().transactional(async (em) => {
    const [lock] = await query<{ got: boolean }>(em, `select pg_try_advisory_xact_lock(hashtextextended('metering:measure', 0)) as got`);
    if (!lock?.got) return null;
    const rows = await query<PublisherRow>(em, 'select * from metering_publishers()');
    for (const r of rows) {
      const { used } = await seatsOf(deps.authOrm, r.publisher_id);
      await query(em, 'select metering_record_measurements($1, $2, $3)', [r.publisher_id, day, used]);
    }
    return rows.length;
  });
}
