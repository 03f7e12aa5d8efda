/**
 * Drain the relationship outbox once: deliver every pending `authz_outbox` row to OpenFGA and exit.
 * Used by the seed/start scripts (`node catalog-api/src/outbox/drain.ts`); exit code 0 when nothing
 * is left pending, 1 when delivery failed (the rows stay pending with attempts/last_error recorded).
 */
import { pathToFileURL } from 'node:url';
import { loadConfig, type CatalogConfig } from '../config.ts';
import { createOrm } from '../db/orm.ts';
import { OutboxRelay, type DrainResult } from './relay.ts';
import { createRelationshipWriter } from './writer.ts';

/**
 * Deliver all pending outbox rows with a fresh pool and writer, then close them.
 * @param config defaults to the validated environment
 * @returns the totals; `error` is set when a batch failed (rows stay pending)
 * @throws configuration errors, and OpenFGA errors while resolving the store/model
 */
export async function drainOutbox(config: CatalogConfig = loadConfig()): Promise<DrainResult> {
  const orm = await createOrm(config, 'jobs');
  const writer = await createRelationshipWriter(config).catch(async (err) => {
    await orm.close(true);
    throw err;
  });
  try {
    const relay = new OutboxRelay({ orm, sink: writer.sink, batchSize: config.OUTBOX_BATCH_SIZE });
    return await relay.drain();
  } finally {
    await writer.close();
    await orm.close(true);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  try {
    const result = await drainOutbox();
    console.log(JSON.stringify({ msg: 'authz outbox drained', ...result }));
    process.exitCode = result.error ? 1 : 0;
  } catch (err) {
    console.error(`authz outbox drain failed: ${(err as Error).message}`);
    process.exitCode = 1;
  }
}
