/**
 * The catalog API's Redis client (rate limits, sign-in lockout of unknown emails, session
 * revocations, assertion replay, metering roll-up) — a single Redis, a Redis Cluster or a Sentinel
 * primary (policies/src/redis.ts, `REDIS_URL` / `REDIS_CLUSTER_NODES` / `REDIS_SENTINELS`). It
 * fails fast instead of queueing: no offline queue, one retry, a command timeout — every caller has
 * a documented answer for "Redis is unavailable".
 */
import { createRedisClient, redisConnectionFromEnv, type RedisClient, type RedisConnectionConfig } from '../../policies/src/redis.ts';
import type { CatalogConfig } from './config.ts';

/** The Redis settings of the configuration. */
export type RedisSettings = Pick<CatalogConfig, 'REDIS_URL'> & Partial<Pick<CatalogConfig, 'REDIS_CLUSTER_NODES' | 'REDIS_SENTINELS' | 'REDIS_SENTINEL_NAME'>>;

/**
 * Where Redis is, from the configuration.
 * @throws as policies/src/redis.ts `redisConnectionFromEnv` (loadConfig has checked it already).
 */
export function redisConnectionOf(config: RedisSettings): RedisConnectionConfig {
  const { REDIS_URL, REDIS_CLUSTER_NODES, REDIS_SENTINELS, REDIS_SENTINEL_NAME } = config;
  return redisConnectionFromEnv({ REDIS_URL, REDIS_CLUSTER_NODES, REDIS_SENTINELS, REDIS_SENTINEL_NAME });
}

/**
 * Create the client; it connects in the background and reconnects on its own (every ≤ 2 s).
 * @param onError called on connection errors (ioredis emits them repeatedly while Redis is down)
 * @returns an ioredis `Redis`, or a `Cluster` when `REDIS_CLUSTER_NODES` is set.
 */
export function createRedis(config: RedisSettings & Pick<CatalogConfig, 'REDIS_COMMAND_TIMEOUT_MS'>, onError: (err: Error) => void = () => undefined): RedisClient {
  const redis = createRedisClient(redisConnectionOf(config), {
    commandTimeout: config.REDIS_COMMAND_TIMEOUT_MS,
    connectTimeout: 1000,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    retryStrategy: (times) => Math.min(times * 200, 2000),
  });
  redis.on('error', onError);
  return redis;
}
