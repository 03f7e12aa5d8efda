/**
 * The catalog API's Redis client (rate limits, sign-in lockout of unknown emails, session
 * revocations). It fails fast instead of queueing: no offline queue, one retry, a command timeout —
 * every caller has a documented answer for "Redis is unavailable".
 */
import { Redis } from 'ioredis';
import type { CatalogConfig } from './config.ts';

/**
 * Create the client; it connects in the background and reconnects on its own (every ≤ 2 s).
 * @param onError called on connection errors (ioredis emits them repeatedly while Redis is down)
 */
export function createRedis(config: Pick<CatalogConfig, 'REDIS_URL' | 'REDIS_COMMAND_TIMEOUT_MS'>, onError: (err: Error) => void = () => undefined): Redis {
  const redis = new Redis(config.REDIS_URL, {
    commandTimeout: config.REDIS_COMMAND_TIMEOUT_MS,
    connectTimeout: 1000,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    retryStrategy: (times) => Math.min(times * 200, 2000),
  });
  redis.on('error', onError);
  return redis;
}
