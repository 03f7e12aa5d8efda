/**
 * The domain-event relay (docs/CONTRACTS.md, "Domain events"): publishes the rows of the
 * `domain_events` outbox (migration 0009) to an SQS FIFO queue through an {@link EventSink}.
 *
 * - One batch = one transaction: `domain_events_claim` takes the relay's advisory lock (one batch at
 *   a time across all processes) and returns up to `batchSize` due rows in outbox order, leaving out
 *   every group (publisher) that waits behind a row backing off or an open dead letter.
 * - SendMessageBatch calls of ≤ 10 entries, at most one per group (MessageGroupId), one call after
 *   the other: a refused entry can never be overtaken by a later event of its group that SQS took.
 *   MessageDeduplicationId = the event id, so a resend within SQS's 5-minute window is dropped.
 * - Entries SQS accepted are marked published when the batch commits. A refused entry gets
 *   attempts + 1 and backoff (`domain_events_mark_failed`); its group stops for this batch, other
 *   groups go on. When the entry itself is at fault (SQS's SenderFault, or a body over
 *   `maxMessageBytes`) and it has failed `maxAttempts` times, it moves to the dead-letter table and
 *   its group's later events wait until an operator retries or discards it (cli.ts). A failing call
 *   (network, throttling, credentials, missing queue) backs off its entries and ends the drain; it
 *   never dead-letters anything.
 * - At least once: a crash after SQS accepted a batch but before the commit sends it again.
 */
import type { EntityManager } from '@mikro-orm/postgresql';
import { query, type Orm } from '../db/orm.ts';
import type { Logger } from '../logger.ts';
import { PeriodicJob } from '../jobs/periodic-job.ts';
import { SQS_MAX_BATCH_ENTRIES, type EventSink, type OutgoingMessage } from './sqs.ts';

/** Counters the relay reports to (metrics.ts). */
export interface RelayMetrics {
  published(n: number): void;
  failed(n: number, fault: 'event' | 'queue'): void;
  deadLettered(n: number): void;
}

/** Options of {@link DomainEventRelay}. */
export type DomainEventRelayOptions = {
  orm: Orm;
  sink: EventSink;
  logger?: Logger;
  metrics?: RelayMetrics;
  /** events per batch transaction, 1..100 (default 100) */
  batchSize?: number;
  /** timer period, ms (default 1000) */
  intervalMs?: number;
  /** how long to wait for another relay's batch, ms (default 5000) */
  lockTimeoutMs?: number;
  /** failed attempts before an event at fault is dead-lettered (default 10) */
  maxAttempts?: number;
  /** first retry delay, ms, doubled per attempt (default 1000) … */
  retryBaseMs?: number;
  /** … up to this, ms (default 30 000) */
  retryMaxMs?: number;
  /** largest body sent, bytes (default 262 144) */
  maxMessageBytes?: number;
  /** how long published rows are kept, seconds (default 7 days); pruned at most every 10 minutes */
  retentionS?: number;
};

/** Totals of one {@link DomainEventRelay.drain}. */
export type EventDrainResult = {
  published: number;
  /** failed attempts (the events stay pending, or were dead-lettered) */
  failed: number;
  deadLettered: number;
  /** the last failure's text, when there was one */
  error?: string;
};

type EventRow = { id: string; event_id: string; group_key: string; payload: unknown };
type BatchResult = EventDrainResult & { claimed: number; halted: boolean };

const noopLogger: Logger = { info: () => {}, warn: () => {}, error: () => {} };
const PRUNE_EVERY_MS = 10 * 60_000;

/**
 * The message body of an event: its payload as JSON, with U+FFFE and U+FFFF escaped (JSON allows
 * them raw, SQS refuses them; lone surrogates are already escaped by JSON.stringify).
 */
