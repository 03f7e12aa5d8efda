/**
 * The relationship outbox relay (docs/CONTRACTS.md, "Database schema …", `authz_outbox`).
 *
 * Triggers record every relationship change as a row of `authz_outbox` in the same transaction as
 * the change. The relay delivers pending rows (delivered_at IS NULL) in id order to OpenFGA through
 * `policies/src/relationships.ts` (`RelationshipWriter.write`, idempotent, bumps the cache epochs):
 *
 * - one batch = one transaction: `pg_advisory_xact_lock` (one delivering relay at a time across all
 *   processes, so batches reach OpenFGA in id order), then up to `batchSize` (≤ 100) rows claimed
 *   with `authz_outbox_claim` (`ORDER BY id FOR UPDATE SKIP LOCKED`; the relay runs as `catalog_jobs`
 *   (JOBS_DATABASE_URL), which has no privilege on the table itself, only on that function and
 *   `authz_outbox_mark` — migrations 0004, 0011; the app role has neither);
 * - a batch is cut into runs in which no tuple repeats (the writer refuses a tuple both written and
 *   deleted in one call; order between them matters), each run one `write` call, in order;
 * - rows of a delivered run get `delivered_at = now()`; on the first failing run, that run and every
 *   later row of the batch get `attempts + 1` and `last_error`, and delivery stops until the next
 *   trigger — rows are never skipped or dropped, so order is preserved and nothing is lost;
 * - it runs after every committed mutating request (before the response) and on a timer (1 s);
 * - a `write` row with `condition_name`/`condition_context` (migration 0012) is written as a
 *   conditional tuple (an expiring membership, a publisher's office networks).
 *
 * Delivery is at-least-once: if the commit that marks rows delivered fails after OpenFGA accepted
 * them, they are sent again, which the idempotent writer absorbs.
 */
import type { EntityManager } from '@mikro-orm/postgresql';
import { query, type Orm } from '../db/orm.ts';
import type { Logger } from '../logger.ts';
import { PeriodicJob } from '../jobs/periodic-job.ts';
import { defaultOutboxTranslator } from '../../../policies/src/model-migrations.ts';

/**
 * An OpenFGA tuple key as the writer takes it; `condition` on a conditional tuple's write
 * (migration 0012: `non_expired_grant`, `outside_office_networks`; policies/src/conditions.ts).
 */
export type Tuple = { user: string; relation: string; object: string; condition?: { name: string; context: Record<string, unknown> } };

/** What the relay needs from `RelationshipWriter` (policies/src/relationships.ts). */
export interface RelationshipSink {
  /** Apply the changes; resolve when OpenFGA has them (and epochs are bumped); reject otherwise. */
  write(change: { writes?: Tuple[]; deletes?: Tuple[] }): Promise<void>;
}

/** The relay's logger. */
export type RelayLogger = Logger;

/** Options of {@link OutboxRelay}. */
export type OutboxRelayOptions = {
  orm: Orm;
  sink: RelationshipSink;
  logger?: RelayLogger;
  /** rows per batch, 1..100 (default 100) */
  batchSize?: number;
  /** timer period, ms (default 1000) */
  intervalMs?: number;
  /** how long to wait for another relay's batch, ms (default 5000) */
  lockTimeoutMs?: number;
  /**
   * Relation names of rows written by triggers that predate a model migration → the current names;
   * null drops the row (a removed relation; logged). Default: `defaultOutboxTranslator()` of
   * policies/src/model-migrations.ts (policies/migrations/ against policies/model.fga).
   */
  translate?: (t: Tuple) => Tuple | null;
};

/** Result of one {@link OutboxRelay.drain} call. */
export type DrainResult = { delivered: number; failed: number; error?: string };

type OutboxRow = {
  id: string;
  operation: 'write' | 'delete';
  object: string;
  relation: string;
  subject: string;
  /** a conditional tuple's condition (migration 0012; writes only) */
  condition_name: string | null;
  condition_context: Record<string, unknown> | null;
};

/** Advisory lock key of the relay: the first 8 bytes of sha1('authz_outbox relay') as bigint. */
const LOCK_KEY = '5366218734910117430';

const noopLogger: RelayLogger = { info: () => {}, warn: () => {}, error: () => {} };

/**
 * Cut a batch into runs in which no tuple (object#relation@subject) appears twice, keeping order.
 * Exported for tests.
 * @returns the runs; concatenated they equal `rows`
 */
export function splitIntoRuns<T extends { object: string; relation: string; subject: string }>(rows: readonly T[]): T[][] {
  const runs: T[][] = [];
  let current: T[] = [];
  let keys = new Set<string>();
  for (const row of rows) {
    const key = `${row.object}#${row.relation}@${row.subject}`;
    if (keys.has(key)) {
      runs.push(current);
      current = [];
      keys = new Set();
    }
    current.push(row);
    keys.add(key);
  }
  if (current.length) runs.push(current);
  return runs;
}

/** Delivers `authz_outbox` to OpenFGA; one instance per process. */
export class OutboxRelay {
  readonly #orm: Orm;
  readonly #sink: RelationshipSink;
  readonly #log: RelayLogger;
  readonly #batchSize: number;
  readonly #lockTimeoutMs: number;
  readonly #job: PeriodicJob<DrainResult>;
  readonly #translate: (t: Tuple) => Tuple | null;

