/**
 * Conditional grants through the catalog API (migration 0012, policies/src/conditions.ts): a
 * publisher's `office_networks` setting and a membership's `expires_at` become conditional tuples
 * by the outbox triggers, which the real relay delivers to a real OpenFGA store (a throw-away one
 * with the project's model), where Checks with the sidecar's context then decide as the model says.
 * Also: CIDR validation (422), an end in the past refused, an ended membership no longer listed,
 * an invitation carrying the membership's end, and clearing the networks deleting the restriction.
 */
import t, { type Test } from 'tap';
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { InjectOptions } from 'fastify';
import { Redis } from 'ioredis';
import { ConsistencyPreference, OpenFgaClient } from '@openfga/sdk';
import { deployModel } from '../../policies/src/model.ts';
import { RelationshipWriter } from '../../policies/src/relationships.ts';
import { checkContext, EXPIRY_CONDITION, OFFICE_NETWORK_CONDITION } from '../../policies/src/conditions.ts';
import { OutboxRelay } from '../../catalog-api/src/outbox/relay.ts';
import { adminClient, buildTestApp, createTestDb, type TestApp, type TestDb } from './helpers.ts';
import { DMP, DMP_ADMIN, DMP_EDITOR, DMP_VIEWER } from '../support/demo-ids.ts';

const OPENFGA_API_URL = process.env.OPENFGA_API_URL ?? 'http://127.0.0.1:8080';

let db: TestDb;
let ta: TestApp;
let su: pg.Client;
let fga: OpenFgaClient;
let storeId: string;
let redis: Redis;
let relay: OutboxRelay;
t.before(async () => {
  db = await createTestDb('condgrants');
  ta = await buildTestApp(db);
  su = await adminClient(db);
  const deployed = await deployModel({ apiUrl: OPENFGA_API_URL, storeName: `test-condgrants-${randomUUID()}` });
  storeId = deployed.storeId;
  fga = new OpenFgaClient({ apiUrl: OPENFGA_API_URL, storeId, authorizationModelId: deployed.modelId });
  redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/0');
  relay = new OutboxRelay({ orm: ta.jobsOrm, sink: new RelationshipWriter({ fga, redis, storeId, modelId: deployed.modelId }) });
  const seeded = await relay.drain(); // the seed's tuples, so the Checks below see the demo memberships
  if (seeded.failed) throw new Error(`seed delivery failed: ${seeded.error}`);
});
t.teardown(async () => {
  await fga?.deleteStore({ storeId }).catch(() => undefined);
  redis?.disconnect();
  await su?.end();
  await ta?.close();
  await db?.drop();
});

const api = (sub: string, method: InjectOptions['method'], url: string, payload?: unknown) =>
  ta.as(sub, DMP, { method, url, ...(payload !== undefined ? { payload: payload as object } : {}) });
/** Deliver the outbox; fail the test on a delivery error. */
const deliver = async (t: Test) => {
  const r = await relay.drain();
  t.equal(r.failed, 0, `outbox delivered (${r.error ?? 'no error'})`);
};
/** The tuples of `object` with `relation` in the store (`condition` only on conditional ones). */
const tuples = async (object: string, relation: string, user?: string) =>
  (await fga.read({ object, relation, ...(user ? { user } : {}) })).tuples.map(({ key: { condition, ...k } }) => (condition ? { ...k, condition } : k));
const can = async (user: string, relation: string, object: string, at: number, ip: string) =>
  (await fga.check({ user: `user:${user}`, relation, object, context: checkContext(at, ip) }, { consistency: ConsistencyPreference.HigherConsistency })).allowed;

t.test('office_networks: validated, written as the off_network tuple, honoured by Checks, cleared again', async (t) => {
  const url = `/api/v1/publishers/${DMP}/settings`;
  const current = (await api(DMP_ADMIN, 'GET', url)).json();
  t.same(current.office_networks, [], 'unrestricted by default');
  const { session_max_age_s, ...settings } = current;
  const body = session_max_age_s === null ? settings : current;

  for (const bad of ['198.51.100.0', '198.51.100.0/33', ' 198.51.100.0/24', '198.51.100.0/024', 'fe80::1%eth0/64', 'office']) {
    const r = await api(DMP_ADMIN, 'PUT', url, { ...body, office_networks: [bad] });
    t.equal(r.statusCode, 422, `${JSON.stringify(bad)} refused`);
    t.match(r.json().errors, [{ field: 'office_networks.0', reason: /CIDR/ }]);
  }
  t.equal((await api(DMP_ADMIN, 'PUT', url, { ...body, office_networks: Array(51).fill('198.51.100.0/24') })).statusCode, 422, 'at most 50');

  const networks = ['198.51.100.0/24', '2001:db8:10::/48'];
  const ok = await api(DMP_ADMIN, 'PUT', url, { ...body, office_networks: networks });
  t.equal(ok.statusCode, 200);
  t.same(ok.json().office_networks, networks);
  await deliver(t);
  const written = await tuples(`publisher:${DMP}`, 'off_network');
  t.same(written, [{ user: 'user:*', relation: 'off_network', object: `publisher:${DMP}`, condition: { name: OFFICE_NETWORK_CONDITION, context: { office_networks: networks } } }]);
  const now = Date.now();
  t.equal(await can(DMP_EDITOR, 'works_read', `publisher:${DMP}`, now, '198.51.100.7'), true, 'staff inside (IPv4)');
  t.equal(await can(DMP_EDITOR, 'works_read', `publisher:${DMP}`, now, '2001:db8:10::7'), true, 'staff inside (IPv6)');
  t.equal(await can(DMP_EDITOR, 'works_read', `publisher:${DMP}`, now, '203.0.113.7'), false, 'staff outside');

  const changed = await api(DMP_ADMIN, 'PUT', url, { ...body, office_networks: ['203.0.113.0/24'] });
  t.equal(changed.statusCode, 200);
  await deliver(t);
  t.same((await tuples(`publisher:${DMP}`, 'off_network')).map((x) => ('condition' in x ? x.condition.context : undefined)), [{ office_networks: ['203.0.113.0/24'] }], 'a change rewrites the one tuple');
  t.equal(await can(DMP_EDITOR, 'works_read', `publisher:${DMP}`, now, '203.0.113.7'), true, 'inside the new network');

  t.equal((await api(DMP_ADMIN, 'PUT', url, { ...body, office_networks: [] })).statusCode, 200);
  await deliver(t);
  t.same(await tuples(`publisher:${DMP}`, 'off_network'), [], 'an empty list deletes the restriction');
  t.equal(await can(DMP_EDITOR, 'works_read', `publisher:${DMP}`, now, '192.0.2.1'), true, 'staff anywhere again');
});

