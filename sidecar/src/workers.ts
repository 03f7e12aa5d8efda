/**
 * SIDECAR_WORKERS > 1 (issue 8 §1, "All cores"): the sidecar as a node:cluster primary and that many
 * worker processes sharing SIDECAR_PORT (Node's cluster module: the primary accepts connections and
 * hands them to the workers round-robin). Each worker is a whole sidecar (buildSidecar: its own
 * caches, Redis connections, metering counters and decision-log ring) without an admin listener;
 * the primary — which runs no pipeline — serves the one admin listener (admin.ts) on
 * ADMIN_HOST:ADMIN_PORT:
 * - `GET /metrics`: the workers' registries aggregated by prom-client's `AggregatorRegistry`
 *   (counters summed; each metric's `aggregator` decides otherwise, e.g. `max` for gauges that are
 *   a state rather than a count), plus `sidecar_worker_requests_total{worker, pid}` per worker;
 * - `GET /healthz`; `GET /decisions`: every worker's ring buffer merged, newest first.
 * Workers talk to the primary over the cluster IPC channel ({@link WORKER_MESSAGES}).
 * Life cycle: the primary prints `sidecar listening on <url> (admin: <url>/metrics)` (the single
 * process's line) and `sidecar workers: <n>` once every worker listens. A worker that exits before
 * it listened fails the start: the others are stopped
 * and the primary exits 1. A worker that dies later is replaced (after 1 s). SIGTERM/SIGINT: the
 * primary sends SIGTERM to every worker (each finishes its in-flight requests, main.ts), waits for
 * them (at most 15 s, then SIGKILL), closes the admin listener and exits 0 — 1 when a worker did
 * not stop cleanly. A worker whose primary is gone exits (Node's cluster module does). Workers run
 * with `--max-semi-space-size` ({@link WORKER_SEMI_SPACE_MIB}); a single process (SIDECAR_WORKERS=1)
 * gets it from its command line (scripts/start.sh).
 */
import cluster, { type Worker } from 'node:cluster';
import Fastify from 'fastify';
import { AggregatorRegistry, Counter, Registry } from 'prom-client';
import type { DecisionRecord } from '../../policies/src/decision-log.ts';
import { createAdmin } from './admin.ts';
import type { SidecarConfig } from './config.ts';
import type { SidecarInstance } from './app.ts';

/** IPC message types between the primary and its workers (besides prom-client's own). */
export const WORKER_MESSAGES = { decisionsRequest: 'sidecar:decisions-req', decisionsResponse: 'sidecar:decisions-res' } as const;

type DecisionsRequest = { type: typeof WORKER_MESSAGES.decisionsRequest; id: number; query: string };
type DecisionsResponse = { type: typeof WORKER_MESSAGES.decisionsResponse; id: number; decisions: DecisionRecord[] };

/**
 * The largest V8 semi-space (MiB) of a worker, unless the primary was started with its own
 * `--max-semi-space-size`: V8 lets the young generation grow to several times 16 MiB under a
 * sidecar's allocation rate (measured: ~100 MiB of new space, RSS +70 MiB, bench/memory.bench.ts),
 * while the garbage of one request dies young at any size; 8 MiB keeps RSS down.
 */
export const WORKER_SEMI_SPACE_MIB = 8;

/**
 * The Node flags of a worker: the primary's (`execArgv`) plus `--max-semi-space-size` unless it or
 * NODE_OPTIONS sets one.
 */
export function workerExecArgv(execArgv: readonly string[], nodeOptions = ''): string[] {
  const given = [...execArgv, ...nodeOptions.split(/\s+/)].some((a) => a.startsWith('--max-semi-space-size'));
  return given ? [...execArgv] : [...execArgv, `--max-semi-space-size=${WORKER_SEMI_SPACE_MIB}`];
}

/** How long (ms) the primary waits for the workers on SIGTERM before killing them. */
const STOP_TIMEOUT_MS = 15_000;
/** How long (ms) a worker's answer to /metrics or /decisions may take. */
const IPC_TIMEOUT_MS = 2000;

/**
 * Run the cluster primary: fork `config.workers` workers of the current entry point (main.ts),
 * serve the admin listener once they all listen, and stop them on SIGTERM/SIGINT.
 * Resolves once the admin listener is up; the process then lives until it exits by itself.
 * @throws never; a start that fails (a worker exits before listening, the admin port cannot be
 *   bound) exits the process with status 1 after stopping the workers.
 */