export function encodeBody(payload: unknown): string {
  return JSON.stringify(payload).replace(/[\ufffe\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16)}`);
}

/** Publishes `domain_events` to SQS; one instance per process. */
export class DomainEventRelay {
  readonly #orm: Orm;
  readonly #sink: EventSink;
  readonly #log: Logger;
  readonly #metrics: RelayMetrics | undefined;
  readonly #batchSize: number;
  readonly #lockTimeoutMs: number;
  readonly #maxAttempts: number;
  readonly #retryBaseMs: number;
  readonly #retryMaxMs: number;
  readonly #maxBytes: number;
  readonly #retentionS: number;
  readonly #job: PeriodicJob<EventDrainResult>;
  #lastPrune = 0;

  /** @throws RangeError when batchSize is outside 1..100 */
  constructor(opts: DomainEventRelayOptions) {
    this.#orm = opts.orm;
    this.#sink = opts.sink;
    this.#log = opts.logger ?? noopLogger;
    this.#metrics = opts.metrics;
    this.#batchSize = opts.batchSize ?? 100;
    if (!(Number.isInteger(this.#batchSize) && this.#batchSize >= 1 && this.#batchSize <= 100)) throw new RangeError('batchSize must be 1..100');
    this.#job = new PeriodicJob((signal) => this.#drainLoop(signal), opts.intervalMs ?? 1000);
    this.#lockTimeoutMs = opts.lockTimeoutMs ?? 5000;
    this.#maxAttempts = opts.maxAttempts ?? 10;
    this.#retryBaseMs = opts.retryBaseMs ?? 1000;
    this.#retryMaxMs = opts.retryMaxMs ?? 30_000;
    this.#maxBytes = opts.maxMessageBytes ?? 256 * 1024;
    this.#retentionS = opts.retentionS ?? 7 * 24 * 3600;
  }

  /** Start the timer (idempotent; it does not keep the process alive). */
  start(): void {
    this.#job.start();
  }

  /** Stop the timer and wait for a drain in progress. Never throws. */
  async stop(): Promise<void> {
    await this.#job.stop();
  }

  /**
   * Publish due events until none is left, a call fails or a batch comes back short. Calls are
   * serialised in this process (jobs/periodic-job.ts): events committed before a call are covered
   * when it resolves unless publishing failed or they back off. Never throws; failures are logged,
   * counted and recorded on the rows.
   */
  drain(): Promise<EventDrainResult> {
    return this.#job.run();
  }

  async #drainLoop(signal: AbortSignal): Promise<EventDrainResult> {
    const total: EventDrainResult = { published: 0, failed: 0, deadLettered: 0 };
    try {
      for (;;) {
        const r = await this.#batch();
        if (r.published) this.#metrics?.published(r.published); // committed
        total.published += r.published;
        total.failed += r.failed;
        total.deadLettered += r.deadLettered;
        if (r.error) total.error = r.error;
        if (signal.aborted || r.halted || r.claimed < this.#batchSize) break; // stopping: the rest waits for the next process
      }
      await this.#pruneNow();
    } catch (err) {
      total.error = errorText(err);
      this.#log.error({ err }, 'domain events: publishing failed');
    }
    return total;
  }

  async #pruneNow(): Promise<void> {
    if (Date.now() - this.#lastPrune < PRUNE_EVERY_MS) return;
    this.#lastPrune = Date.now();
    const [row] = await query<{ n: number }>(this.#orm.em.fork(), `select domain_events_prune($1) as n`, [this.#retentionS]);
    if (row && row.n > 0) this.#log.info({ pruned: row.n }, 'domain events: pruned published events');
  }

  /** One batch in one transaction. @throws database errors (the caller logs them) */
  async #batch(): Promise<BatchResult> {
    const em = this.#orm.em.fork();
    return em.transactional(async (tem: EntityManager) => {
      await query(tem, `select set_config('lock_timeout', $1, true)`, [`${this.#lockTimeoutMs}ms`]);
      const rows = await query<EventRow>(
        tem,
        `select c.id::text as id, c.event_id::text as event_id, c.group_key, c.payload from domain_events_claim($1) c order by c.id`,
        [this.#batchSize],
      );
      const result: BatchResult = { claimed: rows.length, published: 0, failed: 0, deadLettered: 0, halted: false };
      // each group's rows in outbox order; a group leaves the map when done or when one of its rows failed
      const groups = new Map<string, EventRow[]>();
      const byId = new Map<string, EventRow>();
      for (const row of rows) {
        byId.set(row.id, row);
        const q = groups.get(row.group_key);
        if (q) q.push(row);
        else groups.set(row.group_key, [row]);
      }
      const published: string[] = [];
      const fail = async (ids: string[], error: string, eventFault: boolean) => {
        const marked = await query<{ id: string; attempts: number; dead: boolean }>(
          tem,
          `select f.id::text as id, f.attempts, f.dead from domain_events_mark_failed($1::bigint[], $2, $3, $4, $5, $6) f`,
          [ids, error, eventFault, this.#maxAttempts, this.#retryBaseMs, this.#retryMaxMs],
        );
        const dead = marked.filter((m) => m.dead).length;
        result.failed += ids.length;
        result.deadLettered += dead;
        result.error = error;
        this.#metrics?.failed(ids.length, eventFault ? 'event' : 'queue');
        if (dead) this.#metrics?.deadLettered(dead);
        const level = dead ? 'error' : 'warn';
        this.#log[level]({ events: ids.length, firstId: ids[0], attempts: marked[0]?.attempts, deadLettered: dead, error }, dead ? 'domain events: dead-lettered' : 'domain events: attempt failed, will retry');
      };

      while (groups.size > 0) {
        // the next event of up to 10 groups, oldest first (never two of one group in one call)
        const heads = [...groups.values()].map((q) => q[0]!).sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1)).slice(0, SQS_MAX_BATCH_ENTRIES);
        const messages: OutgoingMessage[] = [];
        for (const head of heads) {
          const body = encodeBody(head.payload);
          const bytes = Buffer.byteLength(body, 'utf8');
          if (bytes > this.#maxBytes) {
            groups.delete(head.group_key);
            await fail([head.id], `MessageTooLong: the body is ${bytes} bytes, the queue takes at most ${this.#maxBytes}`, true);
            continue;
          }
          messages.push({ entryId: head.id, body, groupId: head.group_key, deduplicationId: head.event_id });
        }
        if (messages.length === 0) continue;
        let outcomes;
        try {
          outcomes = await this.#sink.sendBatch(messages);
        } catch (err) {
          await fail(messages.map((m) => m.entryId), errorText(err), false);
          result.halted = true;
          break;
        }
        for (const o of outcomes) {
          const row = byId.get(o.entryId)!;
          if (o.ok) {
            published.push(o.entryId);
            const q = groups.get(row.group_key)!;
            q.shift();
            if (q.length === 0) groups.delete(row.group_key);
          } else {
            groups.delete(row.group_key);
            await fail([o.entryId], o.error, o.senderFault);
          }
        }
      }
      if (published.length) {
        await query(tem, `select domain_events_mark_published($1::bigint[])`, [published]);
        result.published = published.length;
      }
      return result;
    });
  }
}

function errorText(err: unknown): string {
  const e = err as { message?: string; name?: string };
  return `${e?.name ?? 'Error'}: ${e?.message ?? String(err)}`.slice(0, 2000);
}
