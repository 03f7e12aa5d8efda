/**
 * /api/v1/users/me and the membership administration (/api/v1/members) against real PostgreSQL.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { PUBLISHERS, USERS } from '../../migrations/seed/demo.ts';
import { useSuite } from './helpers.ts';

const uid = (email: string) => USERS.find((u) => u.email === email)!.id;
const pid = (slug: string) => PUBLISHERS.find((p) => p.slug === slug)!.id;
const DMP = pid('dmp');
const SPIRIT = pid('spirit');

const suite = useSuite(t, 'members');

t.test('users/me: the caller with memberships, no publisher context needed (and ignored when sent)', async (t) => {
  for (const ctx of [null, DMP, pid('songtrust')]) {
    const res = await suite.ta.as(uid('multi@example.com'), ctx, { method: 'GET', url: '/api/v1/users/me' });
    t.equal(res.statusCode, 200);
    const me = res.json();
    t.match(me, { id: uid('multi@example.com'), email: 'multi@example.com', display_name: 'Multi Publisher', is_system_admin: false });
    t.same(me.memberships.map((m: any) => `${m.slug}:${m.role}`).sort(), ['dmp:viewer', 'spirit:editor']);
    t.ok(me.memberships.every((m: any) => m.name && m.publisher_id));
  }
  const sys = (await suite.ta.as(uid('sysadmin@example.com'), null, { method: 'GET', url: '/api/v1/users/me' })).json();
  t.equal(sys.is_system_admin, true);
  t.same(sys.memberships, []);
  t.equal((await suite.ta.as(randomUUID(), null, { method: 'GET', url: '/api/v1/users/me' })).statusCode, 403, 'unknown user');
});

const NOT_FOUND = 'https://errors.music-publishing.example/not-found';

t.test('members: list, change (200), remove (204) by a publisher admin; adding needs a system admin (201)', async (t) => {
  const admin = uid('owner@spirit.example');
  const sys = uid('sysadmin@example.com');
  const viewer = uid('viewer@dmp.example');
  const list = await suite.ta.as(admin, SPIRIT, { method: 'GET', url: '/api/v1/members' });
  t.equal(list.statusCode, 200);
  t.same(list.json().items.map((m: any) => `${m.email}:${m.role}`).sort(), ['multi@example.com:editor', 'owner@spirit.example:admin']);
  t.ok(list.json().items.every((m: any) => m.publisher_id === SPIRIT), "only this publisher's members");

  const added = await suite.ta.as(sys, SPIRIT, { method: 'PUT', url: `/api/v1/members/${viewer}`, payload: { role: 'viewer' } });
  t.equal(added.statusCode, 201, added.body);
  t.equal(added.headers.location, `/api/v1/members/${viewer}`);
  t.match(added.json(), { user_id: viewer, publisher_id: SPIRIT, role: 'viewer', email: 'viewer@dmp.example' });
  const changed = await suite.ta.as(admin, SPIRIT, { method: 'PUT', url: `/api/v1/members/${viewer}`, payload: { role: 'editor' } });
  t.equal(changed.statusCode, 200, 'the publisher admin changes the role of an existing member');
  t.equal(changed.json().role, 'editor');
  const outbox = await suite.su.query(`select operation, object, relation, subject from authz_outbox where subject = $1 and object = $2 order by id`, [`user:${viewer}`, `publisher:${SPIRIT}`]);
  t.same(
    outbox.rows.map((r) => `${r.operation} ${r.relation}`),
    ['write viewer', 'delete viewer', 'write editor'],
    'the outbox recorded the relationship changes in order',
  );
  const removed = await suite.ta.as(admin, SPIRIT, { method: 'DELETE', url: `/api/v1/members/${viewer}` });
  t.equal(removed.statusCode, 204);
  t.equal((await suite.ta.as(admin, SPIRIT, { method: 'DELETE', url: `/api/v1/members/${viewer}` })).statusCode, 404, 'already gone');
  const unknownBySys = await suite.ta.as(sys, SPIRIT, { method: 'PUT', url: `/api/v1/members/${randomUUID()}`, payload: { role: 'viewer' } });
  t.equal(unknownBySys.statusCode, 404, 'system admin: unknown user');
  t.equal(unknownBySys.json().type, NOT_FOUND);
  const badRole = await suite.ta.as(admin, SPIRIT, { method: 'PUT', url: `/api/v1/members/${viewer}`, payload: { role: 'owner' } });
  t.equal(badRole.statusCode, 400);
  t.equal(badRole.json().errors[0].field, 'role');
});

t.test('members: a publisher admin cannot enrol a non-member, and cannot tell a non-member from an unknown user', async (t) => {
  const admin = uid('owner@spirit.example');
  const outsiders = [uid('viewer@dmp.example'), uid('sysadmin@example.com'), uid('creator1@songtrust.example')];
  const before = (await suite.su.query(`select count(*)::int as n from user_publishers`)).rows[0].n;
  const outboxBefore = (await suite.su.query(`select coalesce(max(id), 0)::bigint as m from authz_outbox`)).rows[0].m;
  const answers: string[] = [];
  for (const target of [...outsiders, randomUUID()]) {
    for (const role of ['viewer', 'admin'] as const) {
      const res = await suite.ta.as(admin, SPIRIT, { method: 'PUT', url: `/api/v1/members/${target}`, payload: { role } });
      t.equal(res.statusCode, 404, `${target} as ${role}: 404`);
      t.match(res.headers['content-type'], /^application\/problem\+json/);
      t.notMatch(res.body, /@/, 'no email in the answer');
      const { type, title, status, detail } = res.json();
      answers.push(JSON.stringify({ type, title, status, detail }));
    }
  }
  t.equal(new Set(answers).size, 1, `one answer for every non-member and unknown user: ${answers[0]}`);
  t.equal(JSON.parse(answers[0]!).type, NOT_FOUND);
  t.equal((await suite.su.query(`select count(*)::int as n from user_publishers`)).rows[0].n, before, 'nobody was enrolled');
  t.equal((await suite.su.query(`select count(*)::int as n from authz_outbox where id > $1`, [outboxBefore])).rows[0].n, 0, 'no relationship written');
  // deleting a non-member answers the same
  const del = await suite.ta.as(admin, SPIRIT, { method: 'DELETE', url: `/api/v1/members/${outsiders[0]}` });
  t.equal(del.statusCode, 404);
  t.equal(del.json().detail, JSON.parse(answers[0]!).detail, 'DELETE of a non-member: same detail');
  // a member of the publisher is still changed by its admin (multi is an editor of Spirit)
  const multi = uid('multi@example.com');
  const res = await suite.ta.as(admin, SPIRIT, { method: 'PUT', url: `/api/v1/members/${multi}`, payload: { role: 'viewer' } });
  t.equal(res.statusCode, 200, res.body);
  t.equal((await suite.ta.as(admin, SPIRIT, { method: 'PUT', url: `/api/v1/members/${multi}`, payload: { role: 'editor' } })).statusCode, 200);
});

t.test('members: non-admins are refused (403), the system admin is allowed, the last admin stays', async (t) => {
  t.equal((await suite.ta.as(uid('multi@example.com'), SPIRIT, { method: 'GET', url: '/api/v1/members' })).statusCode, 403, 'editor');
  t.equal((await suite.ta.as(uid('manager@dmp.example'), DMP, { method: 'GET', url: '/api/v1/members' })).statusCode, 403, 'manager');
  t.equal((await suite.ta.as(uid('admin@dmp.example'), SPIRIT, { method: 'GET', url: '/api/v1/members' })).statusCode, 403, 'admin elsewhere');
  t.equal((await suite.ta.as(uid('sysadmin@example.com'), SPIRIT, { method: 'GET', url: '/api/v1/members' })).statusCode, 200, 'system admin');
  const owner = uid('owner@spirit.example');
  const demote = await suite.ta.as(owner, SPIRIT, { method: 'PUT', url: `/api/v1/members/${owner}`, payload: { role: 'editor' } });
  t.equal(demote.statusCode, 409, 'cannot demote the last admin');
  t.equal((await suite.ta.as(owner, SPIRIT, { method: 'DELETE', url: `/api/v1/members/${owner}` })).statusCode, 409, 'cannot remove the last admin');
  const still = await suite.su.query(`select role from user_publishers where publisher_id = $1 and user_id = $2`, [SPIRIT, owner]);
  t.equal(still.rows[0].role, 'admin', 'rolled back');
});
