/**
 * Test harness for the sidecar suites: real OpenFGA and Redis (from the environment or the
 * defaults of docs/CONTRACTS.md), a throw-away OpenFGA store per suite (deployModel with a unique
 * name, deleted at teardown), a throw-away token issuer (ES256 key + JWKS file in a temp dir), a
 * recording upstream (a real Node HTTP server on an ephemeral loopback port), and a raw HTTP client
 * that sends request targets byte-for-byte (fetch/WHATWG URL would normalise `/./`, `%2e%2e` …).
 * `useSidecarFixture` wires the usual set of them into a suite's `t.before`/`t.teardown`.
 */
import { createServer, request as httpRequest, type IncomingHttpHeaders, type Server } from 'node:http';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { SignJWT, calculateJwkThumbprint, exportJWK, generateKeyPair, type CryptoKey } from 'jose';
import { Redis } from 'ioredis';
import { OpenFgaClient, type TupleKey } from '@openfga/sdk';
import type { Test } from 'tap';
import { deployModel } from '../../policies/src/model.ts';
import { OPENFGA_CACHE_ENV } from '../../policies/src/openfga-caches.ts';
import { RelationshipWriter } from '../../policies/src/relationships.ts';
import { buildSidecar, type SidecarInstance } from '../../sidecar/src/app.ts';
import { loadConfig } from '../../sidecar/src/config.ts';

export const ROOT = resolve(import.meta.dirname, '../..');
export const OPENFGA_API_URL = process.env.OPENFGA_API_URL ?? 'http://127.0.0.1:8080';
export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/0';
export const OPENFGA_BIN = process.env.OPENFGA_BIN ?? join(ROOT, 'tools/cache/bin/openfga');
export const OPENFGA_DATASTORE_URI =
  process.env.OPENFGA_DATASTORE_URI || 'postgres://openfga:openfga@127.0.0.1:5432/openfga?sslmode=disable';
export const ISSUER = 'https://issuer.test.local';
export const AUDIENCE = 'music-publishing';

import { freePort, waitHttp } from '../support/http.ts';
export { freePort, waitHttp, decisions } from '../support/http.ts';

// ---------------------------------------------------------------------------------------------
/** What the upstream received. */
export type Received = { method: string; url: string; headers: IncomingHttpHeaders; bytes: number };

/**
 * The recording upstream. Paths: `/slow/<ms>…` waits <ms> before answering; everything else answers
 * 200 JSON `{ok, bytes}` after reading the whole body. Hop-by-hop and Connection-named response
 * headers are added on `/hop/*` so the suite can check they are stripped.
 */
export type Upstream = {
  url: string;
  port: number;
  received: Received[];
  /** Targets of requests whose body was cut off (the connection closed before the body ended). */
  aborted: string[];
  close(): Promise<void>;
  server: Server;
};

