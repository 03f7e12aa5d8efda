/**
 * connectRedis (policies/src/redis.ts) against the real Redis of the test environment: it connects
 * a lazy client, joins a connect someone else started (it waits for 'ready', which is how a
 * Cluster whose own connect() promise was dropped still counts), passes a refused connection's
 * error on, and bounds the wait for a peer that accepts TCP and never answers — the sidecar's start
 * never hangs on Redis.
 */
import t from 'tap';
import { once } from 'node:events';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { connectRedis, createRedisClient, type RedisClient } from '../../policies/src/redis.ts';
import { REDIS_URL } from './helpers.ts';

function client(url: string, extra: Parameters<typeof createRedisClient>[1] = {}): RedisClient {
  const c = createRedisClient({ url }, { lazyConnect: true, maxRetriesPerRequest: 1, ...extra });
  c.on('error', () => undefined);
  t.teardown(() => c.disconnect());
  return c;
}

t.test('a lazy client: connected and ready; called again when ready, it returns at once', async (t) => {
  const c = client(REDIS_URL);
  t.equal(c.status, 'wait');
  await connectRedis(c, 5000);
  t.equal(c.status, 'ready');
  t.equal(await c.ping(), 'PONG');
  const started = Date.now();
  await connectRedis(c, 5000);
  t.ok(Date.now() - started < 50, 'no second connect');
  t.equal(c.listenerCount('ready'), 0, 'no listener left behind');
});

t.test('a connect already under way (its promise not ours): resolved by the ready event', async (t) => {
  const c = client(REDIS_URL);
  const theirs = c.connect();
  t.equal(c.status, 'connecting');
  await connectRedis(c, 5000);
  t.equal(c.status, 'ready');
  await theirs;
  t.equal(c.listenerCount('ready'), 0);
});

t.test('a refused connection: rejected with ioredis’ error, without waiting out the bound', async (t) => {
  const probe = createServer().listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const port = (probe.address() as AddressInfo).port;
  await new Promise((r) => probe.close(r)); // now nothing listens there
  const c = client(`redis://127.0.0.1:${port}`, { retryStrategy: () => null });
  const started = Date.now();
  await t.rejects(connectRedis(c, 5000), /ECONNREFUSED|Connection is closed/);
  t.ok(Date.now() - started < 2000, `rejected at once (${Date.now() - started} ms)`);
  t.equal(c.listenerCount('ready'), 0);
});

t.test('a peer that accepts and never answers: rejected after timeoutMs, saying so', async (t) => {
  const sockets: Socket[] = [];
  const silent = createServer((s) => void sockets.push(s)).listen(0, '127.0.0.1');
  await once(silent, 'listening');
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    silent.close();
  });
  const c = client(`redis://127.0.0.1:${(silent.address() as AddressInfo).port}`, { connectTimeout: 30_000 });
  const started = Date.now();
  await t.rejects(connectRedis(c, 300), { message: /^Redis not ready within 300 ms \(status (connect|connecting)\)$/ });
  const took = Date.now() - started;
  t.ok(took >= 290 && took < 2000, `after the bound (${took} ms)`);
  t.ok(sockets.length >= 1, 'the client did reach the peer');
});
