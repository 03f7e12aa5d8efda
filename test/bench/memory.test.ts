/**
 * `npm run bench -- memory` (bench/memory.bench.ts) cannot rot: the smoke run (BENCH_SMOKE=1: 10
 * steps of 1,000 cached requests through one sidecar worker) exits 0 — every request answered 2xx
 * (the targets are checked by the full run only) — and its report has a row per step with the RSS and the
 * heap after a forced GC (bench/heap-probe.ts). Needs the services (OpenFGA, Redis).
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '../..');

t.test('bench memory (smoke): a row per step with RSS, heap after GC and CPU per request', async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'bench-memory-'));
  t.teardown(() => rmSync(out, { recursive: true, force: true }));
  const r = spawnSync(process.execPath, [join(ROOT, 'bench/memory.bench.ts')], {
    cwd: ROOT,
    env: { ...process.env, BENCH_SMOKE: '1', BENCH_OUT_DIR: out, LOG_LEVEL: 'error' },
    encoding: 'utf8',
    timeout: 120_000,
  });
  t.equal(r.status, 0, `the bench exits 0\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-2000)}`);
  type Row = { requests: number; rssMiB: number; heapAfterGcMiB: number; cpuUsPerReq: number; non2xx: number };
  const report = JSON.parse(readFileSync(join(out, 'memory.json'), 'utf8')) as { rows: Row[]; maxRss: number; failures: string[] };
  t.equal(report.rows.length, 10, 'ten steps');
  report.rows.forEach((row, i) => {
    t.equal(row.requests, (i + 1) * 1000, `step ${i + 1}: ${row.requests} requests in total`);
    t.equal(row.non2xx, 0, `step ${i + 1}: every request 2xx`);
    t.ok(row.rssMiB > 20, `step ${i + 1}: RSS ${row.rssMiB.toFixed(1)} MiB measured`);
    t.ok(row.heapAfterGcMiB > 1 && row.heapAfterGcMiB < row.rssMiB, `step ${i + 1}: heap after GC ${row.heapAfterGcMiB.toFixed(1)} MiB`);
    t.ok(row.cpuUsPerReq > 0, `step ${i + 1}: CPU per request measured`);
  });
  t.same(report.failures, []);
  t.match(readFileSync(join(out, 'memory.md'), 'utf8'), /\| requests \| RSS MiB \| heap after GC MiB/);
});
