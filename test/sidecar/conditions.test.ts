/**
 * Conditional grants end to end through a sidecar with a real OpenFGA store and Redis
 * (policies/model.fga "Conditional grants", sidecar/src/pdp/condition-context.ts): a membership
 * tuple with `non_expired_grant` allows before its end and denies from at most one time bucket after
 * it; a publisher's `off_network` tuple lets its staff in from its office networks (IPv4, IPv6,
 * IPv4-mapped) only, system admins and unrestricted publishers unaffected; the decision cache keys
 * by client IP (an allow from inside is never served to outside, and a repeat from the same address
 * is a cache hit). Client addresses are simulated with X-Forwarded-For from the trusted loopback
 * peer. Also what OpenFGA does without the context (an error, the reason every Check sends it).
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { expiryCondition, officeNetworksCondition, OFF_NETWORK_RELATION } from '../../policies/src/conditions.ts';
import { conditionContext } from '../../sidecar/src/pdp/condition-context.ts';
import { decisions, raw, startSidecar, useSidecarFixture, type Sidecar } from './helpers.ts';

const P = { timed: randomUUID(), office: randomUUID(), open: randomUUID() };
const U = { auditor: randomUUID(), staff: randomUUID(), sysadmin: randomUUID() };
const OFFICE = ['198.51.100.0/24', '2001:db8:10::/48'];

const fx = useSidecarFixture(t, {
  tuples: [
    { user: 'system:platform', relation: 'system', object: `publisher:${P.office}` },
    { user: `user:${U.sysadmin}`, relation: 'admin', object: 'system:platform' },
    { user: `user:${U.staff}`, relation: 'editor', object: `publisher:${P.office}` },
    { user: `user:${U.staff}`, relation: 'editor', object: `publisher:${P.open}` },
    { user: 'user:*', relation: OFF_NETWORK_RELATION, object: `publisher:${P.office}`, condition: officeNetworksCondition(OFFICE) },
  ],
  // the test client is the loopback peer: X-Forwarded-For names the simulated client address
  // 1 s buckets: the expiry test waits for the bucket after the end (the helpers default to an hour)
  env: { TRUSTED_PROXIES: '127.0.0.1', CONDITION_TIME_BUCKET_MS: '1000' },
});

const tokens = new Map<string, string>();
async function get(s: Sidecar, sub: string, publisher: string, ip?: string) {
  if (!tokens.has(sub)) tokens.set(sub, await fx.issuer.token(sub));
  const headers: Record<string, string> = { authorization: `Bearer ${tokens.get(sub)}`, 'x-publisher-id': publisher };
  if (ip) headers['x-forwarded-for'] = ip;
  return raw(s.port, 'GET', '/api/v1/works', headers);
}

t.test('the condition context: time rounded down to the bucket, the client address normalised', async (t) => {
  const at = Date.parse('2026-06-01T12:00:01.999Z');
  t.same(conditionContext('198.51.100.7', at, 1000), { context: { current_time: '2026-06-01T12:00:01.000Z', client_ip: '198.51.100.7' }, key: `198.51.100.7|${at - 999}` });
  t.equal(conditionContext('::ffff:198.51.100.7', at, 1000).context.client_ip, '198.51.100.7', 'IPv4-mapped IPv6 → IPv4');
  t.equal(conditionContext('fe80::1%eth0', at, 1000).context.client_ip, 'fe80::1', 'zone dropped');
  t.equal(conditionContext(undefined, at, 1000).context.client_ip, '0.0.0.0', 'unknown → 0.0.0.0 (outside every office network)');
  t.equal(conditionContext('x', at, 60_000).context.current_time, '2026-06-01T12:00:00.000Z');
  t.not(conditionContext('198.51.100.7', at, 1000).key, conditionContext('198.51.100.8', at, 1000).key, 'the key varies with the address');
  t.not(conditionContext('198.51.100.7', at, 1000).key, conditionContext('198.51.100.7', at + 1, 1000).key, '… and with the bucket');
});

t.test('OpenFGA refuses a Check without the parameters a conditional tuple needs', async (t) => {
  const check = (context?: Record<string, unknown>) =>
    fx.store.fga.check({ user: `user:${U.staff}`, relation: 'works_read', object: `publisher:${P.office}`, context });
  await t.rejects(check(), { message: /missing context parameters|client_ip/ }, 'no context → an error, not a deny');
  t.equal((await check({ client_ip: '198.51.100.7', current_time: new Date().toISOString() })).allowed, true);
  t.equal((await check({ client_ip: '203.0.113.7', current_time: new Date().toISOString() })).allowed, false);
});

t.test('an expiring grant allows before its end and denies within one bucket after it', async (t) => {
  const bucketMs = 1000;
  const end = Date.now() + 2500;
  await fx.writer.write({ writes: [{ user: `user:${U.auditor}`, relation: 'viewer', object: `publisher:${P.timed}`, condition: expiryCondition(new Date(end)) }] });
  const seen: { sent: number; received: number; status: number }[] = [];
  while (Date.now() < end + bucketMs + 1000) {
    const sent = Date.now();
    const res = await get(fx.sidecar, U.auditor, P.timed);
    seen.push({ sent, received: Date.now(), status: res.status });
    await sleep(100);
  }
  const before = seen.filter((s) => s.received < end);
  const after = seen.filter((s) => s.sent >= end + bucketMs);
  t.ok(before.length >= 3, 'several requests before the end');
  t.ok(after.length >= 3, 'several requests a bucket after the end');
  t.same([...new Set(before.map((s) => s.status))], [200], 'allowed while the grant lasts (the cache keeps working: no flapping)');
  t.same([...new Set(after.map((s) => s.status))], [403], 'denied once the bucket after the end has begun');
  const firstDeny = seen.find((s) => s.status === 403)!;
  t.ok(firstDeny.received >= end, 'never denied before the end');
  t.notOk(seen.some((s) => s.status === 200 && s.sent >= end + bucketMs), 'no cached allow outlives the end by more than the bucket');
});

t.test('office networks: staff inside allowed, outside denied; system admins and unrestricted publishers unaffected', async (t) => {
  const s = fx.sidecar;
  const cases: [string, string, string, string | undefined, number][] = [
    ['staff, first network (IPv4)', U.staff, P.office, '198.51.100.7', 200],
    ['staff, outside (IPv4)', U.staff, P.office, '203.0.113.7', 403],
    ['staff, again inside right after (not the outside deny from cache)', U.staff, P.office, '198.51.100.7', 200],
    ['staff, second network (IPv6)', U.staff, P.office, '2001:db8:10:ffff::5', 200],
    ['staff, outside (IPv6)', U.staff, P.office, '2001:db8:11::5', 403],
    ['staff, IPv4-mapped IPv6 inside', U.staff, P.office, '::ffff:198.51.100.9', 200],
    ['staff, the loopback peer itself (no X-Forwarded-For)', U.staff, P.office, undefined, 403],
    ['system admin, outside', U.sysadmin, P.office, '203.0.113.7', 200],
    ['staff at a publisher without a restriction, outside', U.staff, P.open, '203.0.113.7', 200],
  ];
  for (const [name, sub, publisher, ip, want] of cases) {
    const res = await get(s, sub, publisher, ip);
    t.equal(res.status, want, name);
    if (want === 403) t.match(res.json(), { type: /\/forbidden$/, detail: /works_read/ }, `${name}: a plain forbidden problem`);
  }
});

t.test('the decision cache keys by client address: a repeat is a hit, another address is decided anew', async (t) => {
  // a long bucket, so that the time cannot change the key during this test
  const s = await startSidecar({ ...fx.env, CONDITION_TIME_BUCKET_MS: '600000' });
  t.teardown(() => s.close());
  t.equal((await get(s, U.staff, P.office, '198.51.100.20')).status, 200);
  const pdpBefore = await decisions(s.adminUrl, 'pdp');
  const lruBefore = await decisions(s.adminUrl, 'lru');
  t.equal((await get(s, U.staff, P.office, '198.51.100.20')).status, 200, 'the same address again');
  t.equal(await decisions(s.adminUrl, 'lru'), lruBefore + 1, '… answered from the LRU');
  t.equal((await get(s, U.staff, P.office, '203.0.113.20')).status, 403, 'another address, outside');
  t.equal(await decisions(s.adminUrl, 'pdp'), pdpBefore + 1, '… decided by OpenFGA, not served from the inside allow');
  t.equal((await get(s, U.staff, P.office, '198.51.100.21')).status, 200, 'a third address, inside');
  t.equal(await decisions(s.adminUrl, 'pdp'), pdpBefore + 2, '… decided anew as well');
});
