/**
 * `npm run bench -- db` (bench/db.bench.ts) cannot rot: the smoke run (BENCH_SMOKE=1: 10,000 works
 * across 100 publishers, 10,000 legacy rows, 100 requests per latency scenario) exits 0 — every
 * API answer was a 2xx, every list plan an index scan led by publisher_id (and the owner for a
 * creator) without a Seq Scan, checksums and row counts equal after the migration and after its
 * down migration — and its JSON report has every number: generation, plans, latency percentiles
 * with the API's CPU, RLS overhead, migration times and the lock profile.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '../..');
const finite = (x: unknown) => typeof x === 'number' && Number.isFinite(x);

t.test('bench db (smoke): generation, plans, latency, RLS overhead, migration with checksums and locks', async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'bench-db-'));
  t.teardown(() => rmSync(out, { recursive: true, force: true }));
  const file = join(out, 'db.json');
  const r = spawnSync(process.execPath, [join(ROOT, 'bench/db.bench.ts')], {
    cwd: ROOT,
    env: { ...process.env, BENCH_SMOKE: '1', BENCH_OUT_DIR: out, LOG_LEVEL: 'error' },
    encoding: 'utf8',
    timeout: 170_000,
  });
  t.equal(r.status, 0, 'the bench exits 0');
  if (r.status !== 0) t.comment(`${r.stdout.slice(-3000)}\n${r.stderr.slice(-2000)}`);
  const report = JSON.parse(readFileSync(file, 'utf8'));
  t.same(report.failures, [], 'no failed check');
  const { catalog, legacy } = report;

  t.equal(catalog.load.counts.works, 10_000, 'works generated');
  t.equal(catalog.load.counts.publishers, 100, 'publishers generated');
  t.ok(catalog.load.counts.recordings === 10_000 && catalog.load.counts.workSongwriters >= 10_000 && catalog.load.counts.songwriters > 0, 'recordings, splits and songwriters generated');
  t.ok(finite(catalog.load.loadMs) && catalog.load.loadMs > 0, 'load time');
  t.ok(catalog.triggers.withTriggersUsPerRow > 0 && catalog.triggers.outboxRowsPerWork >= 1, 'trigger cost per row, with its outbox rows');

  t.equal(catalog.plans.length, 6, 'a plan for each list (3 collections × staff, creator)');
  for (const p of catalog.plans) t.ok(p.ok && finite(p.executionMs) && /publisher_id/.test(p.scans), `plan ${p.name}: ${p.scans}`);

  t.same(
    catalog.latency.map((x: { name: string }) => x.name),
    ['works list, staff', 'works list, creator', 'works get, staff', 'works get, creator'],
    'latency scenarios',
  );
  for (const x of catalog.latency) {
    t.ok(x.requests === 100 && x.non2xx === 0 && x.errors === 0, `${x.name}: 100 requests, all 2xx`);
    t.ok(x.p50 > 0 && x.p50 <= x.p90 && x.p90 <= x.p99 && x.p99 <= x.max, `${x.name}: 0 < p50 ≤ p90 ≤ p99 ≤ max`);
    t.ok(x.apiCpuMsPerRequest > 0, `${x.name}: API CPU per request`);
  }

  t.equal(catalog.overhead.length, 4, 'RLS overhead rows (works, recordings × staff, creator)');
  for (const x of catalog.overhead) t.ok(x.samples > 0 && finite(x.overheadPct) && x.rlsP50 > 0 && x.plainP50 > 0, `${x.name}: ${x.overheadPct.toFixed(1)} %`);

  t.ok(legacy.upSame && legacy.downSame, 'checksums equal after up and after down');
  for (const table of ['tenants', 'works', 'songwriters', 'recordings']) {
    t.ok(legacy.before[table].rows > 0 && legacy.before[table].rows === legacy.after[table].rows, `${table}: same row count after the migration`);
  }
  t.equal(legacy.applied[0], '0002_publishers', 'the chain starts at 0002');
  t.equal(legacy.reverted.at(-1), '0002_publishers', 'the down migration goes back to 0001');
  t.ok(finite(legacy.upMs) && finite(legacy.downMs), 'migration times');
  t.equal(legacy.locks.length, 8, 'lock profile: read and write probes of 4 tables');
  // the chain runs in one transaction that rewrites every catalog table: readers and writers wait
  for (const l of legacy.locks) t.ok(l.samples > 0 && l.blockedMs > 0, `${l.table} ${l.mode}: blocked ${l.blockedMs} ms`);
});
