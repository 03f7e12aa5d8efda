/**
 * Smoke run of `npm run bench -- openfga` (bench/openfga.bench.ts) with BENCH_SMOKE=1: a few
 * hundred Checks per variant against private OpenFGA servers on the shared datastore, so the
 * benchmark cannot rot. The bench itself exits 1 unless every variant produced CPU numbers, no
 * request failed and a sample of answers matched the model; here we also read its report.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '../..');

t.test('bench openfga (smoke): CPU per Check of OpenFGA and PostgreSQL for every variant', async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'bench-openfga-'));
  t.teardown(() => rmSync(out, { recursive: true, force: true }));
  const r = spawnSync(process.execPath, [join(ROOT, 'bench/openfga.bench.ts')], {
    cwd: ROOT,
    env: { ...process.env, BENCH_SMOKE: '1', BENCH_CHECKS: '200', BENCH_OUT_DIR: out },
    encoding: 'utf8',
    timeout: 120_000,
  });
  t.equal(r.status, 0, `the bench exits 0\n${r.stderr.slice(-2000)}`);
  t.match(r.stdout, /\| no-caches \|/, 'prints the table with the no-caches row (the baseline)');
  const report = JSON.parse(readFileSync(join(out, 'openfga.json'), 'utf8')) as { rows: { variant: string; checks: number; openfgaUs: number; postgresUs: number; wrong: number; failures: number }[] };
  t.same(report.rows.map((x) => x.variant), ['no-caches', 'check-opt', 'conns-8', 'defaults'], 'one row per variant');
  for (const row of report.rows) {
    t.ok(row.checks >= 200 && row.openfgaUs > 0, `${row.variant}: ${row.checks} Checks, OpenFGA ${row.openfgaUs.toFixed(0)} µs CPU per Check`);
    t.equal(row.failures + row.wrong, 0, `${row.variant}: no failed request, no wrong answer`);
  }
  t.ok(report.rows[0]!.postgresUs > 0, 'no-caches: PostgreSQL CPU measured');
});
