/**
 * The benchmarks' sidecar set-up, shared by bench/sidecar.bench.ts, bench/peer.bench.ts and
 * bench/latency.bench.ts: a throw-away OpenFGA store with memberships, a throw-away ES256 issuer
 * (JWKS on loopback) and its access tokens, the upstream as a pinned process, sidecar processes,
 * and a private OpenFGA process whose CPU (and its PostgreSQL backends') can be read from /proc.
 *
 * Needs the real OpenFGA (OPENFGA_API_URL), Redis (REDIS_URL) and, for the private OpenFGA,
 * OPENFGA_DATASTORE_URI and PG_ADMIN_URL — what scripts/bench.sh and scripts/test.sh export.
 */
import { OPENFGA_CACHE_ENV } from '../../policies/src/openfga-caches.ts';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { OpenFgaClient } from '@openfga/sdk';
import { SignJWT, calculateJwkThumbprint, exportJWK, exportPKCS8, generateKeyPair, type JSONWebKeySet } from 'jose';
import pg from 'pg';
import { deployModel } from '../../policies/src/model.ts';
import { freePort, waitHttp } from '../../test/support/http.ts';
import { ROOT, SMOKE, pinned } from './harness.ts';

/** The audience of the platform's access tokens (docs/CONTRACTS.md, "Access tokens"). */
export const AUDIENCE = 'music-publishing';

/** A membership as both PDPs hold it: `user` has `relation` (a publisher role) on `publisher`. */
export type Membership = { user: string; relation: string; publisher: string };

/** A throw-away OpenFGA store with the platform's model and the given memberships. */
export type BenchStore = { storeName: string; storeId: string; modelId: string; fga: OpenFgaClient; memberships: Membership[]; remove(): Promise<void> };

/**
 * Deploy the model (policies/model.fga) to a new store `bench-<uuid>` and write one tuple
 * `user:<user> <relation> publisher:<publisher>` per membership.
 * @param apiUrl OpenFGA's HTTP API (default OPENFGA_API_URL, else http://127.0.0.1:8080)
 * @throws when OpenFGA refuses the model or the tuples
 */
export async function createBenchStore(memberships: Membership[], apiUrl = process.env.OPENFGA_API_URL ?? 'http://127.0.0.1:8080'): Promise<BenchStore> {
  const storeName = `bench-${randomUUID()}`;
  const { storeId, modelId } = await deployModel({ apiUrl, storeName });
  const fga = new OpenFgaClient({ apiUrl, storeId, authorizationModelId: modelId });
  // OpenFGA's Write takes at most 100 tuples per call (its default max-tuples-per-write)
  for (let i = 0; i < memberships.length; i += 100) {
    await fga.write({ writes: memberships.slice(i, i + 100).map((m) => ({ user: `user:${m.user}`, relation: m.relation, object: `publisher:${m.publisher}` })) });
  }
  return { storeName, storeId, modelId, fga, memberships, remove: async () => void (await fga.deleteStore()) };
}

/** A throw-away access-token issuer: an ES256 key whose JWKS a loopback server publishes. */
export type BenchIssuer = {
  issuer: string;
  jwksUrl: string;
  jwks: JSONWebKeySet;
  /** An access token (at+jwt, RFC 9068 claims, 1 h) for subject `sub`, with a session id (`sid`). */
  token(sub: string): Promise<string>;
  close(): void;
};

/** Start a {@link BenchIssuer} (like the sign-in service: ES256, kid = RFC 7638 thumbprint). */
export async function createIssuer(issuer = 'https://bench-issuer.local'): Promise<BenchIssuer> {
  const keys = await generateKeyPair('ES256', { extractable: true });
  const jwk = await exportJWK(keys.publicKey);
  const kid = await calculateJwkThumbprint(jwk);
  const jwks: JSONWebKeySet = { keys: [{ ...jwk, kid, alg: 'ES256', use: 'sig' }] };
  const body = JSON.stringify(jwks);
  const server = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(body));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    issuer,
    jwks,
    jwksUrl: `http://127.0.0.1:${(server.address() as { port: number }).port}/jwks.json`,
    token: (sub) =>
      new SignJWT({ sid: randomUUID(), amr: ['pwd'] })
        .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid })
        .setIssuer(issuer)
        .setAudience(AUDIENCE)
        .setSubject(sub)
        .setIssuedAt()
        .setExpirationTime('1h')
        .setJti(randomUUID())
        .sign(keys.privateKey),
    close: () => server.close(),
  };
}