export async function startUpstream(port = 0): Promise<Upstream> {
  const received: Received[] = [];
  const aborted: string[] = [];
  const server = createServer((req, res) => {
    let bytes = 0;
    req.on('close', () => {
      if (!req.complete) aborted.push(req.url!);
    });
    req.on('data', (c: Buffer) => (bytes += c.length));
    req.on('end', async () => {
      received.push({ method: req.method!, url: req.url!, headers: req.headers, bytes });
      const slow = /^\/slow\/(\d+)/.exec(req.url!);
      if (slow) await sleep(Number(slow[1]));
      if (req.url!.startsWith('/hop/')) {
        res.setHeader('connection', 'x-secret-hop, keep-alive');
        res.setHeader('x-secret-hop', 'leak');
        res.setHeader('keep-alive', 'timeout=5');
      }
      res.setHeader('content-type', 'application/json');
      res.setHeader('x-upstream', 'yes');
      res.end(JSON.stringify({ ok: true, bytes }));
    });
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  const p = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${p}`,
    port: p,
    received,
    aborted,
    server,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

// ---------------------------------------------------------------------------------------------
/** A throw-away token issuer: an ES256 key pair whose JWKS a loopback HTTP server publishes. */
export type Issuer = {
  /** where the JWKS is served (`JWT_JWKS_URL`) */
  jwksUrl: string;
  /** the JWKS being served; replace `keys` to rotate */
  jwks: { keys: Record<string, unknown>[] };
  privateKey: CryptoKey;
  kid: string;
  publicJwk: Record<string, unknown>;
  /**
   * Sign an access token; `opts` override claims/header for negative tests. Tokens carry a `sid`
   * (a fresh UUID unless given; `sid: null` omits it) because the fixture's issuer has revocable
   * sessions, like the platform's own.
   */
  token(
    sub: string,
    opts?: { iss?: string; aud?: string; expSeconds?: number; typ?: string; scope?: string; omitExp?: boolean; sid?: string | null; amr?: string[] },
  ): Promise<string>;
  close(): Promise<void>;
};

/** Start an issuer. */
export async function createIssuer(): Promise<Issuer> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const publicJwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(publicJwk);
  const jwks = { keys: [{ ...publicJwk, kid, alg: 'ES256', use: 'sig' }] as Record<string, unknown>[] };
  const server = createServer((_req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(jwks));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    jwksUrl: `http://127.0.0.1:${port}/jwks.json`,
    jwks,
    privateKey,
    kid,
    publicJwk: publicJwk as Record<string, unknown>,
    async token(sub, o = {}) {
      const now = Math.floor(Date.now() / 1000);
      const claims: Record<string, unknown> = { scope: o.scope ?? 'catalog', email: 'u@example.com', amr: o.amr ?? ['pwd'] };
      if (o.sid !== null) claims.sid = o.sid ?? randomUUID();
      const jwt = new SignJWT(claims)
        .setProtectedHeader({ alg: 'ES256', typ: o.typ ?? 'at+jwt', kid })
        .setIssuer(o.iss ?? ISSUER)
        .setAudience(o.aud ?? AUDIENCE)
        .setSubject(sub)
        .setIssuedAt(now)
        .setJti(randomUUID());
      if (!o.omitExp) jwt.setExpirationTime(now + (o.expSeconds ?? 3600));
      return jwt.sign(privateKey);
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

// ---------------------------------------------------------------------------------------------
export const TEST_ROUTES = `version: 1
routes:
  - { method: GET, path: /docs/*, public: true }
  - { method: GET, path: /slow/*, public: true }
  - { method: GET, path: /hop/*, public: true }
  - { method: GET, path: /api/v1/users/me, authenticated: true }
  - { method: GET, path: /api/v1/works, relation: works_read, object: "publisher:{publisher}" }
  - { method: POST, path: /api/v1/works, relation: works_create, object: "publisher:{publisher}" }
  - { method: GET, path: "/api/v1/works/{id}", relation: can_read, object: "work:{id}" }
`;

/** A throw-away OpenFGA store with the project's model. */
export type TestStore = { storeName: string; storeId: string; modelId: string; fga: OpenFgaClient; remove(): Promise<void> };

export async function createTestStore(apiUrl = OPENFGA_API_URL): Promise<TestStore> {
  const storeName = `test-sidecar-${randomUUID()}`;
  const { storeId, modelId } = await deployModel({ apiUrl, storeName });
  const fga = new OpenFgaClient({ apiUrl, storeId, authorizationModelId: modelId });
  return {
    storeName,
    storeId,
    modelId,
    fga,
    remove: async () => {
      await fga.deleteStore({ storeId }).catch(() => undefined);
    },
  };
}

/** A temp dir with routes.yaml; removed by `cleanup`. */
export function tempDir(): { dir: string; routesFile: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'sidecar-test-'));
  const routesFile = join(dir, 'routes.yaml');
  writeFileSync(routesFile, TEST_ROUTES);
  return { dir, routesFile, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * A sidecar built in-process and listening on an ephemeral loopback port, with its admin listener
 * (/metrics, /healthz) on another one.
 */
export type Sidecar = { app: SidecarInstance; url: string; port: number; adminUrl: string; adminPort: number; close(): Promise<void> };

/**
 * The sidecars' CONDITION_TIME_BUCKET_MS here, ms: the request time is part of the decision key (per
 * bucket), and an hour keeps the suites' cache-hit assertions from meeting a bucket edge.
 */
export const TEST_CONDITION_TIME_BUCKET_MS = 3_600_000;

/**
 * Build and start a sidecar and its admin listener. `env` entries override the defaults below
 * (environment names of docs/CONTRACTS.md).
 */
export async function startSidecar(env: Record<string, string>): Promise<Sidecar> {
  const config = loadConfig({
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    OPENFGA_API_URL,
    REDIS_URL,
    JWT_ISSUER: ISSUER,
    JWT_AUDIENCE: AUDIENCE,
    SIDECAR_PORT: '0',
    ADMIN_PORT: '0',
    CONDITION_TIME_BUCKET_MS: String(TEST_CONDITION_TIME_BUCKET_MS),
    ...env,
  });
  const app = await buildSidecar(config);
  await app.listen({ host: '127.0.0.1', port: 0 });
  const port = (app.server.address() as { port: number }).port;
  const adminUrl = await app.admin.listen();
  return { app, url: `http://127.0.0.1:${port}`, port, adminUrl, adminPort: app.admin.port()!, close: () => app.close() };
}

// ---------------------------------------------------------------------------------------------
/** What `useSidecarFixture` sets up; every field but `tmp` is filled in by the suite's `t.before`. */
export type SidecarFixture = {
  /** Temp dir with routes.yaml (TEST_ROUTES); exists from the start. */
  tmp: ReturnType<typeof tempDir>;
  upstream: Upstream;
  store: TestStore;
  issuer: Issuer;
  /** A client of the shared Redis (REDIS_URL), the one `writer` bumps epochs in. */
  redis: Redis;
  writer: RelationshipWriter;
  /** The env the fixture's sidecars were started with: store, upstream, routes, issuer, then `env`. */
  env: Record<string, string>;
  /** The fixture's sidecars, in start order. */
  sidecars: Sidecar[];
  /** `sidecars[0]` (undefined when `sidecars: 0`). */
  sidecar: Sidecar;
};

export type SidecarFixtureOptions = {
  /** Tuples written (through `writer`, so epochs are bumped) before any sidecar starts. */
  tuples?: TupleKey[];
  /** How many sidecars to start with `env` (default 1; 0 when the suite starts its own). */
  sidecars?: number;
  /** Extra sidecar environment, merged over the fixture's defaults into `fixture.env`. */
  env?: Record<string, string>;
};

/**
 * The common setup of the sidecar suites, registered on `t`:
 * - `t.before`: start a recording upstream, create a throw-away OpenFGA store and token issuer,
 *   connect to the shared Redis, write `tuples` with a RelationshipWriter, start `sidecars`
 *   sidecars with `env`;
 * - `t.teardown`: close the sidecars and the upstream, delete the store, disconnect Redis, remove
 *   the temp dir.
 * Returns the fixture object at once; read its fields inside the tests (they are set by `t.before`).
 * Suite-specific services (private OpenFGA/Redis, per-test sidecars) stay in the suite.
 */
export function useSidecarFixture(t: Test, opts: SidecarFixtureOptions = {}): SidecarFixture {
  const fx = { tmp: tempDir(), sidecars: [] as Sidecar[] } as SidecarFixture;
  t.before(async () => {
    fx.upstream = await startUpstream();
    fx.store = await createTestStore();
    fx.issuer = await createIssuer();
    fx.redis = new Redis(REDIS_URL);
    fx.writer = new RelationshipWriter({ fga: fx.store.fga, redis: fx.redis, storeId: fx.store.storeId, modelId: fx.store.modelId });
    if (opts.tuples) await fx.writer.write({ writes: opts.tuples });
    fx.env = {
      OPENFGA_STORE_NAME: fx.store.storeName,
      UPSTREAM_URL: fx.upstream.url,
      ROUTES_FILE: fx.tmp.routesFile,
      JWT_JWKS_URL: fx.issuer.jwksUrl,
      ...opts.env,
    };
    for (let i = 0; i < (opts.sidecars ?? 1); i++) fx.sidecars.push(await startSidecar(fx.env));
    fx.sidecar = fx.sidecars[0]!;
  });
  t.teardown(async () => {
    for (const s of fx.sidecars) await s.close();
    await fx.upstream?.close();
    await fx.issuer?.close();
    await fx.store?.remove();
    fx.redis?.disconnect();
    fx.tmp.cleanup();
  });
  return fx;
}

// ---------------------------------------------------------------------------------------------
/** A raw HTTP response. */
export type RawResponse = { status: number; headers: IncomingHttpHeaders; text: string; json(): any };

/**
 * Send a request with the target exactly as given (no URL normalisation).
 * @param body a Buffer, or a generator of chunks (sent chunked).
 */
export function raw(
  port: number,
  method: string,
  path: string,
  headers: Record<string, string | string[]> = {},
  body?: Buffer | AsyncIterable<Buffer>,
): Promise<RawResponse> {
  return new Promise((resolveP, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolveP({ status: res.statusCode!, headers: res.headers, text, json: () => JSON.parse(text) });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body === undefined) req.end();
    else if (Buffer.isBuffer(body)) req.end(body);
    else
      (async () => {
        for await (const chunk of body) if (!req.write(chunk)) await new Promise((r) => req.once('drain', r));
        req.end();
      })().catch(reject);
  });
}

// ---------------------------------------------------------------------------------------------
/** A private child service (openfga / redis-server) we start and stop in a test. */
export type Child = { proc: ChildProcess; stop(): Promise<void>; output(): string };

function spawnChild(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Child {
  let out = '';
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  proc.stdout?.on('data', (d) => (out = (out + d).slice(-10_000)));
  proc.stderr?.on('data', (d) => (out = (out + d).slice(-10_000)));
  return {
    proc,
    output: () => out,
    stop: async () => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGKILL');
      await exited;
    },
  };
}

/**
 * Start a private OpenFGA on `httpPort` against the shared PostgreSQL datastore (not memory), with
 * the check caches as scripts/services.sh runs them (policies/src/openfga-caches.ts), `env` over them.
 */
export async function startPrivateOpenFga(httpPort: number, env: Record<string, string> = {}): Promise<Child> {
  const grpcPort = await freePort();
  const child = spawnChild(OPENFGA_BIN, [
    'run',
    '--datastore-engine',
    'postgres',
    '--datastore-uri',
    OPENFGA_DATASTORE_URI,
    // few connections: suites running side by side must stay under PostgreSQL's max_connections (100)
    '--datastore-max-open-conns',
    '6',
    '--datastore-max-idle-conns',
    '2',
    '--http-addr',
    `127.0.0.1:${httpPort}`,
    '--grpc-addr',
    `127.0.0.1:${grpcPort}`,
    '--playground-enabled=false',
    '--metrics-enabled=false',
    '--log-level',
    'warn',
  ], { ...process.env, ...OPENFGA_CACHE_ENV, ...env });
  try {
    await waitHttp(`http://127.0.0.1:${httpPort}/healthz`, 30_000);
  } catch (err) {
    await child.stop();
    throw new Error(`${(err as Error).message}\n${child.output()}`);
  }
  return child;
}

/** Start a private redis-server on `port` (no persistence). */
export async function startPrivateRedis(port: number): Promise<Child> {
  const child = spawnChild('redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no']);
  const deadline = Date.now() + 10_000;
  for (;;) {
    const r = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    r.on('error', () => undefined);
    try {
      await r.connect();
      await r.ping();
      r.disconnect();
      return child;
    } catch {
      r.disconnect();
      if (Date.now() > deadline) {
        await child.stop();
        throw new Error(`redis-server on ${port} did not start\n${child.output()}`);
      }
      await sleep(100);
    }
  }
}
