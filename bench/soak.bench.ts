/**
 * Soak mode (issue 9 §4): `npm run bench -- soak` drives the whole stack — SOAK_SIDECARS sidecar
 * processes → the catalog API → PostgreSQL (RLS), with real OpenFGA and Redis, started as the e2e
 * harness starts them (test/e2e/stack.ts) — at a constant rate for SOAK_DURATION_S, and reports:
 *
 * - errors (must be 0): any answer other than the one expected for its request class (a 5xx, a
 *   transport error or timeout, a 403 where 200 was due, a 200 where 403 was due, a 429), and any
 *   request the generator could not start because too many were outstanding;
 * - revocations: every SOAK_REVOKE_EVERY_S an admin removes editor@dmp.example's DMP membership
 *   and, half a period later, a system admin restores it (through the sidecars, real tokens).
 *   After each change a probe on every sidecar measures how long until the editor is refused
 *   (then allowed again); the load keeps sending the editor's reads meanwhile. A stale allow is a
 *   200 for an editor request that was sent more than SOAK_REVOCATION_BOUND_MS (1 s) after the
 *   removal was acknowledged and answered before the restore began (must be 0); a stale deny the
 *   reverse (an error); a request under way across a change may get either;
 * - memory: every SOAK_SAMPLE_S the RSS (/proc) and V8 heap used (prom-client's
 *   `nodejs_heap_size_used_bytes` from each process's /metrics — the sidecars' admin listener, the
 *   API's own port) of every sidecar and the API, and the heap after every major GC
 *   (bench/gc-probe.ts, preloaded into each process); after SOAK_WARMUP_S the least-squares slopes
 *   in MiB per minute (flat = |slope of the heap after major GCs| ≤ SOAK_MAX_SLOPE_MIB_PER_MIN;
 *   the sampled heap's slope where a process had fewer than three major GCs);
 * - latency percentiles (from dispatch to the end of the body), overall and per minute.
 *
 * Request classes (mixed users and publishers, seeded demo users, tokens from the real sign-in):
 * see CLASSES below. The open-loop generator starts requests on a fixed schedule (rate × elapsed
 * time), so a slow stack shows up as latency and outstanding requests, not as a lower rate.
 *
 * Output: a Markdown summary on stdout and JSON + Markdown in BENCH_REPORT_DIR (default
 * .data/bench). Exit 1 when there was an error, a stale allow, a removal not refused on every
 * sidecar within the bound (the probes' own request time included), or a heap slope beyond the
 * limit.
 *
 * Environment: SOAK_DURATION_S [600], SOAK_RATE [100 requests/s; 200–500 wants a machine of its own], SOAK_WARMUP_S [120],
 * SOAK_SAMPLE_S [5], SOAK_REVOKE_EVERY_S [20], SOAK_REVOCATION_BOUND_MS [1000], SOAK_SIDECARS [2],
 * SOAK_CONNECTIONS [32 per sidecar], SOAK_MAX_SLOPE_MIB_PER_MIN [1], SOAK_SEED, BENCH_REPORT_DIR,
 * and what scripts/bench.sh exports (the database and services). Keep SOAK_RATE under the
 * sidecars' per-IP limit (RATE_LIMIT_IP, 30000/min = 500/s): the generator is one client.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { Pool } from 'undici';
import { startStack, tokenFor, type Proc } from '../test/e2e/stack.ts';
import { DMP, SONGTRUST, SPIRIT } from '../test/support/demo-ids.ts';
import { userId } from '../migrations/seed/demo.ts';

const ROOT = resolve(import.meta.dirname, '..');
const num = (name: string, def: number) => {
  const v = Number(process.env[name] ?? def);
  if (!Number.isFinite(v) || v < 0) throw new Error(`${name} must be a non-negative number`);
  return v;
};
const durationS = num('SOAK_DURATION_S', 600);
const rate = num('SOAK_RATE', 100);
const warmupS = Math.min(num('SOAK_WARMUP_S', 120), durationS / 3);
const sampleS = num('SOAK_SAMPLE_S', 5);
const revokeEveryS = num('SOAK_REVOKE_EVERY_S', 20);
const boundMs = num('SOAK_REVOCATION_BOUND_MS', 1000);
const sidecarCount = Math.max(1, num('SOAK_SIDECARS', 2));
const connections = num('SOAK_CONNECTIONS', 32);
const maxSlope = num('SOAK_MAX_SLOPE_MIB_PER_MIN', 1);
const reportDir = resolve(ROOT, process.env.BENCH_REPORT_DIR ?? '.data/bench');
let seed = num('SOAK_SEED', Date.now() % 2 ** 31);
const seedUsed = seed;
/** mulberry32: a small seeded PRNG, so a run's request mix can be repeated. */
const random = () => {
  seed = (seed + 0x6d2b79f5) | 0;
  let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
  return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
};

