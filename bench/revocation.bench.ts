/**
 * Benchmark (issue 8): revocation latency — "membership removed → first deny at a second sidecar",
 * p50/p99/max over 200 removals (BENCH_SMOKE=1: 20), for two ways of reading the decision-cache
 * epochs:
 *
 *   push   epochs held in process and pushed (sidecar/src/pdp/epoch-view.ts; EPOCH_STALENESS_MS=500)
 *   mget   one MGET of the epochs per decision (EPOCH_STALENESS_MS=0, the behaviour before)
 *
 * Per row: two sidecar processes (a, b) for one throw-away store; the bench process is the writer
 * (policies/src/relationships.ts RelationshipWriter, as the catalog API's relay) and grants and
 * removes a membership; the member asks b twice before each removal (the second allow is cached)
 * and back to back after it (bench/lib/revocation.ts); a must deny at the end too. Reported from the start of the delete and from
 * the moment it returned (OpenFGA Write + epoch bump done: the push's own share). Exits 1 when a
 * round exceeds 1 s, an allow follows the first deny, or a round had no cached allow to revoke.
 *
 * Env: BENCH_REVOCATIONS (rounds per row, default 200; smoke 20), BENCH_SMOKE=1, BENCH_OUT_DIR.
 * Writes revocation.{json,md} to .data/bench/. Machines here are noisy: compare rows of one run.
 */
import { Agent, request } from 'node:http';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { RelationshipWriter } from '../policies/src/relationships.ts';
import { SMOKE, fmt, markdownTable, writeReport } from './lib/harness.ts';
import { measureRevocations, type RevocationResult } from './lib/revocation.ts';
import { createBenchStore, createIssuer, startSidecar, startUpstreamProcess, writeSidecarSigningKey, type SidecarProcess } from './lib/sidecar-stack.ts';

const rounds = Number(process.env.BENCH_REVOCATIONS ?? (SMOKE ? 20 : 200));
const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/0';
const agent = new Agent({ keepAlive: true, maxSockets: 4 });

/** GET /api/v1/works at `s` as the bearer of `token`; resolves to the status. */
function probe(s: SidecarProcess, token: string, publisher: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const u = new URL('/api/v1/works', s.url);
    const req = request({ host: u.hostname, port: u.port, path: u.pathname, agent, headers: { authorization: `Bearer ${token}`, 'x-publisher-id': publisher } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.on('error', reject);
    req.end();
  });
}

const variants: { name: string; env: Record<string, string> }[] = [
  { name: 'push', env: { EPOCH_STALENESS_MS: '500' } },
  { name: 'mget', env: { EPOCH_STALENESS_MS: '0' } },
];

const upstream = await startUpstreamProcess();
const issuer = await createIssuer();
const signingKeyFile = await writeSidecarSigningKey();
const redis = new Redis(redisUrl);
const rows: ({ variant: string } & RevocationResult)[] = [];
let failed = false;
try {
  for (const v of variants) {
    const store = await createBenchStore([]);
    const start = () => startSidecar({ upstreamUrl: upstream.url, storeName: store.storeName, signingKeyFile, issuer, env: { ...v.env, CONDITION_TIME_BUCKET_MS: '3600000' } });
    const [a, b] = [await start(), await start()];
    try {
      const writer = new RelationshipWriter({ fga: store.fga, redis, storeId: store.storeId, modelId: store.modelId });
      const user = randomUUID();
      const publisher = randomUUID();
      const token = await issuer.token(user);
      const tuple = { user: `user:${user}`, relation: 'viewer', object: `publisher:${publisher}` };
      const r = await measureRevocations({
        writer,
        tuple,
        rounds,
        probe: () => probe(b, token, publisher),
      });
      const atA = await probe(a, token, publisher);
      if (atA !== 403) r.staleAllows++;
      rows.push({ variant: v.name, ...r });
      const bad = r.max > 1000 || r.staleAllows > 0 || r.notAllowedBefore > 0 || r.otherStatuses.length > 0;
      if (bad) {
        failed = true;
        console.error(`${v.name}: max ${fmt(r.max, 1)} ms, ${r.staleAllows} stale allows, ${r.notAllowedBefore} rounds not allowed before, other statuses ${r.otherStatuses.join(',')}`);
      }
    } finally {
      await a.stop();
      await b.stop();
      await store.remove().catch(() => undefined);
    }
  }
} finally {
  redis.disconnect();
  agent.destroy();
  issuer.close();
  await upstream.stop();
}

const table = markdownTable(
  ['epochs', 'removals', 'p50 ms', 'p99 ms', 'max ms', 'after write p50 ms', 'after write p99 ms', 'one request p50 ms', 'stale allows'],
  rows.map((r) => [r.variant, r.rounds, fmt(r.p50, 1), fmt(r.p99, 1), fmt(r.max, 1), fmt(r.afterWrite.p50, 1), fmt(r.afterWrite.p99, 1), fmt(r.probeP50, 1), r.staleAllows]),
);
const md = `### Revocation: membership removed → first deny at a second sidecar\n\n${table}\n\nFrom the start of the delete (OpenFGA Write + epoch bump + push) and from the moment it returned; "one request": a cached allow's round trip (the floor). Target: ≤ 1000 ms at every sidecar, no allow after the first deny.`;
console.log(md);
const paths = writeReport('revocation', { rounds, rows: rows.map(({ latenciesMs: _l, afterWrite, ...r }) => ({ ...r, afterWrite: { p50: afterWrite.p50, p99: afterWrite.p99, max: afterWrite.max } })) }, md);
console.log(`\nwritten: ${paths.md}`);
if (rows.length !== variants.length || rows.some((r) => !Number.isFinite(r.p99))) failed = true;
process.exit(failed ? 1 : 0);
