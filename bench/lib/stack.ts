/**
 * The pinned side-by-side stack of bench/peer.bench.ts and bench/latency.bench.ts: the upstream as
 * its own process, a throw-away store and issuer with the same memberships and tokens for every
 * row, and two single-worker sidecars in front of the upstream — one with its decision cache, one
 * with DECISION_CACHE_TTL_MS=0 asking a private OpenFGA (so OpenFGA's CPU and its PostgreSQL
 * backends' are this bench's alone). Every server is pinned to the servers' CPUs (harness cpuPlan).
 *
 * The request stream: GET /api/v1/works for publisher P with the tokens of `users` members of P
 * (one request per member, cycled), the route rule `works_read` on `publisher:{publisher}`
 * (policies/routes.yaml). More memberships on other publishers fill both PDPs' data.
 */
import type autocannon from 'autocannon';
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import type { ProcessGroup } from './harness.ts';
import {
  createBenchStore,
  createIssuer,
  postgresBackends,
  startPrivateOpenFga,
  startSidecar,
  startUpstreamProcess,
  writeSidecarSigningKey,
  type BenchIssuer,
  type BenchStore,
  type PrivateOpenFga,
  type ServerProcess,
  type SidecarProcess,
} from './sidecar-stack.ts';
import { nodeArgsFrom, processTree } from './harness.ts';

/** The route every request of the stream asks for. */
export const BENCH_PATH = '/api/v1/works';
/** The publisher roles the members of the bench's publisher get, in turn (each grants works_read). */
const ROLES = ['viewer', 'editor', 'manager', 'admin', 'api_user'];

/** One request of the stream: its headers (Authorization, X-Publisher-Id). */
export type StreamRequest = { headers: Record<string, string> };

export type BenchStack = {
  upstream: ServerProcess;
  store: BenchStore;
  issuer: BenchIssuer;
  publisher: string;
  /** the request stream (allowed requests), the same for every row */
  stream: StreamRequest[];
  /** a member of no publisher's token, for the deny check */
  outsiderToken: string;
  cached: SidecarProcess;
  uncached?: SidecarProcess;
  openfga?: PrivateOpenFga;
  /** start another sidecar (same store, issuer, upstream, pinning) with more settings */
  sidecar(env: Record<string, string>, cpus?: string): Promise<SidecarProcess>;
  /** the stream as autocannon requests against `BENCH_PATH` */
  autocannonRequests(): autocannon.Request[];
  /** write the stream as a vegeta targets file (http format) against `baseUrl`; returns its path */
  vegetaTargets(baseUrl: string): string;
  stop(): Promise<void>;
};

/**
 * Start the stack.
 * @param opts.serverCpus taskset CPU list for every server (undefined: not pinned)
 * @param opts.users members of the bench's publisher, one token each (default 16)
 * @param opts.otherMemberships memberships on other publishers (default 1,000: 10 per publisher)
 * @param opts.uncached start the DECISION_CACHE_TTL_MS=0 sidecar and its private OpenFGA (default true)
 * @param opts.uncachedEnv more settings of that sidecar (a smoke run raises OPENFGA_TIMEOUT_MS: on a busy
 *   machine one pinned OpenFGA's queue can pass the default 1 s)
 * Every sidecar gets the Node flags in BENCH_SIDECAR_NODE_ARGS (space separated, e.g. `--cpu-prof
 * --cpu-prof-dir=/tmp/prof`; bench/profile-summary.ts reads the profiles).
 * @throws when a process does not start (see the sidecar-stack functions)
 */
