/**
 * Smoke run of `npm run bench -- revocation` (bench/revocation.bench.ts) with BENCH_SMOKE=1: 20
 * removals per row (pushed epochs, per-request MGET) through two sidecar processes, so the
 * benchmark cannot rot. The bench exits 1 when a round exceeds 1 s or an allow follows a deny;
 * here we also read its report.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '../..');

t.test('bench revocation (smoke): first deny at a second sidecar, pushed vs read epochs', async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'bench-revocation-'));
  t.teardown(() => rmSync(out, { recursive: true, force: true }));
  const r = spawnSync(process.execPath, [join(ROOT, 'bench/revocation.bench.ts')], {
    cwd: ROOT,
    env: { ...process.env, BENCH_SMOKE: '1', BENCH_OUT_DIR: out, SIDECAR_WORKERS: '1' },
    encoding: 'utf8',
    timeout: 120_000,
  });
  t.equal(r.status, 0, `the bench exits 0\n${r.stderr.slice(-2000)}`);
  t.match(r.stdout, /\| push \| 20 \|/, 'prints the table with the push row');
  const report = JSON.parse(readFileSync(join(out, 'revocation.json'), 'utf8')) as {
    rows: { variant: string; rounds: number; p50: number; p99: number; max: number; staleAllows: number }[];
  };
  t.same(report.rows.map((x) => x.variant), ['push', 'mget'], 'one row per way of reading epochs');
  for (const row of report.rows) {
    t.ok(row.rounds === 20 && row.p50 > 0 && row.p99 >= row.p50 && row.max <= 1000, `${row.variant}: p50 ${row.p50.toFixed(1)} ms, p99 ${row.p99.toFixed(1)} ms, max ${row.max.toFixed(1)} ms`);
    t.equal(row.staleAllows, 0, `${row.variant}: no allow after the first deny`);
  }
});
