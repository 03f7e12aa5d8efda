/**
 * The relationship outbox relay against real PostgreSQL (the seeded outbox plus rows produced by API
 * requests). The OpenFGA side is a recording sink — the database is real, the relay is real.
 */
import t from 'tap';
import type pg from 'pg';
import { PUBLISHERS, USERS } from '../../migrations/seed/demo.ts';
import { OutboxRelay, splitIntoRuns, type RelationshipSink, type Tuple } from '../../catalog-api/src/outbox/relay.ts';
import { createOrm } from '../../catalog-api/src/db/orm.ts';
import { adminClient, buildTestApp, createTestDb, testConfig, type TestDb } from './helpers.ts';

const DMP = PUBLISHERS.find((p) => p.slug === 'dmp')!.id;
const EDITOR = USERS.find((u) => u.email === 'editor@dmp.example')!.id;
const ADMIN = USERS.find((u) => u.email === 'admin@dmp.example')!.id;

type Call = { writes: Tuple[]; deletes: Tuple[] };
class RecordingSink implements RelationshipSink {
  calls: Call[] = [];
  failWith: Error | null = null;
  async write(change: { writes?: Tuple[]; deletes?: Tuple[] }): Promise<void> {
    if (this.failWith) throw this.failWith;
    this.calls.push({ writes: change.writes ?? [], deletes: change.deletes ?? [] });
  }
  get tuples(): string[] {
    return this.calls.flatMap((c) => [...c.writes.map((x) => `+${x.object}#${x.relation}@${x.user}`), ...c.deletes.map((x) => `-${x.object}#${x.relation}@${x.user}`)]);
  }
}

let db: TestDb;
let su: pg.Client;
t.before(async () => {
  db = await createTestDb('relay');
  su = await adminClient(db);
});
t.teardown(async () => {
  await su?.end();
  await db?.drop();
});

const pending = async () => (await su.query<{ n: number }>(`select count(*)::int as n from authz_outbox where delivered_at is null`)).rows[0]!.n;

t.test('splitIntoRuns: a tuple never repeats within a run; order is kept', async (t) => {
  const r = (object: string, relation = 'publisher', subject = 'publisher:p') => ({ object, relation, subject });
  const rows = [r('work:1'), r('work:2'), r('work:1'), r('work:3'), r('work:2')];
  const runs = splitIntoRuns(rows);
  t.same(runs.map((x) => x.map((y) => y.object)), [['work:1', 'work:2'], ['work:1', 'work:3', 'work:2']]);
  t.same(runs.flat(), rows);
  t.same(splitIntoRuns([]), []);
});

t.test('a failing sink: nothing is marked delivered, attempts and last_error are recorded', async (t) => {
  const orm = await createOrm(testConfig(db), 'jobs');
  t.teardown(() => orm.close(true));
  const sink = new RecordingSink();
  sink.failWith = new Error('OpenFGA is down');
  const before = await pending();
  t.ok(before > 1000, `the seed left ${before} rows pending`);
  const result = await new OutboxRelay({ orm, sink }).drain();
  t.equal(result.delivered, 0);
  t.equal(result.failed, 100, 'the first batch failed');
  t.match(result.error, /OpenFGA is down/);
  t.equal(await pending(), before, 'no row lost or skipped');
  const { rows } = await su.query(`select attempts, last_error from authz_outbox order by id limit 1`);
  t.same(rows[0], { attempts: 1, last_error: 'Error: OpenFGA is down' });
});

t.test('drain delivers everything in id order, in batches of ≤ 100, exactly once', async (t) => {
  const orm = await createOrm(testConfig(db), 'jobs');
  t.teardown(() => orm.close(true));
  const expected = (await su.query<{ op: string; object: string; relation: string; subject: string }>(
    `select operation as op, object, relation, subject from authz_outbox where delivered_at is null order by id`,
  )).rows.map((r) => `${r.op === 'write' ? '+' : '-'}${r.object}#${r.relation}@${r.subject}`);
  const sink = new RecordingSink();
  const result = await new OutboxRelay({ orm, sink, batchSize: 100 }).drain();
  t.equal(result.delivered, expected.length);
  t.equal(result.failed, 0);
  t.ok(sink.calls.every((c) => c.writes.length + c.deletes.length <= 100), 'no call over 100 tuples');
  // within one call, writes and deletes of distinct tuples commute: compare each call as a set
  // with the next slice of the outbox in id order
  let i = 0;
  let inOrder = true;
  for (const c of sink.calls) {
    const got = [...c.writes.map((x) => `+${x.object}#${x.relation}@${x.user}`), ...c.deletes.map((x) => `-${x.object}#${x.relation}@${x.user}`)].sort();
    const want = expected.slice(i, i + got.length).sort();
    i += got.length;
    if (JSON.stringify(got) !== JSON.stringify(want)) inOrder = false;
  }
  t.ok(inOrder, 'every tuple delivered in the order of the outbox ids');
  t.equal(i, expected.length);
  t.equal(await pending(), 0, 'nothing pending');
  const again = await new OutboxRelay({ orm, sink }).drain();
  t.same(again, { delivered: 0, failed: 0 }, 'a second drain has nothing to do');
  const { rows } = await su.query(`select count(*)::int as n from authz_outbox where delivered_at is null or attempts > 1`);
  t.equal(rows[0].n, 0, 'every row delivered on its first or second attempt');
});

