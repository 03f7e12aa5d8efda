/**
 * Benchmark: the database at scale (issue 8 §3), `npm run bench -- db` (a named mode: about
 * 10–20 minutes at full size).
 *
 * 1. Generation: a scratch database migrated to the newest schema, loaded with `BENCH_DB_WORKS`
 *    [1,000,000] works across 100 publishers (songwriters, splits, recordings, a staff member and
 *    creators per publisher; bench/db/catalog-data.ts — triggers off for the load, their per-row
 *    cost measured separately), VACUUM ANALYZE'd.
 * 2. Plans: EXPLAIN (ANALYZE, BUFFERS) of the list statements the API sends (works, songwriters,
 *    recordings; staff and creator) as catalog_app under the request context: every read of the
 *    listed table must be an index scan led by publisher_id (and owner_user_id for a creator), no
 *    Seq Scan on a catalog table (bench/db/plans.ts).
 * 3. API latency: the catalog API (buildCatalogApi, one process of its own, under RLS),
 *    `BENCH_DB_REQUESTS` [10,000] requests per scenario at `BENCH_DB_CONNECTIONS` [50] concurrent,
 *    pages of 50 (bench/db/api-latency.ts, bench/db/api-server.ts): works list and get, staff and
 *    creator, with the API process's CPU per request. Target p99 ≤ 15 ms.
 * 4. RLS overhead: each list statement under RLS vs the same statement with the publisher filter
 *    written out, as a role RLS does not apply to (bench/db/rls-overhead.ts). Target ≤ 10 %.
 * 5. Legacy migration: a second scratch database at 0001 with `BENCH_DB_LEGACY_ROWS` [1,000,000]
 *    catalog rows across 100 tenants (bench/db/legacy-data.ts), migrated to the newest schema in
 *    one transaction (migrations/migrate.ts, as `npm run migrate` does) while a lock probe reads and
 *    writes each table every 50 ms (bench/db/lock-probe.ts); row counts and content checksums
 *    before and after, then the down migration back to 0001 and its checksums. Target ≤ 60 s.
 *
 * `BENCH_SMOKE=1`: 10,000 works, 10,000 legacy rows, 100 requests per scenario — a few seconds of
 * work, for test/bench/db.test.ts. The report (`db.json`, `db.md`) goes to BENCH_OUT_DIR
 * [.data/bench/] (bench/lib/harness.ts).
 * `BENCH_DB_KEEP=1` keeps the scratch databases; `BENCH_DB_PARTS=catalog` or `=legacy` runs one
 * half (default both). Exit code 1 when a correctness check fails
 * (a non-2xx answer, a Seq Scan or a list not led by publisher_id, unequal checksums or counts);
 * missed targets are reported, not failed. Numbers are indicative when other load shares the cores.
 */
import { writeReport } from './lib/harness.ts';
import { createTestDb, type TestDb } from '../test/migrations/db.ts';
import { adminClient, buildTestApp } from '../test/catalog-api/helpers.ts';
import { MIGRATIONS, migrateDown, migrateUp } from '../migrations/migrate.ts';
import { benchPublishers, loadCatalog, measureTriggerCost, type CatalogSize } from './db/catalog-data.ts';
import { captureQueries, describeScans, explainAs, indexColumns, scans } from './db/plans.ts';
import { runScenario, type LatencyRow, type Scenario } from './db/api-latency.ts';
import { startApiServer } from './db/api-server.ts';
import { measureRlsOverhead, type OverheadRow } from './db/rls-overhead.ts';
import { legacyChecksums, legacySplit, loadLegacy, publisherChecksums, type Checksums } from './db/legacy-data.ts';
import { startLockProbe, summariseLocks } from './db/lock-probe.ts';

const smoke = process.env.BENCH_SMOKE === '1';
const num = (name: string, full: number, small: number) => Number(process.env[name] ?? (smoke ? small : full));
const SIZE: CatalogSize = { publishers: 100, works: num('BENCH_DB_WORKS', 1_000_000, 10_000), creators: smoke ? 2 : 20 };
const LEGACY = { tenants: 100, rows: num('BENCH_DB_LEGACY_ROWS', 1_000_000, 10_000) };
const REQUESTS = num('BENCH_DB_REQUESTS', 10_000, 100);
const CONNECTIONS = num('BENCH_DB_CONNECTIONS', 50, 50);
const TARGET = { p99Ms: 15, rlsOverheadPct: 10, migrationS: 60 };

