/**
 * The HTTP server's timeouts (REQUEST_TIMEOUT_MS, CONNECTION_TIMEOUT_MS, KEEP_ALIVE_TIMEOUT_MS):
 * configured defaults, validation, and a client that stops sending mid-request is cut off.
 * The app runs on an empty database (nothing here queries it).
 */
import t from 'tap';
import { connect } from 'node:net';
import { buildCatalogApi } from '../../catalog-api/src/app.ts';
import { loadConfig } from '../../catalog-api/src/config.ts';
import { createTestDb, type TestDb } from '../migrations/db.ts';
import { testConfig } from './helpers.ts';

let db: TestDb;
t.before(async () => {
  db = await createTestDb('server', 'apitest');
});
t.teardown(async () => {
  await db?.drop();
});

t.test('configuration: defaults and validation', async (t) => {
  const c = loadConfig({});
  t.equal(c.REQUEST_TIMEOUT_MS, 30_000);
  t.equal(c.CONNECTION_TIMEOUT_MS, 60_000);
  t.equal(c.KEEP_ALIVE_TIMEOUT_MS, 72_000);
  t.throws(() => loadConfig({ REQUEST_TIMEOUT_MS: '0' }), /REQUEST_TIMEOUT_MS/, 'a request timeout is mandatory');
  t.throws(() => loadConfig({ REQUEST_TIMEOUT_MS: 'soon' }), /REQUEST_TIMEOUT_MS/);
  t.throws(() => loadConfig({ CONNECTION_TIMEOUT_MS: '-1' }), /CONNECTION_TIMEOUT_MS/);
  t.throws(() => loadConfig({ KEEP_ALIVE_TIMEOUT_MS: '0' }), /KEEP_ALIVE_TIMEOUT_MS/);
});

t.test('the server applies them', async (t) => {
  const app = await buildCatalogApi(testConfig(db), { logger: false, relationshipSink: null });
  t.teardown(() => app.close());
  await app.ready();
  t.equal(app.server.requestTimeout, 30_000, 'requestTimeout');
  t.equal(app.server.timeout, 60_000, 'connectionTimeout (socket inactivity)');
  t.equal(app.server.keepAliveTimeout, 72_000, 'keepAliveTimeout');
  t.ok(app.server.headersTimeout > 0 && app.server.headersTimeout <= app.server.requestTimeout, `headersTimeout ${app.server.headersTimeout} within requestTimeout`);

  const custom = await buildCatalogApi(testConfig(db, { REQUEST_TIMEOUT_MS: '5000', CONNECTION_TIMEOUT_MS: '6000', KEEP_ALIVE_TIMEOUT_MS: '7000' }), {
    logger: false,
    relationshipSink: null,
  });
  t.teardown(() => custom.close());
  await custom.ready();
  t.same([custom.server.requestTimeout, custom.server.timeout, custom.server.keepAliveTimeout], [5000, 6000, 7000]);
});

t.test('a client that stops sending in the middle of a request is disconnected', async (t) => {
  const app = await buildCatalogApi(testConfig(db, { REQUEST_TIMEOUT_MS: '300', CONNECTION_TIMEOUT_MS: '300' }), { logger: false, relationshipSink: null });
  t.teardown(() => app.close());
  await app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.address() as { port: number };
  const started = Date.now();
  const answer = await new Promise<string>((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n')); // headers never finish
    let got = '';
    socket.on('data', (d) => (got += d.toString()));
    socket.on('close', () => resolve(got));
    socket.on('error', reject);
    setTimeout(() => {
      socket.destroy();
      reject(new Error('still open after 5 s'));
    }, 5000).unref();
  });
  const took = Date.now() - started;
  t.ok(took < 3000, `closed after ${took} ms`);
  t.notMatch(answer, /200 OK/, 'the unfinished request was not served');
});
