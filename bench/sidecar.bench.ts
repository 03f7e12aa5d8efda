/**
 * Benchmark: what the sidecar costs in front of an upstream, measured side by side in one run.
 *
 *   direct      autocannon → upstream
 *   floor       autocannon → bench/floor-proxy.ts (Fastify + undici, no pipeline) → upstream: what
 *               any Node proxy hop costs here, the part of the sidecar's cost that is not its pipeline
 *   sidecar     autocannon → sidecar (JWT verify, route rule, cached decision, signed assertion) → upstream,
 *               once with the session-revocation check (the default for the platform's issuer) and
 *               once for an issuer without revocable sessions, to show what the check costs
 *   sidecar-pdp a second sidecar with the decision cache off (DECISION_CACHE_TTL_MS=0): every
 *               request pays an OpenFGA Check.
 *
 * The set-up (store, issuer and tokens, sidecar processes) is bench/lib/sidecar-stack.ts, shared with
 * bench/peer.bench.ts and bench/latency.bench.ts.
 * The upstream is a minimal Node HTTP server returning a 300-byte JSON body, so the numbers are
 * the sidecar's own overhead. Real OpenFGA and Redis from scripts/services.sh (run via
 * `npm run bench`). Prints a Markdown table with req/s, p50/p99 latency (ms), the ratios to
 * direct, and the sidecar's RSS (MiB) after the run. Machines here are noisy: compare ratios.
 *
 * Env: BENCH_DURATION_S (default 10), BENCH_CONNECTIONS (default 32), BENCH_SIDECAR_NODE_ARGS
 * (extra Node flags for every sidecar, space separated, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`;
 * profiles are written when the sidecars exit at the end), BENCH_SIDECAR_MAIN (entry point of the
 * sidecar under test, default sidecar/src/main.ts — e.g. a checkout of another revision, for A/B).
 */
import autocannon from 'autocannon';
import { countsBy, createBenchStore, createIssuer, startSidecar, writeSidecarSigningKey } from './lib/sidecar-stack.ts';
import { createUpstreamServer } from './lib/upstream.ts';
import { cpuSeconds, nodeArgsFrom, processTree, rssMiB } from './lib/harness.ts';
import { randomUUID } from 'node:crypto';
import { spawn } from 'node:child_process';
import { join } from 'node:path';

const duration = Number(process.env.BENCH_DURATION_S ?? 10);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 32);
const nodeArgs = nodeArgsFrom('BENCH_SIDECAR_NODE_ARGS');
const sidecarMain = process.env.BENCH_SIDECAR_MAIN ?? 'sidecar/src/main.ts';

const upstream = createUpstreamServer();
await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
const upstreamUrl = `http://127.0.0.1:${(upstream.address() as { port: number }).port}`;

// A throw-away store with one membership, and a throw-away issuer (bench/lib/sidecar-stack.ts).
const user = randomUUID();
const publisher = randomUUID();
const store = await createBenchStore([{ user, relation: 'viewer', publisher }]);
const { storeName } = store;
const issuer = await createIssuer();
const signingKey = await writeSidecarSigningKey();
const token = await issuer.token(user);
/** The same issuer without revocable sessions: the baseline for the cost of the session check. */
const noSessions = JSON.stringify([{ issuer: issuer.issuer, audience: 'music-publishing', jwks_uri: issuer.jwksUrl, sessions: false }]);

/** The admin listener's port (/metrics) of the sidecar on `port`: 3000 above it (18000–20999 → 21000–23999). */
const adminPortOf = (port: number) => port + 3000;

/**
 * The /metrics text of the sidecar on `port`, from its admin listener — or, for a BENCH_SIDECAR_MAIN
 * from before the admin listener, from its public port.
 */
