/**
 * The full security matrix through the real stack (sidecar → OpenFGA → catalog API → PostgreSQL
 * RLS): every seeded user × list/get/create/update/delete × works/songwriters/recordings × every
 * publisher (own and other), and, for row actions, the row's publisher sent as context or the
 * user's own publisher sent instead. Expected statuses come from test/e2e/policy.ts alone.
 * On every deny the database must be unchanged (fingerprint over the catalog tables, read as the
 * PostgreSQL superuser so RLS cannot hide a change).
 */
import t from 'tap';
import pg from 'pg';
import { startStack, env, type Stack } from './stack.ts';
import { PUBLISHER_IDS, PUBLISHER_SLUGS, SEEDED, type PublisherSlug } from './policy.ts';
import { call as callAt, matrixFixtures, userMatrix, type Fixtures, type MatrixTarget, type Res } from './matrix-cases.ts';

const admin = new pg.Client({ connectionString: env('PG_ADMIN_URL').replace(/\/[^/]*$/, `/${new URL(env('DATABASE_URL')).pathname.slice(1)}`) });

/** md5 over every row of the tables a catalog request could change. */
async function fingerprint(): Promise<string> {
  const { rows } = await admin.query<{ f: string }>(`
    select md5(concat_ws('|',
      (select coalesce(string_agg(w::text, ',' order by w.id), '') from works w),
      (select coalesce(string_agg(s::text, ',' order by s.id), '') from songwriters s),
      (select coalesce(string_agg(r::text, ',' order by r.id), '') from recordings r),
      (select coalesce(string_agg(ws::text, ',' order by ws.work_id, ws.songwriter_id), '') from work_songwriters ws),
      (select coalesce(string_agg(m::text, ',' order by m.publisher_id, m.user_id), '') from user_publishers m)
    )) as f`);
  return rows[0]!.f;
}

let stack: Stack;
const target: MatrixTarget = { base: () => stack.sidecars[0]!.url, fingerprint };
let fixtures: Fixtures;
const call = (email: string, method: string, path: string, publisher: PublisherSlug | null, body?: unknown): Promise<Res> => callAt(target, email, method, path, publisher, body);

t.before(async () => {
  await admin.connect();
  stack = await startStack();
  fixtures = await matrixFixtures(target);
});
t.teardown(async () => {
  await stack?.stop();
  await admin.end();
});

for (const email of Object.keys(SEEDED)) {
  t.test(email, (t) => userMatrix(t, target, fixtures, email));
}

t.test('list results stay inside the publisher context', async (t) => {
  for (const p of PUBLISHER_SLUGS) {
    const res = await call('sysadmin@example.com', 'GET', '/api/v1/works?limit=100', p);
    t.equal(res.status, 200);
    t.ok(res.body.items.length > 0, `${p} has works`);
    t.ok(
      res.body.items.every((w: any) => w.publisher_id === PUBLISHER_IDS[p]),
      `every work listed under ${p} belongs to ${p}`,
    );
  }
});

t.test('creators see and change only their own works', async (t) => {
  const { rows } = await admin.query<{ id: string; email: string; n: number }>(`
    select u.id, u.email, count(w.*)::int as n from users u
    join works w on w.owner_user_id = u.id and w.deleted_at is null
    where u.email in ('creator1@songtrust.example','creator2@songtrust.example') group by u.id, u.email`);
  t.equal(rows.length, 2, 'both creators own works');
  for (const row of rows) {
    const seen: any[] = [];
    let cursor: string | null = null;
    do {
      const res: Res = await call(row.email, 'GET', `/api/v1/works?limit=100${cursor ? `&cursor=${cursor}` : ''}`, 'songtrust');
      t.equal(res.status, 200);
      seen.push(...res.body.items);
      cursor = res.body.next_cursor;
    } while (cursor);
    t.equal(seen.length, row.n, `${row.email} lists exactly their ${row.n} works`);
    t.ok(seen.every((w) => w.owner_user_id === row.id), `${row.email} sees only works they own`);
  }
  const [c1, c2] = rows.sort((a, b) => a.email.localeCompare(b.email));
  const { rows: theirs } = await admin.query<{ id: string }>(`select id from works where owner_user_id = $1 and deleted_at is null limit 1`, [c2!.id]);
  const before = await fingerprint();
  const res = await call(c1!.email, 'PATCH', `/api/v1/works/${theirs[0]!.id}`, 'songtrust', { title: 'hijacked' });
  t.equal(res.status, 403, "creator1 cannot change creator2's work");
  t.equal(await fingerprint(), before, 'database unchanged');
});
