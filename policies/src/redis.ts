/**
 * The one Redis client factory of every Redis user (sidecar, catalog API, policies CLI): a single
 * Redis (`REDIS_URL`), a Redis Cluster (`REDIS_CLUSTER_NODES`, an ioredis `Cluster`) or a Redis
 * primary found through Sentinel (`REDIS_SENTINELS` + `REDIS_SENTINEL_NAME`) — docs/CONTRACTS.md,
 * "Redis deployments". Kept in policies/src because both services import it and neither may
 * import the other.
 *
 * - Cluster: the same per-connection options (fail fast: `commandTimeout`, `maxRetriesPerRequest`)
 *   go into ioredis' `redisOptions` (not `enableOfflineQueue`, see below); the Cluster itself
 *   gets `enableOfflineQueue` and `lazyConnect` from them too, `scaleReads: 'master'` (a replica
 *   may lag: a decision epoch read from one could serve a revoked decision) and the caller's
 *   `retryStrategy` as its `clusterRetryStrategy`. Redis Cluster has only database 0, so the
 *   database of `REDIS_URL` is ignored; its username and password are used.
 *   https://github.com/redis/ioredis#cluster
 * - Sentinel: ioredis asks the sentinels for the primary of `REDIS_SENTINEL_NAME` and follows a
 *   failover on its own (https://github.com/redis/ioredis#sentinel); database, username and
 *   password come from `REDIS_URL`, its host and port are ignored.
 * - Pub/sub: {@link createRedisSubscriber}. A Cluster's own subscriber moves to another node
 *   silently when its node goes away (messages published meanwhile are lost and no event says so),
 *   so on a cluster the subscriber is a plain connection to one node — classic pub/sub messages
 *   reach every node of a cluster (https://redis.io/docs/latest/develop/interact/pubsub/#pubsub-in-redis-cluster)
 *   — that moves to the next known node on every reconnect and emits `close`/`ready` like any
 *   connection, so the subscribers' staleness rules and PING heartbeats keep working.
 */
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';

/** What code that takes "a Redis" accepts. */
export type RedisClient = Redis | Cluster;

/** A `host:port` of a Redis node or sentinel. */
export type RedisEndpoint = { host: string; port: number };

/**
 * Where Redis is. `url` always (single Redis: the whole URL; cluster and sentinel: only its
 * credentials, and for sentinel its database); `clusterNodes` (seed list) xor `sentinels` +
 * `sentinelName` select the other two deployments.
 */
export type RedisConnectionConfig = {
  url: string;
  clusterNodes?: readonly RedisEndpoint[];
  sentinels?: readonly RedisEndpoint[];
  sentinelName?: string;
};

/**
 * Parse a comma-separated list of `host:port` (IPv6 as `[::1]:7000`; whitespace around entries ignored).
 * @returns the endpoints, in order; `[]` for an empty or blank text.
 * @throws Error naming the entry that is not `host:port` with a port in 1…65535.
 */
export function parseRedisEndpoints(text: string): RedisEndpoint[] {
  const out: RedisEndpoint[] = [];
  for (const raw of text.split(',')) {
    const entry = raw.trim();
    if (!entry) continue;
    const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(entry);
    const port = m ? Number(m[3]) : 0;
    if (!m || port < 1 || port > 65535) throw new Error(`not a host:port: "${entry}"`);
    out.push({ host: (m[1] ?? m[2])!, port });
  }
  return out;
}

/**
 * The connection settings from the environment: `REDIS_URL` [`fallbackUrl`], `REDIS_CLUSTER_NODES`,
 * `REDIS_SENTINELS`, `REDIS_SENTINEL_NAME`.
 * @throws Error when both a cluster and sentinels are configured, when only one of the two sentinel
 *   variables is set, or when a list is malformed (the message names the variable).
 */
