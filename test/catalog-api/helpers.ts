/**
 * Test helpers for the catalog API suites: a throw-away PostgreSQL database per test file
 * (created by the superuser `PG_ADMIN_URL` [postgres://postgres@127.0.0.1:5432/postgres], prepared
 * like scripts/services.sh, migrated with migrations/migrate.ts and seeded with
 * migrations/seed/run.ts), the app built against it as `catalog_app`, and identity assertions signed
 * with a locally generated ES256 key whose public half is injected into the app.
 */
import pg from 'pg';
import { randomUUID } from 'node:crypto';
import { SignJWT, calculateJwkThumbprint, createLocalJWKSet, exportJWK, generateKeyPair, type JWK, type JWTPayload, type CryptoKey } from 'jose';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import { migrateUp } from '../../migrations/migrate.ts';
import { seed } from '../../migrations/seed/run.ts';
import { buildCatalogApi, type CatalogDeps } from '../../catalog-api/src/app.ts';
import { loadConfig, type CatalogConfig } from '../../catalog-api/src/config.ts';
import { createOrm, type Orm } from '../../catalog-api/src/db/orm.ts';

export const ADMIN_URL = process.env.PG_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const ISSUER = 'urn:music-publishing:sidecar';
export const AUDIENCE = 'catalog-api';

/** `url` with database `db` and, when given, user = password = `user`. */
export function withDb(url: string, db: string, user?: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  if (user) {
    u.username = user;
    u.password = user;
  }
  return u.toString();
}

async function adminQuery(url: string, sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

/** A migrated and seeded throw-away database. */
export type TestDb = { name: string; appUrl: string; ownerUrl: string; adminUrl: string; drop: () => Promise<void> };

/**
 * Create `publishing_apitest_<tag>_<pid>`, migrate it and seed the demo data.
 * @throws when PostgreSQL or the superuser is not reachable
 */
export async function createTestDb(tag: string): Promise<TestDb> {
  const name = `publishing_apitest_${tag}_${process.pid}`;
  await adminQuery(ADMIN_URL, `drop database if exists "${name}" with (force)`);
  await adminQuery(ADMIN_URL, `create database "${name}" owner catalog_owner`);
  const adminUrl = withDb(ADMIN_URL, name);
  await adminQuery(adminUrl, `revoke all on schema public from public; alter schema public owner to catalog_owner;
    grant usage on schema public to catalog_app; create extension if not exists pgcrypto`);
  const ownerUrl = withDb(ADMIN_URL, name, 'catalog_owner');
  await migrateUp(ownerUrl);
  await seed(ownerUrl);
  return {
    name,
    adminUrl,
    ownerUrl,
    appUrl: withDb(ADMIN_URL, name, 'catalog_app'),
    drop: () => adminQuery(ADMIN_URL, `drop database if exists "${name}" with (force)`),
  };
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
  const claims: JWTPayload = { scope: 'catalog', request_id: randomUUID(), ...o.extra };
  if (o.publisherId) claims.publisher_id = o.publisherId;
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'ES256', kid: k.kid, typ: o.typ ?? 'JWT' })
    .setIssuer(o.iss ?? ISSUER)
    .setAudience(o.aud ?? AUDIENCE)
    .setSubject(o.sub)
    .setIssuedAt()
    .setExpirationTime(o.expiresIn ?? '60s')
    .setJti(randomUUID())
    .sign(k.privateKey);
}

/** Configuration for tests: the throw-away database, no relay unless a sink is injected. */
export function testConfig(db: TestDb, env: Record<string, string> = {}): CatalogConfig {
  return loadConfig({ DATABASE_URL: db.appUrl, LOG_LEVEL: 'silent', OUTBOX_RELAY: 'false', ...env });
}

/** The app under test plus helpers to call it as a seeded user. */
export type TestApp = {
  app: FastifyInstance;
  orm: Orm;
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
  const app = await buildCatalogApi(config, { getKey: createLocalJWKSet({ keys: [key.jwk] }), orm, logger: false, relationshipSink: null, ...deps });
  await app.ready();
  return {
    app,
    orm,
    key,
    as: async (sub, publisherId, opts) =>
      app.inject({ ...opts, headers: { ...opts.headers, 'x-identity-assertion': await assertion(key, { sub, publisherId }) } }),
    close: async () => {
      await app.close();
      await orm.close(true);
    },
  };
}
