/**
 * Benchmark `npm run bench -- memory` (issue 8 §1, "Memory"): 1,000,000 cached requests through
 * one sidecar worker (SIDECAR_WORKERS=1: one process is one worker), in 10 steps of 100,000; after
 * every step the sidecar's RSS (/proc VmRSS, read right after the step, before any forced
 * collection) and its heap after a full GC (bench/heap-probe.ts: SIGUSR2 → `gc()` →
 * `heapUsed`), as a Markdown table (also .data/bench/memory.{json,md}, harness.ts writeReport).
 *
 * Targets, checked (exit 1 when missed): RSS ≤ 150 MiB after every step, and a flat heap between
 * the 2nd and the 10th step — the heap after GC grew by at most max(2 MiB, 5 %) (the caches and the
 * decision log's ring fill within the first step; what grows after that is a leak). Every request
 * must be answered 2xx.
 *
 * The request stream is the sidecar bench's cached case: one subject with one token (verified once,
 * then from the token cache), one publisher context, the decision from the in-process cache, a
 * signed assertion per request, forwarded to the upstream process (bench/lib/upstream.ts).
 *
 * Env: BENCH_SMOKE=1 (10 steps of 1,000: a few seconds; checks that every step produced numbers and
 * every request succeeded, not the targets), BENCH_MEMORY_STEP (requests per step, default 100,000), BENCH_MEMORY_STEPS
 * (default 10), BENCH_CONNECTIONS (default 32), BENCH_SIDECAR_MAIN (entry point, for A/B),
 * BENCH_SIDECAR_NODE_ARGS (the sidecar's Node flags, space separated; default
 * `--max-semi-space-size=8`, as scripts/start.sh and the cluster workers run it).
 */
import autocannon from 'autocannon';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { exportPKCS8, generateKeyPair } from 'jose';
import { ROOT, SMOKE, cpuSeconds, fmt, nodeArgsFrom, markdownTable, rssMiB, writeReport } from './lib/harness.ts';
import { createBenchStore, createIssuer, startSidecar, startUpstreamProcess } from './lib/sidecar-stack.ts';
import { WORKER_SEMI_SPACE_MIB } from '../sidecar/src/workers.ts';

/** RSS bound per worker (MiB) and the allowed heap growth between the 2nd and the last step. */
export const MAX_RSS_MIB = 150;
const FLAT_ABS_MIB = 2;
const FLAT_REL = 0.05;

const step = Number(process.env.BENCH_MEMORY_STEP ?? (SMOKE ? 1000 : 100_000));
const steps = Number(process.env.BENCH_MEMORY_STEPS ?? 10);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 32);

const dir = mkdtempSync(join(tmpdir(), 'bench-memory-'));
const probeFile = join(dir, 'heap.jsonl');
const signingKeyFile = join(dir, 'sidecar-signing-key.pem');
writeFileSync(signingKeyFile, await exportPKCS8((await generateKeyPair('EdDSA', { extractable: true })).privateKey), { mode: 0o600 });

const user = randomUUID();
const publisher = randomUUID();
const store = await createBenchStore([{ user, relation: 'viewer', publisher }]);
const issuer = await createIssuer();
const upstream = await startUpstreamProcess();
const sidecar = await startSidecar({
  upstreamUrl: upstream.url,
  storeName: store.storeName,
  signingKeyFile,
  issuer,
  // as scripts/start.sh runs it (the workers of SIDECAR_WORKERS > 1 get the same: workers.ts)
  nodeArgs: [...nodeArgsFrom('BENCH_SIDECAR_NODE_ARGS', `--max-semi-space-size=${WORKER_SEMI_SPACE_MIB}`), '--expose-gc', `--import=${join(ROOT, 'bench/heap-probe.ts')}`],
  env: { SIDECAR_WORKERS: '1', HEAP_PROBE_FILE: probeFile },
  ...(process.env.BENCH_SIDECAR_MAIN ? { main: process.env.BENCH_SIDECAR_MAIN } : {}),
});

/** What the probe reports after a full GC, in MiB (bench/heap-probe.ts). */
type Probe = { heapUsed: number; heapTotal: number; external: number; rss: number; spaces: Record<string, number> };

/** Ask the probe for a full GC and the heap after it (MiB). @throws when it does not answer within 10 s */
async function heapAfterGc(): Promise<Probe> {
  const before = existsSync(probeFile) ? readFileSync(probeFile, 'utf8').split('\n').filter(Boolean).length : 0;
  process.kill(sidecar.pid, 'SIGUSR2');
  for (let i = 0; i < 200; i++) {
    await sleep(50);
    const lines = existsSync(probeFile) ? readFileSync(probeFile, 'utf8').split('\n').filter(Boolean) : [];
    if (lines.length > before) {
      const p = JSON.parse(lines.at(-1)!) as Probe;
      const mib = (b: number) => b / 2 ** 20;
      return { heapUsed: mib(p.heapUsed), heapTotal: mib(p.heapTotal), external: mib(p.external), rss: mib(p.rss), spaces: Object.fromEntries(Object.entries(p.spaces).map(([k, v]) => [k, mib(v)])) };
    }
  }
  throw new Error('the heap probe did not answer (is --expose-gc set?)');
}

