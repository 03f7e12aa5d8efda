/**
 * The audit log at the database level (migration 0008) against real PostgreSQL: append-only for the
 * app roles (no UPDATE, DELETE or TRUNCATE — also after a grant made by mistake — and not for the
 * superuser either while the triggers are on), the hash chain the BEFORE INSERT trigger keeps
 * (whatever the insert says, one chain per publisher plus the platform chain, no fork under
 * concurrent transactions), the canonical text as TypeScript rebuilds it, the insert policy of
 * `catalog_app`, and `audit verify` run as a child process: clean, then an edit, a deletion, a
 * reordering and a re-hashed edit made as the superuser, each found with a non-zero exit.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import pg from 'pg';
import { migrateUp } from '../../migrations/migrate.ts';
import { canonicalText, eventHash, type CanonicalRow } from '../../catalog-api/src/modules/audit/verify.ts';
import { adminQuery, createTestDb, inTx, type TestDb } from './db.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const A = randomUUID();
const B = randomUUID();
const C = randomUUID();
const D = randomUUID();
const ACTOR = randomUUID();

let db: TestDb;
t.before(async () => {
  db = await createTestDb('audit');
  await migrateUp(db.ownerUrl);
});
t.teardown(async () => {
  await db?.drop();
});

const admin = async (sql: string, params: unknown[] = []) => (await adminQuery(db.adminUrl, sql, params)).rows;

/** Append one row as the sign-in service's role (its insert policy lets any row in). */
async function append(c: pg.Client, publisherId: string | null, over: Record<string, unknown> = {}): Promise<void> {
  const row = { id: randomUUID(), publisher_id: publisherId, actor_id: ACTOR, actor_kind: 'user', action: 'work.updated', object_type: 'work', object_id: randomUUID(), before: { title: 'a' }, after: { title: 'b' }, ...over };
  const cols = Object.keys(row);
  await c.query(`insert into audit_events (${cols.join(', ')}) values (${cols.map((_, i) => `$${i + 1}`).join(', ')})`, Object.values(row));
}
const appendAs = (url: string, publisherId: string | null, n = 1, over: Record<string, unknown> = {}) =>
  inTx(url, null, async (c) => {
    for (let i = 0; i < n; i++) await append(c, publisherId, over);
  }, true);

/** The rows of a chain as the canonical text takes them, in order. */
const chainRows = (publisherId: string | null) =>
  admin(
    `select id::text as id, publisher_id::text as publisher_id, chain_seq::text as chain_seq, prev_hash, hash,
            to_char(occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as occurred_at,
            actor_id::text as actor_id, actor_kind, action, object_type, object_id::text as object_id,
            before::text as before, after::text as after, request_id, client_ip::text as client_ip, user_agent,
            audit_event_canonical(e) as canonical
       from audit_events e where e.publisher_id is not distinct from $1::uuid order by e.chain_seq`,
    [publisherId],
  ) as Promise<(CanonicalRow & { hash: string; canonical: string })[]>;

