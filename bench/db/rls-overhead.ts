/**
 * RLS overhead of the catalog lists (issue 8 §3): the list statement the catalog API sends for a
 * page (captured from MikroORM, {@link captureQueries}), timed (a) as `catalog_app` under RLS, in a
 * transaction opened with `app_begin_request(user, publisher)` as the API does, and (b) the same
 * statement with the filter RLS would add written out — `"<alias>"."publisher_id" = $n` — run by a
 * role that RLS does not apply to. That role is the superuser: the schema owner is subject to FORCE
 * RLS itself (migration 0003), so "as the owner" would measure the policies again. Both run on the
 * same pages, interleaved (alternating which goes first), on one connection each; the creator's
 * statement already names the owner (the API's planner hint), so (b) filters by publisher and owner.
 *
 * Reported: median and p99 of the statement's round trip (client-side, ms) for both, the overhead
 * of the medians in %, and the median of the `app_begin_request` call that RLS adds per request
 * transaction (its own statement, not part of the list's time).
 */
import pg from 'pg';
import { captureQueries, type CapturedQuery } from './plans.ts';
import type { TestApp } from '../../test/catalog-api/helpers.ts';
import type { BenchPublisher } from './catalog-data.ts';

/** What one comparison measured (ms; overhead in %). */
export type OverheadRow = { name: string; samples: number; rlsP50: number; rlsP99: number; plainP50: number; plainP99: number; overheadPct: number; beginRequestP50: number };

/** The `q`-quantile (0..1) of `xs` (nearest rank). */
export function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}

/** `sql` with `"<alias>"."publisher_id" = $<n+1>` added as the first condition of its WHERE (or as its WHERE). */
export function withPublisherFilter(q: CapturedQuery, publisherId: string): CapturedQuery {
  const m = /from "(\w+)" as "(\w+)"/.exec(q.sql);
  if (!m) throw new Error(`not a single-table select: ${q.sql.slice(0, 80)}`);
  const cond = `"${m[2]}"."publisher_id" = $${q.params.length + 1}`;
  const sql = / where /.test(q.sql) ? q.sql.replace(' where ', ` where ${cond} and `) : q.sql.replace(m[0], `${m[0]} where ${cond}`);
  return { sql, params: [...q.params, publisherId] };
}

/**
 * Compare the list of `collection` for `who` over `pages` pages per publisher (first page and the
 * next ones by cursor), `rounds` times each.
 * @throws when a request fails or the statement cannot be found
 */
export async function measureRlsOverhead(
  ta: TestApp,
  urls: { appUrl: string; adminUrl: string },
  publishers: BenchPublisher[],
  who: 'staff' | 'creator',
  collection: 'works' | 'songwriters' | 'recordings',
  opts: { pages: number; rounds: number },
): Promise<OverheadRow> {
  // the statements the API sends for a few pages of each publisher
  const samples: { user: string; publisher: string; q: CapturedQuery }[] = [];
  for (const p of publishers) {
    const user = who === 'staff' ? p.staffUserId : p.creatorUserId;
    let cursor: string | null = null;
    for (let i = 0; i < opts.pages; i++) {
      const url = `/api/v1/${collection}?limit=50${cursor ? `&cursor=${cursor}` : ''}`;
      let body: { next_cursor: string | null } = { next_cursor: null };
      const qs = await captureQueries(ta.orm, async () => {
        const res = await ta.as(user, p.id, { method: 'GET', url });
        if (res.statusCode !== 200) throw new Error(`GET ${url} as ${who}: ${res.statusCode} ${res.body}`);
        body = res.json();
      });
      const q = qs.find((x) => x.sql.startsWith(`select "`) && x.sql.includes(` from "${collection}" `));
      if (!q) throw new Error(`no list statement captured for ${url}`);
      samples.push({ user, publisher: p.id, q });
      cursor = body.next_cursor;
      if (!cursor) break;
    }
  }
  const app = new pg.Client({ connectionString: urls.appUrl });
  const plain = new pg.Client({ connectionString: urls.adminUrl });
  await app.connect();
  await plain.connect();
  const rls: number[] = [];
  const base: number[] = [];
  const begin: number[] = [];
  const timeRls = async (s: (typeof samples)[number]) => {
    await app.query('begin');
    const b0 = performance.now();
    await app.query(`select access_scope from app_begin_request($1::uuid, $2::uuid)`, [s.user, s.publisher]);
    const t0 = performance.now();
    await app.query(s.q.sql, s.q.params);
    rls.push(performance.now() - t0);
    begin.push(t0 - b0);
    await app.query('commit');
  };
  const timePlain = async (s: (typeof samples)[number]) => {
    const q = withPublisherFilter(s.q, s.publisher);
    await plain.query('begin');
    const t0 = performance.now();
    await plain.query(q.sql, q.params);
    base.push(performance.now() - t0);
    await plain.query('commit');
  };
  try {
    // one warm-up pass of each (plans cached, pages in shared buffers), not counted
    for (const s of samples) {
      await timeRls(s);
      await timePlain(s);
    }
    rls.length = base.length = begin.length = 0;
    for (let r = 0; r < opts.rounds; r++) {
      for (const s of samples) {
        if (r % 2 === 0) {
          await timeRls(s);
          await timePlain(s);
        } else {
          await timePlain(s);
          await timeRls(s);
        }
      }
    }
  } finally {
    await app.end();
    await plain.end();
  }
  const r50 = quantile(rls, 0.5);
  const b50 = quantile(base, 0.5);
  return {
    name: `${collection} list, ${who}`,
    samples: rls.length,
    rlsP50: r50,
    rlsP99: quantile(rls, 0.99),
    plainP50: b50,
    plainP99: quantile(base, 0.99),
    overheadPct: (r50 / b50 - 1) * 100,
    beginRequestP50: quantile(begin, 0.5),
  };
}
