/**
 * The metering roll-up and measurements of the catalog API (catalog-api/src/modules/metering,
 * migration 0010) against real PostgreSQL and Redis: counts flushed the way the sidecars flush them
 * become `account_usage` / `api_client_usage` rows exactly — a second roll-up, a concurrent one or a
 * stale write never changes them —, late days and new flushes are picked up, the limits are
 * published for the sidecars, another process's lock makes a run skip, a Redis outage loses
 * nothing; storage and seats are measured per publisher; the functions are catalog_jobs' only (migration 0011).
 */
import t from 'tap';
import { randomBytes, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import type pg from 'pg';
import { publisherId, userId } from '../../migrations/seed/demo.ts';
import { decodeLimit, dirtyKey, limitsKey, meteringScripts, utcDayOf } from '../../policies/src/metering.ts';
import { measure, rollUp, type MeteringDeps } from '../../catalog-api/src/modules/metering/rollup.ts';
import { seatsOf } from '../../catalog-api/src/modules/users/members.service.ts';
import { inTx } from '../migrations/db.ts';
import { adminClient, buildTestApp, createTestDb, type TestApp, type TestDb } from './helpers.ts';

const DMP = publisherId('dmp');
const SPIRIT = publisherId('spirit');
const SONGTRUST = publisherId('songtrust');
const DMP_ADMIN = userId('admin@dmp.example');
const DMP_MANAGER = userId('manager@dmp.example');
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/0';
const prefix = `mtest-${randomUUID()}`;

let db: TestDb;
let ta: TestApp;
let su: pg.Client;
let redis: Redis;
let deps: MeteringDeps;
t.before(async () => {
  db = await createTestDb('metering');
  // the timers are off: the tests run the jobs by hand
  ta = await buildTestApp(db, {}, { REDIS_URL, METERING_KEY_PREFIX: prefix, METERING_ROLLUP_INTERVAL_MS: '0', METERING_MEASURE_INTERVAL_MS: '0' });
  su = await adminClient(db);
  redis = new Redis(REDIS_URL);
  deps = { orm: ta.jobsOrm, authOrm: ta.authOrm, redis, prefix };
});
t.teardown(async () => {
  redis?.disconnect();
  await su?.end();
  await ta?.close();
  await db?.drop();
});

const scripts = () => meteringScripts(redis);
let seq = 0;
/** Flush `calls` (and per-client calls) of `publisher` on `day` like a sidecar process `instance` does. */
const flush = (publisher: string, day: string, calls: number, clients: [string, number][] = [], instance = 'sidecar-1') =>
  scripts().flush(prefix, { publisherId: publisher, day, instance, seq: ++seq, calls, clients: clients.length ? new Map(clients) : null });

const usageRow = async (publisher: string, day: string) =>
  (await su.query(`select api_calls::int, storage_bytes::int, seats_used from account_usage where publisher_id = $1 and day = $2`, [publisher, day])).rows[0] ?? null;
const clientRows = async (publisher: string, day: string) =>
  (await su.query(`select client_id, api_calls::int from api_client_usage where publisher_id = $1 and day = $2 order by client_id`, [publisher, day])).rows;

const today = utcDayOf(Date.now());
const yesterday = utcDayOf(Date.now() - 86_400_000);

let clientId: string;
t.test('an API client of DMP (the per-client counts name it)', async (t) => {
  const reg = await ta.as(DMP_ADMIN, null, { method: 'POST', url: `/api/v1/publishers/${DMP}/api-clients`, payload: { name: 'Metered ingest' } });
  t.equal(reg.statusCode, 201, reg.body);
  clientId = reg.json().client_id;
});

t.test('roll-up: the Redis day totals become the usage rows, exactly, however often it runs', async (t) => {
  await flush(DMP, today, 7, [[clientId, 3]]);
  await flush(DMP, today, 2, [], 'sidecar-2');
  await flush(SPIRIT, today, 5);
  const first = await ta.app.metering.rollUp();
  t.match(first, { publishers: 4, days: 2 });
  t.same(await usageRow(DMP, today), { api_calls: 9, storage_bytes: null, seats_used: null });
  t.same(await clientRows(DMP, today), [{ client_id: clientId, api_calls: 3 }]);
  t.same(await usageRow(SPIRIT, today), { api_calls: 5, storage_bytes: null, seats_used: null });
  t.equal(await redis.zcard(dirtyKey(prefix, DMP)), 0, 'the days written are no longer dirty');

  const second = await ta.app.metering.rollUp();
  t.match(second, { days: 0 }, 'nothing changed: nothing to write');
  await redis.zadd(dirtyKey(prefix, DMP), 1, today); // force a rewrite of the same totals
  t.match(await ta.app.metering.rollUp(), { days: 1 });
  t.same(await usageRow(DMP, today), { api_calls: 9, storage_bytes: null, seats_used: null }, 'rolled up again: still 9');
  t.same(await clientRows(DMP, today), [{ client_id: clientId, api_calls: 3 }]);

  await flush(DMP, today, 4, [[clientId, 1]]);
  await flush(DMP, yesterday, 6); // a sidecar that was cut off from Redis since yesterday
  t.match(await ta.app.metering.rollUp(), { days: 2 });
  t.same(await usageRow(DMP, today), { api_calls: 13, storage_bytes: null, seats_used: null }, 'new calls: the new total');
  t.same(await clientRows(DMP, today), [{ client_id: clientId, api_calls: 4 }]);
  t.same(await usageRow(DMP, yesterday), { api_calls: 6, storage_bytes: null, seats_used: null }, 'a late day is picked up');

  const usage = await ta.as(DMP_MANAGER, null, { method: 'GET', url: `/api/v1/publishers/${DMP}/account/usage?from=${yesterday}&to=${today}` });
  t.equal(usage.statusCode, 200, usage.body);
  t.same(usage.json().days.map((d: { api_calls: number }) => d.api_calls), [6, 13], 'GET …/account/usage shows them');
});

t.test('concurrent roll-ups and stale writes never double count or lower a total', async (t) => {
  await flush(SONGTRUST, today, 11);
  const runs = await Promise.all([rollUp(deps), rollUp(deps), rollUp(deps)]);
  t.ok(runs.some((r) => r !== null), 'one of them ran');
  t.same(await usageRow(SONGTRUST, today), { api_calls: 11, storage_bytes: null, seats_used: null });
  // a writer that read Redis earlier (a smaller total) cannot lower it
  await inTx(db.jobsUrl, null, (c) => c.query(`select metering_set_api_calls($1, $2, 4, '{}', '{}')`, [SONGTRUST, today]), true);
  t.same(await usageRow(SONGTRUST, today), { api_calls: 11, storage_bytes: null, seats_used: null });
});

t.test("another process's roll-up lock: the run skips, and the next one catches up", async (t) => {
  await flush(SPIRIT, today, 1);
  const holder = await adminClient(db);
  t.teardown(() => holder.end());
  await holder.query('begin');
  await holder.query(`select pg_advisory_xact_lock(hashtextextended('metering:rollup', 0))`);
  t.equal(await rollUp(deps), null, 'skipped while another process rolls up');
  t.same(await usageRow(SPIRIT, today), { api_calls: 5, storage_bytes: null, seats_used: null }, 'nothing written');
  await holder.query('commit');
  t.match(await rollUp(deps), { days: 1 });
  t.same(await usageRow(SPIRIT, today), { api_calls: 6, storage_bytes: null, seats_used: null });
});

t.test('Redis unreachable: the roll-up fails, writes nothing, loses nothing', async (t) => {
  await flush(SPIRIT, today, 2);
  const dead = new Redis('redis://127.0.0.1:1/0', { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
  dead.on('error', () => undefined);
  await t.rejects(rollUp({ ...deps, redis: dead }));
  t.same(await usageRow(SPIRIT, today), { api_calls: 6, storage_bytes: null, seats_used: null });
  t.match(await rollUp(deps), { days: 1 }, 'the next run with Redis back');
  t.same(await usageRow(SPIRIT, today), { api_calls: 8, storage_bytes: null, seats_used: null });
});

t.test('the limits are published for the sidecars (unlimited plans have no entry)', async (t) => {
  await su.query(`update accounts set plan_type = 'custom' where publisher_id = $1`, [SPIRIT]);
  t.teardown(() => su.query(`update accounts set plan_type = 'professional' where publisher_id = $1`, [SPIRIT]));
  await ta.app.metering.rollUp();
  const hash = await redis.hgetall(limitsKey(prefix));
  t.same(
    Object.fromEntries(Object.entries(hash).map(([p, v]) => [p, decodeLimit(v)])),
    {
      [DMP]: { callsPerMonth: 50_000_000, overLimit: 'warn' },
      [publisherId('sheer')]: { callsPerMonth: 50_000_000, overLimit: 'warn' },
      [SONGTRUST]: { callsPerMonth: 2_000_000, overLimit: 'block' },
    },
    'enterprise (warn), professional (block); custom is unlimited',
  );
});

t.test('measurements: catalog storage and seats into today’s row', async (t) => {
  t.equal(await ta.app.metering.measure(), 4);
  for (const p of [DMP, SPIRIT, SONGTRUST]) {
    const [expected] = (
      await su.query(
        `select (select coalesce(sum(pg_column_size(x.*)), 0) from works x where publisher_id = $1)
              + (select coalesce(sum(pg_column_size(x.*)), 0) from songwriters x where publisher_id = $1)
              + (select coalesce(sum(pg_column_size(x.*)), 0) from recordings x where publisher_id = $1)
              + (select coalesce(sum(pg_column_size(x.*)), 0) from work_songwriters x where publisher_id = $1) as bytes`,
        [p],
      )
    ).rows;
    const row = await usageRow(p, today);
    t.ok(Number(expected.bytes) > 0, `${p} has catalog rows`);
    t.equal(row.storage_bytes, Number(expected.bytes), 'storage = the rows’ pg_column_size');
    t.equal(row.seats_used, (await seatsOf(ta.authOrm, p)).used, 'seats used = members without API clients + open invitations');
  }
  t.equal((await usageRow(DMP, today)).api_calls, 13, 'the API calls stay');

  const before = (await usageRow(SPIRIT, today)).storage_bytes;
  await su.query(`insert into works (publisher_id, title) values ($1, $2)`, [SPIRIT, randomBytes(1500).toString('base64')]);
  await measure(deps);
  t.ok((await usageRow(SPIRIT, today)).storage_bytes > before + 1000, 'a new work (2000 random characters): more storage');

  const usage = await ta.as(DMP_MANAGER, null, { method: 'GET', url: `/api/v1/publishers/${DMP}/account/usage?from=${today}&to=${today}` });
  t.match(usage.json().days[0], { api_calls: 13, storage_bytes: (await usageRow(DMP, today)).storage_bytes, seats_used: (await seatsOf(ta.authOrm, DMP)).used });
});

t.test("measuring leaves the caller's RLS context as it was", async (t) => {
  const measureThenContext = async (c: pg.Client) => {
    t.ok(Number((await c.query(`select metering_record_measurements($1, $2, 1) as b`, [DMP, '2020-01-01'])).rows[0].b) > 0, "DMP's storage measured");
    return (await c.query(`select app_current_publisher() as p, app_current_user() as u, app_current_scope() as s`)).rows[0];
  };
  // the jobs' role has no context (migration 0011): none afterwards either
  t.same(await inTx(db.jobsUrl, null, measureThenContext), { p: null, u: null, s: null }, 'catalog_jobs: still none');
  // a recorded context (the owner may open one) is put back
  t.same(await inTx(db.ownerUrl, { publisher: SPIRIT, user: DMP_ADMIN, scope: '' }, measureThenContext), { p: SPIRIT, u: DMP_ADMIN, s: null }, 'a request context: back as it was');
});

t.test('the metering functions are catalog_jobs’ only', async (t) => {
  const rows = (
    await su.query(`select p.proname, r.rolname from pg_proc p cross join (values ('catalog_app'), ('catalog_auth'), ('catalog_jobs'), ('public')) r(rolname)
      where p.proname like 'metering\\_%' and p.pronamespace = 'public'::regnamespace
        and (r.rolname = 'public' and exists (select 1 from aclexplode(p.proacl) a where a.grantee = 0 and a.privilege_type = 'EXECUTE')
             or r.rolname <> 'public' and has_function_privilege(r.rolname, p.oid, 'EXECUTE'))
      order by 1, 2`)
  ).rows;
  t.same(rows, [
    { proname: 'metering_publishers', rolname: 'catalog_jobs' },
    { proname: 'metering_record_measurements', rolname: 'catalog_jobs' },
    { proname: 'metering_set_api_calls', rolname: 'catalog_jobs' },
  ]);
  await t.rejects(inTx(db.appUrl, null, (c) => c.query(`insert into account_usage (publisher_id, day, api_calls) values ($1, $2, 1)`, [DMP, '2020-01-02'])), /permission denied/, 'no direct write');
});
