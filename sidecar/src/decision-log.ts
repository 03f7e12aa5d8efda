/**
 * The sidecar's decision log (issue 10 §3; docs/CONTRACTS.md, "Decision log"). The authorize stage
 * reports the route rule's decision of every request (proxy and /ext-authz; the extra read_only
 * checks on deny paths are part of that decision, not decisions of their own). Denies are always
 * recorded, allows with probability DECISION_LOG_ALLOW_SAMPLE; a record is built only then. Sinks:
 * 1. a structured log line through the app's pino logger: `{decision: record}`, msg `decision`
 *    (level info; the record never holds tokens, assertions or headers);
 * 2. a bounded in-process ring buffer (DECISION_LOG_BUFFER records) that the admin listener serves
 *    as `GET /decisions` (admin.ts);
 * 3. the store's capped Redis stream (policies/src/decision-log.ts), appended about every
 *    DECISION_LOG_FLUSH_MS in pipelines of {@link STREAM_CHUNK} on a connection of its own, like the metering flusher
 *    (metering/flusher.ts): one round at a time; Redis down or slow → that batch is dropped
 *    (`sidecar_decision_log_dropped_total{reason="redis"}`) with one warning per outage, requests
 *    never wait for it; records that pile up behind a slow round beyond DECISION_LOG_STREAM_MAXLEN
 *    are dropped too (`reason="backlog"`);
 * 4. an OpenTelemetry span `authz.decision` per record through `trace.getTracer('sidecar')`
 *    (@opentelemetry/api), the record's fields as `authz.*` attributes. Without a registered
 *    tracer provider the API hands out non-recording spans (its documented no-op design), so this
 *    costs next to nothing until an operator registers an SDK.
 */
import { trace, type Attributes } from '@opentelemetry/api';
import type { RedisClient } from '../../policies/src/redis.ts';
import { appendDecisions, decisionId, type DecisionRecord } from '../../policies/src/decision-log.ts';
import type { DecisionSource, DecisionLogMetrics } from './metrics.ts';

/** Records per pipeline of a flush (each pipeline awaited before the next is built). */
export const STREAM_CHUNK = 100;

/** Minimal logger (pino-compatible). */
type Log = { info(obj: object, msg?: string): void; warn(obj: object, msg?: string): void; isLevelEnabled?(level: string): boolean };

/** What the pipeline knows about one decision (cheap to build: no id, no time string yet). */
export type DecisionEvent = {
  requestId: string;
  /** `user:<uuid>` */
  user: string;
  relation: string;
  object: string;
  /** the publisher context (X-Publisher-Id), when any */
  publisherId?: string;
  /** the route rule (its method and path template) */
  rule: { method: string; path: string };
  decision: { allowed: boolean; source: DecisionSource; modelId?: string };
  /** performance.now() before the decision, and its duration (ms) */
  startedAt: number;
  latencyMs: number;
  context?: Record<string, unknown>;
};

/** The decision log of one sidecar. */
export type DecisionLog = {
  /** Record one decision (sampled when allowed); never throws, never waits. */
  observe(e: DecisionEvent): void;
  /**
   * The ring buffer's records, newest first.
   * @param opts.limit at most this many (default 100); opts.allowed only allowed / denied ones
   */
  recent(opts?: { limit?: number; allowed?: boolean }): DecisionRecord[];
  /** Start the stream flusher's timer. */
  start(): void;
  /** Stop the timer, append what is pending once (when Redis is connected), disconnect. */
  close(): Promise<void>;
};

/** Options of {@link createDecisionLog}. Durations in ms. */
export type DecisionLogOptions = {
  log: Log;
  /** probability (0..1) that an allowed decision is recorded; denies always are */
  allowSample: number;
  /** ring buffer size (records) */
  bufferSize: number;
  /** a dedicated client (enableOfflineQueue false, a command timeout) */
  redis: RedisClient;
  storeId: string;
  /** the model id in use, for decisions that do not name the one that decided */
  modelId: () => string;
  flushMs: number;
  /** the stream's cap (XADD MAXLEN ~), also the bound of records waiting for a flush */
  streamMaxLen: number;
  metrics: DecisionLogMetrics;
  /** 0 ≤ x < 1 (default Math.random) */
  random?: () => number;
};