const failures: string[] = [];
const fail = (msg: string) => {
  failures.push(msg);
  log(`FAIL ${msg}`);
};
const ms = (x: number) => (x < 10 ? x.toFixed(2) : x.toFixed(0));
const lines: string[] = [];
const log = (s = '') => {
  lines.push(s);
  console.log(s);
};

/** Generation, plans, API latency and RLS overhead on the big catalog. */
async function catalogPart(db: TestDb) {
  await migrateUp(db.ownerUrl);
  const load = await loadCatalog(db.ownerUrl, SIZE);
  const triggers = await measureTriggerCost(db.ownerUrl, smoke ? 200 : 5000);
  log(`## generation (${SIZE.works.toLocaleString('en')} works, ${SIZE.publishers} publishers)`);
  log(`rows: ${Object.entries(load.counts).map(([k, v]) => `${k} ${v.toLocaleString('en')}`).join(', ')}`);
  log(`load ${(load.loadMs / 1000).toFixed(1)} s (catalog triggers off), VACUUM ANALYZE ${(load.vacuumMs / 1000).toFixed(1)} s`);
  log(
    `catalog triggers: ${triggers.withTriggersUsPerRow.toFixed(0)} µs/work with them, ${triggers.withoutTriggersUsPerRow.toFixed(0)} µs without ` +
      `(${triggers.outboxRowsPerWork} outbox + ${triggers.eventRowsPerWork} event rows per work) → a load through them would add ~${(((triggers.withTriggersUsPerRow - triggers.withoutTriggersUsPerRow) * (load.counts.works + load.counts.songwriters + load.counts.recordings)) / 1e6).toFixed(0)} s`,
  );

  const ta = await buildTestApp(db);
  const su = await adminClient(db);
  const publishers = await benchPublishers(su, SIZE);
  const columns = await indexColumns(su);
  const plans: { name: string; executionMs: number; scans: string; ok: boolean }[] = [];
  const latency: LatencyRow[] = [];
  const overhead: OverheadRow[] = [];
  try {
    log('\n## plans: EXPLAIN (ANALYZE, BUFFERS) of each list as catalog_app under RLS (a later page, publisher 1)');
    const p = publishers[1]!;
    for (const collection of ['works', 'songwriters', 'recordings'] as const) {
      for (const who of ['staff', 'creator'] as const) {
        const user = who === 'staff' ? p.staffUserId : p.creatorUserId;
        const first = await ta.as(user, p.id, { method: 'GET', url: `/api/v1/${collection}?limit=50` });
        const cursor = (first.json() as { next_cursor: string | null }).next_cursor;
        const url = `/api/v1/${collection}?limit=50${cursor ? `&cursor=${cursor}` : ''}`;
        const qs = await captureQueries(ta.orm, () => ta.as(user, p.id, { method: 'GET', url }));
        const list = qs.find((q) => q.sql.includes(` from "${collection}" `))!;
        const { plan } = await explainAs(db.appUrl, { user, publisher: p.id }, list.sql, list.params, { analyze: true });
        const all = scans(plan.Plan);
        const main = all.filter((s) => s.relation === collection && s.nodeType !== 'Bitmap Heap Scan');
        const ok =
          !all.some((s) => s.nodeType === 'Seq Scan') &&
          main.length > 0 &&
          main.every((s) => {
            const cols = columns.get(s.index ?? '') ?? [];
            return cols[0] === 'publisher_id' && (who === 'staff' || cols[1] === 'owner_user_id');
          });
        const row = { name: `${collection} list, ${who}`, executionMs: plan['Execution Time'] ?? NaN, scans: describeScans(all, columns), ok };
        plans.push(row);
        log(`${ok ? 'ok  ' : 'BAD '} ${row.name.padEnd(24)} ${ms(row.executionMs).padStart(6)} ms  ${row.scans}`);
        if (!ok) fail(`plan of ${row.name}: ${row.scans}`);
      }
    }

    const api = await startApiServer(db.name);
    const scenarios: Scenario[] = [
      { name: 'works list, staff', who: 'staff', kind: 'list', collection: 'works' },
      { name: 'works list, creator', who: 'creator', kind: 'list', collection: 'works' },
      { name: 'works get, staff', who: 'staff', kind: 'get', collection: 'works' },
      { name: 'works get, creator', who: 'creator', kind: 'get', collection: 'works' },
    ];
    try {
      // warm-up (connections, plans, shared buffers), not reported
      await runScenario(api, su, scenarios[0]!, publishers, Math.min(REQUESTS, 1000), CONNECTIONS);
      log(`\n## catalog API latency (one API process, under RLS, ${CONNECTIONS} concurrent, page of 50, DB pool ${process.env.DB_POOL_MAX ?? 10})`);
      log('scenario                 requests   req/s   p50 ms   p90 ms   p99 ms   max ms  API CPU ms/req  target p99 ≤ 15 ms');
      for (const s of scenarios) {
        const r = await runScenario(api, su, s, publishers, REQUESTS, CONNECTIONS);
        latency.push(r);
        log(
          `${r.name.padEnd(24)} ${String(r.requests).padStart(8)} ${String(r.rps).padStart(7)} ${ms(r.p50).padStart(8)} ${ms(r.p90).padStart(8)} ${ms(r.p99).padStart(8)} ${ms(r.max).padStart(8)} ${ms(r.apiCpuMsPerRequest).padStart(15)}  ${r.p99 <= TARGET.p99Ms ? 'met' : `MISSED by ${ms(r.p99 - TARGET.p99Ms)} ms`}`,
        );
        if (r.non2xx || r.errors || r.requests < REQUESTS) fail(`${r.name}: ${r.non2xx} non-2xx, ${r.errors} errors, ${r.requests}/${REQUESTS} requests`);
      }
    } finally {
      await api.close();
    }

    log('\n## RLS overhead: list statement under RLS vs with the publisher filter written out (RLS not applied)');
    log('statement                samples  RLS p50  RLS p99  plain p50  plain p99  overhead  app_begin_request p50  target ≤ 10 %');
    const sample = publishers.slice(0, smoke ? 10 : 50);
    for (const who of ['staff', 'creator'] as const) {
      for (const collection of ['works', 'recordings'] as const) {
        const r = await measureRlsOverhead(ta, { appUrl: db.appUrl, adminUrl: db.adminUrl }, sample, who, collection, { pages: smoke ? 2 : 4, rounds: smoke ? 2 : 10 });
        overhead.push(r);
        log(
          `${r.name.padEnd(24)} ${String(r.samples).padStart(7)} ${ms(r.rlsP50).padStart(8)} ${ms(r.rlsP99).padStart(8)} ${ms(r.plainP50).padStart(10)} ${ms(r.plainP99).padStart(10)} ${`${r.overheadPct.toFixed(1)} %`.padStart(9)} ${ms(r.beginRequestP50).padStart(22)} ms  ${r.overheadPct <= TARGET.rlsOverheadPct ? 'met' : 'MISSED'}`,
        );
      }
    }
  } finally {
    await su.end();
    await ta.close();
  }
  return { size: SIZE, load, triggers, plans, latency, overhead };
}

