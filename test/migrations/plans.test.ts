/**
 * Query plans of the catalog lists at scale (issue 8 §3; migration 0013): on a generated catalog of
 * 20,000 works (20 publishers × 1,000, with songwriters, splits and recordings; VACUUM ANALYZE'd —
 * realistic statistics, no planner settings changed), the SQL the catalog API really sends for a
 * page of 50 (captured from MikroORM) is EXPLAINed as catalog_app under the request context the API
 * sets (app_begin_request). Every list reads its table through an index led by publisher_id —
 * and by (publisher_id, owner_user_id) for a creator — in keyset order, with no Seq Scan on any
 * catalog table; a get reads one row by key.
 */
import t, { type Test } from 'tap';
import { createTestDb, type TestDb } from './db.ts';
import { migrateUp, migrateDown } from '../../migrations/migrate.ts';
import { benchPublishers, loadCatalog, type CatalogSize } from '../../bench/db/catalog-data.ts';
import { captureQueries, explainAs, indexColumns, scans, describeScans, type Scan } from '../../bench/db/plans.ts';
import { adminClient, buildTestApp, type TestApp } from '../catalog-api/helpers.ts';
import type pg from 'pg';

const SIZE: CatalogSize = { publishers: 20, works: 20_000, creators: 10 };
const CATALOG = new Set(['works', 'songwriters', 'recordings', 'work_songwriters']);
const COLLECTIONS = ['works', 'songwriters', 'recordings'] as const;

let db: TestDb;
let ta: TestApp;
let su: pg.Client;
let columns: Map<string, string[]>;

t.before(async () => {
  db = await createTestDb('plans');
  await migrateUp(db.ownerUrl);
  await loadCatalog(db.ownerUrl, SIZE);
  ta = await buildTestApp({ ...db, drop: db.drop });
  su = await adminClient(db);
  columns = await indexColumns(su);
});
t.teardown(async () => {
  await su?.end();
  await ta?.close();
  await db?.drop();
});

/** The plans of the statements one API request sends, with the request's answer. */
async function plansOf(user: string, publisher: string, url: string) {
  let res: Awaited<ReturnType<TestApp['as']>> | undefined;
  const queries = await captureQueries(ta.orm, async () => {
    res = await ta.as(user, publisher, { method: 'GET', url });
  });
  const plans = [];
  for (const q of queries) plans.push({ sql: q.sql, ...(await explainAs(db.appUrl, { user, publisher }, q.sql, q.params)) });
  return { res: res!, plans };
}

/** The scans of `list` on `table`, and a check that none of them is a Seq Scan of a catalog table. */
function checkNoSeqScan(tt: Test, list: Scan[], what: string) {
  const seq = list.filter((s) => CATALOG.has(s.relation) && s.nodeType === 'Seq Scan');
  tt.same(seq, [], `${what}: no Seq Scan on a catalog table (${describeScans(list, columns)})`);
}

t.test('the list of each collection is an index scan led by publisher_id (and the owner for a creator)', async (t) => {
  const [p] = await benchPublishers(su, SIZE);
  for (const collection of COLLECTIONS) {
    for (const [who, user] of [['staff', p!.staffUserId], ['creator', p!.creatorUserId]] as const) {
      const first = await ta.as(user, p!.id, { method: 'GET', url: `/api/v1/${collection}?limit=50` });
      t.equal(first.statusCode, 200, `${collection} as ${who}: first page`);
      const page = first.json() as { items: { owner_user_id: string | null }[]; next_cursor: string | null };
      t.ok(page.items.length > 0, `${collection} as ${who}: rows on the first page`);
      if (who === 'creator') t.ok(page.items.every((i) => i.owner_user_id === user), `${collection}: a creator sees only their own rows`);
      else t.equal(page.items.length, 50, `${collection}: a full page for staff`);
      // a later page (keyset condition) when there is one, else the first again
      const url = `/api/v1/${collection}?limit=50${page.next_cursor ? `&cursor=${page.next_cursor}` : ''}`;
      const { res, plans } = await plansOf(user, p!.id, url);
      t.equal(res.statusCode, 200, `${collection} as ${who}: ${url}`);
      const list = plans.find((x) => new RegExp(`^select .* from "${collection}"`).test(x.sql));
      t.ok(list, `${collection} as ${who}: the list query was captured`);
      t.equal(list!.scope, who === 'staff' ? 'publisher' : 'own', 'explained under the same request context');
      const all = plans.flatMap((x) => scans(x.plan.Plan));
      checkNoSeqScan(t, all, `${collection} as ${who}`);
      // a Bitmap Heap Scan names no index: its Bitmap Index Scan child does
      const main = scans(list!.plan.Plan).filter((s) => s.relation === collection && s.nodeType !== 'Bitmap Heap Scan');
      t.ok(main.length > 0, `${collection} as ${who}: the table is read`);
      for (const s of main) {
        const cols = columns.get(s.index ?? '') ?? [];
        t.match(s.nodeType, /^(Index Scan|Index Only Scan|Bitmap Index Scan)$/, `${collection} as ${who}: ${s.nodeType} on ${s.index}`);
        t.equal(cols[0], 'publisher_id', `${collection} as ${who}: ${s.index} is led by publisher_id`);
        if (who === 'creator') t.equal(cols[1], 'owner_user_id', `${collection} as creator: ${s.index} continues with owner_user_id`);
      }
    }
  }
});

t.test('a get reads by key (publisher_id, id) or id, no Seq Scan', async (t) => {
  const [, p] = await benchPublishers(su, SIZE);
  for (const collection of COLLECTIONS) {
    const first = await ta.as(p!.staffUserId, p!.id, { method: 'GET', url: `/api/v1/${collection}?limit=1` });
    const id = (first.json() as { items: { id: string }[] }).items[0]!.id;
    const { res, plans } = await plansOf(p!.staffUserId, p!.id, `/api/v1/${collection}/${id}`);
    t.equal(res.statusCode, 200, `GET ${collection}/:id`);
    const all = plans.flatMap((x) => scans(x.plan.Plan));
    checkNoSeqScan(t, all, `get ${collection}`);
    const byKey = all.filter((s) => s.relation === collection).map((s) => (columns.get(s.index ?? '') ?? []).join(', '));
    t.ok(byKey.length > 0 && byKey.every((k) => k === 'id' || k === 'publisher_id, id'), `get ${collection} by (publisher_id, id) or id: ${describeScans(all, columns)}`);
  }
});

t.test('0013 down and up again: the old owner index and policy text come back, then the new ones', async (t) => {
  const has = async (name: string) => (await su.query(`select 1 from pg_class where relname = $1`, [name])).rowCount === 1;
  const policy = async () => (await su.query<{ qual: string }>(`select qual from pg_policies where tablename = 'works' and policyname = 'works_select'`)).rows[0]!.qual;
  t.match(await policy(), /SELECT \(app_current_scope\(\) = 'publisher'::text\)/, 'up: the boolean InitPlan form');
  t.same(await migrateDown(db.ownerUrl), ['0013_catalog_indexes']);
  t.ok(await has('works_publisher_owner_idx'), 'down: the old owner index');
  t.notOk(await has('works_publisher_owner_created_idx'), 'down: the new one dropped');
  t.match(await policy(), /\(\( SELECT app_current_scope\(\) AS \w+\) = 'publisher'::text\)/, 'down: the comparison form of 0011');
  t.same(await migrateUp(db.ownerUrl), ['0013_catalog_indexes']);
  t.ok(await has('works_publisher_owner_created_idx'), 'up again: the new owner index');
});
