/**
 * `npm run bench -- latency` (bench/latency.bench.ts) cannot rot: the smoke run (BENCH_SMOKE=1:
 * vegeta at 200 and 500 req/s, uncached at 50, 1 s per row) exits 0 — both sidecars decided the
 * stream right before measuring and every request of every row succeeded — and its report has every
 * row with p50/p90/p99/max and CPU per request (the upstream's; the sidecar's in its rows) and, for
 * the sidecar rows, the latency added over direct at that rate.
 * Needs VEGETA_BIN (scripts/lib.sh ensure_vegeta_bin), OPENFGA_BIN and the services.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '../..');

t.test('bench latency (smoke): open-loop rows with percentiles and the added latency', async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'bench-latency-'));
  t.teardown(() => rmSync(out, { recursive: true, force: true }));
  const r = spawnSync(process.execPath, [join(ROOT, 'bench/latency.bench.ts')], {
    cwd: ROOT,
    env: { ...process.env, BENCH_SMOKE: '1', BENCH_OUT_DIR: out, LOG_LEVEL: 'error' },
    encoding: 'utf8',
    timeout: 150_000,
  });
  t.equal(r.status, 0, `the bench exits 0\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-2000)}`);
  type Row = { name: string; target: string; rate: number; achieved: number; requests: number; success: number; p50: number; p90: number; p99: number; max: number; added?: Record<string, number>; cpuUs: { sidecar?: number; upstream: number } };
  const report = JSON.parse(readFileSync(join(out, 'latency.json'), 'utf8')) as { rows: Row[]; goals: { name: string; value: number }[] };
  const keys = report.rows.map((x) => `${x.target}@${x.rate}`);
  t.same(keys, ['direct@200', 'cached@200', 'direct@50', 'uncached@50', 'direct@500', 'cached@500'], 'rows: direct and cached at both rates, uncached with its own direct baseline');
  for (const row of report.rows) {
    const key = `${row.name} @ ${row.rate}`;
    t.equal(row.success, 1, `${key}: every request succeeded`);
    t.ok(row.requests >= row.rate * 0.9, `${key}: ${row.requests} requests sent (≈ rate × 1 s: open loop)`);
    t.ok(row.p50 > 0 && row.p50 <= row.p90 && row.p90 <= row.p99 && row.p99 <= row.max, `${key}: 0 < p50 ≤ p90 ≤ p99 ≤ max (${row.p50.toFixed(2)} … ${row.max.toFixed(1)} ms)`);
    t.ok(row.cpuUs.upstream > 0, `${key}: the upstream's CPU per request measured (${row.cpuUs.upstream.toFixed(0)} µs)`);
    if (row.target === 'direct') t.equal(row.cpuUs.sidecar, undefined, `${key}: no sidecar CPU for the baseline`);
    else t.ok(row.cpuUs.sidecar! > 0, `${key}: the sidecar's CPU per request measured (${row.cpuUs.sidecar!.toFixed(0)} µs)`);
    if (row.target === 'direct') t.notOk(row.added, `${key}: the baseline has no added latency`);
    else {
      const base = report.rows.find((b) => b.target === 'direct' && b.rate === row.rate)!;
      t.equal(row.added!.p99, row.p99 - base.p99, `${key}: added p99 = p99 − direct's p99 at the same rate`);
    }
  }
  t.equal(report.goals.length, 3, 'three targets');
  t.ok(report.goals.every((g) => Number.isFinite(g.value)), 'every target has a value');
  t.match(readFileSync(join(out, 'latency.md'), 'utf8'), /\| sidecar cached \| 500 \|/, 'the Markdown table has the 500 req/s sidecar row');
});
