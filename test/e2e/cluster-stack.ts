/**
 * The scaled-out stack of issue 11 §1 as real processes on loopback: a 3-master Redis Cluster (six
 * Debian redis-server nodes, test/support/redis-cluster.ts), two OpenFGA instances on the one
 * PostgreSQL datastore of the test environment (`OPENFGA_DATASTORE_URI`, already migrated by
 * scripts/services.sh), two catalog API processes (API #i talks to OpenFGA #i; both run the outbox
 * relay, which claims rows `FOR UPDATE SKIP LOCKED`) and three sidecars, each given both OpenFGA
 * instances (`OPENFGA_API_URL` as a list) and the cluster (`REDIS_CLUSTER_NODES`); sidecar #i
 * forwards to API #(i mod 2). The database, keys and model are prepared as for test/e2e/stack.ts
 * (`prepareStack`).
 *
 * No process outlives the test: `stop()` ends them all (SIGTERM, then SIGKILL), a failed start
 * ends what it started, and a reaper process — which records this process's children every 250 ms
 * and notices this process's death by the end of its stdin pipe — SIGKILLs whatever is left when
 * the test process dies without a teardown (a crash, a tap timeout, kill -9).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { waitHttp } from '../support/http.ts';
import { startRedisCluster, type RedisCluster } from '../support/redis-cluster.ts';
import { startReaper } from '../support/reaper.ts';
import { env, prepareStack, startCommand, startProcess, useSidecar, type Proc } from './stack.ts';
import { OPENFGA_CACHE_ENV } from '../../policies/src/openfga-caches.ts';

/** The running scaled-out stack. */
export type ClusterStack = {
  /** the Redis Cluster (undefined when started with `redisCluster: false`) */
  redis: RedisCluster | undefined;
  /** the OpenFGA instances (`url`: their HTTP API) */
  openfga: Proc[];
  /** the catalog API processes */
  apis: Proc[];
  /** the sidecars (`url` public, `adminUrl` admin listener); sidecar i forwards to apis[i % 2] */
  sidecars: Proc[];
  /** the mail catcher's folder */
  mailDir: string;
  /** a sidecar picked uniformly at random */
  randomSidecar: () => Proc;
  /** a sidecar whose upstream is apis[i] */
  sidecarOf: (api: number) => Proc;
  /** SIGKILL OpenFGA instance `i` (as a crash: no goodbye) and wait until it has exited. */
  killOpenFga: (i: number) => Promise<void>;
  stop: () => Promise<void>;
};

const taken = new Set<number>();
/**
 * A free loopback port below the kernel's ephemeral range (32768–60999 on Linux): a port the OS
 * hands out for port 0 can be taken by an outgoing connection before the process meant to listen
 * on it binds it — seen here, the harness reserves the issuer's port long before sidecar #0 starts.
 */
/** The Fetch standard's "bad ports" in 10000–15999 (https://fetch.spec.whatwg.org/#bad-port): fetch refuses them. */
const FETCH_BAD_PORTS = new Set([10080]);

async function listenPort(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = 10_000 + Math.floor(Math.random() * 6_000);
    if (taken.has(port) || FETCH_BAD_PORTS.has(port)) continue;
    const free = await new Promise<boolean>((res) => {
      const srv = createServer();
      srv.once('error', () => res(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => res(true)));
    });
    if (free) {
      taken.add(port);
      return port;
    }
  }
  throw new Error('no free loopback port in 10000–15999');
}

async function healthy(proc: Proc, url: string, timeoutMs = 30_000): Promise<void> {
  try {
    await waitHttp(url, timeoutMs);
  } catch (err) {
    const last = await fetch(url).then(async (r) => `${r.status} ${await r.text()}`, (e: Error) => e.message);
    const state = proc.child.exitCode !== null || proc.child.signalCode !== null ? `exited ${proc.child.exitCode ?? proc.child.signalCode}` : 'running';
    throw new Error(`${(err as Error).message} (last answer: ${last}; ${proc.child.spawnargs.slice(1, 2).join(' ')} ${state})\n${proc.output().slice(-4000)}`);
  }
}

/**
 * Start the scaled-out stack (≈ 15–30 s on a quiet machine).
 * @param opts.sidecarEnv settings every sidecar gets on top of the harness's
 * @param opts.apiEnv settings both catalog APIs get on top of the harness's
 * @param opts.redisCluster false: every process uses the single Redis of `REDIS_URL` instead (to tell a
 *   cluster problem from another)
 * @throws when a process does not become healthy within 30 s (its output is in the message);
 *   everything started so far is stopped first
 */
