/**
 * Test helpers for the migration suites: throw-away databases prepared like scripts/services.sh
 * does (owned by catalog_owner, public schema owned by it, USAGE for catalog_app, catalog_auth and
 * catalog_jobs, pgcrypto), and connections as the owner, the app role (with an RLS context set by
 * `app_begin_request`, migration 0011), the relays' role and the superuser.
 * Superuser URL: `PG_ADMIN_URL` [postgres://postgres@127.0.0.1:5432/postgres].
 */
import pg from 'pg';

export const ADMIN_URL = process.env.PG_ADMIN_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/** `url` with its database name replaced, and user/password when given. */
export function withDb(url: string, db: string, user?: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  if (user) {
    u.username = user;
    u.password = user;
  }
  return u.toString();
}

/** A throw-away database and the URLs of its roles (owner, app, sign-in service, relays and jobs, superuser). */
export type TestDb = { name: string; ownerUrl: string; appUrl: string; authUrl: string; jobsUrl: string; adminUrl: string; drop: () => Promise<void> };

/** Run one statement as the superuser on `url`. */
export async function adminQuery<T extends pg.QueryResultRow = any>(url: string, sql: string, params: unknown[] = []): Promise<pg.QueryResult<T>> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await c.query<T>(sql, params);
  } finally {
    await c.end();
  }
}

/**
 * Create a fresh database `publishing_<kind>_<tag>_<pid>` owned by catalog_owner.
 * @param kind the suites it is for: `migtest` (these), `apitest` (the catalog API's, which migrate and seed it)
 * @throws when the superuser cannot connect (PostgreSQL not running).
 */
export async function createTestDb(tag: string, kind: 'migtest' | 'apitest' = 'migtest'): Promise<TestDb> {
  const name = `publishing_${kind}_${tag}_${process.pid}`;
  await adminQuery(ADMIN_URL, `drop database if exists "${name}" with (force)`);
  await adminQuery(ADMIN_URL, `create database "${name}" owner catalog_owner`);
  const adminUrl = withDb(ADMIN_URL, name);
  await adminQuery(
    adminUrl,
    `revoke all on schema public from public; alter schema public owner to catalog_owner;
     grant usage on schema public to catalog_app, catalog_auth, catalog_jobs; create extension if not exists pgcrypto`,
  );
  return {
    name,
    adminUrl,
    ownerUrl: withDb(ADMIN_URL, name, 'catalog_owner'),
    appUrl: withDb(ADMIN_URL, name, 'catalog_app'),
    authUrl: withDb(ADMIN_URL, name, 'catalog_auth'),
    jobsUrl: withDb(ADMIN_URL, name, 'catalog_jobs'),
    drop: async () => {
      await adminQuery(ADMIN_URL, `drop database if exists "${name}" with (force)`);
    },
  };
}

/**
 * RLS context of one transaction: the caller and the publisher (unset = none). `scope` is what
 * `app_begin_request` must derive for them — it is checked, never set: nothing can set a scope.
 */
export type Ctx = { publisher?: string; user?: string; scope?: 'publisher' | 'own' | 'department' | 'platform' | '' };

/**
 * Open a request context as the catalog API does: `app_begin_request(user, publisher)` (migration 0011).
 * @returns the scope it derived
 * @throws when the function refuses (e.g. a second call in the transaction), or when `ctx.scope`
 *         is given and the derived scope differs (a test that assumed the wrong scope)
 */
export async function beginRequest(c: pg.ClientBase, ctx: Ctx & { user: string }): Promise<string> {
  const r = await c.query<{ access_scope: string }>(`select access_scope from app_begin_request($1::uuid, nullif($2, '')::uuid)`, [ctx.user, ctx.publisher ?? '']);
  const scope = r.rows[0]?.access_scope ?? '';
  if (ctx.scope !== undefined && ctx.scope !== scope) throw new Error(`beginRequest: ${ctx.user} at ${ctx.publisher ?? 'no publisher'} has scope '${scope}', not '${ctx.scope}'`);
  return scope;
}

/**
 * Run `fn` inside a transaction on `url` whose first statement opens the RLS context (as the catalog
 * API does, {@link beginRequest}; without `ctx.user` there is none), then roll back (unless
 * `commit`). Errors from `fn` propagate after the rollback.
 */
export async function inTx<T>(url: string, ctx: Ctx | null, fn: (c: pg.Client) => Promise<T>, commit = false): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query('begin');
    if (ctx?.user) await beginRequest(c, { ...ctx, user: ctx.user });
    const out = await fn(c);
    await c.query(commit ? 'commit' : 'rollback');
    return out;
  } catch (err) {
    await c.query('rollback').catch(() => undefined);
    throw err;
  } finally {
    await c.end();
  }
}
