/**
 * The sidecar's admin listener (issue 9 §2; sidecar/src/admin.ts, docs/CONTRACTS.md "Runtime and
 * layout"): /metrics (and /healthz) are served on ADMIN_HOST:ADMIN_PORT — loopback by default — and
 * nothing else is; on the public port /metrics is an ordinary path that a route rule decides (no
 * rule → 404, a public rule → the upstream's answer, never the sidecar's counters). Against real
 * OpenFGA and Redis, in process and as the `sidecar/src/main.ts` process.
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { connect } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadConfig } from '../../sidecar/src/config.ts';
import { ROOT, TEST_ROUTES, freePort, raw, startSidecar, useSidecarFixture, type RawResponse } from './helpers.ts';

const viewer = randomUUID();
const publisher = randomUUID();
const fx = useSidecarFixture(t, { tuples: [{ user: `user:${viewer}`, relation: 'viewer', object: `publisher:${publisher}` }] });

const notFound = (t: Test, res: RawResponse, label: string) => {
  t.equal(res.status, 404, `${label}: 404`);
  t.match(String(res.headers['content-type']), /^application\/problem\+json/, `${label}: problem+json`);
  t.equal(res.json().type, 'https://errors.music-publishing.example/not-found', `${label}: kind`);
  t.notMatch(res.text, /sidecar_decisions_total|nodejs_heap/, `${label}: no metrics in the answer`);
};

/** Whether a TCP connection to host:port is accepted (false on ECONNREFUSED and the like). */
const accepts = (host: string, port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = connect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });

t.test('configuration: loopback and 9464 by default, the port validated', async (t) => {
  t.same(loadConfig({}).admin, { host: '127.0.0.1', port: 9464 });
  t.same(loadConfig({ ADMIN_HOST: '::1', ADMIN_PORT: '0' }).admin, { host: '::1', port: 0 });
  t.throws(() => loadConfig({ ADMIN_PORT: '70000' }), /ADMIN_PORT/);
  t.throws(() => loadConfig({ ADMIN_PORT: 'metrics' }), /ADMIN_PORT/);
});

t.test('the admin listener serves /metrics and /healthz, bound to loopback only', async (t) => {
  const before = fx.upstream.received.length;
  const allowed = await raw(fx.sidecar.port, 'GET', '/api/v1/works', { authorization: `Bearer ${await fx.issuer.token(viewer)}`, 'x-publisher-id': publisher });
  t.equal(allowed.status, 200, 'a decision to count');

  const metrics = await raw(fx.sidecar.adminPort, 'GET', '/metrics');
  t.equal(metrics.status, 200);
  t.match(String(metrics.headers['content-type']), /^text\/plain; version=0\.0\.4/, 'Prometheus text format');
  t.match(metrics.text, /^sidecar_decisions_total\{source="pdp",allowed="true"\} [1-9]/m, 'the decision is counted');
  t.match(metrics.text, /^nodejs_heap_size_used_bytes /m, 'process metrics');
  t.same((await raw(fx.sidecar.adminPort, 'GET', '/healthz')).json(), { status: 'ok' });

  const address = fx.sidecar.app.admin.app.server.address() as { address: string; port: number };
  t.equal(address.address, '127.0.0.1', 'bound to 127.0.0.1 (ADMIN_HOST default), not to every interface');
  t.equal(await accepts('127.0.0.1', fx.sidecar.adminPort), true, 'reachable on 127.0.0.1');
  // Linux routes all of 127/8 to lo: a listener on 0.0.0.0 would accept on 127.0.0.2 too.
  t.equal(await accepts('127.0.0.2', fx.sidecar.adminPort), false, 'not reachable on another address of the host');

  // nothing else: no pipeline, no proxy, no readiness, keys or ext_authz on the admin port
  const token = await fx.issuer.token(viewer);
  for (const [method, path] of [
    ['GET', '/api/v1/works'],
    ['GET', '/readyz'],
    ['GET', '/.well-known/jwks.json'],
    ['GET', '/ext-authz/api/v1/works'],
    ['GET', '/docs/index.html'],
    ['GET', '/metrics/'],
    ['POST', '/metrics'],
  ] as const) {
    notFound(t, await raw(fx.sidecar.adminPort, method, path, { authorization: `Bearer ${token}`, 'x-publisher-id': publisher }), `admin ${method} ${path}`);
  }
  t.equal(fx.upstream.received.length, before + 1, 'the upstream saw only the proxied request');
});

