/**
 * `npm run bench -- peer` (bench/peer.bench.ts) cannot rot:
 * - the peer's policy (bench/peer/authz.rego in a real OPA, OPA_BIN) decides like the sidecar: a
 *   member's valid token is allowed; another key's signature, another issuer or audience, an expired
 *   token, a non-access-token `typ`, a non-member, another publisher and another route are not;
 * - the smoke run (BENCH_SMOKE=1: 1 s per row) exits 0 — every enforcement point allowed the stream
 *   and denied an outsider before measuring, no request failed, the uncached sidecar asked OpenFGA
 *   for every decision — and its report has every row with numbers.
 * Needs OPA_BIN (scripts/lib.sh ensure_opa_bin), NGINX_BIN, OPENFGA_BIN and the services.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { startOpa } from '../../bench/lib/peer.ts';

const ROOT = resolve(import.meta.dirname, '../..');

t.test('the peer policy (OPA): ES256 token against the JWKS, then the membership from data', async (t) => {
  const issuer = 'https://peer-test.local';
  const keys = await generateKeyPair('ES256', { extractable: true });
  const other = await generateKeyPair('ES256', { extractable: true });
  const jwks = { keys: [{ ...(await exportJWK(keys.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' }] };
  const [member, outsider, publisher] = [randomUUID(), randomUUID(), randomUUID()];
  const opa = await startOpa({ jwks, issuer, memberships: [{ user: member, relation: 'viewer', publisher }] });
  t.teardown(() => opa.stop());
  type Claims = { iss?: string; aud?: string; sub?: string; exp?: number; typ?: string; key?: typeof keys.privateKey };
  const token = (c: Claims = {}) =>
    new SignJWT({})
      .setProtectedHeader({ alg: 'ES256', typ: c.typ ?? 'at+jwt', kid: 'k1' })
      .setIssuer(c.iss ?? issuer)
      .setAudience(c.aud ?? 'music-publishing')
      .setSubject(c.sub ?? member)
      .setIssuedAt()
      .setExpirationTime(c.exp ?? '1h')
      .sign(c.key ?? keys.privateKey);
  const ask = async (input: Record<string, string>) => {
    const res = await fetch(`${opa.url}/v0/data/peer/authz/allow`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(input) });
    return { status: res.status, body: (await res.text()).trim() };
  };
  const input = async (c: Claims = {}, more: Record<string, string> = {}) => ({ token: await token(c), publisher, method: 'GET', path: '/api/v1/works', ...more });

  const ok = await ask(await input());
  t.same(ok, { status: 200, body: 'true' }, "a member's valid token: allowed (200 true)");
  const denied: [string, Record<string, string>][] = [
    ['signed by another key', await input({ key: other.privateKey })],
    ['another issuer', await input({ iss: 'https://evil.example' })],
    ['another audience', await input({ aud: 'someone-else' })],
    ['expired', await input({ exp: Math.floor(Date.now() / 1000) - 60 })],
    ['an ID token (typ JWT)', await input({ typ: 'JWT' })],
    ['a non-member', await input({ sub: outsider })],
    ['another publisher', await input({}, { publisher: randomUUID() })],
    ['another route', await input({}, { method: 'DELETE' })],
    ['no token', { token: '', publisher, method: 'GET', path: '/api/v1/works' }],
  ];
  for (const [name, i] of denied) t.equal((await ask(i)).status, 404, `${name}: undefined → 404 (nginx answers 403)`);
});

t.test('bench peer (smoke): every row of the side-by-side table has numbers', async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'bench-peer-'));
  t.teardown(() => rmSync(out, { recursive: true, force: true }));
  const r = spawnSync(process.execPath, [join(ROOT, 'bench/peer.bench.ts')], {
    cwd: ROOT,
    env: { ...process.env, BENCH_SMOKE: '1', BENCH_OUT_DIR: out, LOG_LEVEL: 'error' },
    encoding: 'utf8',
    timeout: 150_000,
  });
  t.equal(r.status, 0, `the bench exits 0\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-2000)}`);
  const report = JSON.parse(readFileSync(join(out, 'peer.json'), 'utf8')) as {
    rows: { name: string; rps: number; p50: number; p99: number; failures: number; enforcementUsPerReq: number; cpuUsPerReq: Record<string, number> }[];
    ratios: { name: string; value: number }[];
  };
  const names = report.rows.map((x) => x.name);
  for (const want of ['direct (upstream only)', 'nginx → upstream', 'nginx auth_request → OPA', 'sidecar cached (1 worker)', 'sidecar uncached (1 worker, OpenFGA Check each)']) {
    t.ok(names.includes(want), `row: ${want}`);
  }
  const groups: Record<string, string[]> = {
    'direct (upstream only)': ['upstream'],
    'nginx → upstream': ['nginx', 'upstream'],
    'nginx auth_request → OPA': ['nginx', 'opa', 'upstream'],
    'sidecar cached (1 worker)': ['sidecar', 'upstream'],
    'sidecar uncached (1 worker, OpenFGA Check each)': ['sidecar', 'openfga', 'postgres', 'upstream'],
  };
  for (const row of report.rows) {
    t.ok(row.rps > 0 && Number.isFinite(row.p50) && Number.isFinite(row.p99), `${row.name}: ${row.rps.toFixed(0)} req/s, p50 ${row.p50} ms, p99 ${row.p99} ms`);
    t.equal(row.failures, 0, `${row.name}: no failed request`);
    if (groups[row.name]) t.same(Object.keys(row.cpuUsPerReq).sort(), [...groups[row.name]!].sort(), `${row.name}: CPU of ${groups[row.name]!.join(', ')}`);
    t.ok(Object.values(row.cpuUsPerReq).every((v) => Number.isFinite(v) && v >= 0), `${row.name}: CPU per request numbers`);
  }
  const peer = report.rows.find((x) => x.name === 'nginx auth_request → OPA')!;
  t.ok(peer.cpuUsPerReq.opa! > 0, 'OPA used CPU for the peer row');
  t.ok(report.ratios.length >= 5 && report.ratios.every((q) => Number.isFinite(q.value) && q.value > 0), 'ratios are numbers');
  const md = readFileSync(join(out, 'peer.md'), 'utf8');
  t.match(md, /\| nginx auth_request → OPA \| \d+ \|/, 'the Markdown table has the peer row');
  t.match(md, /\| cached sidecar vs nginx \+ OPA: throughput on one server CPU \| [\d.]+× \| ≥ 4× \| (yes|no) \|/, 'the ratio table states the target');
});
