/**
 * The in-process API-call counters of one sidecar (docs/CONTRACTS.md, "Metering"; the Redis side:
 * policies/src/metering.ts). No I/O here: the flusher (flusher.ts) hands the counts to Redis every
 * second and feeds back the month totals and the limits.
 *
 * Per publisher, for the current UTC month: `base` (the month total in Redis as last seen — with
 * every sidecar's flushed calls) and `unacked` (this process's calls Redis has not confirmed yet);
 * month-to-date = base + unacked. Per publisher and UTC day: the calls (and per-API-client calls)
 * not yet handed to a flush, and at most one batch handed to Redis and not acknowledged (a timed-out
 * batch is retried as it is — same instance and seq — before newer calls of that day go out, so a
 * retry can never apply twice; policies/src/metering.ts).
 *
 * Cost per call ({@link Meter.record}): a clock comparison, one Map lookup, a few additions (one
 * more Map update for an API client). Memory is bounded by `maxKeys` (publishers of this month plus
 * past days still unflushed) and `maxClientsPerDay`; calls beyond them are not counted (counted in
 * `dropped` instead), which can only happen while Redis has been unreachable for a long time.
 */
import { randomUUID } from 'node:crypto';
import { monthOfDay, nextDayStartMs, utcDayOf, type CallLimit, type FlushBatch } from '../../../policies/src/metering.ts';

/** What {@link Meter.record} decided. */
export type MeterVerdict = 'ok' | 'warn' | 'block';

/** Calls of one publisher on one UTC day, not yet confirmed by Redis. */
export type DayCounter = {
  readonly publisherId: string;
  readonly day: string;
  /** calls not yet in a batch */
  calls: number;
  clients: Map<string, number> | null;
  /** the batch handed to Redis and not acknowledged (retried as it is) */
  outstanding: FlushBatch | null;
  readonly month: PublisherMonth;
};

/** One publisher in the current month. */
type PublisherMonth = {
  readonly publisherId: string;
  readonly month: string;
  base: number;
  unacked: number;
  limit: CallLimit | undefined;
  today: DayCounter;
};

/** Options of {@link createMeter}. */
export type MeterOptions = {
  /** publishers of this month plus unflushed past days kept at most (default 100 000) */
  maxKeys?: number;
  /** API clients counted per publisher and day at most (default 10 000) */
  maxClientsPerDay?: number;
  /** the process's id in the replay guard (default: a random UUID) */
  instance?: string;
  /** called for each call (or API-client count) not counted because of the bounds */
  onDrop?: () => void;
};

/** The counters. */
export type Meter = {
  /** This process's id in the flush replay guard. */
  readonly instance: string;
  /**
   * Count one allowed call of `publisherId` (by API client `clientId`, when it is one) at `nowMs` —
   * unless the publisher is over its monthly limit with `block` and `mayBlock`: then nothing is
   * counted and the answer is `block`. `warn`: counted, over a `warn` limit (or a `block` limit on
   * a call that may not be blocked).
   */
  record(publisherId: string, clientId: string | undefined, nowMs: number, mayBlock: boolean): MeterVerdict;
  /** The limit known for `publisherId` (undefined: unlimited or not published). */
  limitOf(publisherId: string): CallLimit | undefined;
  /**
   * The counters to flush now: those with an outstanding batch (to retry as it is) and those with
   * new calls, for which a batch is cut (seq increases). Rolls the day over first.
   */
  cut(nowMs: number): DayCounter[];
  /** Redis applied (or had applied) `c.outstanding`; `monthTotal` is the month's total after it. */
  acknowledge(c: DayCounter, monthTotal: number): void;
  /** Replace the limits (publisher id → limit; absent = unlimited). */
  setLimits(limits: ReadonlyMap<string, CallLimit>): void;
  /** The limited publishers this process counts this month, with the month (for reading totals). */
  limited(): { publisherId: string; month: string }[];
  /** A month total read from Redis. */
  setMonthTotal(publisherId: string, month: string, total: number): void;
  /** Calls counted and not yet confirmed by Redis, and calls dropped by the memory bound (since start). */
  stats(): { unflushed: number; dropped: number; keys: number };
};