t.test('the public port: /metrics is an ordinary path — no rule → 404; a rule → the upstream answers', async (t) => {
  const before = fx.upstream.received.length;
  notFound(t, await raw(fx.sidecar.port, 'GET', '/metrics'), 'public /metrics without a rule');
  notFound(t, await raw(fx.sidecar.port, 'GET', '/metrics', { authorization: `Bearer ${await fx.issuer.token(viewer)}`, 'x-publisher-id': publisher }), 'public /metrics with a token');
  t.equal(fx.upstream.received.length, before, 'nothing reached the upstream');
  t.equal((await raw(fx.sidecar.port, 'GET', '/healthz')).status, 200, 'the public port keeps /healthz');
  t.equal((await raw(fx.sidecar.port, 'GET', '/readyz')).status, 200, 'and /readyz');

  // An operator who routes /metrics to the upstream gets the upstream's /metrics, never the sidecar's.
  const routesFile = join(fx.tmp.dir, 'routes-with-metrics.yaml');
  writeFileSync(routesFile, `${TEST_ROUTES}  - { method: GET, path: /metrics, public: true }\n`);
  const s = await startSidecar({ ...fx.env, ROUTES_FILE: routesFile });
  t.teardown(() => s.close());
  const routed = await raw(s.port, 'GET', '/metrics');
  t.equal(routed.status, 200);
  t.equal(routed.headers['x-upstream'], 'yes', 'answered by the upstream');
  t.notMatch(routed.text, /sidecar_decisions_total/, "not the sidecar's counters");
  t.equal(fx.upstream.received.at(-1)!.url, '/metrics', 'forwarded as any routed path');
  t.equal((await raw(s.adminPort, 'GET', '/metrics')).status, 200, 'its admin listener still serves its own');
});

t.test('close() stops the admin listener too', async (t) => {
  const s = await startSidecar(fx.env);
  t.equal(await accepts('127.0.0.1', s.adminPort), true, 'listening');
  await s.close();
  t.equal(await accepts('127.0.0.1', s.adminPort), false, 'closed with the sidecar');
});

t.test('main.ts: listens on SIDECAR_PORT and ADMIN_PORT, prints both, and stops both on SIGTERM', async (t) => {
  const [port, adminPort] = [await freePort(), await freePort()];
  let out = '';
  const child = spawn(process.execPath, ['sidecar/src/main.ts'], {
    cwd: ROOT,
    env: {
      ...process.env,
      ...fx.env,
      LOG_LEVEL: 'warn',
      SIDECAR_HOST: '127.0.0.1',
      SIDECAR_PORT: String(port),
      ADMIN_PORT: String(adminPort),
      JWT_ISSUER: 'https://issuer.test.local',
      JWT_AUDIENCE: 'music-publishing',
      OPENFGA_API_URL: process.env.OPENFGA_API_URL ?? 'http://127.0.0.1:8080',
      REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/0',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => child.once('exit', r));
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const deadline = Date.now() + 30_000;
  while (!out.includes('listening on') && child.exitCode === null && Date.now() < deadline) await sleep(100);
  t.match(out, new RegExp(`sidecar listening on http://127\\.0\\.0\\.1:${port} \\(admin: http://127\\.0\\.0\\.1:${adminPort}/metrics\\)`), 'both URLs printed');

  await raw(port, 'GET', '/api/v1/works', { authorization: `Bearer ${await fx.issuer.token(viewer)}`, 'x-publisher-id': publisher });
  const metrics = await raw(adminPort, 'GET', '/metrics');
  t.equal(metrics.status, 200, 'admin /metrics');
  t.match(metrics.text, /^sidecar_decisions_total\{[^}]*allowed="true"\} [1-9]/m, "the process's own decision");
  notFound(t, await raw(port, 'GET', '/metrics'), 'public /metrics of the process');

  child.kill('SIGTERM');
  t.equal(await exited, 0, 'clean shutdown');
  t.equal(await accepts('127.0.0.1', port), false, 'public port closed');
  t.equal(await accepts('127.0.0.1', adminPort), false, 'admin port closed');
});
