/**
 * The sidecar and a RelationshipWriter on a Redis Cluster (3 masters + 3 replicas, Debian's
 * redis-server on loopback: test/support/redis-cluster.ts), configured by REDIS_CLUSTER_NODES
 * (policies/src/redis.ts): decisions are cached (lru, then the other sidecar from Redis); a tuple
 * delete (epoch bump) is seen by both sidecars within 1 s; a session revocation reaches both; rate
 * limits are counted in the cluster (one counter for both sidecars); the metering is flushed and the
 * decision log stream written; the keys that multi-key commands join share a slot (CLUSTER KEYSLOT).
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { epochKeys, epochKeysToBump } from '../../policies/src/epochs.ts';
import { activeModelKey, publishActiveModel, readActiveModel } from '../../policies/src/active-model.ts';
import { readRecentDecisions } from '../../policies/src/decision-log.ts';
import { dayKey, dirtyKey, monthKey, monthOfDay, utcDayOf } from '../../policies/src/metering.ts';
import { createRedisClient, createRedisSubscriber, redisConnectionFromEnv, type RedisClient } from '../../policies/src/redis.ts';
import { RelationshipWriter } from '../../policies/src/relationships.ts';
import { REVOKED_SESSIONS_KEY, SESSION_REVOKED_CHANNEL, encodeRevocation } from '../../policies/src/session-revocations.ts';
import { startRedisCluster, type RedisCluster } from '../support/redis-cluster.ts';
import { createIssuer, createTestStore, decisions, raw, startSidecar, startUpstream, tempDir, type Issuer, type Sidecar, type TestStore, type Upstream } from './helpers.ts';

const viewer = randomUUID();
const publisher = randomUUID();
const prefix = `test-metering-cluster-${randomUUID().slice(0, 8)}`;
const tmp = tempDir();
let cluster: RedisCluster;
let redis: RedisClient;
let store: TestStore;
let issuer: Issuer;
let upstream: Upstream;
let writer: RelationshipWriter;
const sidecars: Sidecar[] = [];

t.before(async () => {
  cluster = await startRedisCluster();
  redis = createRedisClient(redisConnectionFromEnv({ REDIS_CLUSTER_NODES: cluster.seeds }), { lazyConnect: true });
  await redis.connect();
  store = await createTestStore();
  issuer = await createIssuer();
  upstream = await startUpstream();
  writer = new RelationshipWriter({ fga: store.fga, redis, storeId: store.storeId, modelId: store.modelId });
  await writer.write({ writes: [{ user: `user:${viewer}`, relation: 'viewer', object: `publisher:${publisher}` }] });
  const env = {
    REDIS_CLUSTER_NODES: cluster.seeds,
    REDIS_URL: 'redis://127.0.0.1:1/0', // unused with a cluster (credentials only): nothing listens here
    OPENFGA_STORE_NAME: store.storeName,
    UPSTREAM_URL: upstream.url,
    ROUTES_FILE: tmp.routesFile,
    JWT_JWKS_URL: issuer.jwksUrl,
    RATE_LIMIT_SUBJECT: '1000/min',
    RATE_LIMIT_LEASE_MAX: '1', // one count per request: the answers' order shows the one counter (leases: rate-limit-leases.test.ts)
    RATE_LIMIT_COMMAND_TIMEOUT_MS: '1000', // a loaded test machine: counted in the cluster, not in process
    RATE_LIMIT_KEY_PREFIX: `rl-${randomUUID().slice(0, 8)}`,
    METERING_KEY_PREFIX: prefix,
    METERING_FLUSH_INTERVAL_MS: '200',
    DECISION_LOG_FLUSH_MS: '200',
  };
  for (let i = 0; i < 2; i++) sidecars.push(await startSidecar(env));
});

t.teardown(async () => {
  for (const s of sidecars) await s.close();
  await upstream?.close();
  await issuer?.close();
  await store?.remove();
  redis?.disconnect();
  await cluster?.stop();
  tmp.cleanup();
});

const works = (s: Sidecar, token: string) => raw(s.port, 'GET', '/api/v1/works', { authorization: `Bearer ${token}`, 'x-publisher-id': publisher });

/** Poll `probe` every 20 ms until it is true; false after `ms`. */
async function eventually(ms: number, probe: () => Promise<boolean>): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await probe()) return true;
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
}

t.test('both sidecars are ready on the cluster', async (t) => {
  for (const s of sidecars) {
    const ready = (await raw(s.port, 'GET', '/readyz')).json();
    t.equal(ready.checks.redis, 'ok');
    t.equal(ready.checks.session_revocations, 'ok');
  }
});

t.test('decisions are cached: the LRU, then the other sidecar from Redis', async (t) => {
  const token = await issuer.token(viewer);
  const [a, b] = sidecars as [Sidecar, Sidecar];
  t.equal((await works(a, token)).status, 200, 'first: OpenFGA');
  t.equal((await works(a, token)).status, 200);
  t.ok((await decisions(a.adminUrl, 'lru', true)) >= 1, 'second on the same sidecar: its LRU');
  t.equal((await works(b, token)).status, 200);
  t.ok((await decisions(b.adminUrl, 'redis', true)) >= 1, 'the other sidecar: the decision cached in the cluster');
});

t.test('a tuple delete (epoch bump) is seen by both sidecars within 1 s', async (t) => {
  const user = randomUUID();
  const tuple = { user: `user:${user}`, relation: 'viewer', object: `publisher:${publisher}` };
  await writer.write({ writes: [tuple] });
  const token = await issuer.token(user);
  for (const s of sidecars) t.equal((await works(s, token)).status, 200, 'allowed and cached');
  await writer.write({ deletes: [tuple] });
  // the bump travels to each sidecar's in-process epochs by pub/sub (pdp/epoch-view.ts): milliseconds
  for (const s of sidecars) t.ok(await eventually(1000, async () => (await works(s, token)).status === 403), 'denied within 1 s');
});