export function redisConnectionFromEnv(env: Record<string, string | undefined>, fallbackUrl = 'redis://127.0.0.1:6379/0'): RedisConnectionConfig {
  const named = (name: string): RedisEndpoint[] => {
    try {
      return parseRedisEndpoints(env[name] ?? '');
    } catch (err) {
      throw new Error(`${name}: ${(err as Error).message}`, { cause: err });
    }
  };
  const clusterNodes = named('REDIS_CLUSTER_NODES');
  const sentinels = named('REDIS_SENTINELS');
  const sentinelName = env.REDIS_SENTINEL_NAME?.trim() || undefined;
  if (clusterNodes.length && (sentinels.length || sentinelName)) throw new Error('REDIS_CLUSTER_NODES and REDIS_SENTINELS/REDIS_SENTINEL_NAME exclude each other');
  if (Boolean(sentinels.length) !== Boolean(sentinelName)) throw new Error('REDIS_SENTINELS and REDIS_SENTINEL_NAME go together');
  return {
    url: env.REDIS_URL || fallbackUrl,
    ...(clusterNodes.length ? { clusterNodes } : {}),
    ...(sentinels.length && sentinelName ? { sentinels, sentinelName } : {}),
  };
}

/**
 * A command-line tool's Redis: `url` (its `--redis-url`) with the cluster or sentinel settings of
 * the environment ({@link redisConnectionFromEnv}).
 * @throws as {@link redisConnectionFromEnv}.
 */
export function redisConnectionWithUrl(url: string, env: Record<string, string | undefined> = process.env): RedisConnectionConfig {
  return redisConnectionFromEnv({ ...env, REDIS_URL: url });
}

/** `single`, `cluster` or `sentinel`: which deployment `conn` names. */
export function redisDeployment(conn: RedisConnectionConfig): 'single' | 'cluster' | 'sentinel' {
  if (conn.clusterNodes?.length) return 'cluster';
  if (conn.sentinels?.length) return 'sentinel';
  return 'single';
}

/** Username and password of a `redis://` URL (ioredis' own parsing rules). */
function credentials(url: string): Pick<RedisOptions, 'username' | 'password'> {
  const u = new URL(url);
  return {
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
  };
}

/**
 * Create a client for `conn` with the per-connection `options` (ioredis RedisOptions: timeouts in
 * ms). Not connected while `options.lazyConnect` (call `connect()`); otherwise it connects in the
 * background. Errors are the caller's to listen for (`on('error')`).
 * @param cluster extra ioredis ClusterOptions (cluster only; e.g. `slotsRefreshTimeout`).
 * @returns a `Redis` (single, sentinel) or a `Cluster`.
 * @throws TypeError when `conn.url` is not a URL.
 */
export function createRedisClient(conn: RedisConnectionConfig, options: RedisOptions = {}, cluster: ClusterOptions = {}): RedisClient {
  const deployment = redisDeployment(conn);
  if (deployment === 'single') return new Redis(conn.url, options);
  if (deployment === 'sentinel') return new Redis(conn.url, { ...options, sentinels: conn.sentinels!.map((s) => ({ ...s })), name: conn.sentinelName! });
  const { lazyConnect, enableOfflineQueue, retryStrategy, enableAutoPipelining, ...perNode } = options;
  return new Cluster(
    conn.clusterNodes!.map((n) => ({ ...n })),
    {
      scaleReads: 'master',
      ...(lazyConnect !== undefined ? { lazyConnect } : {}),
      ...(enableOfflineQueue !== undefined ? { enableOfflineQueue } : {}),
      ...(enableAutoPipelining !== undefined ? { enableAutoPipelining } : {}),
      ...(retryStrategy ? { clusterRetryStrategy: (times: number) => retryStrategy(times) ?? null } : {}),
      ...cluster,
      // Not `enableOfflineQueue` per node: the slots refresh sends CLUSTER SLOTS on a node
      // connection that may still be connecting, and without its queue the refresh fails now and
      // then and `connect()` never settles (https://github.com/redis/ioredis/issues/581). Failing
      // fast stays: the Cluster's own offline queue is off and `commandTimeout` bounds every command.
      redisOptions: { ...perNode, ...credentials(conn.url) },
    },
  );
}

/**
 * The options of every push-channel subscriber ({@link createRedisSubscriber}): it connects
 * lazily (its owner's `start()` connects it), gets 1 s to connect and 1 s per command, and
 * reconnects every ≤ 2 s. The command timeout covers the ready check too: ioredis' `connectTimeout`
 * bounds only the TCP connect, so a connection that a partitioned Redis accepted and never answered
 * would wait for its ready check for good, and never be retried once Redis is back.
 */
export const SUBSCRIBER_OPTIONS: RedisOptions = {
  lazyConnect: true,
  connectTimeout: 1000,
  commandTimeout: 1000,
  retryStrategy: (times) => Math.min(times * 200, 2000),
};