/** Create the decision log (call `start()` for the stream flusher). */
export function createDecisionLog(o: DecisionLogOptions): DecisionLog {
  const { log, redis, storeId, metrics } = o;
  const random = o.random ?? Math.random;
  const tracer = trace.getTracer('sidecar');
  const size = Math.max(1, o.bufferSize);
  const ring: DecisionRecord[] = [];
  let next = 0; // where the next record goes once the ring is full
  let pending: DecisionRecord[] = [];
  let flushing = false;
  let failing = false;
  let timer: NodeJS.Timeout | null = null;
  const logging = () => log.isLevelEnabled?.('info') ?? true;
  // label children bound once: no label hashing per decision
  const counted = { log: metrics.records.labels('log'), buffer: metrics.records.labels('buffer'), stream: metrics.records.labels('stream'), span: metrics.records.labels('span') };
  const dropped = { redis: metrics.dropped.labels('redis'), backlog: metrics.dropped.labels('backlog') };

  const push = (r: DecisionRecord) => {
    if (ring.length < size) ring.push(r);
    else {
      ring[next] = r;
      next = (next + 1) % size;
    }
  };

  const span = (e: DecisionEvent, r: DecisionRecord) => {
    const s = tracer.startSpan('authz.decision', { startTime: performance.timeOrigin + e.startedAt });
    if (!s.isRecording()) return void s.end();
    const attributes: Attributes = {
      'authz.id': r.id,
      'authz.request_id': r.request_id,
      'authz.subject': r.subject,
      'authz.relation': r.relation,
      'authz.object': r.object,
      'authz.rule': r.rule,
      'authz.allowed': r.allowed,
      'authz.source': r.source,
      'authz.model_id': r.model_id,
      'authz.latency_ms': r.latency_ms,
    };
    if (r.publisher) attributes['authz.publisher'] = r.publisher;
    if (r.context) attributes['authz.context'] = JSON.stringify(r.context);
    s.setAttributes(attributes);
    s.end(performance.timeOrigin + e.startedAt + e.latencyMs);
    counted.span.inc();
  };

  const flush = async () => {
    if (flushing || pending.length === 0) return;
    const batch = pending;
    pending = [];
    flushing = true;
    let sent = 0;
    try {
      // in pipelines of STREAM_CHUNK: a second's records at once (1,000 XADDs built, written and
      // answered in one go) held the event loop for tens of ms, the sidecar's latency tail
      for (; sent < batch.length; sent += STREAM_CHUNK) {
        const chunk = batch.slice(sent, sent + STREAM_CHUNK);
        await appendDecisions(redis, storeId, chunk, o.streamMaxLen);
        counted.stream.inc(chunk.length);
      }
      if (failing) log.info({}, 'decision log: redis available again; records reach the stream');
      failing = false;
    } catch (err) {
      dropped.redis.inc(batch.length - sent);
      if (!failing) log.warn({ err: { message: (err as Error).message } }, 'decision log: redis unavailable; records are dropped from the stream until it returns');
      failing = true;
    } finally {
      flushing = false;
    }
  };

  return {
    observe(e) {
      const { allowed, source } = e.decision;
      if (allowed && o.allowSample < 1 && !(random() < o.allowSample)) return;
      const now = Date.now();
      const r: DecisionRecord = {
        id: decisionId(now),
        time: new Date(now).toISOString(),
        request_id: e.requestId,
        subject: e.user,
        relation: e.relation,
        object: e.object,
        rule: `${e.rule.method} ${e.rule.path}`,
        allowed,
        source,
        model_id: e.decision.modelId ?? o.modelId(),
        latency_ms: Math.round(e.latencyMs * 1000) / 1000,
      };
      const publisher = e.object.startsWith('publisher:') ? e.object.slice(10) : e.publisherId;
      if (publisher) r.publisher = publisher;
      if (e.context) r.context = e.context;
      if (logging()) {
        log.info({ decision: r }, 'decision');
        counted.log.inc();
      }
      push(r);
      counted.buffer.inc();
      if (pending.length < o.streamMaxLen) pending.push(r);
      else dropped.backlog.inc();
      span(e, r);
    },
    recent(opts = {}) {
      const limit = Math.max(0, opts.limit ?? 100);
      const out: DecisionRecord[] = [];
      const n = ring.length;
      // newest: the slot before `next` once full, else the last pushed
      for (let i = 1; i <= n && out.length < limit; i++) {
        const r = ring[(((n < size ? n : next) - i) % n + n) % n]!;
        if (opts.allowed === undefined || r.allowed === opts.allowed) out.push(r);
      }
      return out;
    },
    start() {
      if (timer) return;
      timer = setInterval(() => void flush(), o.flushMs);
      timer.unref();
    },
    async close() {
      if (timer) clearInterval(timer);
      timer = null;
      if (redis.status === 'ready') {
        while (flushing) await new Promise((r) => setTimeout(r, 5));
        await flush();
      }
      redis.disconnect();
    },
  };
}
