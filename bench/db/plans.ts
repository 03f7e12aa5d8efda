/**
 * The catalog API's list and get queries as it really sends them, and their plans under RLS.
 *
 * - {@link captureQueries}: the SQL statements MikroORM sends while a function runs (its logger's
 *   `logQuery` hook, parameters inlined as MikroORM logs them), so the plans examined are those of
 *   the API's own queries, not a copy of them that could drift.
 * - {@link explainAs}: EXPLAIN of one statement as `catalog_app` inside a transaction whose first
 *   statement is `app_begin_request(user, publisher)` (migration 0011) — the request context the API
 *   sets —, rolled back afterwards.
 * - {@link scans}: the scan nodes of a plan (PostgreSQL's EXPLAIN JSON format: `Node Type`,
 *   `Relation Name`, `Index Name`, `Plans`), with the leading columns of the index each one uses.
 */
import pg from 'pg';
import type { Orm } from '../../catalog-api/src/db/orm.ts';

/** A statement the API sent (transaction control left out): SQL with `$n` placeholders and its parameters. */
export type CapturedQuery = { sql: string; params: unknown[] };

/** MikroORM's `?` placeholders → PostgreSQL's `$1, $2, …` (outside quoted strings and identifiers). */
export function numberPlaceholders(sql: string): string {
  let n = 0;
  let quote: string | null = null;
  let out = '';
  for (const ch of sql) {
    if (quote) {
      if (ch === quote) quote = null;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
    } else if (ch === '?') {
      out += `$${++n}`;
      continue;
    }
    out += ch;
  }
  return out;
}

/**
 * Run `fn` and return the SQL statements `orm` sent meanwhile (MikroORM's `logQuery`), without
 * `begin`/`commit`/`rollback`. The logger is restored afterwards. Not for concurrent use.
 */
export async function captureQueries(orm: Orm, fn: () => Promise<unknown>): Promise<CapturedQuery[]> {
  const logger = orm.config.getLogger() as { logQuery: (ctx: { query: string; params?: unknown[] }) => void };
  const original = logger.logQuery;
  const seen: CapturedQuery[] = [];
  logger.logQuery = function (ctx) {
    const sql = ctx.query.trim();
    if (!/^(begin|commit|rollback|savepoint|release)\b/i.test(sql)) seen.push({ sql: numberPlaceholders(sql), params: [...(ctx.params ?? [])] });
    return original.call(this, ctx);
  };
  try {
    await fn();
  } finally {
    logger.logQuery = original;
  }
  return seen;
}

/** One node of an EXPLAIN (FORMAT JSON) plan. */
export type PlanNode = { 'Node Type': string; 'Relation Name'?: string; 'Index Name'?: string; Plans?: PlanNode[]; [k: string]: unknown };

/** The top of an EXPLAIN (FORMAT JSON) result. */
export type Explained = { Plan: PlanNode; 'Execution Time'?: number; 'Planning Time'?: number };

/**
 * EXPLAIN `sql` (with `$n` parameters `params`, planned for their values) as the app role on `appUrl` under the request context of `user` at `publisher`.
 * @param options `analyze` runs the statement (EXPLAIN ANALYZE, BUFFERS), `settings` are `SET LOCAL`
 *        planner settings for the transaction (e.g. `{ enable_seqscan: 'off' }`)
 * @returns the plan and the scope `app_begin_request` derived
 * @throws when the context call or the statement fails
 */
export async function explainAs(
  appUrl: string,
  ctx: { user: string; publisher: string },
  sql: string,
  params: readonly unknown[],
  options: { analyze?: boolean; settings?: Record<string, string> } = {},
): Promise<{ plan: Explained; scope: string }> {
  const c = new pg.Client({ connectionString: appUrl });
  await c.connect();
  try {
    await c.query('begin');
    for (const [k, v] of Object.entries(options.settings ?? {})) await c.query(`select set_config($1, $2, true)`, [k, v]);
    const scope = (await c.query<{ access_scope: string }>(`select access_scope from app_begin_request($1::uuid, $2::uuid)`, [ctx.user, ctx.publisher])).rows[0]?.access_scope ?? '';
    const opts = options.analyze ? 'analyze, buffers, format json' : 'format json';
    const r = await c.query<{ 'QUERY PLAN': Explained[] }>(`explain (${opts}) ${sql}`, [...params]);
    return { plan: r.rows[0]!['QUERY PLAN'][0]!, scope };
  } finally {
    await c.query('rollback').catch(() => undefined);
    await c.end();
  }
}

/** A scan node of a plan and the index it reads (if any). */
export type Scan = { nodeType: string; relation: string; index: string | null };

/** Every node of `plan` that reads a relation (Seq Scan, Index Scan, Index Only Scan, Bitmap Heap/Index Scan). */
export function scans(plan: PlanNode): Scan[] {
  const out: Scan[] = [];
  const walk = (n: PlanNode, bitmapRelation?: string) => {
    // a Bitmap Index Scan names only its index; its Bitmap Heap Scan parent names the table
    const relation = n['Relation Name'] ?? (n['Node Type'] === 'Bitmap Index Scan' ? bitmapRelation : undefined);
    if (relation !== undefined && /Scan$/.test(n['Node Type'])) out.push({ nodeType: n['Node Type'], relation, index: n['Index Name'] ?? null });
    for (const child of n.Plans ?? []) walk(child, n['Node Type'] === 'Bitmap Heap Scan' ? n['Relation Name'] : bitmapRelation);
  };
  walk(plan);
  return out;
}

/**
 * The key columns of each index, in order, by index name (from `pg_index`; expressions rendered by
 * `pg_get_indexdef(…, k, true)`).
 */
export async function indexColumns(c: pg.ClientBase): Promise<Map<string, string[]>> {
  const r = await c.query<{ name: string; cols: string[] }>(
    `select ci.relname as name,
            array(select pg_get_indexdef(i.indexrelid, k, true) from generate_series(1, i.indnkeyatts) k order by k) as cols
       from pg_index i join pg_class ci on ci.oid = i.indexrelid
      where ci.relnamespace = 'public'::regnamespace`,
  );
  return new Map(r.rows.map((x) => [x.name, x.cols]));
}

/** A one-line rendering of the scans of a plan: `Index Scan works(works_publisher_created_idx: publisher_id, created_at, id)`. */
export function describeScans(list: Scan[], columns: Map<string, string[]>): string {
  return list.map((s) => `${s.nodeType} ${s.relation}${s.index ? `(${s.index}: ${(columns.get(s.index) ?? []).join(', ')})` : ''}`).join('; ');
}