async function metricsText(port: number): Promise<string> {
  const admin = await fetch(`http://127.0.0.1:${adminPortOf(port)}/metrics`).catch(() => null);
  if (admin?.ok) return admin.text();
  return (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
}

async function startBenchSidecar(port: number, extra: Record<string, string>) {
  const s = await startSidecar({ upstreamUrl, storeName, signingKeyFile: signingKey, issuer, port, adminPort: adminPortOf(port), env: extra, nodeArgs, main: sidecarMain });
  return s.proc;
}
const cachedPort = 18000 + Math.floor(Math.random() * 1000);
const uncachedPort = cachedPort + 1000;
const noRevocationPort = cachedPort + 2000;
const cached = await startBenchSidecar(cachedPort, {});
const uncached = await startBenchSidecar(uncachedPort, { DECISION_CACHE_TTL_MS: '0' });
const noRevocation = await startBenchSidecar(noRevocationPort, { JWT_ISSUERS: noSessions });
const rssAtStart = [rssMiB(cached.pid), rssMiB(uncached.pid)];
// The floor: the same server and client libraries with no pipeline at all (bench/floor-proxy.ts).
const floorPort = cachedPort + 3500;
const floor = spawn(process.execPath, [join(import.meta.dirname, 'floor-proxy.ts'), String(floorPort), upstreamUrl], { stdio: ['ignore', 'pipe', 'inherit'] });
await new Promise<void>((resolve, reject) => {
  floor.stdout!.once('data', () => resolve());
  floor.once('exit', (code) => reject(new Error(`bench/floor-proxy.ts exited with ${code}`)));
});

type Row = { name: string; rps: number; p50: number; p99: number; non2xx: number; cpuUsPerReq?: number };
async function run(name: string, url: string, pid?: number): Promise<Row> {
  const headers = { authorization: `Bearer ${token}`, 'x-publisher-id': publisher };
  await autocannon({ url, connections, duration: 2, headers }); // warm-up
  // the sidecar's process and its workers (SIDECAR_WORKERS > 1: node:cluster children)
  const cpu = () => (pid ? processTree(pid).reduce((s, p) => s + cpuSeconds(p), 0) : 0);
  const cpu0 = cpu();
  const r = await autocannon({ url, connections, duration, headers });
  const cpuUsPerReq = pid ? ((cpu() - cpu0) * 1e6) / r.requests.total : undefined;
  return { name, rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, non2xx: r.non2xx + r.errors, cpuUsPerReq };
}

/** Heap figures (MiB) from a sidecar's /metrics text (prom-client default metrics). */
function heapMiB(text: string): { heapUsed: number; heapTotal: number; external: number } {
  const value = (name: string) => Number(new RegExp(`^${name} ([0-9.e+]+)`, 'm').exec(text)?.[1] ?? 0) / 2 ** 20;
  return { heapUsed: value('nodejs_heap_size_used_bytes'), heapTotal: value('nodejs_heap_size_total_bytes'), external: value('nodejs_external_memory_bytes') };
}

const rows = [
  await run('direct upstream', `${upstreamUrl}/api/v1/works`),
  await run('Fastify + undici hop, no pipeline (the floor)', `http://127.0.0.1:${floorPort}/api/v1/works`, floor.pid),
  await run('sidecar, cached decision, no session check', `http://127.0.0.1:${noRevocationPort}/api/v1/works`, noRevocation.pid),
  await run('sidecar, cached decision + session revocation check', `http://127.0.0.1:${cachedPort}/api/v1/works`, cached.pid),
  await run('sidecar, every request checks OpenFGA', `http://127.0.0.1:${uncachedPort}/api/v1/works`, uncached.pid),
];
const [direct] = rows as [Row];
console.log(`\n${duration} s per run, ${connections} connections, ${new Date().toISOString()}, Node ${process.version}\n`);
console.log('| path | req/s | p50 ms | p99 ms | errors/non-2xx | throughput vs direct | p50 vs direct | sidecar CPU µs/req |');
console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
for (const r of rows) {
  console.log(
    `| ${r.name} | ${r.rps.toFixed(0)} | ${r.p50} | ${r.p99} | ${r.non2xx} | ${(r.rps / direct.rps).toFixed(2)}× | ${(r.p50 / Math.max(direct.p50, 0.5)).toFixed(1)}× | ${r.cpuUsPerReq === undefined ? '–' : r.cpuUsPerReq.toFixed(0)} |`,
  );
}
const floorRow = rows[1]!;
for (const r of rows.slice(2)) {
  if (r.cpuUsPerReq !== undefined && floorRow.cpuUsPerReq !== undefined) console.log(`\n${r.name}: ${(r.cpuUsPerReq - floorRow.cpuUsPerReq).toFixed(0)} µs/req above the floor (the pipeline), ${floorRow.cpuUsPerReq.toFixed(0)} µs/req the hop itself`);
}
console.log(`\nsidecar RSS after the runs: cached ${rssMiB(cached.pid).toFixed(0)} MiB, uncached ${rssMiB(uncached.pid).toFixed(0)} MiB`);
console.log(`sidecar RSS after start-up: cached ${rssAtStart[0]!.toFixed(0)} MiB, uncached ${rssAtStart[1]!.toFixed(0)} MiB`);
let cacheLeak = false;
for (const [name, port] of [['cached', cachedPort], ['uncached', uncachedPort]] as const) {
  const text = await metricsText(port);
  const m = heapMiB(text);
  const decisions = countsBy(text, 'sidecar_decisions_total', 'source');
  const tokens = countsBy(text, 'sidecar_token_cache_total', 'result');
  console.log(
    `sidecar ${name} after the runs: V8 heap used ${m.heapUsed.toFixed(0)} / total ${m.heapTotal.toFixed(0)} MiB, external ${m.external.toFixed(0)} MiB; ` +
      `decisions by source ${JSON.stringify(decisions)}; token cache ${JSON.stringify(tokens)}`,
  );
  // The cache-off sidecar must decide every request with OpenFGA: neither the LRU nor Redis answered.
  if (name === 'uncached' && ((decisions.lru ?? 0) > 0 || (decisions.redis ?? 0) > 0)) cacheLeak = true;
}
if (cacheLeak) console.log('ERROR: the DECISION_CACHE_TTL_MS=0 sidecar answered from a decision cache');

await Promise.all([cached, uncached, noRevocation, floor].map((c) => new Promise((r) => { c.once('exit', r); c.kill('SIGTERM'); })));
upstream.close();
issuer.close();
await store.remove();
process.exit(rows.some((r) => r.non2xx > 0) || cacheLeak ? 1 : 0);
