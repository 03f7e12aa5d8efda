/**
 * Benchmark (`npm run bench -- peer`): the sidecar side by side with the peer people would pick
 * instead — nginx `auth_request` → Open Policy Agent with an in-memory policy (issue 8 §2) — in one
 * run, on loopback, the same ES256 tokens and request stream for every row (bench/lib/stack.ts):
 *
 *   direct            autocannon → upstream
 *   nginx             autocannon → nginx → upstream (nginx's own cost)
 *   nginx + OPA       autocannon → nginx auth_request → OPA (bench/peer/authz.rego) → upstream
 *   sidecar cached    autocannon → sidecar (SIDECAR_WORKERS=1, decision cache) → upstream
 *   sidecar uncached  the same with DECISION_CACHE_TTL_MS=0: every request asks a private OpenFGA
 *                     (on the shared PostgreSQL)
 *   sidecar cached, 2 workers — only with ≥ 3 CPUs (the load generator keeps its own)
 *
 * Every server is pinned to CPU 0 and the load generator (this process) to CPU 1 (taskset;
 * BENCH_SERVER_CPUS / BENCH_LOAD_CPUS override, bench/lib/harness.ts cpuPlan). Closed loop
 * (autocannon): saturation req/s and p50/p99 at saturation; CPU per request of every server process
 * of the row from /proc/<pid>/stat (nginx master + workers, OPA, the sidecar, OpenFGA, the PostgreSQL
 * backends of OpenFGA's connections, the upstream). PostgreSQL and Redis are the machine's shared
 * services, not pinned. Before measuring, each enforcement point must allow every request of the
 * stream and deny an outsider (403) and a request without a token.
 *
 * Prints Markdown tables (rows, then ratios against the targets: cached sidecar ≥ 4× the peer's
 * throughput per core, uncached ≥ 1×) and writes .data/bench/peer.{json,md} (BENCH_OUT_DIR overrides).
 * Exits 1 when a request failed or a row lacks numbers. Env: BENCH_DURATION_S (10), BENCH_CONNECTIONS
 * (32), BENCH_SMOKE=1 (1 s per row, a few seconds in all), OPA_BIN, NGINX_BIN, OPENFGA_BIN.
 */
import { availableParallelism } from 'node:os';
import { SMOKE, closedLoop, cpuPlan, cpuWindow, fmt, markdownTable, pinSelf, processTree, writeReport, type ProcessGroup } from './lib/harness.ts';
import { startOpa, startPeerNginx } from './lib/peer.ts';
import { countsBy } from './lib/sidecar-stack.ts';
import { BENCH_PATH, checkDecisions, sidecarGroups, startBenchStack } from './lib/stack.ts';

const durationS = SMOKE ? 1 : Number(process.env.BENCH_DURATION_S ?? 10);
const warmupS = SMOKE ? 0.5 : 2;
const connections = Number(process.env.BENCH_CONNECTIONS ?? 32);
const plan = cpuPlan();
pinSelf(plan.load);

const stack = await startBenchStack({ serverCpus: plan.server, otherMemberships: SMOKE ? 100 : 1000, uncachedEnv: SMOKE ? { OPENFGA_TIMEOUT_MS: '10000' } : {} });
const opa = await startOpa({ jwks: stack.issuer.jwks, issuer: stack.issuer.issuer, memberships: stack.store.memberships, cpus: plan.server });
const nginx = await startPeerNginx({ upstreamUrl: stack.upstream.url, opaUrl: opa.url, cpus: plan.server });
// with ≥ 3 CPUs: two sidecar workers on two server CPUs, the load generator still on its own
const workers2Cpus = !process.env.BENCH_SERVER_CPUS && availableParallelism() >= 3 && plan.server ? '0,2' : undefined;
const workers2 = workers2Cpus ? await stack.sidecar({ SIDECAR_WORKERS: '2' }, workers2Cpus) : undefined;

type RowSpec = { name: string; baseUrl: string; groups: ProcessGroup[] };
const upstreamGroup: ProcessGroup = { name: 'upstream', pids: () => [stack.upstream.pid] };
const specs: RowSpec[] = [
  { name: 'direct (upstream only)', baseUrl: stack.upstream.url, groups: [upstreamGroup] },
  { name: 'nginx → upstream', baseUrl: nginx.plainUrl, groups: [{ name: 'nginx', pids: () => processTree(nginx.pid) }, upstreamGroup] },
  {
    name: 'nginx auth_request → OPA',
    baseUrl: nginx.authzUrl,
    groups: [{ name: 'nginx', pids: () => processTree(nginx.pid) }, { name: 'opa', pids: () => [opa.pid] }, upstreamGroup],
  },
  { name: 'sidecar cached (1 worker)', baseUrl: stack.cached.url, groups: sidecarGroups(stack, stack.cached) },
  { name: 'sidecar uncached (1 worker, OpenFGA Check each)', baseUrl: stack.uncached!.url, groups: sidecarGroups(stack, stack.uncached!, true) },
  ...(workers2 ? [{ name: 'sidecar cached (2 workers, 2 CPUs)', baseUrl: workers2.url, groups: sidecarGroups(stack, workers2) }] : []),
];

for (const s of specs.slice(2)) await checkDecisions(stack, s.baseUrl, s.name);