/**
 * How long (ms) a service's start waits for one of its Redis connections to become ready
 * ({@link connectRedis}): past it the start goes on without it — the sidecar decides through
 * OpenFGA, the push-channel owners (epoch view, revoked-session view, active-model watcher) start
 * stale by their own staleness rules — and the connection goes on reconnecting.
 */
export const REDIS_START_WAIT_MS = 2000;

/**
 * Connect a lazily created client (or join a connect already under way) and wait until it is
 * ready, at most `timeoutMs` (ms). Instead of `await client.connect()`: a Cluster's connect()
 * promise never settles when the ready check after its slots refresh fails — a CLUSTER INFO past
 * `commandTimeout` on a busy machine — because the Cluster then reconnects on a promise of its own
 * and may well become ready, but the first promise is dropped
 * (https://github.com/redis/ioredis/pull/741). So the client's 'ready' event counts too, and the
 * wait is bounded. After a failure the client goes on reconnecting per its `retryStrategy`.
 * @throws Error when the connect attempt fails (ioredis' error) or the client is not ready within
 *   `timeoutMs` ("Redis not ready within N ms (status …)").
 */
export async function connectRedis(client: RedisClient, timeoutMs: number): Promise<void> {
  if (client.status === 'ready') return;
  await new Promise<void>((resolve, reject) => {
    const settle = (err?: Error) => {
      clearTimeout(timer);
      client.off('ready', onReady);
      if (err) reject(err);
      else resolve();
    };
    const onReady = () => settle();
    const timer = setTimeout(() => settle(new Error(`Redis not ready within ${timeoutMs} ms (status ${client.status})`)), timeoutMs);
    client.on('ready', onReady);
    // 'wait' (lazyConnect) or 'end' (closed): this call connects; otherwise a connect is under way
    if (client.status === 'wait' || client.status === 'end') client.connect().then(() => settle(), (err: Error) => settle(err));
  });
}

/**
 * For a subscriber whose owner subscribes again on every 'ready' itself: turn ioredis' own
 * re-subscription off. That one leaves its SUBSCRIBE's promise unhandled, so a connection closed
 * again before the answer is an unhandled rejection, which ends a Node process (ioredis #2187,
 * not in a release yet). Applied by the epoch view, the revoked-session view and the active-model
 * watcher to whatever subscriber they are given.
 */
export function ownResubscription(subscriber: Redis): void {
  subscriber.options.autoResubscribe = false;
}

/**
 * A connection for SUBSCRIBE (a subscribed connection can do nothing else), always a plain ioredis
 * `Redis`, so `close`/`ready` events and PING behave the same everywhere (its users subscribe again
 * on 'ready' themselves: {@link ownResubscription}):
 * single and sentinel — like {@link createRedisClient}; cluster — a connection to one node that,
 * before each reconnect, moves on to the next of the seed nodes plus the nodes `cluster` knows
 * now (a failed node's channel messages still reach every other node).
 * @param options ioredis RedisOptions (`retryStrategy` keeps its meaning: the delay before a reconnect, ms).
 * @param cluster the caller's Cluster client, whose discovered nodes widen the rotation (optional).
 */
export function createRedisSubscriber(conn: RedisConnectionConfig, options: RedisOptions = {}, cluster?: RedisClient): Redis {
  if (redisDeployment(conn) !== 'cluster') return createRedisClient(conn, options) as Redis;
  const seeds = conn.clusterNodes!;
  const known = (): RedisEndpoint[] => {
    const all = new Map<string, RedisEndpoint>();
    for (const s of seeds) all.set(`${s.host}:${s.port}`, s);
    if (cluster instanceof Cluster) {
      for (const n of cluster.nodes('all')) {
        const { host, port } = n.options;
        if (host && port) all.set(`${host}:${port}`, { host, port });
      }
    }
    return [...all.values()];
  };
  let next = 0;
  const retry = options.retryStrategy ?? ((times: number) => Math.min(times * 200, 2000));
  const client: Redis = new Redis({
    ...options,
    ...credentials(conn.url),
    host: seeds[0]!.host,
    port: seeds[0]!.port,
    retryStrategy: (times) => {
      const delay = retry(times);
      if (delay === null || delay === undefined) return delay;
      // the connector reads host/port from these options at every connect
      const nodes = known();
      next = (next + 1) % nodes.length;
      client.options.host = nodes[next]!.host;
      client.options.port = nodes[next]!.port;
      return delay;
    },
  });
  return client;
}
