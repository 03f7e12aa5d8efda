/**
 * Fault matrix, Redis (README "Failure behaviour"): a fault proxy between the sidecar and the
 * shared Redis — down (refused), slow (answers later than REDIS_COMMAND_TIMEOUT_MS), partitioned
 * (silent) and back.
 * - Decision cache: decisions stay correct (from OpenFGA) within REDIS_COMMAND_TIMEOUT_MS + 100 ms
 *   of an uncached decision; a membership removed while Redis is away is denied during the fault
 *   and after it — also when the relay could not bump the epochs — and the cache is used again
 *   without a restart.
 * - Revoked-session view: partitioned beyond REVOCATION_MAX_STALENESS_MS → 503 for session-bound
 *   tokens (never the token of a session revoked meanwhile); back → 401 for that one, 200 for others.
 * - Start-up: partitioned before the sidecar starts → the start is bounded (no connection's wait
 *   hangs it: connectRedis), session tokens get 503 (the revoked-session view never synced), and
 *   once Redis is back the connections the partition held are retried: allowed, from the cache.
 * Redis stopped outright (the view, the metering counts) is in test/sidecar/sessions.test.ts,
 * test/sidecar/failures.test.ts and test/sidecar/metering.test.ts.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { RelationshipWriter } from '../../policies/src/relationships.ts';
import { userEpochKey } from '../../policies/src/epochs.ts';
import { bumpEpochs } from '../../policies/src/epoch-push.ts';
import { REDIS_START_WAIT_MS } from '../../policies/src/redis.ts';
import { REVOKED_SESSIONS_KEY, SESSION_REVOKED_CHANNEL, encodeRevocation } from '../../policies/src/session-revocations.ts';
import { REDIS_URL, decisions, raw, startSidecar, useSidecarFixture, type Sidecar } from '../sidecar/helpers.ts';
import { SLACK_MS, baselineMs, median, proxyFor, timed, watch } from './helpers.ts';
import type { FaultMode } from '../support/fault-proxy.ts';

const viewer = randomUUID();
/** the member of the revoked-session case (the decision-cache case removes and restores `viewer`) */
const viewer2 = randomUUID();
const stranger = randomUUID();
const publisher = randomUUID();
const member = { user: `user:${viewer}`, relation: 'viewer', object: `publisher:${publisher}` };
const COMMAND_TIMEOUT_MS = 250;

const fx = useSidecarFixture(t, { sidecars: 0, tuples: [member, { ...member, user: `user:${viewer2}` }] });

const get = async (s: Sidecar, userId: string, token?: string) =>
  (await raw(s.port, 'GET', '/api/v1/works', { authorization: `Bearer ${token ?? (await fx.issuer.token(userId))}`, 'x-publisher-id': publisher })).status;

t.test('decision cache: Redis down, then slow, then back — correct, bounded, no stale allow, cache back in use', async (t) => {
  const { proxy, url } = await proxyFor(t, REDIS_URL, 6379);
  const s = await startSidecar({ ...fx.env, REDIS_URL: url, REDIS_COMMAND_TIMEOUT_MS: String(COMMAND_TIMEOUT_MS), REVOCATION_MAX_STALENESS_MS: '60000' });
  t.teardown(() => s.close());
  // The catalog API's relay, as far as Redis is concerned: it reaches Redis through the same proxy.
  const relayRedis = new Redis(url, { enableOfflineQueue: false, maxRetriesPerRequest: 0, commandTimeout: COMMAND_TIMEOUT_MS, retryStrategy: () => 100 });
  relayRedis.on('error', () => undefined);
  t.teardown(() => relayRedis.disconnect());
  const relay = new RelationshipWriter({ fga: fx.store.fga, redis: relayRedis, storeId: fx.store.storeId, modelId: fx.store.modelId });

  const token = await fx.issuer.token(viewer);
  t.equal(await get(s, viewer, token), 200, 'allowed');
  t.equal(await get(s, viewer, token), 200, 'allowed again, from the cache');
  // an uncached decision's normal time: a bumped epoch makes each of these go to OpenFGA
  const normal = await baselineMs(5, async () => {
    await bumpEpochs(fx.redis, fx.store.storeId, [userEpochKey(fx.store.storeId, viewer)]); // INCR + push to the epoch views
    await get(s, viewer, token);
  });

  const outage = async (label: string, mode: FaultMode) => {
    await proxy.set(mode);
    const runs: { status: number; ms: number }[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await timed(() => get(s, viewer, token));
      runs.push({ status: r.value, ms: r.ms });
    }
    t.same(runs.map((r) => r.status), [200, 200, 200], `${label}: a member is still allowed (decided by OpenFGA)`);
    const ms = median(runs.map((r) => r.ms));
    t.ok(ms <= normal + COMMAND_TIMEOUT_MS + SLACK_MS, `${label}: ${ms.toFixed(0)} ms ≤ uncached ${normal.toFixed(0)} ms + REDIS_COMMAND_TIMEOUT_MS + 100 ms`);
    t.equal(await get(s, stranger), 403, `${label}: a stranger is denied`);
    // the membership is removed while Redis is away: OpenFGA has it, the epochs may not
    const removed = await relay.write({ deletes: [member] }).then(() => 'bumped', () => 'epochs not bumped');
    t.comment(`${label}: relay wrote the delete to OpenFGA (${removed})`);
    t.equal(await get(s, viewer, token), 403, `${label}: the removed member is denied during the fault`);

    await proxy.set('pass');
    const lruBefore = await decisions(s.adminUrl, 'lru');
    const seen = await watch(4000, () => get(s, viewer, token));
    t.ok(seen.length > 10, `${label}: ${seen.length} requests while Redis came back`);
    t.same([...new Set(seen)], [403], `${label}: the removed member is never allowed once Redis is back (no decision from before the fault)`);
    t.ok((await decisions(s.adminUrl, 'lru')) > lruBefore, `${label}: decisions come from the cache again, without a restart`);
    t.equal((await raw(s.port, 'GET', '/readyz')).json().checks.redis, 'ok', `${label}: /readyz says Redis is ok`);
    await relay.write({ deletes: [member] }); // the relay's retry: now the epochs are bumped
    await relay.write({ writes: [member] });
    t.equal(await get(s, viewer, token), 200, `${label}: membership restored → allowed`);
    t.equal(await get(s, viewer, token), 200, `${label}: … and cached`);
  };
  await outage('down (connection refused)', 'refuse');
  await outage('slow (replies 1 s late)', { delayMs: 1000 });
  await outage('partitioned (silent)', 'blackhole');
});

