/**
 * Migration runner: MikroORM's Migrator (postgres driver) over the class-based migrations in this
 * folder, run as the schema owner (`DATABASE_OWNER_URL`, docs/CONTRACTS.md "Environment").
 *
 * CLI: `node migrations/migrate.ts up [--to <name>]` | `down [--to <name>|0]` | `status`
 * - `up` applies pending migrations (up to and including `--to`).
 * - `down` reverts the last migration, or with `--to <name>` every migration after `<name>` (that
 *   one stays applied); `--to 0` reverts all.
 * - `status` prints the executed and pending migration names.
 * All migrations of one command run in a single transaction (all or nothing). Migration names are
 * `0001_legacy_tenants`, `0002_publishers`, `0003_rls`, `0004_authz_outbox`, `0005_identity`, `0006_administration`, `0007_accounts`, `0008_audit`, `0009_domain_events`, `0010_metering`, `0011_request_context`, `0012_conditional_grants`, `0013_catalog_indexes`; MikroORM records them in
 * the table `mikro_orm_migrations`.
 */
import { MikroORM, type Options } from '@mikro-orm/postgresql';
import { Migrator } from '@mikro-orm/migrations';
import { pathToFileURL } from 'node:url';
import { Migration0001LegacyTenants } from './0001_legacy_tenants.ts';
import { Migration0002Publishers } from './0002_publishers.ts';
import { Migration0003Rls } from './0003_rls.ts';
import { Migration0004AuthzOutbox } from './0004_authz_outbox.ts';
import { Migration0005Identity } from './0005_identity.ts';
import { Migration0006Administration } from './0006_administration.ts';
import { Migration0007Accounts } from './0007_accounts.ts';
import { Migration0008Audit } from './0008_audit.ts';
import { Migration0009DomainEvents } from './0009_domain_events.ts';
import { Migration0010Metering } from './0010_metering.ts';
import { Migration0011RequestContext } from './0011_request_context.ts';
import { Migration0012ConditionalGrants } from './0012_conditional_grants.ts';
import { Migration0013CatalogIndexes } from './0013_catalog_indexes.ts';

/** The migrations in order, with their stable names (the names MikroORM records). */
export const MIGRATIONS = [
  { name: '0001_legacy_tenants', class: Migration0001LegacyTenants },
  { name: '0002_publishers', class: Migration0002Publishers },
  { name: '0003_rls', class: Migration0003Rls },
  { name: '0004_authz_outbox', class: Migration0004AuthzOutbox },
  { name: '0005_identity', class: Migration0005Identity },
  { name: '0006_administration', class: Migration0006Administration },
  { name: '0007_accounts', class: Migration0007Accounts },
  { name: '0008_audit', class: Migration0008Audit },
  { name: '0009_domain_events', class: Migration0009DomainEvents },
  { name: '0010_metering', class: Migration0010Metering },
  { name: '0011_request_context', class: Migration0011RequestContext },
  { name: '0012_conditional_grants', class: Migration0012ConditionalGrants },
  { name: '0013_catalog_indexes', class: Migration0013CatalogIndexes },
];

/** Default owner URL (docs/CONTRACTS.md). */
export const DEFAULT_OWNER_URL = 'postgres://catalog_owner:catalog_owner@127.0.0.1:5432/publishing';

/** The ORM options for running the migrations against `url` (no entities, no snapshot files). */
function options(url: string, silent: boolean): Options {
  return {
    clientUrl: url,
    entities: [],
    discovery: { warnWhenNoEntities: false },
    extensions: [Migrator],
    debug: false,
    migrations: {
      migrationsList: MIGRATIONS,
      snapshot: false,
      transactional: true,
      allOrNothing: true,
      silent,
    },
  };
}

/**
 * Run `fn` with a Migrator connected to `url` and close the connection afterwards.
 * @throws whatever connecting or `fn` throws (e.g. a failing migration; its transaction is rolled back).
 */
async function withMigrator<T>(url: string, fn: (m: Migrator) => Promise<T>, silent = true): Promise<T> {
  const orm = await MikroORM.init(options(url, silent));
  try {
    return await fn(orm.migrator as Migrator);
  } finally {
    await orm.close(true);
  }
}

/**
 * Apply pending migrations to the database at `url` (a postgres URL of the owner role), up to and
 * including `to` when given. Idempotent: nothing pending → nothing happens.
 * @returns the names of the migrations applied, in order.
 * @throws on connection errors or a failing migration (the whole batch is rolled back).
 */
export async function migrateUp(url: string, to?: string): Promise<string[]> {
  return withMigrator(url, async (m) => (await m.up(to ? { to } : undefined)).map((x) => x.name));
}

/**
 * Revert migrations on `url`: without `to` the last applied one; with `to` = a migration name,
 * every migration applied after it (it stays applied); `to` = `'0'` or `0` reverts all.
 * @returns the names of the migrations reverted, newest first.
 * @throws on connection errors or a failing down migration (the whole batch is rolled back).
 */
export async function migrateDown(url: string, to?: string | number): Promise<string[]> {
  const target = to === undefined ? undefined : String(to) === '0' ? 0 : String(to);
  return withMigrator(url, async (m) => (await m.down(target === undefined ? undefined : { to: target })).map((x) => x.name));
}

/**
 * The executed and pending migration names on `url`.
 * @throws on connection errors.
 */
export async function migrationStatus(url: string): Promise<{ executed: string[]; pending: string[] }> {
  return withMigrator(url, async (m) => ({
    executed: (await m.getExecuted()).map((r) => r.name),
    pending: (await m.getPending()).map((r) => r.name),
  }));
}

async function main(argv: string[]): Promise<number> {
  const url = process.env.DATABASE_OWNER_URL || DEFAULT_OWNER_URL;
  const [command, ...rest] = argv;
  const toIdx = rest.indexOf('--to');
  const to = toIdx >= 0 ? rest[toIdx + 1] : undefined;
  if (toIdx >= 0 && !to) {
    process.stderr.write('--to needs a migration name (or 0 for down)\n');
    return 2;
  }
  switch (command) {
    case 'up': {
      const done = await migrateUp(url, to);
      process.stdout.write(done.length ? done.map((n) => `applied ${n}\n`).join('') : 'nothing to apply\n');
      return 0;
    }
    case 'down': {
      const done = await migrateDown(url, to);
      process.stdout.write(done.length ? done.map((n) => `reverted ${n}\n`).join('') : 'nothing to revert\n');
      return 0;
    }
    case 'status': {
      const s = await migrationStatus(url);
      process.stdout.write(s.executed.map((n) => `executed ${n}\n`).join('') + s.pending.map((n) => `pending  ${n}\n`).join(''));
      return 0;
    }
    default:
      process.stderr.write('usage: node migrations/migrate.ts up [--to name] | down [--to name|0] | status\n');
      return 2;
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`migration failed: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
