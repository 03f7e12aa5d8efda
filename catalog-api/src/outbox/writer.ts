/**
 * Construct the production relationship sink: `RelationshipWriter` from policies/src/relationships.ts
 * for the store and model that `deployModel` (policies/src/model.ts) finds or deploys by name.
 */
import { Redis } from 'ioredis';
import { OpenFgaClient } from '@openfga/sdk';
import { deployModel } from '../../../policies/src/model.ts';
import { RelationshipWriter } from '../../../policies/src/relationships.ts';
import type { CatalogConfig } from '../config.ts';
import type { RelationshipSink } from './relay.ts';

/**
 * One OpenFGA Write of the relay: per attempt (the SDK's axios timeout; its default is 10 s) and
 * retries (the SDK backs off from 100 ms). A batch holds its database transaction while it writes,
 * so an OpenFGA that does not answer must fail the batch well within
 * `idle_in_transaction_session_timeout` (2 × DB_STATEMENT_TIMEOUT_MS): ≤ 2 × 2 s + the backoff.
 */
export const WRITE_TIMEOUT_MS = 2000;
export const WRITE_RETRIES = 1;

/** The sink plus what must be closed on shutdown. */
export type RelationshipWriterHandle = { sink: RelationshipSink; storeId: string; modelId: string; close: () => Promise<void> };

/**
 * Resolve the OpenFGA store `OPENFGA_STORE_NAME` (created, and the model deployed, when missing or
 * changed — `deployModel` is idempotent) and build a `RelationshipWriter` that bumps the epochs in
 * `REDIS_URL`.
 * @throws the SDK's error when OpenFGA is unreachable or rejects the model; Redis connection errors
 *   surface on the first write, not here (ioredis connects lazily and retries)
 */
export async function createRelationshipWriter(
  config: Pick<CatalogConfig, 'OPENFGA_API_URL' | 'OPENFGA_STORE_NAME' | 'REDIS_URL'>,
): Promise<RelationshipWriterHandle> {
  const { storeId, modelId } = await deployModel({ apiUrl: config.OPENFGA_API_URL, storeName: config.OPENFGA_STORE_NAME });
  const redis = new Redis(config.REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 2, enableOfflineQueue: true });
  redis.on('error', () => {
    /* reported by the failing write; avoid unhandled 'error' events */
  });
  const writer = new RelationshipWriter({ fga: new OpenFgaClient({ apiUrl: config.OPENFGA_API_URL, storeId, baseOptions: { timeout: WRITE_TIMEOUT_MS }, retryParams: { maxRetry: WRITE_RETRIES, minWaitInMs: 100 } }), redis, storeId, modelId });
  return {
    sink: writer,
    storeId,
    modelId,
    close: async () => {
      redis.disconnect();
    },
  };
}
