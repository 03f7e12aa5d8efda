/**
 * Benchmark: OpenFGA's own cost per Check (issue 8 §1) — CPU of OpenFGA and of the PostgreSQL
 * backends serving it, per Check, for the hot permissions of the catalog: `works_read` on a
 * publisher (the collection routes) and `can_read` / `can_update` on a work (the item routes).
 *
 * For each variant a private OpenFGA (bench/lib/sidecar-stack.ts startPrivateOpenFga: pinned to
 * the server CPU, its connections named so that their backends are found in pg_stat_activity, max
 * idle = max open so no backend exits mid-window) is started with the variant's OPENFGA_* settings
 * (OpenFGA reads its flags from the environment:
 * https://openfga.dev/docs/getting-started/setup-openfga/configuration), warmed up, then sent
 * BENCH_CHECKS Checks at BENCH_CONNECTIONS concurrent connections (autocannon, closed loop), each a
 * distinct (user, relation, object) — what reaches OpenFGA behind the sidecar's decision cache.
 * CPU: /proc/<pid>/stat utime + stime before/after (bench/lib/harness.ts cpuWindow).
 *
 * Variants (before → after rows):
 *   no-caches         OpenFGA's defaults: no check caches (scripts/services.sh before issue 8's
 *                     cache bypass)
 *   check-opt         no caches + `--experimentals enable-check-optimizations` (fewer dispatches)
 *   conns-8           no caches, datastore pool of 8 connections instead of 30 (max idle = max
 *                     open in both: bench/lib keeps every backend alive, as scripts/services.sh does)
 *   defaults          what scripts/services.sh runs now (policies/src/openfga-caches.ts): check
 *                     query + iterator caches, TTL 10 s — safe behind the sidecar, which bypasses
 *                     them (HIGHER_CONSISTENCY) for OPENFGA_CACHE_BYPASS_MS after an epoch change.
 *                     Each Check here is distinct, so the gain is the shared sub-problems and reads
 *                     (the publisher's role tuples), not repeated answers.
 *
 * Env: BENCH_CHECKS (default 20000; smoke 600), BENCH_CONNECTIONS (default 32), BENCH_OPENFGA_VARIANTS
 * (comma-separated names, default all), BENCH_SMOKE=1 (a few seconds; exits 1 unless every variant
 * produced numbers and every answer was right). Prints a Markdown table and writes
 * .data/bench/openfga.{json,md}. Machines here are noisy: compare rows of one run.
 */
import autocannon from 'autocannon';
import { randomUUID } from 'node:crypto';
import { SMOKE, cpuPlan, cpuWindow, fmt, markdownTable, pinSelf, writeReport } from './lib/harness.ts';
import { createBenchStore, postgresBackends, startPrivateOpenFga, type Membership } from './lib/sidecar-stack.ts';
import { OPENFGA_CACHE_ENV, OPENFGA_CACHE_TTL_S } from '../policies/src/openfga-caches.ts';

const CHECKS = Number(process.env.BENCH_CHECKS ?? (SMOKE ? 600 : 20_000));
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? (SMOKE ? 8 : 32));
const USERS = SMOKE ? 10 : 100;
const WORKS = SMOKE ? 50 : 500;

/** A variant: its name, what it changes, and the OPENFGA_* environment it runs with. */
type Variant = { name: string; what: string; env: Record<string, string> };
/** OpenFGA's caches off (its defaults), whatever policies/src/openfga-caches.ts says. */
const NO_CACHES = { OPENFGA_CHECK_QUERY_CACHE_ENABLED: 'false', OPENFGA_CHECK_ITERATOR_CACHE_ENABLED: 'false' };
const VARIANTS: Variant[] = [
  { name: 'no-caches', what: 'no caches, default dispatch (before)', env: NO_CACHES },
  { name: 'check-opt', what: 'no caches, experimentals enable-check-optimizations', env: { ...NO_CACHES, OPENFGA_EXPERIMENTALS: 'enable-check-optimizations' } },
  { name: 'conns-8', what: 'no caches, datastore max open = idle conns 8 (default 30)', env: { ...NO_CACHES, OPENFGA_DATASTORE_MAX_OPEN_CONNS: '8' } },
  { name: 'defaults', what: `check query + iterator caches, TTL ${OPENFGA_CACHE_TTL_S} s (what scripts/services.sh runs)`, env: { ...OPENFGA_CACHE_ENV } },
];
const wanted = (process.env.BENCH_OPENFGA_VARIANTS ?? VARIANTS.map((v) => v.name).join(',')).split(',').map((s) => s.trim());
const variants = VARIANTS.filter((v) => wanted.includes(v.name));
if (variants.length === 0) throw new Error(`BENCH_OPENFGA_VARIANTS names none of ${VARIANTS.map((v) => v.name).join(', ')}`);

// The data: one publisher, half of the users viewers and half editors, works of that publisher.
const publisher = randomUUID();
const users = Array.from({ length: USERS }, (_, i) => ({ id: randomUUID(), role: i % 2 === 0 ? 'viewer' : 'editor' }));
const works = Array.from({ length: WORKS }, () => randomUUID());
const store = await createBenchStore(users.map((u): Membership => ({ user: u.id, relation: u.role, publisher })));
for (let i = 0; i < works.length; i += 100) {
  await store.fga.write({ writes: works.slice(i, i + 100).map((w) => ({ user: `publisher:${publisher}`, relation: 'publisher', object: `work:${w}` })) });
}