t.test('a session revocation published on the cluster reaches both sidecars', async (t) => {
  const sid = randomUUID();
  const token = await issuer.token(viewer, { sid });
  for (const s of sidecars) t.equal((await works(s, token)).status, 200);
  const until = Date.now() + 15 * 60_000;
  await redis.multi().zadd(REVOKED_SESSIONS_KEY, until, sid).publish(SESSION_REVOKED_CHANNEL, encodeRevocation({ sid, until })).exec();
  for (const s of sidecars) t.ok(await eventually(1000, async () => (await works(s, token)).status === 401), 'refused within 1 s');
});

t.test('rate limits are counted in the cluster: one counter for both sidecars', async (t) => {
  const user = randomUUID();
  await writer.write({ writes: [{ user: `user:${user}`, relation: 'viewer', object: `publisher:${publisher}` }] });
  const token = await issuer.token(user);
  const remaining: number[] = [];
  for (let i = 0; i < 4; i++) {
    const res = await works(sidecars[i % 2]!, token);
    t.equal(res.status, 200);
    remaining.push(Number(res.headers['ratelimit-remaining']));
  }
  t.same(remaining, [999, 998, 997, 996], 'each request counted once, whichever sidecar took it');
});

t.test('metering is flushed and the decision log stream written to the cluster', async (t) => {
  const token = await issuer.token(viewer);
  for (const s of sidecars) t.equal((await works(s, token)).status, 200);
  const day = utcDayOf(Date.now());
  t.ok(await eventually(5000, async () => Number(await redis.hget(dayKey(prefix, publisher, day), 'calls')) >= 2), 'calls in the day hash');
  t.ok(Number(await redis.get(monthKey(prefix, publisher, monthOfDay(day)))) >= 2, 'and the month total');
  t.ok((await redis.zscore(dirtyKey(prefix, publisher), day)) !== null, 'the day is dirty for the roll-up');
  t.ok(
    await eventually(5000, async () => (await readRecentDecisions(redis, store.storeId, { count: 50 })).some((d) => d.subject === `user:${viewer}` && d.publisher === publisher)),
    'decision records in the store stream',
  );
});

t.test('keys joined by one command share a slot (CLUSTER KEYSLOT)', async (t) => {
  const slot = async (key: string) => Number((await cluster.cli(['cluster', 'keyslot', key])).trim());
  const slots = async (keys: string[]) => new Set(await Promise.all(keys.map(slot)));
  const mget = epochKeys(store.storeId, `user:${viewer}`, 'work:w1');
  t.equal((await slots([...mget, activeModelKey(store.storeId)])).size, 1, 'the epoch MGET and the active-model MULTI: one slot');
  const bumped = epochKeysToBump(store.storeId, [{ user: 'user:*', relation: 'suspended', object: `publisher:${publisher}` }, { user: `user:${viewer}`, relation: 'viewer', object: `publisher:${publisher}` }]);
  t.equal((await slots(bumped)).size, 1, 'the epochs one write bumps: one slot');
  const day = utcDayOf(Date.now());
  t.equal((await slots([dayKey(prefix, publisher, day), monthKey(prefix, publisher, monthOfDay(day)), dirtyKey(prefix, publisher)])).size, 1, "the metering script's three keys: one slot");
  t.not(await slot(epochKeys('another-store', `user:${viewer}`, 'work:w1')[0]), await slot(mget[0]), 'stores spread over the cluster (these two differ)');
});

t.test('publishActiveModel (MULTI SET + INCR + PUBLISH) works on the cluster; a subscriber on any node hears it', async (t) => {
  const listener = createRedisSubscriber(redisConnectionFromEnv({ REDIS_CLUSTER_NODES: cluster.seeds }), { lazyConnect: true }, redis);
  listener.on('error', () => undefined);
  t.teardown(() => listener.disconnect());
  await listener.connect();
  const heard: string[] = [];
  listener.on('message', (_ch: string, m: string) => heard.push(m));
  await listener.subscribe(`authz:model-changed:${store.storeId}`);
  await publishActiveModel(redis, store.storeId, store.modelId);
  t.equal(await readActiveModel(redis, store.storeId), store.modelId);
  t.ok(await eventually(1000, async () => heard.includes(store.modelId)), 'the message reached the subscriber');
  const token = await issuer.token(viewer);
  for (const s of sidecars) t.equal((await works(s, token)).status, 200, 'the sidecars keep deciding with it');
});

t.test('a killed master: its replica takes over, revocations and decisions keep working', async (t) => {
  const { killed, promoted } = await cluster.killMaster(epochKeys(store.storeId, `user:${viewer}`, 'work:w1')[0]);
  t.not(promoted, killed, `the replica ${promoted} took over from ${killed}`);
  const token = await issuer.token(viewer);
  for (const s of sidecars) t.ok(await eventually(5000, async () => (await works(s, token)).status === 200), 'allowed again through the new master');
  const sid = randomUUID();
  const revocable = await issuer.token(viewer, { sid });
  const until = Date.now() + 15 * 60_000;
  await redis.zadd(REVOKED_SESSIONS_KEY, until, sid);
  await redis.publish(SESSION_REVOKED_CHANNEL, encodeRevocation({ sid, until }));
  for (const s of sidecars) t.ok(await eventually(5000, async () => (await works(s, revocable)).status === 401), 'a revocation after the failover reaches both');
});