export async function runPrimary(config: SidecarConfig): Promise<void> {
  const log = Fastify({ logger: { level: config.logLevel } }).log.child({ role: 'primary' });
  const aggregator = new AggregatorRegistry<typeof Registry.PROMETHEUS_CONTENT_TYPE>();
  const listening = new Set<number>();
  let shuttingDown = false;
  let started = false;
  let failed = false;

  let nextId = 0;
  const pending = new Map<number, { want: number; got: DecisionRecord[][]; done(): void }>();
  cluster.on('message', (_worker, m: DecisionsResponse) => {
    if (m?.type !== WORKER_MESSAGES.decisionsResponse) return;
    const p = pending.get(m.id);
    if (!p) return;
    p.got.push(m.decisions);
    if (p.got.length >= p.want) p.done();
  });
  /** Every connected worker's recent decisions for `q`, merged newest first, at most `q.limit`. */
  const decisions = (q: { limit?: number; allowed?: boolean }): Promise<DecisionRecord[]> => {
    const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w && w.isConnected());
    const id = nextId++;
    const query = new URLSearchParams({ limit: String(q.limit ?? 100), ...(q.allowed === undefined ? {} : { allowed: String(q.allowed) }) }).toString();
    return new Promise((resolve) => {
      const finish = () => {
        clearTimeout(timer);
        pending.delete(id);
        const all = entry.got.flat().sort((a, b) => (a.time < b.time ? 1 : a.time > b.time ? -1 : a.id < b.id ? 1 : -1));
        resolve(all.slice(0, q.limit ?? 100));
      };
      const timer = setTimeout(finish, IPC_TIMEOUT_MS); // a busy or dying worker: answer with the others
      const entry = { want: workers.length, got: [] as DecisionRecord[][], done: finish };
      pending.set(id, entry);
      if (workers.length === 0) return finish();
      for (const w of workers) w.send({ type: WORKER_MESSAGES.decisionsRequest, id, query } satisfies DecisionsRequest);
    });
  };

  const admin = createAdmin({
    registry: aggregator,
    host: config.admin.host,
    port: config.admin.port,
    log,
    decisions,
    metricsText: () => aggregator.clusterMetrics(),
  });

  const alive = new Set<Worker>();
  let exitCode = 0;
  const finish = () => void admin.app.close().finally(() => process.exit(failed ? 1 : exitCode));
  const stopAll = (code: number) => {
    if (shuttingDown) return;
    shuttingDown = true;
    exitCode = code;
    log.info({ workers: alive.size }, 'stopping the workers');
    const force = setTimeout(() => {
      for (const w of alive) w.process.kill('SIGKILL');
      process.exit(1);
    }, STOP_TIMEOUT_MS);
    force.unref();
    if (alive.size === 0) return finish();
    for (const w of alive) w.process.kill('SIGTERM');
  };
  const fork = () => alive.add(cluster.fork());

  let port = config.port;
  cluster.on('listening', (worker, address) => {
    listening.add(worker.id);
    port = address.port; // the same for every worker (SIDECAR_PORT=0: the one port the primary picked)
    if (started || listening.size < config.workers) return;
    started = true;
    admin.listen().then(
      (adminUrl) => {
        process.stdout.write(`sidecar listening on http://${config.host}:${port} (admin: ${adminUrl}/metrics)\nsidecar workers: ${config.workers}\n`);
      },
      (err: Error) => {
        process.stderr.write(`sidecar failed to start: admin listener: ${err.message}\n`);
        failed = true;
        stopAll(1);
      },
    );
  });
  cluster.on('exit', (worker, code, signal) => {
    alive.delete(worker);
    const wasListening = listening.delete(worker.id);
    if (shuttingDown) {
      if (code !== 0) failed = true;
      if (alive.size === 0) finish();
      return;
    }
    if (!wasListening && !started) {
      process.stderr.write(`sidecar failed to start: worker ${worker.id} exited with ${signal ?? code} before it listened\n`);
      failed = true;
      return stopAll(1);
    }
    log.warn({ worker: worker.id, pid: worker.process.pid, code, signal }, 'a worker exited; starting another');
    setTimeout(() => {
      if (!shuttingDown) fork();
    }, 1000).unref();
  });

  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => stopAll(0));
  cluster.setupPrimary({ execArgv: workerExecArgv(process.execArgv, process.env.NODE_OPTIONS) });
  for (let i = 0; i < config.workers; i++) fork();
}

/**
 * In a worker: answer the primary's requests — prom-client's metrics requests from `app`'s
 * registry plus a per-worker request counter, and /decisions from `app`'s admin routes (in-process
 * `inject`, the admin listener never listens in a worker) — and count every answered request.
 * Call once, after buildSidecar and before listening.
 */
export function serveWorker(app: SidecarInstance): void {
  const id = String(cluster.worker?.id ?? 0);
  const own = new Registry();
  const requests = new Counter({
    name: 'sidecar_worker_requests_total',
    help: 'Requests answered by each worker process (SIDECAR_WORKERS > 1)',
    labelNames: ['worker', 'pid'] as const,
    registers: [own],
  }).labels(id, String(process.pid));
  requests.inc(0);
  app.addHook('onResponse', (_request, _reply, done) => {
    requests.inc();
    done();
  });
  new AggregatorRegistry(); // registers prom-client's worker-side listener
  AggregatorRegistry.setRegistries([app.admin.registry, own]);
  process.on('message', (m: DecisionsRequest) => {
    if (m?.type !== WORKER_MESSAGES.decisionsRequest) return;
    app.admin.app.inject({ method: 'GET', url: `/decisions?${m.query}` }).then(
      (res) => process.send?.({ type: WORKER_MESSAGES.decisionsResponse, id: m.id, decisions: res.statusCode === 200 ? (res.json() as { decisions: DecisionRecord[] }).decisions : [] } satisfies DecisionsResponse),
      () => process.send?.({ type: WORKER_MESSAGES.decisionsResponse, id: m.id, decisions: [] } satisfies DecisionsResponse),
    );
  });
}