t.test('a tuple written, deleted and written again in one batch goes out in three ordered calls', async (t) => {
  const orm = await createOrm(testConfig(db), 'jobs');
  t.teardown(() => orm.close(true));
  const ta = await buildTestApp(db, { relationshipSink: null });
  t.teardown(() => ta.close());
  const viewer = USERS.find((u) => u.email === 'viewer@dmp.example')!.id;
  const spirit = PUBLISHERS.find((p) => p.slug === 'spirit')!.id;
  const spiritAdmin = USERS.find((u) => u.email === 'owner@spirit.example')!.id;
  const sysAdmin = USERS.find((u) => u.isSystemAdmin)!.id; // adding a non-member needs a system admin
  const add = () => ta.as(sysAdmin, null, { method: 'POST', url: `/api/v1/users/${viewer}/publishers`, payload: { publisher_id: spirit, role: 'viewer' } });
  t.equal((await add()).statusCode, 201);
  t.equal((await ta.as(spiritAdmin, null, { method: 'DELETE', url: `/api/v1/publishers/${spirit}/users/${viewer}` })).statusCode, 204);
  t.equal((await add()).statusCode, 201);
  const sink = new RecordingSink();
  await new OutboxRelay({ orm, sink }).drain();
  const tuple = `publisher:${spirit}#viewer@user:${viewer}`;
  t.same(sink.tuples, [`+${tuple}`, `-${tuple}`, `+${tuple}`]);
  t.equal(sink.calls.length, 3, 'three calls: the writer refuses a tuple twice in one call');
});

t.test('a mutating request delivers its relationships before it answers', async (t) => {
  const sink = new RecordingSink();
  const ta = await buildTestApp(db, { relationshipSink: sink });
  t.teardown(() => ta.close());
  const res = await ta.as(EDITOR, DMP, { method: 'POST', url: '/api/v1/works', payload: { title: 'Delivered first', owner_user_id: ADMIN } });
  t.equal(res.statusCode, 201);
  const id = res.json().id;
  t.same(sink.tuples.sort(), [`+work:${id}#owner@user:${ADMIN}`, `+work:${id}#publisher@publisher:${DMP}`].sort(), 'tuples delivered when the response arrives');
  t.equal(await pending(), 0);
  const del = await ta.as(ADMIN, DMP, { method: 'DELETE', url: `/api/v1/works/${id}` });
  t.equal(del.statusCode, 204);
  t.same(sink.tuples.slice(2).sort(), [`-work:${id}#owner@user:${ADMIN}`, `-work:${id}#publisher@publisher:${DMP}`].sort(), 'soft delete removed them');
  sink.failWith = new Error('down');
  const res2 = await ta.as(EDITOR, DMP, { method: 'POST', url: '/api/v1/songwriters', payload: { last_name: 'Still created' } });
  t.equal(res2.statusCode, 201, 'a delivery failure does not fail the committed request');
  t.equal(await pending(), 1, 'its tuple waits for the next attempt');
  sink.failWith = null;
});

t.test('two relays (two processes) never deliver a row twice', async (t) => {
  const a = await createOrm(testConfig(db), 'jobs');
  const b = await createOrm(testConfig(db), 'jobs');
  t.teardown(async () => {
    await a.close(true);
    await b.close(true);
  });
  await su.query(`select set_config('app.publisher_id', $1, false), set_config('app.access_scope', 'publisher', false)`, [DMP]);
  await su.query(`insert into songwriters (publisher_id, last_name) select $1, 'Bulk ' || g from generate_series(1, 450) g`, [DMP]);
  const before = await pending();
  t.ok(before >= 450);
  const sa = new RecordingSink();
  const sb = new RecordingSink();
  const [ra, rb] = await Promise.all([new OutboxRelay({ orm: a, sink: sa, batchSize: 50 }).drain(), new OutboxRelay({ orm: b, sink: sb, batchSize: 50 }).drain()]);
  t.equal(ra.delivered + rb.delivered, before, 'all delivered');
  const all = [...sa.tuples, ...sb.tuples];
  t.equal(new Set(all).size, all.length, 'no tuple twice');
  t.equal(await pending(), 0);
});
