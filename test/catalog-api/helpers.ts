/**
 * Test helpers for the catalog API suites: a throw-away PostgreSQL database per test file
 * (created and prepared by test/migrations/db.ts, migrated with migrations/migrate.ts and seeded
 * with migrations/seed/run.ts), the app built against it as `catalog_app`, and identity assertions signed
 * with a locally generated ES256 key whose public half is injected into the app.
 */
import pg from 'pg';
import { Redis } from 'ioredis';
import { createHash, randomUUID } from 'node:crypto';
import { SignJWT, calculateJwkThumbprint, createLocalJWKSet, exportJWK, generateKeyPair, type JWK, type JWTPayload, type CryptoKey } from 'jose';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import type { Test } from 'tap';
import { createTestDb as createEmptyTestDb, type TestDb } from '../migrations/db.ts';
import { migrateUp } from '../../migrations/migrate.ts';
import { seed } from '../../migrations/seed/run.ts';
import { buildCatalogApi, type CatalogDeps } from '../../catalog-api/src/app.ts';
import { loadConfig, type CatalogConfig } from '../../catalog-api/src/config.ts';
import { createOrm, type Orm } from '../../catalog-api/src/db/orm.ts';

export const ISSUER = 'urn:music-publishing:sidecar';
export const AUDIENCE = 'catalog-api';

export type { TestDb };

/**
 * Create `publishing_apitest_<tag>_<pid>` (see test/migrations/db.ts), migrate it and seed the demo data.
 * @throws when PostgreSQL or the superuser is not reachable
 */
export async function createTestDb(tag: string): Promise<TestDb> {
  const db = await createEmptyTestDb(tag, 'apitest');
  await migrateUp(db.ownerUrl);
  await seed(db.ownerUrl);
  return db;
}

/** A superuser client on the test database (bypasses RLS: for fixtures and checks only). */
export async function adminClient(db: TestDb): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: db.adminUrl });
  await c.connect();
  return c;
}

/** A signing key and its public JWK (kid = RFC 7638 thumbprint). */
export type SigningKey = { privateKey: CryptoKey; jwk: JWK; kid: string };

/** Generate an ES256 key pair. */
export async function makeKey(): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(jwk);
  return { privateKey, jwk: { ...jwk, kid, alg: 'ES256', use: 'sig' }, kid };
}

/** Claims/overrides for {@link assertion}. */
export type AssertionOptions = {
  sub: string;
  publisherId?: string | null;
  /** `htm` claim: the request method it is for (omitted when undefined) */
  htm?: string;
  /** `htu` claim: the request path without the query string (omitted when undefined) */
  htu?: string;
  /** `htq` claim: base64url SHA-256 of the raw query string ({@link queryHashOf}; omitted when undefined) */
  htq?: string;
  /** `jti` claim (default: a fresh UUID; null omits it) */
  jti?: string | null;
  iss?: string;
  aud?: string;
  expiresIn?: string | number;
  typ?: string;
  extra?: JWTPayload;
  key?: SigningKey;
};

/** Sign an identity assertion like the sidecar does (ES256, typ JWT, 60 s). */
export async function assertion(key: SigningKey, o: AssertionOptions): Promise<string> {
  const k = o.key ?? key;
  const claims: JWTPayload = { scope: 'catalog', request_id: randomUUID(), amr: ['pwd'], ...o.extra };
  if (o.publisherId) claims.publisher_id = o.publisherId;
  if (o.htm !== undefined) claims.htm = o.htm;
  if (o.htu !== undefined) claims.htu = o.htu;
  if (o.htq !== undefined) claims.htq = o.htq;
  const jwt = new SignJWT(claims)
    .setProtectedHeader({ alg: 'ES256', kid: k.kid, typ: o.typ ?? 'JWT' })
    .setIssuer(o.iss ?? ISSUER)
    .setAudience(o.aud ?? AUDIENCE)
    .setSubject(o.sub)
    .setIssuedAt()
    .setExpirationTime(o.expiresIn ?? '60s');
  if (o.jti !== null) jwt.setJti(o.jti ?? randomUUID());
  return jwt.sign(k.privateKey);
}

/** `htq` of a raw query string (without '?'): base64url of its SHA-256 — written here independently of the services. */
export function queryHashOf(query: string): string {
  return createHash('sha256').update(query).digest('base64url');
}

/**
 * The request binding the sidecar puts in an assertion (docs/CONTRACTS.md, "Identity assertion"):
 * `htm` = the method in upper case, `htu` = the path without the query string, `htq` = the hash of
 * the raw query string after the first '?' ('' when there is none).
 */
export function bindingOf(method: string | undefined, url: string): { htm: string; htu: string; htq: string } {
  const q = url.indexOf('?');
  return { htm: (method ?? 'GET').toUpperCase(), htu: q === -1 ? url : url.slice(0, q), htq: queryHashOf(q === -1 ? '' : url.slice(q + 1)) };
}

