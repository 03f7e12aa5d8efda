/**
 * Entry point: `node catalog-api/src/main.ts`. Reads and validates the environment
 * (docs/CONTRACTS.md), listens on CATALOG_HOST:CATALOG_PORT, and on SIGTERM/SIGINT closes the server,
 * the relay, the database pool and Redis, then exits (forced after 10 s).
 */
import { loadConfig } from './config.ts';
import { buildCatalogApi } from './app.ts';

let config;
try {
  config = loadConfig();
  // the in-process relays and jobs connect as catalog_jobs (db/orm.ts): required here, no default
  if (!config.JOBS_DATABASE_URL) throw new Error('invalid catalog-api configuration:\n  JOBS_DATABASE_URL: required (the role catalog_jobs of the relays and jobs; `eval "$(bash scripts/services.sh)"` prints it)');
} catch (err) {
  console.error((err as Error).message);
  process.exit(1);
}

const app = await buildCatalogApi(config);
let closing = false;
const shutdown = (signal: string) => {
  if (closing) return;
  closing = true;
  app.log.info({ signal }, 'shutting down');
  const force = setTimeout(() => process.exit(1), 10_000);
  force.unref();
  app.close().then(
    () => process.exit(0),
    (err) => {
      app.log.error({ err }, 'shutdown failed');
      process.exit(1);
    },
  );
};
process.once('SIGTERM', () => shutdown('SIGTERM'));
process.once('SIGINT', () => shutdown('SIGINT'));

try {
  await app.listen({ host: config.CATALOG_HOST, port: config.CATALOG_PORT });
} catch (err) {
  app.log.error({ err }, 'could not listen');
  await app.close().catch(() => undefined);
  process.exit(1);
}