/** A new Ed25519 private key (PKCS#8 PEM, mode 0600) in a temporary directory, for SIDECAR_SIGNING_KEY_FILE; returns its path. */
export async function writeSidecarSigningKey(): Promise<string> {
  const file = join(mkdtempSync(join(tmpdir(), 'bench-')), 'sidecar-signing-key.pem');
  // Ed25519, as `npm run keys -- init` makes it (the assertion is signed with EdDSA)
  writeFileSync(file, await exportPKCS8((await generateKeyPair('EdDSA', { extractable: true })).privateKey), { mode: 0o600 });
  return file;
}

/** A server process the bench started. */
export type ServerProcess = { url: string; pid: number; proc: ChildProcess; stop(): Promise<void> };

/** SIGTERM `proc` and wait for it (SIGKILL after 5 s). */
export async function stopProcess(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  await Promise.race([exited, sleep(5000).then(() => proc.kill('SIGKILL'))]);
}

/**
 * Start the upstream (bench/lib/upstream.ts) as its own process pinned to `cpus`.
 * @throws when it does not print its port within 10 s
 */
export async function startUpstreamProcess(cpus?: string): Promise<ServerProcess> {
  const [cmd, args] = pinned(process.execPath, [join(ROOT, 'bench/lib/upstream.ts')], cpus);
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await Promise.race([
    new Promise<string>((r) => createInterface({ input: proc.stdout! }).once('line', r)),
    sleep(10_000).then(() => {
      throw new Error('the upstream did not start within 10 s');
    }),
  ]);
  const { port } = JSON.parse(line) as { port: number };
  return { url: `http://127.0.0.1:${port}`, pid: proc.pid!, proc, stop: () => stopProcess(proc) };
}

/** A running sidecar: its public URL, its admin listener's URL (/metrics) and its pid. */
export type SidecarProcess = ServerProcess & { adminUrl: string };

/**
 * Start sidecar/src/main.ts (or `main`) as a process in front of `upstreamUrl`, for the store and
 * issuer given; wait until /healthz answers. Rate limits are raised far above any bench's rate (every
 * request still pays the counts, none is refused) and one subject may use the whole upstream pool.
 * @param opts.port / opts.adminPort listeners (default: free ports)
 * @param opts.env more settings (e.g. DECISION_CACHE_TTL_MS=0, SIDECAR_WORKERS, OPENFGA_API_URL)
 * @param opts.cpus taskset CPU list to pin it to
 * @throws when /healthz does not answer within 15 s
 */
