/**
 * Catalog routes against real PostgreSQL with the migrated schema, RLS and the demo seed:
 * CRUD happy paths, validation (400 malformed / 422 semantic, with field + reason), conflicts,
 * keyset pagination, and isolation — publisher A cannot see B's rows, RLS (not application code)
 * is what stops it, and creators see only their own rows.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { PUBLISHERS, USERS } from '../../migrations/seed/demo.ts';
import { withRequestTransaction } from '../../catalog-api/src/db/context.ts';
import { useSuite } from './helpers.ts';

const uid = (email: string) => USERS.find((u) => u.email === email)!.id;
const pid = (slug: string) => PUBLISHERS.find((p) => p.slug === slug)!.id;
const DMP = pid('dmp');
const SPIRIT = pid('spirit');
const SONGTRUST = pid('songtrust');
const ADMIN = uid('admin@dmp.example');
const EDITOR = uid('editor@dmp.example');
const VIEWER = uid('viewer@dmp.example');
const SPIRIT_OWNER = uid('owner@spirit.example');
const CREATOR1 = uid('creator1@songtrust.example');
const CREATOR2 = uid('creator2@songtrust.example');
const SYSADMIN = uid('sysadmin@example.com');

const suite = useSuite(t, 'catalog');

const PROBLEM = /^application\/problem\+json/;

t.test('songwriters + works + recordings: create, get, list, update, soft delete', async (t) => {
  const sw1 = await suite.ta.as(EDITOR, DMP, { method: 'POST', url: '/api/v1/songwriters', payload: { first_name: 'Ada', last_name: 'Lovelace', ipi_name_number: '00014107338', pro: 'ASCAP' } });
  t.equal(sw1.statusCode, 201, sw1.body);
  const songwriter = sw1.json();
  t.equal(sw1.headers.location, `/api/v1/songwriters/${songwriter.id}`);
  t.match(songwriter, { publisher_id: DMP, created_by: EDITOR, updated_by: EDITOR, ipi_name_number: '00014107338', owner_user_id: null });
  const sw2 = (await suite.ta.as(EDITOR, DMP, { method: 'POST', url: '/api/v1/songwriters', payload: { last_name: 'Hopper' } })).json();

  const created = await suite.ta.as(EDITOR, DMP, {
    method: 'POST',
    url: '/api/v1/works',
    payload: {
      title: 'Analytical Engine Blues',
      iswc: 'T0345246801',
      language: 'EN',
      songwriters: [
        { songwriter_id: songwriter.id, role: 'CA', performance_share: 50, mechanical_share: 50, sync_share: 33.33 },
        { songwriter_id: sw2.id, role: 'C', performance_share: 50, mechanical_share: 50, sync_share: 66.67 },
      ],
    },
  });
  t.equal(created.statusCode, 201, created.body);
  const work = created.json();
  t.equal(work.iswc, 'T-034.524.680-1', 'ISWC returned dotted');
  t.equal(work.language, 'en');
  t.equal(work.songwriters.length, 2);
  t.same(work.songwriters.find((s: any) => s.songwriter_id === songwriter.id), { songwriter_id: songwriter.id, role: 'CA', performance_share: 50, mechanical_share: 50, sync_share: 33.33 });
  const stored = await suite.su.query('select iswc, created_by from works where id = $1', [work.id]);
  t.same(stored.rows[0], { iswc: 'T0345246801', created_by: EDITOR }, 'stored normalised');

  const got = await suite.ta.as(VIEWER, DMP, { method: 'GET', url: `/api/v1/works/${work.id}` });
  t.equal(got.statusCode, 200);
  t.same(got.json(), work, 'GET returns what POST returned');

  const rec = await suite.ta.as(EDITOR, DMP, {
    method: 'POST',
    url: '/api/v1/recordings',
    payload: { title: 'Analytical Engine Blues (live)', isrc: 'us-rc1-76-07839', work_id: work.id, duration_ms: 201_000, release_date: '2024-05-01' },
  });
  t.equal(rec.statusCode, 201, rec.body);
  t.match(rec.json(), { isrc: 'USRC17607839', work_id: work.id, duration_ms: 201000, release_date: '2024-05-01' });

  const patched = await suite.ta.as(ADMIN, DMP, { method: 'PATCH', url: `/api/v1/works/${work.id}`, payload: { title: 'Difference Engine Blues', iswc: 'T-920.464.955-8' } });
  t.equal(patched.statusCode, 200, patched.body);
  t.match(patched.json(), { title: 'Difference Engine Blues', iswc: 'T-920.464.955-8', language: 'en', updated_by: ADMIN, created_by: EDITOR });
  t.equal(patched.json().songwriters.length, 2, 'splits untouched when not sent');

  const resplit = await suite.ta.as(ADMIN, DMP, {
    method: 'PATCH',
    url: `/api/v1/works/${work.id}`,
    payload: { songwriters: [{ songwriter_id: sw2.id, role: 'A', performance_share: 100, mechanical_share: 100, sync_share: 100 }] },
  });
  t.equal(resplit.statusCode, 200, resplit.body);
  t.same(resplit.json().songwriters.map((s: any) => s.songwriter_id), [sw2.id], 'splits replaced');

  const swPatch = await suite.ta.as(EDITOR, DMP, { method: 'PATCH', url: `/api/v1/songwriters/${sw2.id}`, payload: { first_name: 'Grace', ipi_name_number: null } });
  t.equal(swPatch.statusCode, 200);
  t.match(swPatch.json(), { first_name: 'Grace', last_name: 'Hopper', ipi_name_number: null });

  const recPatch = await suite.ta.as(EDITOR, DMP, { method: 'PATCH', url: `/api/v1/recordings/${rec.json().id}`, payload: { duration_ms: 199_000 } });
  t.equal(recPatch.statusCode, 200);
  t.equal(recPatch.json().duration_ms, 199000);

  for (const [path, id] of [['recordings', rec.json().id], ['works', work.id], ['songwriters', songwriter.id]] as const) {
    const del = await suite.ta.as(ADMIN, DMP, { method: 'DELETE', url: `/api/v1/${path}/${id}` });
    t.equal(del.statusCode, 204, `delete ${path}`);
    t.equal(del.body, '', 'no body');
    t.equal((await suite.ta.as(ADMIN, DMP, { method: 'GET', url: `/api/v1/${path}/${id}` })).statusCode, 404, `${path} gone`);
    t.equal((await suite.ta.as(ADMIN, DMP, { method: 'DELETE', url: `/api/v1/${path}/${id}` })).statusCode, 404, `${path} delete again → 404`);
    const row = await suite.su.query(`select deleted_at is not null as deleted from ${path} where id = $1`, [id]);
    t.equal(row.rows[0]?.deleted, true, `${path} soft-deleted, row kept`);
  }
});

t.test('validation: 400 for malformed input, 422 for semantically invalid, with field and reason', async (t) => {
  const post = (url: string, payload: unknown) => suite.ta.as(EDITOR, DMP, { method: 'POST', url, payload: payload as object });
  const bad = async (url: string, payload: unknown, status: number, fields: string[], label: string) => {
    const res = await post(url, payload);
    t.equal(res.statusCode, status, `${label}: ${status} (${res.body})`);
    t.match(res.headers['content-type'], PROBLEM, `${label}: problem+json`);
    const body = res.json();
    t.equal(body.type, `https://errors.music-publishing.example/${status === 422 ? 'validation' : 'bad-request'}`);
    for (const f of fields) t.ok(body.errors?.some((e: any) => e.field === f && typeof e.reason === 'string' && e.reason.length > 0), `${label}: error for ${f}`);
  };
  await bad('/api/v1/works', {}, 400, ['title'], 'missing title');
  await bad('/api/v1/works', { title: 42 }, 400, ['title'], 'title not a string');
  await bad('/api/v1/works', { title: 'x', colour: 'red' }, 400, [], 'unknown field');
  await bad('/api/v1/works', { title: 'x', language: 'english' }, 400, ['language'], 'language');
  await bad('/api/v1/works', { title: 'x', songwriters: [{ songwriter_id: randomUUID(), role: 'ZZ', performance_share: 101, mechanical_share: 0, sync_share: 0 }] }, 400, ['songwriters[0].role', 'songwriters[0].performance_share'], 'role and share range');
  await bad('/api/v1/works', { title: 'x', iswc: 'T-034.524.680-2' }, 422, ['iswc'], 'ISWC check digit');
  await bad('/api/v1/works', { title: 'x', iswc: 'ISWC 123' }, 422, ['iswc'], 'ISWC format');
  await bad('/api/v1/works', { title: 'x', songwriters: [{ songwriter_id: randomUUID(), role: 'CA', performance_share: 10, mechanical_share: 10, sync_share: 10 }] }, 422, ['songwriters[0].songwriter_id'], 'unknown songwriter');

  const { rows } = await suite.su.query<{ id: string }>(`select id from songwriters where publisher_id = $1 and deleted_at is null order by id limit 2`, [DMP]);
  const [a, b] = rows.map((r) => r.id);
  await bad(
    '/api/v1/works',
    {
      title: 'Too much',
      songwriters: [
        { songwriter_id: a, role: 'CA', performance_share: 60, mechanical_share: 50, sync_share: 50 },
        { songwriter_id: b, role: 'CA', performance_share: 40.01, mechanical_share: 50, sync_share: 50 },
      ],
    },
    422,
    ['songwriters.performance_share'],
    'performance shares sum over 100',
  );
  await bad('/api/v1/works', { title: 'dup', songwriters: [a, a].map((id) => ({ songwriter_id: id, role: 'C', performance_share: 10, mechanical_share: 10, sync_share: 10 })) }, 422, ['songwriters[1].songwriter_id'], 'songwriter twice');

  await bad('/api/v1/songwriters', { last_name: 'X', ipi_name_number: '00014107339' }, 422, ['ipi_name_number'], 'IPI check digits');
  await bad('/api/v1/songwriters', { last_name: 'X', ipi_name_number: '1234' }, 422, ['ipi_name_number'], 'IPI format');
  await bad('/api/v1/recordings', { title: 'X', isrc: 'US-RC1-76-0783' }, 422, ['isrc'], 'ISRC format');
  await bad('/api/v1/recordings', { title: 'X', work_id: randomUUID() }, 422, ['work_id'], 'unknown work');
  await bad('/api/v1/recordings', { title: 'X', release_date: '2024-13-01' }, 400, ['release_date'], 'date');
  await bad('/api/v1/recordings', { title: 'X', duration_ms: -5 }, 400, ['duration_ms'], 'duration');

  const notJson = await suite.ta.as(EDITOR, DMP, { method: 'POST', url: '/api/v1/works', headers: { 'content-type': 'application/json' }, payload: '{"title":' });
  t.equal(notJson.statusCode, 400, 'broken JSON');
  t.match(notJson.headers['content-type'], PROBLEM);
  const huge = await suite.ta.as(EDITOR, DMP, { method: 'POST', url: '/api/v1/works', headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ title: 'x'.repeat(1024 * 1024 + 10) }) });
  t.equal(huge.statusCode, 413, 'body over 1 MiB');
  t.equal(huge.json().type, 'https://errors.music-publishing.example/payload-too-large');
  const emptyPatch = await suite.ta.as(EDITOR, DMP, { method: 'PATCH', url: `/api/v1/songwriters/${a}`, payload: {} });
  t.equal(emptyPatch.statusCode, 400, 'empty PATCH');
  const badLimit = await suite.ta.as(EDITOR, DMP, { method: 'GET', url: '/api/v1/works?limit=101' });
  t.equal(badLimit.statusCode, 400);
  t.ok(badLimit.json().errors.some((e: any) => e.field === 'querystring.limit'), 'limit field named');
  const badCursor = await suite.ta.as(EDITOR, DMP, { method: 'GET', url: '/api/v1/works?cursor=garbage' });
  t.equal(badCursor.statusCode, 400);
  t.equal((await suite.ta.as(EDITOR, DMP, { method: 'GET', url: '/api/v1/works/not-a-uuid' })).statusCode, 404, 'non-UUID id → 404');
});

t.test('roles are checked again behind the sidecar: viewers cannot write, editors cannot delete', async (t) => {
  const res = await suite.ta.as(VIEWER, DMP, { method: 'POST', url: '/api/v1/songwriters', payload: { last_name: 'Nope' } });
  t.equal(res.statusCode, 403);
  const { rows } = await suite.su.query<{ id: string }>(`select id from works where publisher_id = $1 and deleted_at is null limit 1`, [DMP]);
  t.equal((await suite.ta.as(VIEWER, DMP, { method: 'PATCH', url: `/api/v1/works/${rows[0]!.id}`, payload: { title: 'x' } })).statusCode, 403);
  t.equal((await suite.ta.as(EDITOR, DMP, { method: 'DELETE', url: `/api/v1/works/${rows[0]!.id}` })).statusCode, 403);
  t.equal((await suite.ta.as(SYSADMIN, DMP, { method: 'POST', url: '/api/v1/songwriters', payload: { last_name: 'Sys' } })).statusCode, 201, 'system admin may');
});

t.test('unique ISWC per publisher → 409; the same ISWC in another publisher is fine', async (t) => {
  const iswc = 'T-123.456.789-4';
  t.equal((await suite.ta.as(EDITOR, DMP, { method: 'POST', url: '/api/v1/works', payload: { title: 'One', iswc } })).statusCode, 201);
  const dup = await suite.ta.as(ADMIN, DMP, { method: 'POST', url: '/api/v1/works', payload: { title: 'Two', iswc: 'T1234567894' } });
  t.equal(dup.statusCode, 409, dup.body);
  t.equal(dup.json().type, 'https://errors.music-publishing.example/conflict');
  t.equal((await suite.ta.as(SPIRIT_OWNER, SPIRIT, { method: 'POST', url: '/api/v1/works', payload: { title: 'Other', iswc } })).statusCode, 201);
});

t.test('keyset pagination: stable, complete, no duplicates, unaffected by inserts on earlier pages', async (t) => {
  const { rows } = await suite.su.query<{ n: number }>(`select count(*)::int as n from works where publisher_id = $1 and deleted_at is null`, [SPIRIT]);
  const total = rows[0]!.n;
  const seen: string[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const res = await suite.ta.as(SPIRIT_OWNER, SPIRIT, { method: 'GET', url: `/api/v1/works?limit=40${cursor ? `&cursor=${cursor}` : ''}` });
    t.equal(res.statusCode, 200);
    const body = res.json();
    t.ok(body.items.length <= 40);
    seen.push(...body.items.map((w: any) => w.id));
    cursor = body.next_cursor;
    pages++;
    if (pages === 2) {
      // a row created now sorts after everything seen so far; it shows up at the end, nothing shifts
      await suite.ta.as(SPIRIT_OWNER, SPIRIT, { method: 'POST', url: '/api/v1/works', payload: { title: 'Late arrival' } });
    }
  } while (cursor && pages < 100);
  t.equal(new Set(seen).size, seen.length, 'no duplicates');
  t.equal(seen.length, total + 1, 'every work once, including the late arrival');
  const again = (await suite.ta.as(SPIRIT_OWNER, SPIRIT, { method: 'GET', url: '/api/v1/works?limit=40' })).json();
  t.same(again.items.map((w: any) => w.id), seen.slice(0, 40), 'first page is stable');
  const defaults = (await suite.ta.as(SPIRIT_OWNER, SPIRIT, { method: 'GET', url: '/api/v1/songwriters' })).json();
  t.ok(defaults.items.length <= 50, 'default limit 50');
  const recs = (await suite.ta.as(SPIRIT_OWNER, SPIRIT, { method: 'GET', url: '/api/v1/recordings?limit=5' })).json();
  t.equal(recs.items.length, 5);
  t.type(recs.next_cursor, 'string');
  const recs2 = (await suite.ta.as(SPIRIT_OWNER, SPIRIT, { method: 'GET', url: `/api/v1/recordings?limit=5&cursor=${recs.next_cursor}` })).json();
  t.notOk(recs2.items.some((r: any) => recs.items.some((p: any) => p.id === r.id)), 'recording pages do not overlap');
});

t.test("isolation: publisher A's context cannot read or change B's rows (404)", async (t) => {
  const { rows } = await suite.su.query<{ id: string }>(`select id from works where publisher_id = $1 and deleted_at is null limit 1`, [SONGTRUST]);
  const foreign = rows[0]!.id;
  for (const [method, payload] of [['GET', undefined], ['PATCH', { title: 'hijacked' }], ['DELETE', undefined]] as const) {
    const res = await suite.ta.as(ADMIN, DMP, { method, url: `/api/v1/works/${foreign}`, ...(payload ? { payload } : {}) });
    t.equal(res.statusCode, 404, `${method} B's work in A's context → 404`);
    t.match(res.headers['content-type'], PROBLEM);
  }
  const after = await suite.su.query(`select title, deleted_at from works where id = $1`, [foreign]);
  t.not(after.rows[0].title, 'hijacked', 'unchanged');
  t.equal(after.rows[0].deleted_at, null, 'not deleted');
  // the system admin in Songtrust's context can see it: the 404 was about context, not existence
  t.equal((await suite.ta.as(SYSADMIN, SONGTRUST, { method: 'GET', url: `/api/v1/works/${foreign}` })).statusCode, 200);
  // a user with no membership in the asserted publisher → 403
  const noMember = await suite.ta.as(ADMIN, SONGTRUST, { method: 'GET', url: `/api/v1/works/${foreign}` });
  t.equal(noMember.statusCode, 403);
  t.equal(noMember.json().type, 'https://errors.music-publishing.example/forbidden');
  // lists never contain another publisher's rows
  const list = (await suite.ta.as(ADMIN, DMP, { method: 'GET', url: '/api/v1/works?limit=100' })).json();
  t.ok(list.items.length > 0 && list.items.every((w: any) => w.publisher_id === DMP), 'DMP list holds only DMP works');
});

t.test('RLS, not application code, is what hides the row: raw SQL in the request transaction', async (t) => {
  const { rows } = await suite.su.query<{ id: string }>(`select id from works where publisher_id = $1 and deleted_at is null limit 1`, [SONGTRUST]);
  const foreign = rows[0]!.id;
  const raw = `select * from works where id = $1`; // no publisher filter, no deleted_at filter
  const asDmp = await withRequestTransaction(suite.ta.orm, { userId: ADMIN, publisherId: DMP }, (tx) => tx.sql(raw, [foreign]));
  t.equal(asDmp.length, 0, "A's context: zero rows");
  const asSongtrust = await withRequestTransaction(suite.ta.orm, { userId: SYSADMIN, publisherId: SONGTRUST }, (tx) => tx.sql(raw, [foreign]));
  t.equal(asSongtrust.length, 1, "B's context: the row (control)");
  const all = await withRequestTransaction(suite.ta.orm, { userId: ADMIN, publisherId: DMP }, (tx) =>
    tx.sql<{ n: number; foreign: number }>(`select count(*)::int as n, count(*) filter (where publisher_id <> $1)::int as foreign from works`, [DMP]),
  );
  t.ok(all[0]!.n > 0, 'A sees its own works');
  t.equal(all[0]!.foreign, 0, 'and none of anyone else’s, with no WHERE clause at all');
  const settings = await withRequestTransaction(suite.ta.orm, { userId: CREATOR1, publisherId: SONGTRUST }, (tx) =>
    tx.sql<{ p: string; u: string; s: string }>(`select app_current_publisher() as p, app_current_user() as u, app_current_scope() as s`),
  );
  t.same(settings[0], { p: SONGTRUST, u: CREATOR1, s: 'own' }, 'context set in the transaction (app_begin_request, migration 0011)');
  const outside = await suite.ta.orm.em.fork().getConnection().execute(`select app_current_publisher() as p`);
  t.ok(!outside[0]?.p, 'and gone after it (recorded for that transaction only)');
  await t.rejects(
    withRequestTransaction(suite.ta.orm, { userId: CREATOR1, publisherId: SONGTRUST }, (tx) => tx.sql(`select * from app_begin_request($1, $2)`, [ADMIN, DMP])),
    { code: '42501' },
    'a handler cannot open a second context in its transaction',
  );
});

t.test('creator scope: sees and changes only own rows; always owns what they create', async (t) => {
  const list = async (who: string) => {
    const ids: any[] = [];
    let cursor: string | null = null;
    do {
      const body: any = (await suite.ta.as(who, SONGTRUST, { method: 'GET', url: `/api/v1/works?limit=100${cursor ? `&cursor=${cursor}` : ''}` })).json();
      ids.push(...body.items);
      cursor = body.next_cursor;
    } while (cursor);
    return ids;
  };
  const mine = await list(CREATOR1);
  const { rows } = await suite.su.query<{ n: number }>(`select count(*)::int as n from works where owner_user_id = $1 and deleted_at is null`, [CREATOR1]);
  t.equal(mine.length, rows[0]!.n, 'exactly their works');
  t.ok(mine.every((w) => w.owner_user_id === CREATOR1), 'all owned by them');

  const created = await suite.ta.as(CREATOR1, SONGTRUST, { method: 'POST', url: '/api/v1/works', payload: { title: 'My song' } });
  t.equal(created.statusCode, 201);
  t.equal(created.json().owner_user_id, CREATOR1, 'owner forced to the creator');
  const handOver = await suite.ta.as(CREATOR1, SONGTRUST, { method: 'POST', url: '/api/v1/works', payload: { title: 'Yours', owner_user_id: CREATOR2 } });
  t.equal(handOver.statusCode, 403, 'cannot create for someone else');

  const { rows: theirs } = await suite.su.query<{ id: string }>(`select id from works where owner_user_id = $1 and deleted_at is null limit 1`, [CREATOR2]);
  t.equal((await suite.ta.as(CREATOR1, SONGTRUST, { method: 'GET', url: `/api/v1/works/${theirs[0]!.id}` })).statusCode, 404, "another creator's work is invisible");
  t.equal((await suite.ta.as(CREATOR1, SONGTRUST, { method: 'PATCH', url: `/api/v1/works/${theirs[0]!.id}`, payload: { title: 'mine now' } })).statusCode, 404, 'and unchangeable');
  t.equal((await suite.ta.as(CREATOR1, SONGTRUST, { method: 'PATCH', url: `/api/v1/works/${created.json().id}`, payload: { title: 'My song v2' } })).statusCode, 200, 'own work changeable');
  const del = await suite.ta.as(CREATOR1, SONGTRUST, { method: 'DELETE', url: `/api/v1/works/${created.json().id}` });
  t.equal(del.statusCode, 403, 'a creator cannot soft-delete');
  // RLS alone also refuses it (WITH CHECK keeps creator rows live), independent of the role check
  await t.rejects(
    withRequestTransaction(suite.ta.orm, { userId: CREATOR1, publisherId: SONGTRUST }, (tx) =>
      tx.sql(`update works set deleted_at = now() where id = $1`, [created.json().id]),
    ),
    { code: '42501' },
    'RLS: new row violates row-level security policy',
  );
});

t.test('keyset pagination keeps microseconds: rows created within one millisecond are neither skipped nor repeated', async (t) => {
  // three works whose created_at differ by a microsecond (a JavaScript Date would make them equal)
  const base = '2031-05-05 05:05:05.123';
  const ids: string[] = [randomUUID(), randomUUID(), randomUUID()].sort();
  for (const [i, id] of ids.entries()) {
    await suite.su.query(`insert into works (id, publisher_id, title, created_at) values ($1, $2, $3, $4::timestamptz)`, [id, SPIRIT, `Micro ${i}`, `${base}${i + 1}+00`]);
  }
  const seen: string[] = [];
  let cursor: string | null = null;
  do {
    const res = await suite.ta.as(SPIRIT_OWNER, SPIRIT, { method: 'GET', url: `/api/v1/works?limit=1${cursor ? `&cursor=${cursor}` : ''}` });
    const body = res.json();
    seen.push(...body.items.map((w: { id: string }) => w.id));
    cursor = body.next_cursor;
  } while (cursor && seen.length < 10_000);
  t.same(seen.filter((id) => ids.includes(id)), ids, 'each of the three once, in created_at order');
  t.equal(new Set(seen).size, seen.length, 'no row repeated');
  const one = (await suite.ta.as(SPIRIT_OWNER, SPIRIT, { method: 'GET', url: `/api/v1/works/${ids[1]}` })).json();
  t.equal(one.created_at, '2031-05-05T05:05:05.1232+00:00', 'created_at keeps its microseconds in the answer');
});

t.test('owner_user_id: an unknown user and a user of another publisher get the same answer, and no owner tuple is written', async (t) => {
  const answers = [];
  for (const owner of [randomUUID(), CREATOR1]) {
    const res = await suite.ta.as(EDITOR, DMP, { method: 'POST', url: '/api/v1/works', payload: { title: 'Whose?', owner_user_id: owner } });
    answers.push({ status: res.statusCode, errors: res.json().errors });
  }
  t.same(answers[0], answers[1], 'indistinguishable');
  t.same(answers[0], { status: 422, errors: [{ field: 'owner_user_id', reason: 'no such member of this publisher' }] });
  const { rows } = await suite.su.query(`select 1 from works where title = 'Whose?'`);
  t.equal(rows.length, 0, 'no row written, so no owner tuple for the stranger');
  const member = await suite.ta.as(EDITOR, DMP, { method: 'POST', url: '/api/v1/works', payload: { title: 'Viewer owns it', owner_user_id: VIEWER } });
  t.equal(member.statusCode, 201, 'a member of the publisher may own a row');
  t.equal(member.json().owner_user_id, VIEWER);
});
