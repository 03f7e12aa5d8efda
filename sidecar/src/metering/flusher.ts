/**
 * The metering flusher of one sidecar (docs/CONTRACTS.md, "Metering"): every `intervalMs` it hands
 * the counters (meter.ts) to Redis — one script call per publisher-day (policies/src/metering.ts),
 * pipelined on its own connection — and every `reloadMs` it re-reads the limits hash the catalog
 * API publishes and the month totals of the limited publishers this process counts.
 *
 * Redis down or slow: a batch whose call failed stays outstanding and is retried as it is (same
 * seq: applied at most once); new calls keep accumulating in process (bounded, meter.ts) and go
 * out when Redis answers again. Limits keep their last known values; nothing is ever refused
 * because Redis is unreachable. On close the last counts are flushed (one bounded attempt).
 *
 * A crash (SIGKILL) loses what was counted since the last flush was sent: at most `intervalMs` of
 * calls (plus, while Redis was unreachable, everything buffered since).
 */
import type { RedisClient } from '../../../policies/src/redis.ts';
import { decodeLimit, limitsKey, meteringScripts, monthKey, type CallLimit } from '../../../policies/src/metering.ts';
import type { MeteringMetrics } from '../metrics.ts';
import type { Meter } from './meter.ts';

/** Minimal logger (pino-compatible). */
type Log = { warn(obj: object, msg?: string): void; info(obj: object, msg?: string): void };

/** Options of {@link createMeteringFlusher}. Durations in milliseconds. */
export type MeteringFlusherOptions = {
  meter: Meter;
  /** a dedicated client (enableOfflineQueue false, a command timeout) */
  redis: RedisClient;
  prefix: string;
  intervalMs: number;
  reloadMs: number;
  metrics: MeteringMetrics;
  log: Log;
};

/** The flusher. */
export type MeteringFlusher = {
  /** Load the limits once (never throws) and start the timer. */
  start(): Promise<void>;
  /** Stop the timer, flush the last counts once, disconnect. */
  close(): Promise<void>;
};

/** Create the flusher (call `start()`). */
export function createMeteringFlusher(o: MeteringFlusherOptions): MeteringFlusher {
  const { meter, redis, prefix, metrics, log } = o;
  const scripts = meteringScripts(redis);
  let timer: NodeJS.Timeout | null = null;
  let lastReload = 0;
  let lastComplete = Date.now();
  let limitsLoadedAt = 0;
  let failing = false;

  metrics.observe(() => {
    const now = Date.now();
    return { lagSeconds: (now - lastComplete) / 1000, unflushedCalls: meter.stats().unflushed, limitsAgeSeconds: limitsLoadedAt ? (now - limitsLoadedAt) / 1000 : -1 };
  });

  const outage = (err: unknown, what: string) => {
    if (!failing) log.warn({ err: { message: (err as Error).message } }, `metering: redis unavailable (${what}); counting in process until it returns`);
    failing = true;
  };
  const recovered = () => {
    if (failing) log.info({}, 'metering: redis available again; buffered counts are flushed');
    failing = false;
  };

  const flushRound = async (): Promise<boolean> => {
    const counters = meter.cut(Date.now());
    if (counters.length === 0) {
      lastComplete = Date.now();
      return true;
    }
    // in send order, so a publisher's later batch leaves the newer month total
    const results = await Promise.allSettled(counters.map((c) => scripts.flush(prefix, c.outstanding!)));
    let ok = true;
    results.forEach((r, i) => {
      if (r.status === 'fulfilled') meter.acknowledge(counters[i]!, r.value.monthTotal);
      else {
        ok = false;
        outage(r.reason, 'flush');
      }
    });
    metrics.flushes.labels(ok ? 'ok' : 'failed').inc();
    if (ok) {
      lastComplete = Date.now();
      recovered();
    }
    return ok;
  };

  const reloadOnce = async (): Promise<boolean> => {
    lastReload = Date.now();
    try {
      const hash = await redis.hgetall(limitsKey(prefix));
      const limits = new Map<string, CallLimit>();
      for (const [publisherId, text] of Object.entries(hash)) {
        const l = decodeLimit(text);
        if (l) limits.set(publisherId, l);
      }
      meter.setLimits(limits);
      limitsLoadedAt = Date.now();
      const limited = meter.limited();
      const totals = await Promise.all(limited.map((x) => redis.get(monthKey(prefix, x.publisherId, x.month))));
      limited.forEach((x, i) => meter.setMonthTotal(x.publisherId, x.month, Number(totals[i] ?? 0)));
      metrics.limitReloads.labels('ok').inc();
      recovered();
      return true;
    } catch (err) {
      metrics.limitReloads.labels('failed').inc();
      outage(err, 'limits');
      return false;
    }
  };

  // One task at a time (rounds never overlap: a batch is never in flight twice).
  let chain: Promise<unknown> = Promise.resolve();
  let busy = 0;
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    busy++;
    const p = chain.then(fn).finally(() => void busy--);
    chain = p.catch(() => undefined);
    return p;
  };

  const tick = () => {
    if (busy > 0) return; // the previous round is still waiting for Redis
    void serial(async () => {
      await flushRound();
      if (Date.now() - lastReload >= o.reloadMs) await reloadOnce();
    });
  };

  return {
    async start() {
      await serial(reloadOnce);
      timer = setInterval(tick, o.intervalMs);
      timer.unref();
    },
    async close() {
      if (timer) clearInterval(timer);
      timer = null;
      if (redis.status === 'ready') await serial(flushRound);
      else await chain;
      const left = meter.stats().unflushed;
      if (left > 0) log.warn({ unflushed: left }, 'metering: closing with calls Redis did not confirm (they are lost)');
      redis.disconnect();
    },
  };
}