export async function startSidecar(opts: {
  upstreamUrl: string;
  storeName: string;
  signingKeyFile: string;
  issuer: BenchIssuer;
  port?: number;
  adminPort?: number;
  env?: Record<string, string>;
  nodeArgs?: string[];
  main?: string;
  cpus?: string;
}): Promise<SidecarProcess> {
  const port = opts.port ?? (await freePort());
  const adminPort = opts.adminPort ?? (await freePort());
  const [cmd, args] = pinned(process.execPath, [...(opts.nodeArgs ?? []), opts.main ?? 'sidecar/src/main.ts'], opts.cpus);
  const proc = spawn(cmd, args, {
    cwd: ROOT,
    env: {
      ...process.env,
      LOG_LEVEL: 'warn',
      SIDECAR_PORT: String(port),
      ADMIN_PORT: String(adminPort),
      UPSTREAM_URL: opts.upstreamUrl,
      OPENFGA_STORE_NAME: opts.storeName,
      SIDECAR_SIGNING_KEY_FILE: opts.signingKeyFile,
      JWT_ISSUER: opts.issuer.issuer,
      JWT_JWKS_URL: opts.issuer.jwksUrl,
      RATE_LIMIT_IP: process.env.RATE_LIMIT_IP ?? '999999999/min',
      RATE_LIMIT_SUBJECT: process.env.RATE_LIMIT_SUBJECT ?? '999999999/min',
      RATE_LIMIT_PUBLISHER: process.env.RATE_LIMIT_PUBLISHER ?? '999999999/min',
      UPSTREAM_SHARE_PER_SUBJECT: process.env.UPSTREAM_SHARE_PER_SUBJECT ?? '1',
      UPSTREAM_SHARE_PER_PUBLISHER: process.env.UPSTREAM_SHARE_PER_PUBLISHER ?? '1',
      ...opts.env,
    },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitHttp(`${url}/healthz`, 15_000);
  } catch (err) {
    proc.kill('SIGKILL');
    throw err;
  }
  return { url, adminUrl: `http://127.0.0.1:${adminPort}`, pid: proc.pid!, proc, stop: () => stopProcess(proc) };
}

/** The OpenFGA binary: OPENFGA_BIN, else tools/cache/bin/openfga (scripts/lib.sh ensure_openfga_bin). */
export const OPENFGA_BIN = process.env.OPENFGA_BIN ?? join(ROOT, 'tools/cache/bin/openfga');

/** A private OpenFGA and the PostgreSQL application_name its connections carry. */
export type PrivateOpenFga = ServerProcess & { applicationName: string };

/**
 * Start a private OpenFGA (HTTP on a free port) on the shared PostgreSQL datastore
 * (OPENFGA_DATASTORE_URI), pinned to `cpus`, its connections named `applicationName` so that
 * {@link postgresBackends} finds them. Its pool keeps every connection open (max idle = max open),
 * so the backends live for the whole run. OPENFGA_* settings in the environment apply (OpenFGA
 * reads them, https://openfga.dev/docs/getting-started/setup-openfga/configuration).
 * @throws when OPENFGA_DATASTORE_URI is unset or /healthz does not answer within 30 s
 */
export async function startPrivateOpenFga(opts: { cpus?: string; applicationName?: string; env?: Record<string, string> } = {}): Promise<PrivateOpenFga> {
  const uri = process.env.OPENFGA_DATASTORE_URI;
  if (!uri) throw new Error('OPENFGA_DATASTORE_URI is not set (the private OpenFGA needs the PostgreSQL datastore)');
  const applicationName = opts.applicationName ?? `bench-openfga-${process.pid}`;
  const datastore = `${uri}${uri.includes('?') ? '&' : '?'}application_name=${applicationName}`;
  const [httpPort, grpcPort] = [await freePort(), await freePort()];
  // smoke runs share PostgreSQL (max_connections 100) with the test suites running beside them
  const maxConns = process.env.OPENFGA_DATASTORE_MAX_OPEN_CONNS ?? (SMOKE ? '6' : '30');
  const [cmd, args] = pinned(
    OPENFGA_BIN,
    ['run', '--datastore-engine', 'postgres', '--datastore-uri', datastore, '--datastore-max-open-conns', maxConns, '--datastore-max-idle-conns', maxConns,
      '--http-addr', `127.0.0.1:${httpPort}`, '--grpc-addr', `127.0.0.1:${grpcPort}`, '--playground-enabled=false', '--metrics-enabled=false', '--log-level', 'warn'],
    opts.cpus,
  );
  let out = '';
  // OpenFGA's check caches as scripts/services.sh runs them, unless the caller's environment says otherwise (bench/openfga.bench.ts variants)
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...OPENFGA_CACHE_ENV, ...process.env, ...opts.env } });
  proc.stdout!.on('data', (d) => (out = (out + d).slice(-10_000)));
  proc.stderr!.on('data', (d) => (out = (out + d).slice(-10_000)));
  const url = `http://127.0.0.1:${httpPort}`;
  try {
    await waitHttp(`${url}/healthz`, 30_000);
  } catch (err) {
    proc.kill('SIGKILL');
    throw new Error(`${(err as Error).message}\n${out}`);
  }
  return { url, pid: proc.pid!, proc, applicationName, stop: () => stopProcess(proc) };
}

/**
 * Pids of the PostgreSQL backends serving connections named `applicationName` (pg_stat_activity,
 * asked as PG_ADMIN_URL's superuser — other roles' rows hide their application_name).
 * @throws when PG_ADMIN_URL is unset or PostgreSQL refuses
 */
export async function postgresBackends(applicationName: string): Promise<number[]> {
  const url = process.env.PG_ADMIN_URL;
  if (!url) throw new Error('PG_ADMIN_URL is not set (needed to find the PostgreSQL backends)');
  const client = new pg.Client({ connectionString: url, application_name: 'bench-probe' });
  await client.connect();
  try {
    const { rows } = await client.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE application_name = $1', [applicationName]);
    return rows.map((r) => r.pid);
  } finally {
    await client.end();
  }
}

/** Sum of a counter's samples in a Prometheus text, by the value of one label. */
export function countsBy(text: string, metric: string, label: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of text.matchAll(new RegExp(`^${metric}\\{([^}]*)\\} ([0-9.e+]+)$`, 'gm'))) {
    const key = new RegExp(`${label}="([^"]*)"`).exec(m[1]!)?.[1] ?? '';
    out[key] = (out[key] ?? 0) + Number(m[2]);
  }
  return out;
}
