/**
 * The full security matrix through the real stack (sidecar → OpenFGA → catalog API → PostgreSQL
 * RLS): every seeded user × list/get/create/update/delete × works/songwriters/recordings × every
 * publisher (own and other), and, for row actions, the row's publisher sent as context or the
 * user's own publisher sent instead. Expected statuses come from test/e2e/policy.ts alone.
 * On every deny the database must be unchanged (fingerprint over the catalog tables, read as the
 * PostgreSQL superuser so RLS cannot hide a change).
 */
import t, { type Test } from 'tap';
import pg from 'pg';
import { randomUUID } from 'node:crypto';
import { startStack, tokenFor, env, type Stack } from './stack.ts';
import {
  ACTIONS,
  PUBLISHER_IDS,
  PUBLISHER_SLUGS,
  RESOURCES,
  SEEDED,
  SUCCESS,
  allowed,
  roleAt,
  type Action,
  type PublisherSlug,
  type Resource,
} from './policy.ts';

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
let base: string;

type Res = { status: number; contentType: string; body: any };
async function call(email: string, method: string, path: string, publisher: PublisherSlug | null, body?: unknown): Promise<Res> {
  const headers: Record<string, string> = { authorization: `Bearer ${await tokenFor(email)}` };
  if (publisher) headers['x-publisher-id'] = PUBLISHER_IDS[publisher];
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${base}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    /* keep the text */
  }
  return { status: res.status, contentType: res.headers.get('content-type') ?? '', body: parsed };
}

/** The user who creates fixture rows in a publisher: its admin (the system admin where none). */
function fixtureCreator(p: PublisherSlug): string {
  return Object.keys(SEEDED).find((e) => SEEDED[e]!.roles[p] === 'admin') ?? 'sysadmin@example.com';
}

const workFor = new Map<string, string>(); // `${email}|${publisher}` or publisher → a work id the creator of the row can see
function payload(resource: Resource, tag: string, workId: string): Record<string, unknown> {
  switch (resource) {
    case 'works':
      return { title: `Matrix ${tag}`, language: 'en' };
    case 'songwriters':
      return { first_name: 'Matrix', last_name: tag };
    case 'recordings':
      return { title: `Matrix ${tag}`, work_id: workId, duration_ms: 180_000 };
  }
}
function patch(resource: Resource, tag: string): Record<string, unknown> {
  return resource === 'songwriters' ? { last_name: `Patched ${tag}` } : { title: `Patched ${tag}` };
}

/** Create a row in `publisher` as `email` through the sidecar; @throws unless 201. */
async function createRow(email: string, publisher: PublisherSlug, resource: Resource): Promise<string> {
  const tag = randomUUID().slice(0, 8);
  const work = workFor.get(`${email}|${publisher}`) ?? workFor.get(publisher) ?? '';
  const res = await call(email, 'POST', `/api/v1/${resource}`, publisher, payload(resource, tag, work));
  if (res.status !== 201) throw new Error(`fixture ${resource} in ${publisher} as ${email}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body.id as string;
}

t.before(async () => {
  await admin.connect();
  stack = await startStack();
  base = stack.sidecars[0]!.url;
  for (const p of PUBLISHER_SLUGS) workFor.set(p, await createRow(fixtureCreator(p), p, 'works'));
  for (const c of ['creator1@songtrust.example', 'creator2@songtrust.example']) {
    workFor.set(`${c}|songtrust`, await createRow(c, 'songtrust', 'works'));
  }
});
t.teardown(async () => {
  await stack?.stop();
  await admin.end();
});

async function expectStatus(
  t: Test,
  label: string,
  expected: number,
  run: () => Promise<Res>,
): Promise<void> {
  const before = expected >= 400 ? await fingerprint() : '';
  const res = await run();
  t.equal(res.status, expected, `${label} → ${expected}${res.status !== expected ? ` (got ${res.status}: ${JSON.stringify(res.body)})` : ''}`);
  if (expected >= 400) {
    t.match(res.contentType, /^application\/problem\+json/, `${label}: problem+json`);
    t.equal(await fingerprint(), before, `${label}: database unchanged`);
  }
}

for (const email of Object.keys(SEEDED)) {
  t.test(email, async (t) => {
    const ownPublishers = PUBLISHER_SLUGS.filter((p) => SEEDED[email]!.roles[p]);
    for (const resource of RESOURCES) {
      for (const p of PUBLISHER_SLUGS) {
        for (const action of ACTIONS) {
          const owners = roleAt(email, p) === 'creator' && action !== 'list' && action !== 'create' ? [true, false] : [false];
          for (const ownsRow of owners) {
            const may = allowed(email, p, action, ownsRow);
            const label = `${action} ${resource} @${p}${owners.length > 1 ? (ownsRow ? ' (own row)' : " (another's row)") : ''}`;
            if (action === 'list') {
              await expectStatus(t, label, may ? 200 : 403, () => call(email, 'GET', `/api/v1/${resource}`, p));
              continue;
            }
            if (action === 'create') {
              const work = workFor.get(`${email}|${p}`) ?? workFor.get(p)!;
              await expectStatus(t, label, may ? 201 : 403, () =>
                call(email, 'POST', `/api/v1/${resource}`, p, payload(resource, randomUUID().slice(0, 8), work)),
              );
              continue;
            }
            // Row actions: a fresh row per case, so deletes do not disturb later cases.
            const otherCreator = email === 'creator1@songtrust.example' ? 'creator2@songtrust.example' : 'creator1@songtrust.example';
            const rowCreator = roleAt(email, p) === 'creator' ? (ownsRow ? email : otherCreator) : fixtureCreator(p);
            const id = await createRow(rowCreator, p, resource);
            const method = action === 'get' ? 'GET' : action === 'update' ? 'PATCH' : 'DELETE';
            const body = action === 'update' ? patch(resource, randomUUID().slice(0, 8)) : undefined;
            // 1. the row's own publisher as context
            await expectStatus(t, label, may ? SUCCESS[action] : 403, () => call(email, method, `/api/v1/${resource}/${id}`, p, body));
            // 2. another publisher of the user's as context: the PDP may allow (the user reaches the
            //    row through p), but the catalog API then applies the role the user has in that
            //    context (403 when it does not allow the action) and RLS hides the row (404).
            for (const other of ownPublishers.filter((o) => o !== p)) {
              if (may && action === 'delete') continue; // already deleted above
              const expected = may && allowed(email, other, action, true) ? 404 : 403;
              await expectStatus(t, `${label} with context @${other}`, expected, () =>
                call(email, method, `/api/v1/${resource}/${id}`, other, body),
              );
            }
          }
        }
      }
    }
  });
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
