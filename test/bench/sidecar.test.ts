/**
 * Smoke run of `npm run bench -- sidecar` (bench/sidecar.bench.ts) with 1 s runs and one worker
 * per sidecar, so the benchmark cannot rot: every row answered without errors, the floor row
 * (bench/floor-proxy.ts) and the sidecar rows measured CPU, and the cache-off sidecar decided
 * every request with OpenFGA (the bench exits 1 otherwise).
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '../..');

t.test('bench sidecar (smoke): direct, the floor, cached and uncached sidecars side by side', async (t) => {
  const r = spawnSync(process.execPath, [join(ROOT, 'bench/sidecar.bench.ts')], {
    cwd: ROOT,
    env: { ...process.env, BENCH_DURATION_S: '1', BENCH_CONNECTIONS: '8', SIDECAR_WORKERS: '1' },
    encoding: 'utf8',
    timeout: 120_000,
  });
  t.equal(r.status, 0, `the bench exits 0\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`);
  const rows = r.stdout.split('\n').filter((l) => /^\| (direct|Fastify|sidecar)/.test(l)).map((l) => l.split('|').map((c) => c.trim()));
  t.same(rows.map((c) => c[1]!.split(' ')[0]), ['direct', 'Fastify', 'sidecar,', 'sidecar,', 'sidecar,'], 'five rows: direct, the floor, three sidecars');
  for (const c of rows) {
    t.ok(Number(c[2]) > 0, `${c[1]}: ${c[2]} req/s`);
    t.equal(c[5], '0', `${c[1]}: no errors or non-2xx answers`);
  }
  for (const c of rows.slice(1)) t.ok(Number(c[8]) > 0, `${c[1]}: ${c[8]} µs CPU per request`);
  t.match(r.stdout, /µs\/req above the floor \(the pipeline\)/, 'prints what the pipeline costs above the floor');
});
