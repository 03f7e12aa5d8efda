import t from 'tap';
import { ConsistencyPreference } from '@openfga/sdk';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { deployModel, fgaClient } from '../../policies/src/model.ts';
import { RelationshipWriter } from '../../policies/src/relationships.ts';
import { OPENFGA_API_URL, REDIS_URL, deleteStore, uniqueStoreName } from './helpers.ts';

const storeName = uniqueStoreName('relationships');
const { storeId, modelId } = await deployModel({ apiUrl: OPENFGA_API_URL, storeName });
const fga = fgaClient(OPENFGA_API_URL, storeId);
const redis = new Redis(REDIS_URL, { lazyConnect: false });
const writer = new RelationshipWriter({ fga, redis, storeId, modelId });

t.teardown(async () => {
  const keys = await redis.keys(`authz:{${storeId}}:epoch:*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
  await deleteStore(storeId);
});

const epoch = async (suffix: string) => Number((await redis.get(`authz:{${storeId}}:epoch:${suffix}`)) ?? 0);
const check = async (user: string, relation: string, object: string) =>
  (await fga.check({ user, relation, object }, { authorizationModelId: modelId, consistency: ConsistencyPreference.HigherConsistency })).allowed;

t.test('tuples land, epochs increment per the bump rules', async (t) => {
  const [p, u, w] = [randomUUID(), randomUUID(), randomUUID()];
  await writer.write({
    writes: [
      { user: `user:${u}`, relation: 'viewer', object: `publisher:${p}` },
      { user: `publisher:${p}`, relation: 'publisher', object: `work:${w}` },
      { user: 'system:platform', relation: 'system', object: `publisher:${p}` },
    ],
  });
  t.equal(await check(`user:${u}`, 'can_read', `work:${w}`), true);
  t.equal(await check(`user:${u}`, 'can_update', `work:${w}`), false);
  t.equal(await epoch(`user:${u}`), 1);
  t.equal(await epoch(`object:work:${w}`), 1);
  t.equal(await epoch(`object:publisher:${p}`), 1);
  t.equal(await epoch('global'), 1);

  await writer.write({ deletes: [{ user: `user:${u}`, relation: 'viewer', object: `publisher:${p}` }] });
  t.equal(await check(`user:${u}`, 'can_read', `work:${w}`), false, 'the delete landed');
  t.equal(await epoch(`user:${u}`), 2);
  t.equal(await epoch('global'), 1, 'a user tuple does not bump global');
});

t.test('idempotent: duplicate write and delete of a missing tuple succeed (and still bump)', async (t) => {
  const [p, u] = [randomUUID(), randomUUID()];
  const tuple = { user: `user:${u}`, relation: 'editor', object: `publisher:${p}` };
  await writer.write({ writes: [tuple] });
  await writer.write({ writes: [tuple, tuple] });
  t.equal(await check(tuple.user, 'works_create', tuple.object), true);
  t.equal(await epoch(`user:${u}`), 2);
  await writer.write({ deletes: [tuple] });
  await writer.write({ deletes: [tuple] });
  t.equal(await check(tuple.user, 'works_create', tuple.object), false);
  t.equal(await epoch(`user:${u}`), 4);
  await writer.write({ deletes: [{ user: `user:${randomUUID()}`, relation: 'admin', object: `publisher:${randomUUID()}` }] });
  await writer.write({});
});

t.test('more than 100 tuples are written in chunks', async (t) => {
  const p = randomUUID();
  const users = Array.from({ length: 250 }, () => randomUUID());
  await writer.write({ writes: users.map((u) => ({ user: `user:${u}`, relation: 'viewer', object: `publisher:${p}` })) });
  let count = 0;
  let token: string | undefined;
  do {
    const page = await fga.read({ object: `publisher:${p}`, relation: 'viewer' }, { pageSize: 100, ...(token ? { continuationToken: token } : {}) });
    count += page.tuples.length;
    token = page.continuation_token || undefined;
  } while (token);
  t.equal(count, 250, 'all 250 tuples landed');
  t.equal(await epoch(`user:${users[0]}`), 1);
  t.equal(await epoch(`user:${users[249]}`), 1);
  // a mixed batch of writes and deletes over the limit
  await writer.write({
    writes: users.slice(0, 60).map((u) => ({ user: `user:${u}`, relation: 'editor', object: `publisher:${p}` })),
    deletes: users.map((u) => ({ user: `user:${u}`, relation: 'viewer', object: `publisher:${p}` })),
  });
  const left = await fga.read({ object: `publisher:${p}`, relation: 'viewer' }, { pageSize: 100 });
  t.equal(left.tuples.length, 0, 'all viewer tuples deleted');
  t.equal(await check(`user:${users[59]}`, 'works_create', `publisher:${p}`), true);
  t.equal(await check(`user:${users[60]}`, 'works_read', `publisher:${p}`), false);
});

t.test('the same tuple written and deleted in one call is rejected before any request', async (t) => {
  const tuple = { user: `user:${randomUUID()}`, relation: 'viewer', object: `publisher:${randomUUID()}` };
  await t.rejects(writer.write({ writes: [tuple], deletes: [tuple] }), { message: /both written and deleted/ });
  t.equal(await epoch(`user:${tuple.user.slice(5)}`), 0);
});

t.test('a tuple invalid for the model fails; earlier chunks still bump their epochs', async (t) => {
  const p = randomUUID();
  const good = Array.from({ length: 100 }, () => ({ user: `user:${randomUUID()}`, relation: 'viewer', object: `publisher:${p}` }));
  const bad = { user: `user:${randomUUID()}`, relation: 'no_such_relation', object: `publisher:${p}` };
  await t.rejects(writer.write({ writes: [...good, bad] }));
  t.equal(await check(good[0]!.user, 'works_read', `publisher:${p}`), true);
  t.equal(await epoch(`user:${good[0]!.user.slice(5)}`), 1);
  t.equal(await epoch(`user:${bad.user.slice(5)}`), 0);
});

t.test('Redis down: the write lands but the call throws (a stale cache would be unsafe)', async (t) => {
  const down = new Redis('redis://127.0.0.1:1', { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
  down.on('error', () => undefined);
  const w = new RelationshipWriter({ fga, redis: down, storeId, modelId });
  const tuple = { user: `user:${randomUUID()}`, relation: 'viewer', object: `publisher:${randomUUID()}` };
  await t.rejects(w.write({ writes: [tuple] }), { message: /writeable|ECONNREFUSED|Connection is closed/ });
  t.equal(await check(tuple.user, 'works_read', tuple.object), true);
  down.disconnect();
});

t.test('redis: null writes without bumping', async (t) => {
  const w = new RelationshipWriter({ fga, redis: null, storeId, modelId });
  const tuple = { user: `user:${randomUUID()}`, relation: 'viewer', object: `publisher:${randomUUID()}` };
  await w.write({ writes: [tuple] });
  t.equal(await check(tuple.user, 'works_read', tuple.object), true);
  t.equal(await epoch(`user:${tuple.user.slice(5)}`), 0);
});