t.test('revoked-session view: Redis partitioned → 503 for session tokens after REVOCATION_MAX_STALENESS_MS; back → recovered, the revoked one refused', async (t) => {
  const STALENESS_MS = 1500;
  const { proxy, url } = await proxyFor(t, REDIS_URL, 6379);
  const s = await startSidecar({ ...fx.env, REDIS_URL: url, REDIS_COMMAND_TIMEOUT_MS: String(COMMAND_TIMEOUT_MS), REVOCATION_MAX_STALENESS_MS: String(STALENESS_MS) });
  t.teardown(() => s.close());
  const sid = randomUUID();
  const revokedToken = await fx.issuer.token(viewer2, { sid });
  const liveToken = await fx.issuer.token(viewer2);
  t.equal(await get(s, viewer2, revokedToken), 200, 'a live session is allowed');

  await proxy.set('blackhole');
  const partitionedAt = Date.now();
  // the issuer (which still reaches Redis) revokes the session during the partition
  const until = Date.now() + 15 * 60_000;
  await fx.redis.zadd(REVOKED_SESSIONS_KEY, until, sid);
  await fx.redis.publish(SESSION_REVOKED_CHANNEL, encodeRevocation({ sid, until }));
  // heartbeat = staleness / 4; the bound: staleness + one heartbeat + 100 ms after the partition
  const bound = STALENESS_MS + STALENESS_MS / 4 + SLACK_MS;
  const statuses = await watch(bound + 1500, async () => ({ at: Date.now() - partitionedAt, status: await get(s, viewer2, revokedToken) }));
  const late = statuses.filter((x) => x.at > bound);
  t.ok(late.length > 0, 'probed past the bound');
  t.same([...new Set(late.map((x) => x.status))], [503], `the revoked session's token: 503 from ${bound} ms after the partition, never 200`);
  const first503 = statuses.find((x) => x.status === 503);
  t.ok(first503 && first503.at <= bound, `503 from ${first503?.at} ms (≤ ${bound} ms)`);
  t.notOk(statuses.some((x) => x.status === 200 && x.at > bound), 'no allow beyond the bound');
  const stale = await raw(s.port, 'GET', '/api/v1/works', { authorization: `Bearer ${liveToken}`, 'x-publisher-id': publisher });
  t.equal(stale.status, 503, 'any session token: 503 pdp-unavailable while the view is stale');
  t.equal(stale.json().type, 'https://errors.music-publishing.example/pdp-unavailable');
  t.equal(await get(s, stranger), 503, 'a stranger is not allowed either');

  await proxy.set('pass');
  const back = await watch(10_000, () => get(s, viewer2, liveToken), (x) => x === 200);
  t.equal(back.at(-1), 200, `Redis back: a live session is allowed again after ${back.length} probes, without a restart`);
  t.equal(await get(s, viewer2, revokedToken), 401, 'the session revoked during the partition is refused');
});

t.test('Redis partitioned when the sidecar starts: the start is bounded, session tokens fail closed; back → allowed, the cache used', async (t) => {
  const { proxy, url } = await proxyFor(t, REDIS_URL, 6379);
  await proxy.set('blackhole');
  const started = Date.now();
  const s = await startSidecar({ ...fx.env, REDIS_URL: url, REDIS_COMMAND_TIMEOUT_MS: String(COMMAND_TIMEOUT_MS) });
  t.teardown(() => s.close());
  const tookMs = Date.now() - started;
  // five waits in a row of at most REDIS_START_WAIT_MS each (policies/src/redis.ts) and the epoch view's 1 s
  t.ok(tookMs < 5 * REDIS_START_WAIT_MS + 1000 + 5000, `started without Redis in ${tookMs} ms`);
  // the revoked-session view never synced: session tokens fail closed (README "Failure behaviour")
  const closed = await raw(s.port, 'GET', '/api/v1/works', { authorization: `Bearer ${await fx.issuer.token(viewer2)}`, 'x-publisher-id': publisher });
  t.equal(closed.status, 503, 'a member: 503 while the revoked-session view never synced');
  t.equal(closed.json().type, 'https://errors.music-publishing.example/pdp-unavailable');
  t.equal(await get(s, stranger), 503, 'a stranger is not allowed either');
  await proxy.set('pass');
  const lruBefore = await decisions(s.adminUrl, 'lru');
  const back = await watch(15_000, async () => (await get(s, viewer2)) === 200 && (await decisions(s.adminUrl, 'lru')) > lruBefore, (cached) => cached);
  t.equal(back.at(-1), true, `Redis back: decisions come from the cache again after ${back.length} probes, without a restart`);
  t.equal((await raw(s.port, 'GET', '/readyz')).json().checks.redis, 'ok', '/readyz says Redis is ok');
});