t.test("a membership's expires_at: the role tuple carries non_expired_grant; ended memberships are not listed", async (t) => {
  const url = `/api/v1/publishers/${DMP}/users/${DMP_VIEWER}/role`;
  const past = await api(DMP_ADMIN, 'PUT', url, { role: 'viewer', expires_at: new Date(Date.now() - 1000).toISOString() });
  t.equal(past.statusCode, 422);
  t.match(past.json().errors, [{ field: 'expires_at', reason: /future/ }]);
  t.equal((await api(DMP_ADMIN, 'PUT', url, { role: 'viewer', expires_at: 'next week' })).statusCode, 400, 'not a timestamp');

  const end = new Date(Date.now() + 3_600_000);
  end.setUTCMilliseconds(0);
  const set = await api(DMP_ADMIN, 'PUT', url, { role: 'viewer', expires_at: end.toISOString() });
  t.equal(set.statusCode, 200);
  t.equal(set.json().expires_at, end.toISOString());
  await deliver(t);
  t.same(await tuples(`publisher:${DMP}`, 'viewer', `user:${DMP_VIEWER}`), [
    { user: `user:${DMP_VIEWER}`, relation: 'viewer', object: `publisher:${DMP}`, condition: { name: EXPIRY_CONDITION, context: { grant_expires_at: end.toISOString() } } },
  ]);
  t.equal(await can(DMP_VIEWER, 'works_read', `publisher:${DMP}`, end.getTime() - 1000, '192.0.2.1'), true, 'before the end');
  t.equal(await can(DMP_VIEWER, 'works_read', `publisher:${DMP}`, end.getTime(), '192.0.2.1'), false, 'at the end');

  const list = async () => (await api(DMP_ADMIN, 'GET', `/api/v1/publishers/${DMP}/users?limit=100`)).json().items.map((m: { user_id: string; expires_at: string | null }) => m);
  t.match((await list()).find((m: { user_id: string }) => m.user_id === DMP_VIEWER), { expires_at: end.toISOString() }, 'listed with its end');
  const myPublishers = async () => (await ta.as(DMP_VIEWER, null, { method: 'GET', url: '/api/v1/users/me' })).json().memberships.map((m: { publisher_id: string }) => m.publisher_id);
  t.ok((await myPublishers()).includes(DMP), "in the user's own memberships while it lasts");
  const works = async () => await ta.as(DMP_VIEWER, DMP, { method: 'GET', url: '/api/v1/works?limit=5' });
  const before = await works();
  t.equal(before.statusCode, 200);
  t.ok(before.json().items.length > 0, 'row-level security shows the works while the membership lasts');
  await su.query(`update user_publishers set expires_at = now() - interval '1 second' where user_id = $1 and publisher_id = $2`, [DMP_VIEWER, DMP]);
  t.notOk((await list()).some((m: { user_id: string }) => m.user_id === DMP_VIEWER), 'an ended membership is not listed');
  t.notOk((await myPublishers()).includes(DMP), "… nor among the user's own memberships");
  const after = await works();
  t.equal(after.statusCode, 403, 'the database wall refuses the ended membership too (app_begin_request)');
  t.match(after.json(), { type: /forbidden$/, detail: /not a member/ });

  const renewed = await api(DMP_ADMIN, 'PUT', url, { role: 'viewer', expires_at: null });
  t.equal(renewed.statusCode, 200, 'an admin can still renew it');
  t.equal(renewed.json().expires_at, null);
  await deliver(t);
  t.same(await tuples(`publisher:${DMP}`, 'viewer', `user:${DMP_VIEWER}`), [{ user: `user:${DMP_VIEWER}`, relation: 'viewer', object: `publisher:${DMP}` }], 'without an end: a plain tuple');
  t.equal(await can(DMP_VIEWER, 'works_read', `publisher:${DMP}`, end.getTime() + 86_400_000, '192.0.2.1'), true, 'and no end');
});

t.test('an invitation carries the end of the membership it creates', async (t) => {
  const end = new Date(Date.now() + 7 * 86_400_000).toISOString();
  const r = await api(DMP_ADMIN, 'POST', `/api/v1/publishers/${DMP}/users/invite`, { email: `auditor-${randomUUID()}@audit.example`, role: 'viewer', expires_at: end });
  t.equal(r.statusCode, 201);
  t.equal(r.json().membership_expires_at, end);
  const { rows } = await su.query(`select membership_expires_at from invitations where id = $1`, [r.json().id]);
  t.equal(rows[0].membership_expires_at.toISOString(), end);
});
