/**
 * The access log (sidecar/src/access-log.ts): one `request completed` line per logged request (no
 * Fastify `incoming request` lines), answers ≥ 400 always eligible, the others sampled by
 * ACCESS_LOG_SAMPLE, at most ACCESS_LOG_MAX_PER_S lines per second, every request counted in
 * `sidecar_access_log_total{outcome}`, credential path segments redacted — against a real sidecar
 * (real OpenFGA and Redis) logging at info, and the sampling/cap logic with a fixed clock.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { buildSidecar } from '../../sidecar/src/app.ts';
import { loadConfig } from '../../sidecar/src/config.ts';
import { createAccessLog, type AccessLogOutcome } from '../../sidecar/src/access-log.ts';
import { AUDIENCE, ISSUER, OPENFGA_API_URL, REDIS_URL, raw, useSidecarFixture } from './helpers.ts';

const viewer = randomUUID();
const publisher = randomUUID();
const fx = useSidecarFixture(t, { sidecars: 0, tuples: [{ user: `user:${viewer}`, relation: 'viewer', object: `publisher:${publisher}` }] });

t.test('sampling and the per-second cap (fixed clock)', async (t) => {
  let now = 10_000;
  let r = 0.5;
  const counts: AccessLogOutcome[] = [];
  const lines: object[] = [];
  const log = { info: (o: object) => void lines.push(o) };
  const a = createAccessLog({ sample: 0.25, maxPerSecond: 2, enabled: true, count: (o) => counts.push(o), random: () => r, now: () => now });
  const entry = (statusCode: number) => ({ req: () => ({ method: 'GET', url: '/x' }), statusCode, responseTimeMs: 1.5 });
  t.equal(a.record(log, entry(200)), 'sampled_out', 'r = 0.5 ≥ 0.25: not sampled');
  r = 0.1;
  t.equal(a.record(log, entry(200)), 'written', 'r = 0.1 < 0.25: sampled');
  r = 0.9;
  t.equal(a.record(log, entry(403)), 'written', '≥ 400: always');
  t.equal(a.record(log, entry(500)), 'capped', 'third line within the second');
  now += 999;
  t.equal(a.record(log, entry(404)), 'capped', 'still the same window');
  now += 1;
  t.equal(a.record(log, entry(404)), 'written', 'a new window');
  t.same(counts, ['sampled_out', 'written', 'written', 'capped', 'capped', 'written']);
  t.match(lines[0], { req: { method: 'GET', url: '/x' }, res: { statusCode: 200 }, responseTime: 1.5 });
  const off = createAccessLog({ sample: 1, maxPerSecond: 100, enabled: false, count: () => undefined });
  t.equal(off.record(log, entry(500)), 'sampled_out', 'log level above info: nothing written');
  t.equal(lines.length, 3);
});

t.test('a sidecar at info: one bounded line per logged request, every request counted', async (t) => {
  const lines: string[] = [];
  const config = loadConfig({
    LOG_LEVEL: 'info',
    OPENFGA_API_URL,
    REDIS_URL,
    JWT_ISSUER: ISSUER,
    JWT_AUDIENCE: AUDIENCE,
    SIDECAR_PORT: '0',
    ADMIN_PORT: '0',
    ACCESS_LOG_SAMPLE: '0',
    ACCESS_LOG_MAX_PER_S: '2',
    DECISION_LOG_ALLOW_SAMPLE: '0',
    ...fx.env,
  });
  const app = await buildSidecar(config, { logStream: { write: (l) => void lines.push(l) } });
  t.teardown(() => app.close());
  await app.listen({ host: '127.0.0.1', port: 0 });
  await app.admin.listen();
  const port = (app.server.address() as { port: number }).port;
  const token = await fx.issuer.token(viewer);
  const headers = { authorization: `Bearer ${token}`, 'x-publisher-id': publisher };
  for (let i = 0; i < 5; i++) t.equal((await raw(port, 'GET', '/api/v1/works', headers)).status, 200);
  const completed = () => lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'request completed');
  t.equal(completed().length, 0, 'ACCESS_LOG_SAMPLE=0: no line for the 2xx answers');
  // four 404s at once, one with a credential in its path: two lines (the cap), two counted as capped
  const secret = 'invitation-secret-token';
  const statuses = await Promise.all([
    raw(port, 'POST', `/api/v1/invitations/${secret}/accept`, {}),
    ...[1, 2, 3].map(() => raw(port, 'GET', '/nowhere', {})),
  ]);
  t.same(statuses.map((s) => s.status), [404, 404, 404, 404]);
  const written = completed();
  t.equal(written.length, 2, 'at most ACCESS_LOG_MAX_PER_S lines per second');
  for (const l of written) t.match(l, { reqId: String, req: { method: /GET|POST/, url: /^\/(nowhere|api\/v1\/invitations\/\[redacted\]\/accept)$/ }, res: { statusCode: 404 }, responseTime: Number });
  t.notOk(lines.some((l) => l.includes(secret)), 'the credential path segment never reaches the log');
  t.notOk(lines.some((l) => l.includes('incoming request')), "Fastify's per-request lines are off");
  const metrics = await (await fetch(`http://127.0.0.1:${app.admin.port()}/metrics`)).text();
  const count = (o: string) => Number(new RegExp(`^sidecar_access_log_total\\{outcome="${o}"\\} (\\d+)`, 'm').exec(metrics)?.[1]);
  t.equal(count('written'), 2);
  t.equal(count('capped'), 2);
  t.equal(count('sampled_out'), 5);
});
