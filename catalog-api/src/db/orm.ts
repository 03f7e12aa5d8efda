/**
 * The MikroORM instance of the catalog API (PostgreSQL driver, app role `catalog_app`) and the
 * parameterised-SQL helper every repository uses.
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

/** Which database role a pool connects as. */
export type OrmRole = 'app' | 'auth';

/**
 * Connect MikroORM with the pool size and timeouts of the configuration: as the app role
 * (`DATABASE_URL`, DB_POOL_MAX) or as the sign-in service's role (`AUTH_DATABASE_URL`,
 * AUTH_DB_POOL_MAX); `statement_timeout` = DB_STATEMENT_TIMEOUT_MS,
 * `idle_in_transaction_session_timeout` = 2 × that, connect timeout 5 s. The entities of
 * db/entities.ts are registered; the schema itself belongs to migrations/.
 * @throws when the options are invalid (the pool connects lazily; see {@link checkDatabase})
 */
export async function createOrm(
  config: Pick<CatalogConfig, 'DATABASE_URL' | 'DB_POOL_MAX' | 'DB_STATEMENT_TIMEOUT_MS'> & Partial<Pick<CatalogConfig, 'AUTH_DATABASE_URL' | 'AUTH_DB_POOL_MAX'>>,
  role: OrmRole = 'app',
): Promise<Orm> {
  const url = role === 'auth' ? config.AUTH_DATABASE_URL : config.DATABASE_URL;
  if (!url) throw new Error('createOrm: AUTH_DATABASE_URL is required for the sign-in service pool');
  return MikroORM.init({
    clientUrl: url,
    entities: ENTITIES,
    pool: { min: 0, max: role === 'auth' ? (config.AUTH_DB_POOL_MAX ?? 5) : config.DB_POOL_MAX, idleTimeoutMillis: 30_000 },
    driverOptions: {
      statement_timeout: config.DB_STATEMENT_TIMEOUT_MS,
      idle_in_transaction_session_timeout: config.DB_STATEMENT_TIMEOUT_MS * 2,
      connectionTimeoutMillis: 5000,
      application_name: role === 'auth' ? 'catalog-api-auth' : 'catalog-api',
    },
    // Per-transaction session variables (RLS context) as `set_config(…, true)` after BEGIN.
    sessionContext: 'transaction',
    // Each pool its own AsyncLocalStorage context: with one shared name, a fork of the sign-in pool
    // made inside an app-role transaction would run its queries in that transaction.
    contextName: role === 'auth' ? 'catalog-auth' : 'catalog-app',
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
