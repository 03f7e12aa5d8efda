/**
 * The MikroORM instances of the catalog API (PostgreSQL driver; the app role `catalog_app`, the
 * sign-in service's `catalog_auth`, the relays' and jobs' `catalog_jobs`) and the parameterised-SQL
 * helper every repository uses.
 *
 * The catalog's queries are written as SQL with real bind parameters ($1, $2 …) and run through the
 * Kysely client MikroORM exposes (`em.getKysely()`), which is bound to the EntityManager's
 * transaction. MikroORM's own `em.execute(sql, params)` interpolates parameters client-side; bind
 * parameters keep values out of the SQL text entirely.
 */
import { MikroORM, type EntityManager } from '@mikro-orm/postgresql';
import { CompiledQuery } from 'kysely';
import type { CatalogConfig } from '../config.ts';
import { ENTITIES } from './entities.ts';

/** A pool-backed ORM; close it with `orm.close()`. */
export type Orm = MikroORM;

/** Which database role a pool connects as: the app, the sign-in service, or the relays and jobs. */
export type OrmRole = 'app' | 'auth' | 'jobs';

/** Per role: its URL setting, `application_name`, and the ORM context name. */
const ROLES = {
  app: { url: 'DATABASE_URL', application: 'catalog-api', context: 'catalog-app' },
  auth: { url: 'AUTH_DATABASE_URL', application: 'catalog-api-auth', context: 'catalog-auth' },
  jobs: { url: 'JOBS_DATABASE_URL', application: 'catalog-api-jobs', context: 'catalog-jobs' },
} as const;

/** What {@link createOrm} reads of the configuration. */
export type OrmConfig = Pick<CatalogConfig, 'DATABASE_URL' | 'DB_POOL_MAX' | 'DB_STATEMENT_TIMEOUT_MS'> &
  Partial<Pick<CatalogConfig, 'AUTH_DATABASE_URL' | 'AUTH_DB_POOL_MAX' | 'JOBS_DATABASE_URL' | 'JOBS_DB_POOL_MAX' | 'DB_CONNECT_TIMEOUT_MS'>>;

/**
 * How much longer than `statement_timeout` the client waits for a statement's answer (`pg`
 * `query_timeout`): PostgreSQL's own timeout answers first when the server is slow; this one ends
 * the wait when no answer can come (a network partition), so a request fails with 503 instead of
 * hanging (test/faults/postgres.test.ts).
 */
export const QUERY_TIMEOUT_MARGIN_MS = 500;

/**
 * A connection given back while a statement is still unanswered (its caller gave up at
 * `query_timeout`) is destroyed, never reused: its late answers could otherwise complete the
 * abandoned transaction — a write answered 503 committed by the next request's COMMIT.
 */
function discardAbandonedConnections(pool: { on(event: 'release', fn: (err: unknown, client: unknown) => void): unknown }): void {
  pool.on('release', (_err, client) => {
    const c = client as { _getActiveQuery?: () => unknown; connection?: { stream?: { destroy(): void } } };
    if (c._getActiveQuery?.()) c.connection?.stream?.destroy();
  });
}

/**
 * Connect MikroORM with the pool size and timeouts of the configuration: as the app role
 * (`DATABASE_URL`, DB_POOL_MAX), as the sign-in service's role (`AUTH_DATABASE_URL`,
 * AUTH_DB_POOL_MAX) or as the relays' and jobs' role `catalog_jobs` (`JOBS_DATABASE_URL`,
 * JOBS_DB_POOL_MAX); `statement_timeout` = DB_STATEMENT_TIMEOUT_MS, the client-side
 * `query_timeout` = that + {@link QUERY_TIMEOUT_MARGIN_MS},
 * `idle_in_transaction_session_timeout` = 2 × that, connect timeout DB_CONNECT_TIMEOUT_MS (5 s). The entities of
 * db/entities.ts are registered; the schema itself belongs to migrations/.
 * @throws Error naming the variable when the role's URL is not configured (JOBS_DATABASE_URL has
 *         no default), or when the options are invalid (the pool connects lazily; see {@link checkDatabase})
 */
export async function createOrm(config: OrmConfig, role: OrmRole = 'app'): Promise<Orm> {
  const r = ROLES[role];
  const url = config[r.url];
  if (!url) {
    throw new Error(
      role === 'jobs'
        ? 'JOBS_DATABASE_URL is not set: the relays and jobs (authz outbox, domain events, metering) connect as the role catalog_jobs; `eval "$(bash scripts/services.sh)"` prints it'
        : `createOrm: ${r.url} is required for the ${role} pool`,
    );
  }
  const max = role === 'app' ? config.DB_POOL_MAX : role === 'auth' ? (config.AUTH_DB_POOL_MAX ?? 5) : (config.JOBS_DB_POOL_MAX ?? 4);
  return MikroORM.init({
    clientUrl: url,
    entities: ENTITIES,
    pool: { min: 0, max, idleTimeoutMillis: 30_000 },
    driverOptions: {
      statement_timeout: config.DB_STATEMENT_TIMEOUT_MS,
      query_timeout: config.DB_STATEMENT_TIMEOUT_MS + QUERY_TIMEOUT_MARGIN_MS,
      idle_in_transaction_session_timeout: config.DB_STATEMENT_TIMEOUT_MS * 2,
      connectionTimeoutMillis: config.DB_CONNECT_TIMEOUT_MS ?? 5000,
      onPoolCreated: discardAbandonedConnections,
      application_name: r.application,
    },
    // Session variables of a fork would be `set_config(…, true)` after BEGIN; none are passed: the
    // RLS context is app_begin_request's (db/context.ts), which no setting can stand in for.
    sessionContext: 'transaction',
    // Each pool its own AsyncLocalStorage context: with one shared name, a fork of the sign-in pool
    // made inside an app-role transaction would run its queries in that transaction.
    contextName: r.context,
    allowGlobalContext: false,
    debug: false,
  });
}

/**
 * Run one SQL statement with bind parameters inside `em`'s transaction (or on the pool when `em`
 * has none). Values in `params` are sent as parameters, never spliced into the text.
 * @param em     an EntityManager (usually the one `em.transactional` hands to the callback)
 * @param text   SQL with `$1 … $n` placeholders
 * @param params the values, in order (strings, numbers, booleans, null, arrays for `= any($n)`)
 * @returns the rows (empty for statements without a result set)
 * @throws the driver's error (pg error fields such as `code` = SQLSTATE, `constraint` preserved)
 */
export async function query<R = Record<string, unknown>>(em: EntityManager, text: string, params: readonly unknown[] = []): Promise<R[]> {
  const result = await em.getKysely().executeQuery<R>(CompiledQuery.raw(text, params as unknown[]));
  return result.rows;
}

/**
 * `select 1` on the pool: is PostgreSQL reachable with the app role?
 * @returns true when the query succeeds within the statement timeout, false otherwise (never throws)
 */
export async function checkDatabase(orm: Orm): Promise<boolean> {
  try {
    await query(orm.em.fork(), 'select 1');
    return true;
  } catch {
    return false;
  }
}