const EDITOR = 'editor@dmp.example';
const EDITOR_ID = userId(EDITOR);

// --- the stack ---------------------------------------------------------------------------------
// every process of the stack logs its heap after each major GC (bench/gc-probe.ts)
const gcLogDir = mkdtempSync(join(tmpdir(), 'soak-gc-'));
const stack = await startStack({
  sidecars: sidecarCount,
  env: {
    NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import=${pathToFileURL(join(ROOT, 'bench/gc-probe.ts')).href}`.trim(),
    SOAK_GC_LOG_DIR: gcLogDir,
    LOG_LEVEL: 'warn',
    ACCESS_TOKEN_TTL_S: String(Math.min(86_400, Math.ceil(durationS) + 1800)), // one sign-in per user for the whole run
    EVENTS_RELAY: 'false', // the soak's domain events stay in its database's outbox, off any shared queue
    METERING_KEY_PREFIX: 'bench-soak-metering',
    RATE_LIMIT_KEY_PREFIX: 'bench-soak-rate-limit',
  },
});
const sidecars = stack.sidecars;
const base = sidecars[0]!.url;

/** Request classes: who asks what, and what must come back (the editor's depends on the membership). */
type Class = { name: string; email: string; weight: number; method: 'GET' | 'PATCH'; path: () => string; publisher?: string; expect: number | 'membership'; body?: () => string };
const asAdmin = { authorization: `Bearer ${await tokenFor('admin@dmp.example')}`, 'x-publisher-id': DMP };
const dmpWorks = ((await (await fetch(`${base}/api/v1/works?limit=20`, { headers: asAdmin })).json()) as { items: { id: string }[] }).items.map((w) => w.id);
if (dmpWorks.length < 2) throw new Error('the seed has too few DMP works');
const pick = <T>(xs: T[]) => xs[Math.floor(random() * xs.length)]!;
let renames = 0;
const CLASSES: Class[] = [
  { name: 'DMP viewer lists works', email: 'viewer@dmp.example', weight: 4, method: 'GET', path: () => '/api/v1/works?limit=10', publisher: DMP, expect: 200 },
  { name: 'DMP viewer reads a work', email: 'viewer@dmp.example', weight: 3, method: 'GET', path: () => `/api/v1/works/${pick(dmpWorks)}`, publisher: DMP, expect: 200 },
  { name: 'DMP viewer asks at Songtrust (denied)', email: 'viewer@dmp.example', weight: 1, method: 'GET', path: () => '/api/v1/works?limit=1', publisher: SONGTRUST, expect: 403 },
  { name: 'multi lists Spirit works', email: 'multi@example.com', weight: 2, method: 'GET', path: () => '/api/v1/works?limit=10', publisher: SPIRIT, expect: 200 },
  { name: 'Spirit owner lists songwriters', email: 'owner@spirit.example', weight: 2, method: 'GET', path: () => '/api/v1/songwriters?limit=10', publisher: SPIRIT, expect: 200 },
  { name: 'Songtrust creator lists own works', email: 'creator1@songtrust.example', weight: 2, method: 'GET', path: () => '/api/v1/works?limit=10', publisher: SONGTRUST, expect: 200 },
  { name: 'system admin lists publishers', email: 'sysadmin@example.com', weight: 1, method: 'GET', path: () => '/api/v1/publishers?limit=10', expect: 200 },
  { name: 'DMP manager users/me', email: 'manager@dmp.example', weight: 1, method: 'GET', path: () => '/api/v1/users/me', expect: 200 },
  { name: 'DMP admin renames a work', email: 'admin@dmp.example', weight: 1, method: 'PATCH', path: () => `/api/v1/works/${dmpWorks[0]}`, publisher: DMP, expect: 200, body: () => JSON.stringify({ title: `Soak rename ${++renames}` }) },
  { name: 'DMP editor (revoked and restored) lists works', email: EDITOR, weight: 3, method: 'GET', path: () => '/api/v1/works?limit=10', publisher: DMP, expect: 'membership' },
];
const tokens = new Map<string, string>();
for (const c of CLASSES) tokens.set(c.email, await tokenFor(c.email));
const sysadmin = await tokenFor('sysadmin@example.com');
const totalWeight = CLASSES.reduce((a, c) => a + c.weight, 0);
const pickClass = () => {
  let r = random() * totalWeight;
  for (const c of CLASSES) if ((r -= c.weight) < 0) return c;
  return CLASSES.at(-1)!;
};

// --- revocation timeline -------------------------------------------------------------------------
/** One remove/restore cycle (performance.now() times; restore fields unset until it happens). */
type Cycle = { removeSent: number; removeAck: number; restoreSent?: number; restoreAck?: number; deniedAfterMs: number[]; allowedAfterMs: number[] };
const cycles: Cycle[] = [];
/** The editor's due answer at time `t`: 200, 403, or undefined while a change settles. */
function editorStateAt(t: number): number | undefined {
  let state: number | undefined = 200;
  for (const c of cycles) {
    if (t < c.removeSent) break;
    if (t <= c.removeAck + boundMs) return undefined;
    if (c.restoreSent === undefined || t < c.restoreSent) return 403;
    if (t <= (c.restoreAck ?? Infinity) + boundMs) return undefined;
    state = 200;
  }
  return state;
}
/**
 * What an editor request that was under way from `s` to `e` must have got: the state of that
 * whole interval, or undefined when a change (or its settling bound) falls inside it — a request
 * queued across a change may be decided on either side of it.
 */
function editorExpectation(s: number, e: number): number | undefined {
  for (const c of cycles) {
    for (const b of [c.removeSent, c.removeAck + boundMs, c.restoreSent, (c.restoreAck ?? Infinity) + boundMs]) if (b !== undefined && b > s && b < e) return undefined;
  }
  const a = editorStateAt(s);
  return a === editorStateAt(e) ? a : undefined;
}

// --- the load -------------------------------------------------------------------------------------
type Outcome = { cls: string; status: number; ms: number; at: number };
const outcomes: Outcome[] = [];
/** Answers other than the expected one (the first thousand kept) and their count. */
const unexpected: { cls: string; status: number; expected: number; at: number; body: string }[] = [];
let unexpectedCount = 0;
let staleAllows = 0;
let staleDenies = 0;
let transportErrors = 0;
let notStarted = 0;
let inflight = 0;
const maxInflight = Math.max(100, rate * 5);
const pools = sidecars.map((s) => new Pool(s.url, { connections }));

async function fire(i: number): Promise<void> {
  const cls = pickClass();
  const headers: Record<string, string> = { authorization: `Bearer ${tokens.get(cls.email)}` };
  if (cls.publisher) headers['x-publisher-id'] = cls.publisher;
  if (cls.body) headers['content-type'] = 'application/json';
  const sent = performance.now();
  inflight++;
  try {
    const res = await pools[i % pools.length]!.request({ method: cls.method, path: cls.path(), headers, body: cls.body?.(), headersTimeout: 15_000, bodyTimeout: 15_000 });
    const text = await res.body.text();
    const done = performance.now();
    outcomes.push({ cls: cls.name, status: res.statusCode, ms: done - sent, at: (sent - t0) / 1000 });
    const expected = cls.expect === 'membership' ? editorExpectation(sent, done) : cls.expect;
    if (expected !== undefined && res.statusCode !== expected) {
      if (cls.expect === 'membership' && res.statusCode === 200) staleAllows++;
      else if (cls.expect === 'membership' && res.statusCode === 403) staleDenies++;
      unexpectedCount++;
      if (unexpected.length < 1000) unexpected.push({ cls: cls.name, status: res.statusCode, expected, at: (sent - t0) / 1000, body: text.slice(0, 300) });
    }
  } catch (err) {
    transportErrors++;
    unexpectedCount++;
    if (unexpected.length < 1000) unexpected.push({ cls: cls.name, status: 0, expected: 0, at: (sent - t0) / 1000, body: (err as Error).message });
  } finally {
    inflight--;
  }
}

// --- memory samples --------------------------------------------------------------------------------
type Sample = { t: number; procs: Record<string, { rssMiB: number; heapUsedMiB: number; cpuS: number }> };
const samples: Sample[] = [];
const procs: [string, Proc, string][] = [
  ...sidecars.map((s, i): [string, Proc, string] => [`sidecar ${i + 1}`, s, `${s.adminUrl ?? s.url}/metrics`]),
  ['catalog API', stack.api, `${stack.api.url}/metrics`],
];
const MiB = 2 ** 20;
function procStat(pid: number): { rssMiB: number; cpuS: number } {
  const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return { rssMiB: rss, cpuS: (Number(f[11]) + Number(f[12])) / 100 };
}
async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(url, { signal: AbortSignal.timeout(5000) })).text();
  return Number(new RegExp(`^${name} ([0-9.e+]+)`, 'm').exec(text)?.[1] ?? Number.NaN);
}
async function sample(): Promise<void> {
  const s: Sample = { t: (performance.now() - t0) / 1000, procs: {} };
  for (const [name, p, metricsUrl] of procs) {
    const heap = await metric(metricsUrl, 'nodejs_heap_size_used_bytes').catch(() => Number.NaN);
    s.procs[name] = { ...procStat(p.child.pid!), heapUsedMiB: heap / MiB };
  }
  samples.push(s);
}

// --- revocations -------------------------------------------------------------------------------------
const editorAsks = (url: string) =>
  fetch(`${url}/api/v1/works?limit=1`, { headers: { authorization: `Bearer ${tokens.get(EDITOR)}`, 'x-publisher-id': DMP } }).then(async (r) => (await r.arrayBuffer(), r.status));
/** Poll every sidecar until the editor gets `want`; the milliseconds since `since` per sidecar (-1: not within 5 s). */
async function until(want: number, since: number): Promise<number[]> {
  return Promise.all(
    sidecars.map(async (s) => {
      while (performance.now() - since < 5000) {
        if ((await editorAsks(s.url).catch(() => 0)) === want) return Math.round(performance.now() - since);
        await sleep(25);
      }
      return -1;
    }),
  );
}
let adminErrors = 0;
async function removeEditor(): Promise<void> {
  const c: Cycle = { removeSent: performance.now(), removeAck: Infinity, deniedAfterMs: [], allowedAfterMs: [] };
  cycles.push(c);
  const r = await fetch(`${base}/api/v1/publishers/${DMP}/users/${EDITOR_ID}`, { method: 'DELETE', headers: { authorization: asAdmin.authorization } });
  await r.arrayBuffer();
  c.removeAck = performance.now();
  if (r.status !== 204) adminErrors++;
  c.deniedAfterMs = await until(403, c.removeAck);
}
async function restoreEditor(): Promise<void> {
  const c = cycles.at(-1)!;
  c.restoreSent = performance.now();
  const r = await fetch(`${base}/api/v1/users/${EDITOR_ID}/publishers`, {
    method: 'POST',
    headers: { authorization: `Bearer ${sysadmin}`, 'content-type': 'application/json' },
    body: JSON.stringify({ publisher_id: DMP, role: 'editor' }),
  });
  await r.arrayBuffer();
  c.restoreAck = performance.now();
  if (r.status !== 201) adminErrors++;
  c.allowedAfterMs = await until(200, c.restoreAck);
}

// --- warm-up calls (not counted): JIT, pools, the decision caches, OpenFGA's own caches ------------------
for (const sc of sidecars) {
  for (const cls of CLASSES) {
    for (let k = 0; k < 3; k++) {
      const headers: Record<string, string> = { authorization: `Bearer ${tokens.get(cls.email)}` };
      if (cls.publisher) headers['x-publisher-id'] = cls.publisher;
      if (cls.body) headers['content-type'] = 'application/json';
      const r = await fetch(`${sc.url}${cls.path()}`, { method: cls.method, headers, body: cls.body?.() });
      await r.arrayBuffer();
      if (r.status !== (cls.expect === 'membership' ? 200 : cls.expect)) throw new Error(`warm-up: ${cls.name} answered ${r.status}`);
    }
  }
}

// --- run ------------------------------------------------------------------------------------------------
process.stderr.write(`soak: ${durationS} s at ${rate} req/s through ${sidecarCount} sidecar(s), warm-up ${warmupS} s, seed ${seedUsed}\n`);
const startedAt = new Date();
const cpu0 = process.cpuUsage();
const t0 = performance.now();
const endAt = t0 + durationS * 1000;
let started = 0;
const pending = new Set<Promise<void>>();
const ticker = setInterval(() => {
  const due = Math.floor(((Math.min(performance.now(), endAt) - t0) / 1000) * rate);
  while (started < due) {
    const i = started++;
    if (inflight >= maxInflight) {
      notStarted++;
      continue;
    }
    const p = fire(i);
    pending.add(p);
    void p.finally(() => pending.delete(p));
  }
}, 2);
await sample();
const sampler = setInterval(() => void sample().catch(() => undefined), sampleS * 1000);
// the revocation loop: remove at k·period + period/4, restore half a period later; end as a member
const revocations = (async () => {
  if (revokeEveryS <= 0) return;
  for (let k = 0; ; k++) {
    const removeAt = t0 + (k * revokeEveryS + revokeEveryS / 4) * 1000;
    const restoreAt = removeAt + (revokeEveryS / 2) * 1000;
    if (restoreAt + 6000 > endAt) return;
    await sleep(Math.max(0, removeAt - performance.now()));
    await removeEditor();
    await sleep(Math.max(0, restoreAt - performance.now()));
    await restoreEditor();
  }
})();
await sleep(Math.max(0, endAt - performance.now()));
clearInterval(ticker);
await revocations;
await Promise.all([...pending]);
clearInterval(sampler);
await sample();

// decisions by source per sidecar (the cache at work)
const decisions: Record<string, Record<string, number>> = {};
for (const [name, , url] of procs.slice(0, sidecars.length)) {
  const text = await (await fetch(url)).text();
  const by: Record<string, number> = {};
  for (const m of text.matchAll(/^sidecar_decisions_total\{([^}]*)\} ([0-9.e+]+)$/gm)) {
    const src = /source="([^"]*)"/.exec(m[1]!)?.[1] ?? '?';
    by[src] = (by[src] ?? 0) + Number(m[2]);
  }
  decisions[name] = by;
}
const generatorCpu = process.cpuUsage(cpu0);
await Promise.all(pools.map((p) => p.close()));
await stack.stop();

// --- report -----------------------------------------------------------------------------------------------
const pct = (xs: number[], p: number) => (xs.length ? xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]! : Number.NaN);
const latency = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return { n: s.length, p50: pct(s, 50), p90: pct(s, 90), p99: pct(s, 99), p999: pct(s, 99.9), max: s.at(-1) ?? Number.NaN };
};
/** Least-squares slope of `ys` over `ts` (minutes) in units per minute. */
function slope(ts: number[], ys: number[]): number {
  const pts = ts.map((t, i) => [t, ys[i]!] as const).filter(([, y]) => Number.isFinite(y));
  if (pts.length < 3) return Number.NaN;
  const mt = pts.reduce((a, [t]) => a + t, 0) / pts.length;
  const my = pts.reduce((a, [, y]) => a + y, 0) / pts.length;
  const num = pts.reduce((a, [t, y]) => a + (t - mt) * (y - my), 0);
  const den = pts.reduce((a, [t]) => a + (t - mt) ** 2, 0);
  return num / den;
}
const after = samples.filter((s) => s.t >= warmupS);
/** Heap after each major GC of a process (gc-probe.ts), as [minutes since start, MiB]. */
const wallT0 = startedAt.getTime();
function afterGc(pid: number): [number, number][] {
  const file = join(gcLogDir, `${pid}.jsonl`);
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { t: number; heapUsed: number })
    .map((e): [number, number] => [(e.t - wallT0) / 60_000, e.heapUsed / MiB]);
}
const memory = Object.fromEntries(
  procs.map(([name, proc]) => {
    const gcs = afterGc(proc.child.pid!).filter(([t]) => t * 60 >= warmupS);
    const ts = after.map((s) => s.t / 60);
    const rss = after.map((s) => s.procs[name]!.rssMiB);
    const heap = after.map((s) => s.procs[name]!.heapUsedMiB);
    const first = samples[0]!.procs[name]!;
    const last = samples.at(-1)!.procs[name]!;
    const cpuS = last.cpuS - first.cpuS;
    return [
      name,
      {
        rssStartMiB: first.rssMiB,
        rssAfterWarmupMiB: rss[0],
        rssEndMiB: last.rssMiB,
        rssSlopeMiBPerMin: slope(ts, rss),
        heapAfterWarmupMiB: heap[0],
        heapEndMiB: last.heapUsedMiB,
        heapMinMaxAfterWarmupMiB: [Math.min(...heap), Math.max(...heap)],
        heapSlopeMiBPerMin: slope(ts, heap),
        majorGcsAfterWarmup: gcs.length,
        heapAfterGcFirstLastMiB: [gcs[0]?.[1], gcs.at(-1)?.[1]],
        heapAfterGcSlopeMiBPerMin: slope(gcs.map(([t]) => t), gcs.map(([, y]) => y)),
        cpuMsPerRequest: (cpuS * 1000) / Math.max(1, outcomes.length), // over every request of the run (a sidecar serves 1/N of them)
      },
    ];
  }),
);
const byClass: Record<string, Record<string, number>> = {};
for (const o of outcomes) {
  const c = (byClass[o.cls] ??= {});
  c[o.status] = (c[o.status] ?? 0) + 1;
}
const perMinute: { minute: number; requests: number; rps: number; p50: number; p99: number; unexpected: number }[] = [];
for (let m = 0; m < Math.ceil(durationS / 60); m++) {
  const xs = outcomes.filter((o) => o.at >= m * 60 && o.at < (m + 1) * 60);
  const span = Math.min(60, durationS - m * 60);
  const l = latency(xs.map((o) => o.ms));
  perMinute.push({ minute: m + 1, requests: xs.length, rps: xs.length / span, p50: l.p50, p99: l.p99, unexpected: unexpected.filter((u) => u.at >= m * 60 && u.at < (m + 1) * 60).length });
}
const errors = unexpectedCount - staleAllows + notStarted + adminErrors;
// the bound is on refusing (a late allow is a security fault); being allowed again is reported only
const slowRevocations = cycles.filter((c) => c.deniedAfterMs.some((ms) => ms < 0 || ms > boundMs)).length;
// flat: the heap V8 keeps after its major GCs does not grow (the sampled heap's slope when a
// process had fewer than 3 major GCs after the warm-up)
const heapSlopes = Object.values(memory).map((m) => (m.majorGcsAfterWarmup >= 3 ? m.heapAfterGcSlopeMiBPerMin : m.heapSlopeMiBPerMin));
const flat = heapSlopes.every((s) => Number.isFinite(s) && Math.abs(s) <= maxSlope);
rmSync(gcLogDir, { recursive: true, force: true });
const overall = latency(outcomes.map((o) => o.ms));
const deny = cycles.flatMap((c) => c.deniedAfterMs);
const allow = cycles.flatMap((c) => c.allowedAfterMs);
const report = {
  startedAt,
  node: process.version,
  settings: { durationS, rate, warmupS, sampleS, revokeEveryS, boundMs, sidecars: sidecarCount, connections, maxSlope, seed: seedUsed },
  requests: outcomes.length,
  achievedRps: outcomes.length / durationS,
  errors,
  errorBreakdown: { unexpectedAnswers: unexpectedCount - staleAllows - staleDenies - transportErrors, transportErrors, staleDenies, notStarted, adminErrors },
  staleAllows,
  revocations: { cycles: cycles.length, deniedAfterMs: latency(deny), allowedAgainAfterMs: latency(allow), slower: slowRevocations },
  latencyMs: overall,
  perMinute,
  byClass,
  decisions,
  memory,
  generatorCpuMsPerRequest: (generatorCpu.user + generatorCpu.system) / 1000 / Math.max(1, outcomes.length),
  flat,
  unexpected: unexpected.slice(0, 50),
  samples,
};
const f1 = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(1));
const md: string[] = [];
md.push(`Soak ${startedAt.toISOString()}, Node ${process.version}: ${durationS} s at ${rate} req/s through ${sidecarCount} sidecar(s) → catalog API → PostgreSQL; warm-up ${warmupS} s; seed ${seedUsed}\n`);
md.push(`- requests: ${outcomes.length} (${(outcomes.length / durationS).toFixed(1)}/s); **errors: ${errors}**; **stale allows: ${staleAllows}**; not started (too many outstanding): ${notStarted}`);
md.push(`- latency ms: p50 ${f1(overall.p50)}, p90 ${f1(overall.p90)}, p99 ${f1(overall.p99)}, p99.9 ${f1(overall.p999)}, max ${f1(overall.max)}`);
md.push(`- revocations: ${cycles.length} remove/restore cycles; refused on every sidecar after p50 ${f1(latency(deny).p50)} / max ${f1(latency(deny).max)} ms, allowed again after p50 ${f1(latency(allow).p50)} / max ${f1(latency(allow).max)} ms (bound ${boundMs} ms on refusing; cycles over it: ${slowRevocations})`);
md.push(`- decisions by source: ${JSON.stringify(decisions)}; load generator CPU ${report.generatorCpuMsPerRequest.toFixed(2)} ms/request\n`);
md.push('| process | RSS start → after warm-up → end (MiB) | RSS slope (MiB/min) | sampled heap min–max after warm-up (MiB) | sampled heap slope (MiB/min) | major GCs after warm-up | heap after GC first → last (MiB) | heap after GC slope (MiB/min) | CPU ms/request |');
md.push('| --- | --- | ---: | --- | ---: | ---: | --- | ---: | ---: |');
for (const [name, m] of Object.entries(memory)) {
  md.push(
    `| ${name} | ${f1(m.rssStartMiB)} → ${f1(m.rssAfterWarmupMiB)} → ${f1(m.rssEndMiB)} | ${m.rssSlopeMiBPerMin.toFixed(2)} | ${f1(m.heapMinMaxAfterWarmupMiB[0])}–${f1(m.heapMinMaxAfterWarmupMiB[1])} | ${m.heapSlopeMiBPerMin.toFixed(2)} | ${m.majorGcsAfterWarmup} | ${f1(m.heapAfterGcFirstLastMiB[0])} → ${f1(m.heapAfterGcFirstLastMiB[1])} | ${m.heapAfterGcSlopeMiBPerMin.toFixed(2)} | ${m.cpuMsPerRequest.toFixed(2)} |`,
  );
}
md.push(`\nheap ${flat ? 'flat' : 'NOT flat'} (|slope of the heap after major GCs| ≤ ${maxSlope} MiB/min after warm-up)\n`);
md.push('| minute | requests | req/s | p50 ms | p99 ms | unexpected |');
md.push('| ---: | ---: | ---: | ---: | ---: | ---: |');
for (const m of perMinute) md.push(`| ${m.minute} | ${m.requests} | ${m.rps.toFixed(1)} | ${f1(m.p50)} | ${f1(m.p99)} | ${m.unexpected} |`);
md.push('\nBy class (status: count):\n');
for (const [name, s] of Object.entries(byClass)) md.push(`- ${name}: ${JSON.stringify(s)}`);
if (unexpectedCount) md.push(`\nFirst unexpected answers:\n${unexpected.slice(0, 10).map((u) => `- t=${u.at.toFixed(1)} s ${u.cls}: ${u.status} (expected ${u.expected}) ${u.body}`).join('\n')}`);
const markdown = md.join('\n');
console.log(`\n${markdown}`);
mkdirSync(reportDir, { recursive: true });
const file = join(reportDir, `soak-${startedAt.toISOString().replace(/[:.]/g, '-')}`);
writeFileSync(`${file}.json`, JSON.stringify(report, null, 2));
writeFileSync(`${file}.md`, `${markdown}\n`);
console.log(`\nreport: ${file}.json, ${file}.md`);
process.exit(errors > 0 || staleAllows > 0 || slowRevocations > 0 || !flat ? 1 : 0);
