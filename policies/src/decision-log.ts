/**
 * The decision log's shared shape and its Redis stream (docs/CONTRACTS.md, "Decision log"): every
 * sidecar appends the authorization decisions it makes (denies always, allows sampled) to one capped
 * Redis stream per OpenFGA store, so the CLI (`shadow`) and the catalog API (the access explorer's
 * live tail) read every sidecar's recent decisions.
 *
 * Stream: key `authz:decisions:<storeId>`, one entry per decision with one field `d` = the record's
 * JSON, appended with `XADD key MAXLEN ~ <n> * d <json>` (https://redis.io/docs/latest/commands/xadd/:
 * `~` trims whole macro nodes, so the stream may hold up to `stream-node-max-entries` [100] more
 * than n). Entries are in append order, i.e. flush order across sidecars (each flushes about once a
 * second), so a record's position, not its time, is what a live tail follows.
 */
import { randomUUID } from 'node:crypto';
import type { RedisClient } from './redis.ts';

/** One authorization decision (contract A). Never holds tokens, assertions or headers. */
export type DecisionRecord = {
  /** UUIDv7 of this decision (time-ordered, {@link decisionId}) */
  id: string;
  /** ISO 8601 time of the decision */
  time: string;
  request_id: string;
  /** `user:<uuid>` */
  subject: string;
  /** the relation and object as checked */
  relation: string;
  object: string;
  /** the publisher (uuid) the decision is about: the object's when it is a publisher, else the request's context */
  publisher?: string;
  /** the route rule, `METHOD path-template`, e.g. `GET /api/v1/works/{id}` */
  rule: string;
  allowed: boolean;
  /** where the answer came from: the in-process LRU, the shared Redis cache, or an OpenFGA Check */
  source: 'lru' | 'redis' | 'pdp';
  /** the authorization model id that decided */
  model_id: string;
  /** time the decision took, in ms (cache look-ups included) */
  latency_ms: number;
  /** the condition context sent to OpenFGA (no secrets) */
  context?: Record<string, unknown>;
};

/** Redis key of a store's decision stream: `authz:decisions:<storeId>`. */
export function decisionStreamKey(storeId: string): string {
  return `authz:decisions:${storeId}`;
}

/**
 * A new decision id: a UUIDv7 (RFC 9562 §5.7) — the 48-bit Unix time in ms, then random bits — made
 * from a v4 UUID (whose variant bits are already right) by writing the time and version 7 over its
 * first 13 hex digits. Ids of different milliseconds sort by time as plain strings.
 * @param nowMs Unix time in ms (default: now)
 */
export function decisionId(nowMs: number = Date.now()): string {
  const t = Math.floor(nowMs).toString(16).padStart(12, '0');
  const r = randomUUID();
  return `${t.slice(0, 8)}-${t.slice(8, 12)}-7${r.slice(15)}`;
}

/**
 * Append records to the store's stream: one pipeline of `XADD key MAXLEN ~ maxLen * d <json>`.
 * @param maxLen the cap (entries, approximate, see the module comment)
 * @throws the first command's error (Redis down, timeout …): the caller decides whether to drop the batch
 */
export async function appendDecisions(redis: RedisClient, storeId: string, records: readonly DecisionRecord[], maxLen: number): Promise<void> {
  if (records.length === 0) return;
  const key = decisionStreamKey(storeId);
  const pipeline = redis.pipeline();
  for (const r of records) pipeline.xadd(key, 'MAXLEN', '~', maxLen, '*', 'd', JSON.stringify(r));
  const results = await pipeline.exec();
  const failed = results?.find(([err]) => err);
  if (failed) throw failed[0];
}

/** Entries read per XREVRANGE call. */
const PAGE = 500;

/**
 * The store's recent decisions from the stream, newest first (XREVRANGE, page by page).
 * @param opts.count most records returned (default 50)
 * @param opts.allowed only allowed (`true`) or denied (`false`) decisions
 * @param opts.publisher only decisions whose `publisher` is this uuid
 * @param opts.sinceId a live tail: only records appended after the record with this `id`; when that
 *   record is no longer in the stream (trimmed), those whose id sorts after it (UUIDv7: later in time)
 * @param opts.maxScan most stream entries looked at (default 20 000: a filter that matches little
 *   does not read an unbounded stream)
 * @returns records, newest first; entries that are not a record's JSON are skipped
 * @throws Redis errors
 */
export async function readRecentDecisions(
  redis: RedisClient,
  storeId: string,
  opts: { count?: number; allowed?: boolean; publisher?: string; sinceId?: string; maxScan?: number } = {},
): Promise<DecisionRecord[]> {
  const key = decisionStreamKey(storeId);
  const count = Math.max(0, opts.count ?? 50);
  const maxScan = opts.maxScan ?? 20_000;
  const out: DecisionRecord[] = [];
  let end = '+';
  let scanned = 0;
  let foundSince = false;
  while (out.length < count && scanned < maxScan) {
    const page = await redis.xrevrange(key, end, '-', 'COUNT', Math.min(PAGE, maxScan - scanned));
    if (page.length === 0) break;
    scanned += page.length;
    for (const [, fields] of page) {
      const r = parseRecord(fields);
      if (!r) continue;
      if (opts.sinceId !== undefined && r.id === opts.sinceId) {
        foundSince = true;
        break;
      }
      if (opts.allowed !== undefined && r.allowed !== opts.allowed) continue;
      if (opts.publisher !== undefined && r.publisher !== opts.publisher) continue;
      out.push(r);
      if (out.length >= count) break;
    }
    if (foundSince) break;
    end = `(${page[page.length - 1]![0]}`; // exclusive range (Redis ≥ 6.2)
  }
  return opts.sinceId === undefined || foundSince ? out : out.filter((r) => r.id > opts.sinceId!);
}

/** The record in an entry's field list (`d`), or undefined when it is missing or not a record. */
function parseRecord(fields: string[]): DecisionRecord | undefined {
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (fields[i] !== 'd') continue;
    try {
      const r = JSON.parse(fields[i + 1]!) as DecisionRecord;
      return r && typeof r.id === 'string' && typeof r.allowed === 'boolean' ? r : undefined;
    } catch {
      return undefined;
    }
  }
  return undefined;
}
