/**
 * SIDECAR_WORKERS (sidecar/src/main.ts, sidecar/src/workers.ts) against real OpenFGA and Redis:
 * main.ts with SIDECAR_WORKERS=2 is a node:cluster primary whose two workers share the port and
 * both serve requests on a listener with LISTEN_BACKLOG as its backlog (the aggregated /metrics shows each worker's count, with its pid, and the
 * decisions of both summed); /healthz and /decisions (both workers' rings merged) on the primary's
 * admin listener; a worker killed is replaced; SIGTERM stops the workers and exits 0 with both
 * ports closed and no worker left. A worker that cannot start fails the start (exit 1).
 */
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { connect } from 'node:net';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { ROOT, freePort, raw, useSidecarFixture } from './helpers.ts';

const viewer = randomUUID();
const publisher = randomUUID();
const fx = useSidecarFixture(t, { sidecars: 0, tuples: [{ user: `user:${viewer}`, relation: 'viewer', object: `publisher:${publisher}` }] });

const accepts = (port: number) =>
  new Promise<boolean>((r) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), r(true)));
    s.once('error', () => r(false));
  });
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Start main.ts with `env`; resolves once it printed its listening line (or exited). */
async function startMain(env: Record<string, string>) {
  let out = '';
  const child = spawn(process.execPath, ['sidecar/src/main.ts'], {
    cwd: ROOT,
    env: { ...process.env, ...fx.env, LOG_LEVEL: 'warn', SIDECAR_HOST: '127.0.0.1', JWT_ISSUER: 'https://issuer.test.local', JWT_AUDIENCE: 'music-publishing', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => child.once('exit', r));
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const deadline = Date.now() + 60_000;
  while (!out.includes('sidecar workers:') && child.exitCode === null && Date.now() < deadline) await sleep(100);
  return { child, exited, output: () => out };
}

/** `sidecar_worker_requests_total` by pid from a /metrics text. */
function perWorker(text: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const m of text.matchAll(/^sidecar_worker_requests_total\{([^}]*)\} (\d+)$/gm)) out.set(Number(/pid="(\d+)"/.exec(m[1]!)![1]), Number(m[2]));
  return out;
}

t.test('SIDECAR_WORKERS=2: two workers share the port, the primary aggregates, SIGTERM stops all', async (t) => {
  const [port, adminPort] = [await freePort(), await freePort()];
  const main = await startMain({ SIDECAR_WORKERS: '2', SIDECAR_PORT: String(port), ADMIN_PORT: String(adminPort), LISTEN_BACKLOG: '1234' });
  // a listening socket's Send-Q in ss(8) is its backlog: the primary's shared listener has the workers' LISTEN_BACKLOG
  t.match(spawnSync('ss', ['-Hltn', `( sport = :${port} )`], { encoding: 'utf8' }).stdout, /^LISTEN\s+\d+\s+1234\s/, 'LISTEN_BACKLOG is the listen backlog');
  t.match(main.output(), new RegExp(`sidecar listening on http://127\\.0\\.0\\.1:${port} \\(admin: http://127\\.0\\.0\\.1:${adminPort}/metrics\\)\\nsidecar workers: 2`), main.output());

  const headers = { authorization: `Bearer ${await fx.issuer.token(viewer)}`, 'x-publisher-id': publisher };
  const n = 40;
  // one connection per request (raw: no agent): the primary hands connections out round-robin
  const statuses = await Promise.all(Array.from({ length: n }, () => raw(port, 'GET', '/api/v1/works', headers).then((r) => r.status)));
  t.same(new Set(statuses), new Set([200]));

  const metrics = await raw(adminPort, 'GET', '/metrics');
  t.equal(metrics.status, 200);
  const workers = perWorker(metrics.text);
  t.equal(workers.size, 2, 'two workers report');
  const pids = [...workers.keys()];
  for (const [pid, count] of workers) t.ok(count > 0, `worker ${pid} served requests (${count})`);
  t.equal([...workers.values()].reduce((a, b) => a + b, 0), n, 'every request counted once');
  t.notOk(pids.includes(main.child.pid!), 'the workers are not the primary');
  const allowed = [...metrics.text.matchAll(/^sidecar_decisions_total\{[^}]*allowed="true"[^}]*\} (\d+)$/gm)].reduce((a, m) => a + Number(m[1]), 0);
  t.equal(allowed, n, "the workers' decisions summed");
  t.match(metrics.text, /^nodejs_heap_size_used_bytes \d/m, 'process metrics aggregated');

  t.same((await raw(adminPort, 'GET', '/healthz')).json(), { status: 'ok' });
  const recent = await raw(adminPort, 'GET', '/decisions?limit=100');
  t.equal(recent.status, 200);
  const records = recent.json().decisions as { time: string; request_id: string }[];
  t.equal(records.length, n, "both workers' rings merged");
  t.same([...records].sort((a, b) => (a.time < b.time ? 1 : a.time > b.time ? -1 : 0)).map((r) => r.time), records.map((r) => r.time), 'newest first');
  t.equal((await raw(adminPort, 'GET', '/decisions?limit=3')).json().decisions.length, 3);
  t.equal((await raw(port, 'GET', '/metrics')).status, 404, 'no /metrics on the public port');

  // a worker that dies is replaced
  process.kill(pids[0]!, 'SIGKILL');
  let replaced: Map<number, number> = new Map();
  for (let i = 0; i < 100 && !(replaced.size === 2 && !replaced.has(pids[0]!)); i++) {
    await sleep(200);
    replaced = perWorker((await raw(adminPort, 'GET', '/metrics')).text);
  }
  t.equal(replaced.size, 2, 'two workers again');
  t.notOk(replaced.has(pids[0]!), 'the killed worker is gone');
  t.equal((await raw(port, 'GET', '/api/v1/works', headers)).status, 200, 'still serving');
  const now = [...replaced.keys()];

  main.child.kill('SIGTERM');
  t.equal(await main.exited, 0, 'clean shutdown');
  t.equal(await accepts(port), false, 'public port closed');
  t.equal(await accepts(adminPort), false, 'admin port closed');
  t.same(now.filter(alive), [], 'no worker left');
});

t.test('a worker that cannot start fails the start', async (t) => {
  const main = await startMain({ SIDECAR_WORKERS: '2', SIDECAR_PORT: String(await freePort()), ADMIN_PORT: String(await freePort()), ROUTES_FILE: '/nonexistent/routes.yaml' });
  t.equal(await main.exited, 1);
  t.match(main.output(), /sidecar failed to start/);
});