type Row = { requests: number; rssMiB: number; heapAfterGcMiB: number; heapTotalMiB: number; externalMiB: number; rssAfterGcMiB: number; spaces: Record<string, number>; rps: number; cpuUsPerReq: number; non2xx: number };
const rows: Row[] = [];
const headers = { authorization: `Bearer ${await issuer.token(user)}`, 'x-publisher-id': publisher };
const rssAtStart = rssMiB(sidecar.pid);
const heapAtStart = (await heapAfterGc()).heapUsed;
let total = 0;
try {
  for (let i = 0; i < steps; i++) {
    const cpu0 = cpuSeconds(sidecar.pid);
    const r = await autocannon({ url: `${sidecar.url}/api/v1/works`, connections, amount: step, headers });
    total += r.requests.total;
    const cpuUsPerReq = ((cpuSeconds(sidecar.pid) - cpu0) * 1e6) / r.requests.total;
    const rss = rssMiB(sidecar.pid); // before the forced GC: what the process really holds under load
    const p = await heapAfterGc();
    rows.push({ requests: total, rssMiB: rss, heapAfterGcMiB: p.heapUsed, heapTotalMiB: p.heapTotal, externalMiB: p.external, rssAfterGcMiB: p.rss, spaces: p.spaces, rps: r.requests.average, cpuUsPerReq, non2xx: r.non2xx + r.errors });
    process.stderr.write(`memory bench: ${total} requests, RSS ${rss.toFixed(1)} MiB\n`);
  }
} finally {
  await sidecar.stop();
  await upstream.stop();
  issuer.close();
  await store.remove();
}

const maxRss = Math.max(...rows.map((r) => r.rssMiB));
const second = rows[1]?.heapAfterGcMiB ?? NaN;
const last = rows.at(-1)?.heapAfterGcMiB ?? NaN;
const growth = last - second;
const allowed = Math.max(FLAT_ABS_MIB, FLAT_REL * second);
const failures: string[] = [];
if (rows.some((r) => r.non2xx > 0)) failures.push('some requests were not answered 2xx');
if (rows.length !== steps || rows.some((r) => !(r.rssMiB > 0) || !(r.heapAfterGcMiB > 0))) failures.push('a step produced no numbers');
if (!SMOKE && !(maxRss <= MAX_RSS_MIB)) failures.push(`RSS ${maxRss.toFixed(1)} MiB > ${MAX_RSS_MIB} MiB`);
if (!SMOKE && !(growth <= allowed)) failures.push(`heap after GC grew ${growth.toFixed(2)} MiB between step 2 and step ${steps} (allowed ${allowed.toFixed(2)} MiB)`);

const md = [
  `### Memory: ${total.toLocaleString('en')} cached requests through one worker (${connections} connections${SMOKE ? ', smoke' : ''}), ${new Date().toISOString()}, Node ${process.version}`,
  '',
  `start: RSS ${rssAtStart.toFixed(1)} MiB, heap after GC ${heapAtStart.toFixed(1)} MiB`,
  '',
  markdownTable(
    ['requests', 'RSS MiB', 'heap after GC MiB', 'heap committed MiB', 'external MiB', 'RSS after GC MiB', 'req/s', 'sidecar CPU µs/req', 'non-2xx'],
    rows.map((r) => [r.requests.toLocaleString('en'), fmt(r.rssMiB, 1), fmt(r.heapAfterGcMiB, 2), fmt(r.heapTotalMiB, 1), fmt(r.externalMiB, 1), fmt(r.rssAfterGcMiB, 1), fmt(r.rps), fmt(r.cpuUsPerReq), r.non2xx]),
  ),
  '',
  `max RSS ${maxRss.toFixed(1)} MiB (target ≤ ${MAX_RSS_MIB}${SMOKE ? '; not checked in smoke' : ''}); heap after GC step 2 → ${steps}: ${growth >= 0 ? '+' : ''}${growth.toFixed(2)} MiB (flat: ≤ ${allowed.toFixed(2)} MiB${SMOKE ? '; not checked in smoke' : ''})`,
  ...failures.map((f) => `FAILED: ${f}`),
].join('\n');
console.log(md);
const paths = writeReport('memory', { smoke: SMOKE, step, steps, connections, rssAtStart, heapAtStart, rows, maxRss, heapGrowthMiB: growth, allowedGrowthMiB: allowed, failures }, md);
console.log(`\nreport: ${paths.md}`);
process.exit(failures.length ? 1 : 0);