export async function startBenchStack(opts: { serverCpus?: string; users?: number; otherMemberships?: number; uncached?: boolean; uncachedEnv?: Record<string, string> } = {}): Promise<BenchStack> {
  const publisher = randomUUID();
  const members = Array.from({ length: opts.users ?? 16 }, (_, i) => ({ user: randomUUID(), relation: ROLES[i % ROLES.length]!, publisher }));
  const others = Array.from({ length: opts.otherMemberships ?? 1000 }, (_, i) => ({ user: randomUUID(), relation: ROLES[i % ROLES.length]!, publisher: `00000000-0000-4000-8000-${String(i % 100).padStart(12, '0')}` }));
  const cpus = opts.serverCpus;
  const nodeArgs = nodeArgsFrom('BENCH_SIDECAR_NODE_ARGS');
  const [upstream, store, issuer, signingKeyFile] = await Promise.all([startUpstreamProcess(cpus), createBenchStore([...members, ...others]), createIssuer(), writeSidecarSigningKey()]);
  const stream = await Promise.all(members.map(async (m) => ({ headers: { authorization: `Bearer ${await issuer.token(m.user)}`, 'x-publisher-id': publisher } })));
  const outsiderToken = await issuer.token(randomUUID());
  const started: { stop(): Promise<void> }[] = [upstream];
  const sidecar = async (env: Record<string, string>, pin = cpus) => {
    const s = await startSidecar({ upstreamUrl: upstream.url, storeName: store.storeName, signingKeyFile, issuer, cpus: pin, env: { SIDECAR_WORKERS: '1', ...env }, nodeArgs });
    started.push(s);
    return s;
  };
  const cached = await sidecar({});
  let openfga: PrivateOpenFga | undefined;
  let uncached: SidecarProcess | undefined;
  if (opts.uncached ?? true) {
    openfga = await startPrivateOpenFga({ cpus, applicationName: `bench-openfga-${process.pid}` });
    started.push(openfga);
    uncached = await sidecar({ DECISION_CACHE_TTL_MS: '0', OPENFGA_API_URL: openfga.url, ...opts.uncachedEnv });
  }
  return {
    upstream,
    store,
    issuer,
    publisher,
    stream,
    outsiderToken,
    cached,
    uncached,
    openfga,
    sidecar,
    autocannonRequests: () => stream.map((r) => ({ method: 'GET', path: BENCH_PATH, headers: r.headers })),
    vegetaTargets: (baseUrl) => {
      const file = join(tmpdir(), `bench-targets-${process.pid}-${randomUUID()}.txt`);
      const lines = stream.map((r) => [`GET ${baseUrl}${BENCH_PATH}`, ...Object.entries(r.headers).map(([k, v]) => `${k}: ${v}`), ''].join('\n'));
      writeFileSync(file, `${lines.join('\n')}\n`);
      return file;
    },
    stop: async () => {
      // the sidecars first (they may still be answering the last requests), the upstream last
      for (const s of started.reverse()) await s.stop();
      issuer.close();
      await store.remove();
    },
  };
}

/** The CPU groups of a sidecar row: the sidecar (its process tree: cluster workers included) and the upstream. */
export function sidecarGroups(stack: BenchStack, sidecar: SidecarProcess, withOpenFga = false): ProcessGroup[] {
  const groups: ProcessGroup[] = [{ name: 'sidecar', pids: () => processTree(sidecar.pid) }];
  if (withOpenFga && stack.openfga) {
    const openfga = stack.openfga;
    groups.push({ name: 'openfga', pids: () => [openfga.pid] }, { name: 'postgres', pids: () => postgresBackends(openfga.applicationName) });
  }
  groups.push({ name: 'upstream', pids: () => [stack.upstream.pid] });
  return groups;
}

/**
 * Check the enforcement point at `baseUrl` decides like the sidecar: every request of the stream
 * → 200, an outsider's token → 403, no token → 401 (or 403 for a peer that does not tell them apart).
 * @throws with the first wrong status
 */
export async function checkDecisions(stack: BenchStack, baseUrl: string, name: string): Promise<void> {
  for (const r of stack.stream) {
    const res = await fetch(`${baseUrl}${BENCH_PATH}`, { headers: r.headers });
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`${name}: a member's request answered ${res.status}, not 200`);
  }
  const outsider = await fetch(`${baseUrl}${BENCH_PATH}`, { headers: { authorization: `Bearer ${stack.outsiderToken}`, 'x-publisher-id': stack.publisher } });
  await outsider.arrayBuffer();
  if (outsider.status !== 403) throw new Error(`${name}: an outsider's request answered ${outsider.status}, not 403`);
  const anonymous = await fetch(`${baseUrl}${BENCH_PATH}`, { headers: { 'x-publisher-id': stack.publisher } });
  await anonymous.arrayBuffer();
  if (anonymous.status !== 401 && anonymous.status !== 403) throw new Error(`${name}: a request without a token answered ${anonymous.status}`);
}