export async function startClusterStack(opts: { sidecarEnv?: Record<string, string>; apiEnv?: Record<string, string>; redisCluster?: boolean } = {}): Promise<ClusterStack> {
  const reaper = startReaper();
  const procs: Proc[] = [];
  let redis: RedisCluster | undefined;
  const stop = async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await redis?.stop();
    reaper.close();
    useSidecar(undefined);
  };
  try {
    const signingKey = await prepareStack();
    if (opts.redisCluster !== false) {
      redis = await startRedisCluster();
      reaper.scan();
    }
    const clusterEnv: Record<string, string> = redis ? { REDIS_CLUSTER_NODES: redis.seeds, REDIS_URL: 'redis://127.0.0.1:6379/0' } : {};

    const openfga: Proc[] = [];
    for (let i = 0; i < 2; i++) {
      const [http, grpc] = [await listenPort(), await listenPort()];
      // (small pools: the machine's PostgreSQL is shared by every suite)
      // prettier-ignore
      const proc = startCommand(env('OPENFGA_BIN'), [
        'run', '--datastore-engine', 'postgres', '--datastore-uri', env('OPENFGA_DATASTORE_URI'),
        '--datastore-max-open-conns', '4', '--datastore-max-idle-conns', '2', '--http-addr', `127.0.0.1:${http}`, '--grpc-addr', `127.0.0.1:${grpc}`,
        '--playground-enabled=false', '--metrics-enabled=false', '--log-format', 'json', '--log-level', 'warn',
      ], { ...OPENFGA_CACHE_ENV }, `http://127.0.0.1:${http}`);
      procs.push(proc);
      openfga.push(proc);
    }
    reaper.scan();
    await Promise.all(openfga.map((p) => healthy(p, `${p.url}/healthz`)));

    const [smtpPort, issuerPort] = [await listenPort(), await listenPort()];
    const mailDir = mkdtempSync(join(tmpdir(), 'e2e-mail-'));
    procs.push(startProcess('scripts/mail-catcher.ts', {}, `smtp://127.0.0.1:${smtpPort}`, ['--port', String(smtpPort), '--dir', mailDir]));
    // the issuer (and the JWKS the APIs verify assertions with) is sidecar #0; every sidecar signs with the same key
    const issuer = `http://127.0.0.1:${issuerPort}`;
    const apis: Proc[] = [];
    for (let i = 0; i < 2; i++) {
      const port = await listenPort();
      const proc = startProcess(
        'catalog-api/src/main.ts',
        {
          ...clusterEnv,
          CATALOG_HOST: '127.0.0.1',
          CATALOG_PORT: String(port),
          OPENFGA_API_URL: openfga[i]!.url,
          SIDECAR_JWKS_URL: `${issuer}/.well-known/jwks.json`,
          JWT_ISSUER: issuer,
          APP_BASE_URL: issuer,
          SMTP_URL: `smtp://127.0.0.1:${smtpPort}`,
          SIGN_IN_RATE_LIMIT_PER_MINUTE: '100000', // as test/e2e/stack.ts
          // small pools: the machine's PostgreSQL (max_connections) is shared by every suite
          DB_POOL_MAX: '4',
          AUTH_DB_POOL_MAX: '2',
          JOBS_DB_POOL_MAX: '2',
          ...opts.apiEnv,
        },
        `http://127.0.0.1:${port}`,
      );
      procs.push(proc);
      apis.push(proc);
    }
    reaper.scan();
    await Promise.all(apis.map((p) => healthy(p, `${p.url}/healthz`)));

    const startSidecar = (i: number, port: number, adminPort: number): Proc => {
      const api = apis[i % 2]!;
      const proc = startProcess(
        'sidecar/src/main.ts',
        {
          ...clusterEnv,
          SIDECAR_HOST: '127.0.0.1',
          SIDECAR_PORT: String(port),
          SIDECAR_WORKERS: '1', // one process per sidecar: the scale-out under test is across sidecars
          ADMIN_PORT: String(adminPort),
          UPSTREAM_URL: api.url,
          OPENFGA_API_URL: openfga.map((f) => f.url).join(','),
          SIDECAR_SIGNING_KEY_FILE: signingKey,
          JWT_ISSUER: issuer,
          JWT_JWKS_URL: `${api.url}/api/v1/auth/jwks.json`,
          ...opts.sidecarEnv,
        },
        `http://127.0.0.1:${port}`,
      );
      proc.adminUrl = `http://127.0.0.1:${adminPort}`;
      procs.push(proc);
      reaper.scan();
      return proc;
    };
    // No retry: a start that hangs is a bug (it was one: ioredis' slots refresh without a per-node
    // offline queue, policies/src/redis.ts).
    const sidecars = await Promise.all(
      [0, 1, 2].map(async (i) => {
        const [port, adminPort] = [i === 0 ? issuerPort : await listenPort(), await listenPort()];
        const proc = startSidecar(i, port, adminPort);
        await healthy(proc, `${proc.url}/healthz`, 20_000);
        await healthy(proc, `${proc.adminUrl}/healthz`, 10_000);
        return proc;
      }),
    );
    useSidecar(sidecars[0]!.url);
    return {
      redis,
      openfga,
      apis,
      sidecars,
      mailDir,
      randomSidecar: () => sidecars[Math.floor(Math.random() * sidecars.length)]!,
      sidecarOf: (api) => sidecars.find((_, i) => i % 2 === api)!,
      killOpenFga: async (i) => {
        const { child } = openfga[i]!;
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGKILL');
        await exited;
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