/** Same row counts and checksums, table by table. */
function compare(what: string, a: Checksums, b: Checksums): boolean {
  let same = true;
  for (const t of Object.keys(a) as (keyof Checksums)[]) {
    if (a[t].rows !== b[t].rows || a[t].md5 !== b[t].md5) {
      same = false;
      fail(`${what}: ${t} ${a[t].rows} rows ${a[t].md5} ≠ ${b[t].rows} rows ${b[t].md5}`);
    }
  }
  return same;
}

/** The legacy database: generation, migration with the lock probe, checksums, down migration. */
async function legacyPart(db: TestDb) {
  const latest = MIGRATIONS[MIGRATIONS.length - 1]!.name;
  await migrateUp(db.ownerUrl, '0001_legacy_tenants');
  const loadMs = await loadLegacy(db.ownerUrl, LEGACY);
  const before = await legacyChecksums(db.adminUrl);
  const probe = await startLockProbe(db.adminUrl, ['tenants', 'works', 'songwriters', 'recordings']);
  await new Promise((r) => setTimeout(r, 200)); // a few unblocked samples first
  const t0 = performance.now();
  const applied = await migrateUp(db.ownerUrl);
  const upMs = performance.now() - t0;
  await new Promise((r) => setTimeout(r, 200));
  const probed = await probe.stop();
  const activity = probed.activity.slice(0, 10);
  const locks = summariseLocks(probed.probes).map((l) => ({ ...l, firstBlockedAtMs: l.firstBlockedAtMs === null ? null : Math.max(0, l.firstBlockedAtMs - 200) }));
  const after = await publisherChecksums(db.adminUrl);
  const upSame = compare('up', before, after);
  const t1 = performance.now();
  const reverted = await migrateDown(db.ownerUrl, '0001_legacy_tenants');
  const downMs = performance.now() - t1;
  const restored = await legacyChecksums(db.adminUrl);
  const downSame = compare('down', before, restored);
  const n = legacySplit(LEGACY.rows);
  log(`\n## legacy tenant → publisher migration (${LEGACY.rows.toLocaleString('en')} catalog rows: ${n.works.toLocaleString('en')} works, ${n.songwriters.toLocaleString('en')} songwriters, ${n.recordings.toLocaleString('en')} recordings; ${LEGACY.tenants} tenants)`);
  log(`legacy load ${(loadMs / 1000).toFixed(1)} s`);
  log(`up 0002 … ${latest} (${applied.length} migrations, one transaction): ${(upMs / 1000).toFixed(1)} s  target ≤ ${TARGET.migrationS} s: ${upMs / 1000 <= TARGET.migrationS ? 'met' : 'MISSED'}`);
  log(`down to 0001 (${reverted.length} migrations): ${(downMs / 1000).toFixed(1)} s`);
  log('table         rows before  rows after  checksum before                   after (mapped)                    after down');
  for (const t of Object.keys(before) as (keyof Checksums)[]) {
    log(`${t.padEnd(12)} ${String(before[t].rows).padStart(12)} ${String(after[t].rows).padStart(11)}  ${before[t].md5}  ${after[t].md5}  ${restored[t].md5}`);
  }
  log(`checksums after up: ${upSame ? 'equal' : 'DIFFERENT'}; after down: ${downSame ? 'equal' : 'DIFFERENT'}`);
  log('lock profile during the up migration (probe every 50 ms, lock_timeout 50 ms):');
  log('table        probe   blocked ms  longest ms  first blocked at ms  samples');
  for (const l of locks) log(`${l.table.padEnd(12)} ${l.mode.padEnd(6)} ${String(l.blockedMs).padStart(11)} ${String(l.longestMs).padStart(11)} ${String(l.firstBlockedAtMs ?? '-').padStart(20)} ${String(l.samples).padStart(8)}`);
  log('where the up migration spent its time (sampled statements, first line):');
  for (const a of activity) log(`${String(a.ms).padStart(8)} ms  ${a.statement}`);
  return { size: LEGACY, loadMs, upMs, downMs, applied, reverted, before, after, restored, upSame, downSame, locks, activity };
}

const keep = process.env.BENCH_DB_KEEP === '1';
const parts = new Set((process.env.BENCH_DB_PARTS ?? 'catalog,legacy').split(','));
let catalog: Awaited<ReturnType<typeof catalogPart>> | undefined;
let legacy: Awaited<ReturnType<typeof legacyPart>> | undefined;
if (parts.has('catalog')) {
  const catalogDb = await createTestDb('benchdb');
  try {
    catalog = await catalogPart(catalogDb);
  } finally {
    if (!keep) await catalogDb.drop();
  }
}
if (parts.has('legacy')) {
  const legacyDb = await createTestDb('benchlegacy');
  try {
    legacy = await legacyPart(legacyDb);
  } finally {
    if (!keep) await legacyDb.drop();
  }
}
log(failures.length ? `\n${failures.length} check(s) failed` : '\nall checks passed');
const paths = writeReport('db', { smoke, catalog, legacy, failures }, `# npm run bench -- db (${new Date().toISOString()})\n\n\`\`\`\n${lines.join('\n')}\n\`\`\``);
console.log(`report: ${paths.json}, ${paths.md}`);
process.exit(failures.length ? 1 : 0);