/** Configuration for tests: the throw-away database (app, sign-in and jobs roles), no relay unless a sink is injected, no metering jobs. */
export function testConfig(db: TestDb, env: Record<string, string> = {}): CatalogConfig {
  // no background metering jobs unless a suite asks: they would roll up (and clear) a running dev stack's Redis counts
  // the test command's Redis (its database index too: the suites read the same one)
  const redis: Record<string, string> = process.env.REDIS_URL ? { REDIS_URL: process.env.REDIS_URL } : {};
  return loadConfig({ ...redis, DATABASE_URL: db.appUrl, AUTH_DATABASE_URL: db.authUrl, JOBS_DATABASE_URL: db.jobsUrl, LOG_LEVEL: 'silent', OUTBOX_RELAY: 'false', METERING_ROLLUP_INTERVAL_MS: '0', METERING_MEASURE_INTERVAL_MS: '0', ...env });
}

/** The app under test plus helpers to call it as a seeded user. */
export type TestApp = {
  app: FastifyInstance;
  orm: Orm;
  /** the sign-in service's pool (`catalog_auth`) */
  authOrm: Orm;
  /** the relays' and jobs' pool (`catalog_jobs`) */
  jobsOrm: Orm;
  key: SigningKey;
  /** inject a request as `sub` in `publisherId`'s context (null = no publisher context) */
  as: (sub: string, publisherId: string | null, opts: InjectOptions) => Promise<LightMyRequestResponse>;
  close: () => Promise<void>;
};

/**
 * Build the catalog API on `db` with an injected local key set.
 * @param deps extra collaborators (e.g. a relationship sink)
 */
export async function buildTestApp(db: TestDb, deps: CatalogDeps = {}, env: Record<string, string> = {}): Promise<TestApp> {
  const key = await makeKey();
  const config = testConfig(db, env);
  const orm = await createOrm(config);
  const authOrm = await createOrm(config, 'auth');
  const jobsOrm = await createOrm(config, 'jobs');
  const app = await buildCatalogApi(config, { getKey: createLocalJWKSet({ keys: [key.jwk] }), orm, authOrm, jobsOrm, logger: false, relationshipSink: null, ...deps });
  await app.ready();
  return {
    app,
    orm,
    authOrm,
    jobsOrm,
    key,
    as: async (sub, publisherId, opts) => {
      if (typeof opts.url !== 'string') throw new TypeError('TestApp.as: give opts.url as a string');
      const token = await assertion(key, { sub, publisherId, ...bindingOf(opts.method, opts.url) });
      return app.inject({ ...opts, headers: { ...opts.headers, 'x-identity-assertion': token } });
    },
    close: async () => {
      await app.close();
      await orm.close(true);
      await authOrm.close(true);
      await jobsOrm.close(true);
    },
  };
}

/** A test file's fixtures: the seeded database, the app on it and a superuser client on it. */
export type Suite = { db: TestDb; ta: TestApp; su: pg.Client };

let clientNumber = 0;
/**
 * POST /api/v1/auth/login from a fresh client address each time (unless `from` is given), so the
 * per-IP limit stays out of tests that are about something else.
 * @returns the status, the parsed body and the headers
 */
export async function postLogin(ta: TestApp, email: string, password: string, from?: string) {
  const n = ++clientNumber;
  const res = await ta.app.inject({
    method: 'POST',
    url: '/api/v1/auth/login',
    headers: { 'content-type': 'application/json', 'x-forwarded-for': from ?? `10.${200 + Math.floor(n / 62_500)}.${Math.floor(n / 250) % 250}.${n % 250}` },
    payload: { email, password },
  });
  return { status: res.statusCode, body: res.json(), headers: res.headers };
}

/**
 * Forget every sign-in failure: the lockout columns of known accounts, and the Redis lockout state
 * of unknown emails (`auth:lockout:*`, kept a day — without this, reruns of a suite within a day
 * would start from the previous run's failures).
 */
export async function clearLockouts(su: pg.Client): Promise<void> {
  await su.query(`update user_credentials set failed_login_count = 0, first_failed_at = null, locked_until = null, lockout_level = 0`);
  const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/0');
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', 'auth:lockout:*', 'COUNT', 1000);
      if (keys.length) await redis.del(...keys);
      cursor = next;
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

/**
 * Open a {@link Suite} (database tag `tag`) before the tests of `tap` and close it after them.
 * @returns the suite, whose fields are set once `tap`'s `before` hook has run
 */
export function useSuite(tap: Pick<Test, 'before' | 'teardown'>, tag: string): Suite {
  const suite = {} as Partial<Suite>;
  tap.before(async () => {
    suite.db = await createTestDb(tag);
    suite.ta = await buildTestApp(suite.db);
    suite.su = await adminClient(suite.db);
  });
  tap.teardown(async () => {
    await suite.su?.end();
    await suite.ta?.close();
    await suite.db?.drop();
  });
  return suite as Suite;
}