/** The n-th Check of a run and the answer the model implies (viewers read, editors read and update). */
function nthCheck(n: number): { body: string; allowed: boolean } {
  // users in turn, the three permissions in turn, works scattered (a multiplier prime to WORKS):
  // no Check repeats within a run, and a work comes back only every ~WORKS Checks
  const u = users[n % users.length]!;
  const kind = Math.floor(n / users.length) % 3;
  const work = works[(n * 7919) % works.length]!;
  const [relation, object, allowed] =
    kind === 0 ? ['works_read', `publisher:${publisher}`, true] : kind === 1 ? ['can_read', `work:${work}`, true] : ['can_update', `work:${work}`, u.role === 'editor'];
  return { body: JSON.stringify({ tuple_key: { user: `user:${u.id}`, relation, object }, authorization_model_id: store.modelId }), allowed };
}

type Row = { variant: string; what: string; checks: number; rps: number; p50: number; p99: number; wrong: number; failures: number; openfgaUs: number; postgresUs: number };
const plan = cpuPlan();
pinSelf(plan.load);
const rows: Row[] = [];
let offset = 0; // every Check of the whole run is distinct (its own user × relation × object)

try {
  for (const v of variants) {
    const saved = { ...process.env };
    Object.assign(process.env, v.env);
    const fga = await startPrivateOpenFga({ cpus: plan.server, applicationName: `bench-openfga-${v.name}-${process.pid}` }).finally(() => {
      for (const k of Object.keys(v.env)) if (saved[k] === undefined) delete process.env[k];
      Object.assign(process.env, saved);
    });
    try {
      let wrong = 0;
      /** `count` Checks, the next ones of the run, at CONNECTIONS concurrent connections. */
      const send = async (count: number) => {
        let n = offset;
        offset += count;
        return autocannon({
          url: fga.url,
          connections: CONNECTIONS,
          amount: count,
          requests: [
            {
              method: 'POST',
              path: `/stores/${store.storeId}/check`,
              headers: { 'content-type': 'application/json' },
              setupRequest: (req) => ({ ...req, body: nthCheck(n++).body }),
            },
          ],
        });
      };
      await send(Math.min(2000, Math.ceil(CHECKS / 5))); // warm-up: connections, model, typesystem
      const pgPids = () => postgresBackends(fga.applicationName);
      const stop = await cpuWindow([
        { name: 'openfga', pids: () => [fga.pid] },
        { name: 'postgres', pids: pgPids },
      ]);
      const r = await send(CHECKS);
      const cpu = await stop();
      // correctness: a sample of this run's Checks asked again, answers compared with the model's
      for (let k = 0; k < 30; k++) {
        const c = nthCheck(offset - 1 - k * 7);
        const res = await fetch(`${fga.url}/stores/${store.storeId}/check`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: c.body });
        if (((await res.json()) as { allowed?: boolean }).allowed !== c.allowed) wrong++;
      }
      const done = r.requests.total || CHECKS;
      rows.push({
        variant: v.name,
        what: v.what,
        checks: done,
        rps: done / (r.duration || 1), // autocannon's duration: seconds
        p50: r.latency.p50,
        p99: r.latency.p99,
        wrong,
        failures: r.non2xx + r.errors + r.timeouts,
        openfgaUs: (cpu.openfga! * 1e6) / done,
        postgresUs: (cpu.postgres! * 1e6) / done,
      });
      process.stderr.write(`openfga bench: ${v.name} done\n`);
    } finally {
      await fga.stop();
    }
  }
} finally {
  await store.remove().catch(() => undefined);
}

const base = rows.find((r) => r.variant === 'no-caches');
const md = [
  `OpenFGA cost per Check (${new Date().toISOString()}; ${CHECKS} distinct Checks per variant at ${CONNECTIONS} connections; works_read on publisher, can_read / can_update on work; OpenFGA pinned to CPU ${plan.server ?? '(none)'}, load on ${plan.load ?? '(none)'})`,
  '',
  markdownTable(
    ['variant', 'what', 'Checks/s', 'p50 ms', 'p99 ms', 'OpenFGA µs CPU/Check', 'PostgreSQL µs CPU/Check', 'total vs no-caches', 'failures', 'wrong answers (sample of 30)'],
    rows.map((r) => [r.variant, r.what, fmt(r.rps), fmt(r.p50, 1), fmt(r.p99, 1), fmt(r.openfgaUs), fmt(r.postgresUs), base ? `${fmt((r.openfgaUs + r.postgresUs) / (base.openfgaUs + base.postgresUs), 2)}×` : '–', r.failures, r.wrong]),
  ),
].join('\n');
console.log(md);
writeReport('openfga', { rows, checks: CHECKS, connections: CONNECTIONS }, md);
if (SMOKE) {
  // (with the caches on, PostgreSQL may legitimately see nothing)
  const ok = rows.length === variants.length && rows.every((r) => r.checks > 0 && r.openfgaUs > 0 && r.failures === 0 && r.wrong === 0) && (!base || base.postgresUs > 0);
  if (!ok) {
    console.error('openfga bench smoke: a variant produced no numbers, failed requests or wrong answers');
    process.exit(1);
  }
}