  /** @throws RangeError when batchSize is outside 1..100 */
  constructor(opts: OutboxRelayOptions) {
    this.#orm = opts.orm;
    this.#sink = opts.sink;
    this.#log = opts.logger ?? noopLogger;
    this.#batchSize = opts.batchSize ?? 100;
    if (!(this.#batchSize >= 1 && this.#batchSize <= 100)) throw new RangeError('batchSize must be 1..100');
    this.#lockTimeoutMs = opts.lockTimeoutMs ?? 5000;
    this.#translate = opts.translate ?? defaultOutboxTranslator();
    this.#job = new PeriodicJob((signal) => this.#drainLoop(signal), opts.intervalMs ?? 1000);
  }

  /** Start the timer (idempotent). The timer does not keep the process alive. */
  start(): void {
    this.#job.start();
  }

  /** Stop the timer and wait for a delivery in progress. Never throws. */
  async stop(): Promise<void> {
    await this.#job.stop();
  }

  /**
   * Deliver pending rows until none is left or a batch fails. Calls are serialised in this process
   * (jobs/periodic-job.ts): rows committed before a call are covered when it resolves, unless
   * delivery failed. Never throws; failures are logged and counted.
   * @returns rows delivered and rows whose attempt failed, summed over the batches of this drain
   */
  drain(): Promise<DrainResult> {
    return this.#job.run();
  }

  async #drainLoop(signal: AbortSignal): Promise<DrainResult> {
    const total: DrainResult = { delivered: 0, failed: 0 };
    try {
      for (;;) {
        const r = await this.#batch();
        total.delivered += r.delivered;
        total.failed += r.failed;
        if (r.error) total.error = r.error;
        if (signal.aborted || r.failed > 0 || r.delivered + r.failed < this.#batchSize) break; // stopping: the rest waits for the next process
      }
    } catch (err) {
      total.error = errorText(err);
      this.#log.error({ err }, 'authz outbox: delivery failed');
    }
    return total;
  }

  /** One batch in one transaction. @throws database errors (caller logs them) */
  async #batch(): Promise<DrainResult> {
    const em = this.#orm.em.fork();
    return em.transactional(async (tem: EntityManager) => {
      await query(tem, `select set_config('lock_timeout', $1, true)`, [`${this.#lockTimeoutMs}ms`]);
      await query(tem, `select pg_advisory_xact_lock(${LOCK_KEY})`);
      const claimed = await query<OutboxRow>(
        tem,
        `select c.id::text, c.operation, c.object, c.relation, c.subject, c.condition_name, c.condition_context from authz_outbox_claim($1) c
          order by c.id -- the bigint column, not the text alias`,
        [this.#batchSize],
      );
      if (claimed.length === 0) return { delivered: 0, failed: 0 };
      const rows = this.#translateRows(claimed);
      let delivered = 0;
      for (const [i, run] of splitIntoRuns(rows).entries()) {
        const tuple = (r: OutboxRow): Tuple => ({ user: r.subject, relation: r.relation, object: r.object });
        const written = (r: OutboxRow): Tuple => (r.condition_name ? { ...tuple(r), condition: { name: r.condition_name, context: r.condition_context ?? {} } } : tuple(r));
        try {
          await this.#sink.write({
            writes: run.filter((r) => r.operation === 'write' && !r.dropped).map(written),
            deletes: run.filter((r) => r.operation === 'delete' && !r.dropped).map(tuple),
          });
        } catch (err) {
          const failedIds = splitIntoRuns(rows).slice(i).flat().map((r) => r.id);
          const message = errorText(err);
          await query(tem, `select authz_outbox_mark($1::bigint[], $2::text)`, [failedIds, message]);
          this.#log.warn({ rows: failedIds.length, firstId: failedIds[0], error: message }, 'authz outbox: delivery failed, will retry');
          return { delivered, failed: failedIds.length, error: message };
        }
        await query(tem, `select authz_outbox_mark($1::bigint[], null)`, [run.map((r) => r.id)]);
        delivered += run.length;
      }
      return { delivered, failed: 0 };
    });
  }

  /** Rows with relation names translated (before the runs are cut: a rename may make two rows one tuple). */
  #translateRows(rows: OutboxRow[]): (OutboxRow & { dropped?: true })[] {
    return rows.map((r) => {
      const t = this.#translate({ user: r.subject, relation: r.relation, object: r.object });
      if (t === null) {
        this.#log.info({ id: r.id, tuple: `${r.object}#${r.relation}@${r.subject}` }, 'authz outbox: row names a relation removed by a model migration; dropped');
        return { ...r, dropped: true as const };
      }
      return t.relation === r.relation && t.user === r.subject && t.object === r.object ? r : { ...r, relation: t.relation, subject: t.user, object: t.object };
    });
  }
}

function errorText(err: unknown): string {
  const e = err as { message?: string; name?: string };
  return `${e?.name ?? 'Error'}: ${e?.message ?? String(err)}`.slice(0, 2000);
}