/** Run the verifier CLI against the test database. */
function verify(...args: string[]) {
  const r = spawnSync(process.execPath, ['catalog-api/src/modules/audit/cli.ts', 'verify', ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, DATABASE_OWNER_URL: db.ownerUrl },
    timeout: 60_000,
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

t.test('the app roles cannot UPDATE, DELETE or TRUNCATE the log; nobody can while the triggers are on', async (t) => {
  await appendAs(db.authUrl, A, 2);
  for (const [role, url] of [['catalog_app', db.appUrl], ['catalog_auth', db.authUrl]] as const) {
    for (const sql of [`update audit_events set action = 'work.deleted'`, 'delete from audit_events', 'truncate audit_events']) {
      await t.rejects(adminQuery(url, sql), { code: '42501', message: /permission denied for table audit_events/ }, `${role}: ${sql.split(' ')[0]}`);
    }
  }
  for (const sql of [`update audit_events set action = 'work.deleted'`, 'delete from audit_events', 'truncate audit_events']) {
    await t.rejects(adminQuery(db.adminUrl, sql), { code: '42501', message: /append-only/ }, `superuser: ${sql.split(' ')[0]} raises`);
  }
  await t.rejects(adminQuery(db.ownerUrl, 'truncate audit_events'), { message: /append-only/ }, 'owner: TRUNCATE raises');
  t.equal(Number((await admin(`select count(*) as n from audit_events where publisher_id = $1`, [A]))[0].n), 2, 'nothing changed');

  // a grant made by mistake, with a policy that lets the rows through: the trigger still refuses
  await admin(`grant update, delete on audit_events to catalog_app; create policy audit_mistake on audit_events to catalog_app using (true) with check (true)`);
  try {
    await t.rejects(adminQuery(db.appUrl, `update audit_events set action = 'work.deleted'`), { code: '42501', message: /append-only: UPDATE/ });
    await t.rejects(adminQuery(db.appUrl, `delete from audit_events`), { code: '42501', message: /append-only: DELETE/ });
  } finally {
    await admin(`drop policy audit_mistake on audit_events; revoke update, delete on audit_events from catalog_app`);
  }
  const grants = await admin(`select grantee, privilege_type from information_schema.role_table_grants where table_name = 'audit_events' and grantee in ('catalog_app', 'catalog_auth') order by 1, 2`);
  t.same(grants, [
    { grantee: 'catalog_app', privilege_type: 'INSERT' },
    { grantee: 'catalog_app', privilege_type: 'SELECT' },
    { grantee: 'catalog_auth', privilege_type: 'INSERT' },
  ], 'INSERT and SELECT only (the sign-in service inserts only)');
});

t.test('the chain: the trigger sets sequence, link, time and hash whatever the insert says', async (t) => {
  const forged = { chain_seq: 99, prev_hash: 'f'.repeat(64), hash: 'e'.repeat(64), occurred_at: '2001-01-01T00:00:00Z' };
  await appendAs(db.authUrl, B, 3, forged);
  await appendAs(db.authUrl, null, 2, { actor_id: null, actor_kind: 'anonymous', action: 'auth.login_failed', object_type: 'user', object_id: null, before: null, after: { email: 'zoë@example.com', reason: 'invalid-credentials' } });
  for (const chain of [B, null]) {
    const rows = await chainRows(chain);
    t.same(rows.map((r) => Number(r.chain_seq)), rows.map((_, i) => i + 1), `${chain ?? 'platform'}: 1, 2, 3 …`);
    rows.forEach((r, i) => {
      t.equal(r.prev_hash, i === 0 ? null : rows[i - 1]!.hash, `seq ${i + 1} links to the row before`);
      t.not(r.occurred_at.slice(0, 4), '2001', 'the database time, not the inserted one');
      t.equal(canonicalText(r), r.canonical, 'TypeScript builds the same canonical text as audit_event_canonical()');
      t.equal(eventHash(r), r.hash, 'hash = SHA-256 of the canonical text');
      if (i > 0) t.ok(r.occurred_at >= rows[i - 1]!.occurred_at, 'time rises along the chain');
    });
  }
  const [platform] = await chainRows(null);
  const json = '{"email": "zoë@example.com", "reason": "invalid-credentials"}';
  t.equal(Buffer.byteLength(json), json.length + 1, 'ë is two bytes');
  t.ok(platform!.canonical.includes(`\n${json.length + 1}:${json}\n`), 'jsonb::text, prefixed with its UTF-8 byte length');
  t.match(platform!.canonical, /^audit-v1\n-\n1:1\n-\n36:/, 'NULL publisher as -, chain_seq 1, no prev_hash');

  // awkward values: separators inside fields cannot shift the fields (length prefixes)
  await appendAs(db.authUrl, D, 1, { request_id: '5:x\n-\n', user_agent: 'Mozilla/5.0 "quoted", \\ and\nnewline 🎵', client_ip: '2001:db8::1', before: null, after: { title: 'T\n"x"' } });
  const [odd] = await chainRows(D);
  t.equal(canonicalText(odd!), odd!.canonical);
  t.equal(eventHash(odd!), odd!.hash);
});

t.test('concurrent transactions append to one chain without forking it', async (t) => {
  const writers = 6;
  const each = 8;
  await Promise.all(
    Array.from({ length: writers }, () =>
      inTx(db.authUrl, null, async (c) => {
        for (let i = 0; i < each; i++) {
          await append(c, C);
          await new Promise((r) => setTimeout(r, Math.random() * 5));
        }
      }, true),
    ),
  );
  const rows = await chainRows(C);
  t.equal(rows.length, writers * each);
  t.same(rows.map((r) => Number(r.chain_seq)), rows.map((_, i) => i + 1), 'one unbroken sequence');
  t.ok(rows.every((r, i) => r.prev_hash === (i === 0 ? null : rows[i - 1]!.hash)), 'every row links to its predecessor');
  const r = verify('--chain', C);
  t.equal(r.code, 0, r.out + r.err);
});

t.test("catalog_app appends as the context user only, in its publisher's chain or the platform's", async (t) => {
  // a request context needs real rows (app_begin_request, migration 0011): ACTOR an editor (no audit:read) of publisher A
  await admin(`insert into publishers (id, name, slug) values ($1, 'Audit A', $2)`, [A, `audit-a-${A.slice(0, 8)}`]);
  await admin(`insert into users (id, email, display_name) values ($1, $2, 'Audit actor')`, [ACTOR, `actor-${ACTOR.slice(0, 8)}@audit.example`]);
  await admin(`insert into user_publishers (publisher_id, user_id, role) values ($1, $2, 'editor')`, [A, ACTOR]);
  const ctx = { publisher: A, user: ACTOR, scope: 'publisher' as const };
  await t.resolves(inTx(db.appUrl, ctx, (c) => append(c, A)), 'its own publisher, as itself');
  await t.resolves(inTx(db.appUrl, ctx, (c) => append(c, null)), 'the platform chain, as itself');
  await t.rejects(inTx(db.appUrl, ctx, (c) => append(c, A, { actor_id: randomUUID() })), { message: /row-level security/ }, 'another actor');
  await t.rejects(inTx(db.appUrl, ctx, (c) => append(c, B)), { message: /row-level security/ }, "another publisher's chain (not a system admin)");
  await t.rejects(inTx(db.appUrl, { publisher: B, user: ACTOR, scope: '' }, (c) => append(c, B)), { message: /row-level security/ }, 'no membership (scope empty)');
  await t.rejects(inTx(db.appUrl, null, (c) => append(c, null)), { message: /row-level security/ }, 'no context at all');
  const seen = await inTx(db.appUrl, ctx, async (c) => (await c.query('select count(*) as n from audit_events')).rows[0].n);
  t.equal(Number(seen), 0, 'without audit:read nothing is visible');
});

t.test('audit verify: clean log → 0; an edit, a deletion, a reordering, a re-hashed edit → 1, each named', async (t) => {
  const clean = verify();
  t.equal(clean.code, 0, clean.err);
  t.match(clean.out, /audit log intact: \d+ rows in \d+ chain\(s\)/);
  t.match(clean.out, new RegExp(`chain platform: \\d+ rows, head \\d+ [0-9a-f]{64}`));
  t.match(clean.out, new RegExp(`chain ${B}: 3 rows, head 3 [0-9a-f]{64}`));

  const tamper = (sql: string, params: unknown[] = []) =>
    inTx(db.adminUrl, null, async (c) => {
      await c.query(`set local session_replication_role = replica`); // skips the append-only triggers (superuser only)
      await c.query(sql, params);
    }, true);
  const E = randomUUID();
  const F = randomUUID();
  const G = randomUUID();
  const H = randomUUID();
  for (const chain of [E, F, G, H]) await appendAs(db.authUrl, chain, 4);

  await tamper(`update audit_events set after = '{"title": "rewritten"}' where publisher_id = $1 and chain_seq = 2`, [E]);
  await tamper(`delete from audit_events where publisher_id = $1 and chain_seq = 2`, [F]);
  await tamper(`update audit_events set chain_seq = 1000 where publisher_id = $1 and chain_seq = 2;
                update audit_events set chain_seq = 2 where publisher_id = $1 and chain_seq = 3;
                update audit_events set chain_seq = 3 where publisher_id = $1 and chain_seq = 1000`.replace(/\$1/g, `'${G}'`));
  // an edit whose hash is recomputed with the database's own function: the next row's link breaks
  await tamper(`update audit_events e set after = '{"title": "forged"}' where publisher_id = $1 and chain_seq = 3`, [H]);
  await tamper(`update audit_events e set hash = encode(sha256(convert_to(audit_event_canonical(e), 'UTF8')), 'hex') where publisher_id = $1 and chain_seq = 3`, [H]);

  const r = verify();
  t.equal(r.code, 1, 'non-zero exit');
  t.match(r.out, new RegExp(`EDITED chain ${E} seq 2 \\(id [0-9a-f-]{36}\\): the stored hash is not the hash of the row`));
  t.match(r.out, new RegExp(`GAP chain ${F} seq 3 .*rows 2\\.\\.2 are missing`));
  t.match(r.out, new RegExp(`REORDERED chain ${G} seq 2 .*prev_hash does not match`));
  t.match(r.out, new RegExp(`REORDERED chain ${H} seq 4 .*prev_hash does not match`), 'a re-hashed edit breaks the next link');
  t.notMatch(r.out, new RegExp(`chain ${H} seq 3`), 'the re-hashed row itself looks consistent (only the link shows it)');
  t.match(r.out, /audit log NOT intact: \d+ problem\(s\)/);
  for (const ok of [B, C, 'platform']) t.notMatch(r.out, new RegExp(`(EDITED|GAP|REORDERED) chain ${ok} `), `${ok}: untouched`);

  const one = verify('--chain', E, '--json');
  t.equal(one.code, 1);
  const report = JSON.parse(one.out);
  t.same(report.chains.map((c: { chain: string }) => c.chain), [E], '--chain checks one chain');
  t.same(report.problems.map((p: { kind: string; seq: number }) => `${p.kind}@${p.seq}`), ['edited@2']);
  t.equal(verify('--chain', B).code, 0, 'an untouched chain alone is intact');
  const bad = verify('--chain', 'nope');
  t.equal(bad.code, 2, 'usage error');
  t.match(bad.err, /a publisher id or "platform"/);

  const npm = spawnSync('npm', ['run', '--silent', 'audit', '--', 'verify', '--chain', 'platform'], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, DATABASE_OWNER_URL: db.ownerUrl }, timeout: 120_000 });
  t.equal(npm.status, 0, `npm run audit -- verify: ${npm.stderr}`);
  t.match(npm.stdout, /audit log intact/);
});