type Row = { name: string; rps: number; p50: number; p99: number; requests: number; failures: number; cpuUsPerReq: Record<string, number>; enforcementUsPerReq: number };
const requests = stack.autocannonRequests();
const rows: Row[] = [];
for (const s of specs) {
  const url = `${s.baseUrl}${BENCH_PATH}`;
  await closedLoop(url, { connections, durationS: warmupS, requests }); // warm-up (JIT, caches, pools)
  const done = await cpuWindow(s.groups);
  const r = await closedLoop(url, { connections, durationS, requests });
  const cpu = await done();
  const cpuUsPerReq = Object.fromEntries(Object.entries(cpu).map(([k, v]) => [k, (v * 1e6) / r.requests]));
  const enforcementUsPerReq = Object.entries(cpuUsPerReq).reduce((a, [k, v]) => (k === 'upstream' ? a : a + v), 0);
  rows.push({ name: s.name, ...r, cpuUsPerReq, enforcementUsPerReq });
  console.error(`[peer] ${s.name}: ${r.rps.toFixed(0)} req/s, p99 ${r.p99} ms`);
}

// The uncached sidecar must have asked OpenFGA for every decision, the cached one its cache.
const uncachedDecisions = countsBy(await (await fetch(`${stack.uncached!.adminUrl}/metrics`)).text(), 'sidecar_decisions_total', 'source');
const cacheLeak = (uncachedDecisions.lru ?? 0) + (uncachedDecisions.redis ?? 0) > 0 || !(uncachedDecisions.pdp! > 0);

const [direct, nginxRow, peer, cached, uncached] = rows as [Row, Row, Row, Row, Row];
const ratio = (a: number, b: number) => a / b;
const ratios = [
  { name: 'cached sidecar vs nginx + OPA: throughput on one server CPU', value: ratio(cached.rps, peer.rps), target: 4 },
  { name: 'cached sidecar vs nginx + OPA: enforcement CPU per request (peer ÷ sidecar)', value: ratio(peer.enforcementUsPerReq, cached.enforcementUsPerReq), target: 4 },
  { name: 'uncached sidecar vs nginx + OPA: throughput on one server CPU', value: ratio(uncached.rps, peer.rps), target: 1 },
  { name: 'uncached sidecar vs nginx + OPA: enforcement CPU per request (peer ÷ sidecar + OpenFGA + PostgreSQL)', value: ratio(peer.enforcementUsPerReq, uncached.enforcementUsPerReq), target: 1 },
  { name: 'cached sidecar vs direct: throughput', value: ratio(cached.rps, direct.rps), target: 0.35 },
  { name: 'nginx + OPA vs nginx alone: throughput', value: ratio(peer.rps, nginxRow.rps) },
];

const breakdown = (r: Row) =>
  Object.entries(r.cpuUsPerReq)
    .filter(([k]) => k !== 'upstream')
    .map(([k, v]) => `${k} ${fmt(v)}`)
    .join(' · ') || '–';
const header = `${durationS} s per row (closed loop, autocannon, ${connections} connections), servers on CPU ${plan.server ?? 'any'}, load generator on CPU ${plan.load ?? 'any'}, ` +
  `${stack.stream.length} tokens, ${new Date().toISOString()}, Node ${process.version}${SMOKE ? ' — SMOKE run, numbers meaningless' : ''}`;
const table = markdownTable(
  ['row', 'req/s', 'p50 ms', 'p99 ms', 'failures', 'enforcement CPU µs/req', 'by process (µs/req)', 'upstream µs/req', 'req/s vs direct'],
  rows.map((r) => [r.name, fmt(r.rps), fmt(r.p50, 1), fmt(r.p99, 1), r.failures, fmt(r.enforcementUsPerReq), breakdown(r), fmt(r.cpuUsPerReq.upstream), `${fmt(r.rps / direct.rps, 2)}×`]),
);
const ratioTable = markdownTable(
  ['ratio', 'value', 'target', 'met'],
  ratios.map((q) => [q.name, `${fmt(q.value, 2)}×`, q.target === undefined ? '–' : `≥ ${q.target}×`, q.target === undefined ? '–' : q.value >= q.target ? 'yes' : 'no']),
);
const markdown = `${header}\n\n${table}\n\n${ratioTable}\n`;
console.log(`\n${markdown}`);
if (!workers2) console.log('(no 2-worker row: it needs ≥ 3 CPUs so that the load generator keeps its own)');
const paths = writeReport('peer', { when: new Date().toISOString(), node: process.version, smoke: SMOKE, durationS, connections, cpus: plan, tokens: stack.stream.length, rows, ratios, uncachedDecisions }, markdown);
console.log(`written: ${paths.json}, ${paths.md}`);

const incomplete = rows.some((r) => !(r.rps > 0 && Number.isFinite(r.p50) && Number.isFinite(r.p99) && Number.isFinite(r.enforcementUsPerReq) && Object.values(r.cpuUsPerReq).every(Number.isFinite)));
if (cacheLeak) console.log(`ERROR: the DECISION_CACHE_TTL_MS=0 sidecar's decisions by source: ${JSON.stringify(uncachedDecisions)} (must all be pdp)`);
if (incomplete) console.log('ERROR: a row lacks numbers');
await Promise.all([nginx.stop(), opa.stop()]);
await stack.stop();
process.exit(rows.some((r) => r.failures > 0) || cacheLeak || incomplete ? 1 : 0);
