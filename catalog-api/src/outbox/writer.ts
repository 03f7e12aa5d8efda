/**
 * Construct the production relationship sink: `RelationshipWriter` from policies/src/relationships.ts
 * for the store's active model (policies/src/active-model.ts), which it follows without a restart.
 */
import { SUBSCRIBER_OPTIONS, createRedisClient, createRedisSubscriber } from '../../../policies/src/redis.ts';
import { redisConnectionOf, type RedisSettings } from '../redis.ts';
import { OpenFgaClient } from '@openfga/sdk';
import { resolveActiveModel, watchActiveModel } from '../../../policies/src/active-model.ts';
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

/** Minimal logger (pino-compatible); the default writes JSON lines to stderr. */
type Log = { info(obj: object, msg?: string): void; warn(obj: object, msg?: string): void; error(obj: object, msg?: string): void };
const stderrLog: Log = {
  info: (o, m) => console.error(JSON.stringify({ level: 'info', msg: m, ...o })),
  warn: (o, m) => console.error(JSON.stringify({ level: 'warn', msg: m, ...o })),
  error: (o, m) => console.error(JSON.stringify({ level: 'error', msg: m, ...o })),
};

/** The sink plus what must be closed on shutdown; `modelId` is the model writes are validated against now. */
export type RelationshipWriterHandle = { sink: RelationshipSink; storeId: string; readonly modelId: string; close: () => Promise<void> };

/**
 * Resolve the OpenFGA store `OPENFGA_STORE_NAME` (created when missing) and its active model — the
 * id in Redis, else the store's newest; only an empty store gets policies/model.fga written — and
 * build a `RelationshipWriter` that bumps the epochs in Redis (`REDIS_URL`, or the cluster or
 * sentinel of `REDIS_CLUSTER_NODES` / `REDIS_SENTINELS`: catalog-api/src/redis.ts) and validates writes against
 * the active model, following every published change (`watchActiveModel`, polled every
 * `opts.pollMs`, default 1000 ms).
 * @throws the SDK's error when OpenFGA is unreachable or rejects the bootstrap model; Redis
 *   connection errors surface on the first write, not here (ioredis connects lazily and retries)
 */
export async function createRelationshipWriter(
  config: Pick<CatalogConfig, 'OPENFGA_API_URL' | 'OPENFGA_STORE_NAME'> & RedisSettings,
  opts: { log?: Log; pollMs?: number } = {},
): Promise<RelationshipWriterHandle> {
  const log = opts.log ?? stderrLog;
  const conn = redisConnectionOf(config);
  const redis = createRedisClient(conn, { lazyConnect: true, maxRetriesPerRequest: 2, enableOfflineQueue: true });
  redis.on('error', () => {
    /* reported by the failing write; avoid unhandled 'error' events */
  });
  const subscriber = createRedisSubscriber(conn, SUBSCRIBER_OPTIONS, redis);
  let model: ReturnType<typeof watchActiveModel> | undefined;
  try {
    const active = await resolveActiveModel({ apiUrl: config.OPENFGA_API_URL, storeName: config.OPENFGA_STORE_NAME, redis, log });
    model = watchActiveModel({ redis, subscriber, apiUrl: config.OPENFGA_API_URL, storeId: active.storeId, initial: active.modelId, log, ...(opts.pollMs ? { pollMs: opts.pollMs } : {}) });
    await model.start();
    const { storeId } = active;
    const watcher = model;
    const writer = new RelationshipWriter({ fga: new OpenFgaClient({ apiUrl: config.OPENFGA_API_URL, storeId, baseOptions: { timeout: WRITE_TIMEOUT_MS }, retryParams: { maxRetry: WRITE_RETRIES, minWaitInMs: 100 } }), redis, storeId, modelId: watcher });
    return {
      sink: writer,
      storeId,
      get modelId() {
        return watcher.current;
      },
      close: async () => {
        await watcher.close();
        redis.disconnect();
      },
    };
  } catch (err) {
    await model?.close();
    subscriber.disconnect();
    redis.disconnect();
    throw err;
  }
}