/** Create empty counters. */
export function createMeter(opts: MeterOptions = {}): Meter {
  const maxKeys = opts.maxKeys ?? 100_000;
  const maxClients = opts.maxClientsPerDay ?? 10_000;
  const instance = opts.instance ?? randomUUID();
  const onDrop = opts.onDrop ?? (() => undefined);
  let day = '';
  let month = '';
  let dayEnds = 0; // the current day ends here (ms); 0 = not started
  let months = new Map<string, PublisherMonth>();
  let past: DayCounter[] = []; // counters of days that ended, until confirmed
  let limits: ReadonlyMap<string, CallLimit> = new Map();
  let seq = 0;
  let dropped = 0;

  const counter = (m: PublisherMonth, d: string): DayCounter => ({ publisherId: m.publisherId, day: d, calls: 0, clients: null, outstanding: null, month: m });

  const rollOver = (nowMs: number) => {
    const next = utcDayOf(nowMs);
    dayEnds = nextDayStartMs(nowMs);
    if (next === day) return;
    const nextMonth = monthOfDay(next);
    for (const m of months.values()) {
      if (m.today.calls > 0 || m.today.outstanding) past.push(m.today);
      if (nextMonth === month) m.today = counter(m, next);
    }
    if (nextMonth !== month) months = new Map(); // the old month's publishers live on in `past` only
    day = next;
    month = nextMonth;
  };

  const monthOf = (publisherId: string): PublisherMonth | undefined => {
    let m = months.get(publisherId);
    if (m === undefined) {
      if (months.size + past.length >= maxKeys) return undefined;
      m = { publisherId, month, base: 0, unacked: 0, limit: limits.get(publisherId) } as PublisherMonth;
      m.today = counter(m, day); // the counter points back at its month
      months.set(publisherId, m);
    }
    return m;
  };

  return {
    instance,
    record(publisherId, clientId, nowMs, mayBlock) {
      if (nowMs >= dayEnds) rollOver(nowMs);
      const m = monthOf(publisherId);
      if (m === undefined) {
        dropped++;
        onDrop();
        return 'ok';
      }
      let verdict: MeterVerdict = 'ok';
      const limit = m.limit;
      if (limit !== undefined && m.base + m.unacked >= limit.callsPerMonth) {
        if (limit.overLimit === 'block' && mayBlock) return 'block';
        verdict = 'warn';
      }
      m.unacked++;
      const c = m.today;
      c.calls++;
      if (clientId !== undefined) {
        const clients = (c.clients ??= new Map());
        const n = clients.get(clientId);
        if (n !== undefined) clients.set(clientId, n + 1);
        else if (clients.size < maxClients) clients.set(clientId, 1);
        else {
          dropped++;
          onDrop();
        }
      }
      return verdict;
    },
    limitOf(publisherId) {
      return months.get(publisherId)?.limit ?? limits.get(publisherId);
    },
    cut(nowMs) {
      if (nowMs >= dayEnds) rollOver(nowMs);
      const out: DayCounter[] = [];
      const take = (c: DayCounter) => {
        if (c.outstanding === null && c.calls > 0) {
          c.outstanding = { publisherId: c.publisherId, day: c.day, instance, seq: ++seq, calls: c.calls, clients: c.clients };
          c.calls = 0;
          c.clients = null;
        }
        if (c.outstanding !== null) out.push(c);
      };
      past = past.filter((c) => c.calls > 0 || c.outstanding !== null);
      for (const c of past) take(c);
      for (const m of months.values()) take(m.today);
      return out;
    },
    acknowledge(c, monthTotal) {
      const b = c.outstanding;
      if (b === null) return;
      c.outstanding = null;
      c.month.unacked -= b.calls;
      c.month.base = monthTotal;
    },
    setLimits(next) {
      limits = next;
      for (const m of months.values()) m.limit = next.get(m.publisherId);
    },
    limited() {
      const out: { publisherId: string; month: string }[] = [];
      for (const m of months.values()) if (m.limit !== undefined) out.push({ publisherId: m.publisherId, month: m.month });
      return out;
    },
    setMonthTotal(publisherId, forMonth, total) {
      const m = months.get(publisherId);
      if (m !== undefined && m.month === forMonth) m.base = total;
    },
    stats() {
      let unflushed = 0;
      for (const m of months.values()) unflushed += m.unacked;
      for (const c of past) if (c.month.month !== month) unflushed += c.calls + (c.outstanding?.calls ?? 0);
      return { unflushed, dropped, keys: months.size + past.length };
    },
  };
}
