/**
 * The active authorization model of a store, and how running processes follow it without restarts
 * (docs/CONTRACTS.md, "Active model").
 *
 * The rule: the active model is the store's newest model. OpenFGA models are immutable and there is
 * no "activate" API, so `policies deploy` writes a changed model as the newest one and `rollback`
 * writes an older model's content again as the newest (https://openfga.dev/docs/getting-started/immutable-models).
 * Redis carries the change to every process at once:
 * - key {@link activeModelKey} `authz:{<storeId>}:active-model` = the active model id (the fast path;
 *   absent → the store's newest model, read from OpenFGA);
 * - channel {@link modelChannel} `authz:model-changed:<storeId>`: one message (the model id) per
 *   change, so processes switch within milliseconds;
 * - the global decision epoch (policies/src/epochs.ts) is bumped with every change, so no process
 *   reuses a cached decision across the switch (the model id is part of every decision key too).
 * Pub/sub can drop a message silently (a reconnect, a partition), so {@link watchActiveModel} also
 * re-reads the key every `pollMs` (default 1000 ms) and PINGs its subscriber: a lost push costs at
 * most one poll period. A pushed id is validated (ReadAuthorizationModel, plus the caller's own
 * check) before a process switches; an unknown id is refused and the current model kept.
 */
import type { Redis } from 'ioredis';
import { REDIS_START_WAIT_MS, connectRedis, createRedisClient, ownResubscription, type RedisClient, type RedisConnectionConfig } from './redis.ts';
import { OpenFgaClient, type AuthorizationModel } from '@openfga/sdk';
import { globalEpochKey } from './epochs.ts';
import { encodeEpochBumps, epochChannel } from './epoch-push.ts';
import { loadModel, readLatestModel, resolveStore, writeModelIfChanged } from './model.ts';

/**
 * `authz:{<storeId>}:active-model`: the id of the store's active model. The hash tag puts it on the
 * slot of the store's epochs, so {@link publishActiveModel}'s MULTI (SET it + INCR the global
 * epoch) is a single-slot transaction on a Redis Cluster.
 */
export function activeModelKey(storeId: string): string {
  return `authz:{${storeId}}:active-model`;
}

/** `authz:model-changed:<storeId>`: pub/sub channel; each message is the new active model id. */
export function modelChannel(storeId: string): string {
  return `authz:model-changed:${storeId}`;
}

/** The model id a process decides with now; the watcher replaces `current` on a switch. */
export type ModelRef = { readonly current: string };

/** Minimal logger (pino-compatible). */
export type ActiveModelLog = {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
};

/**
 * The active model id recorded in Redis.
 * @returns the id, or undefined when the key is absent (then the store's newest model is the active one).
 * @throws the Redis client's error when Redis cannot be read.
 */
export async function readActiveModel(redis: RedisClient, storeId: string): Promise<string | undefined> {
  return (await redis.get(activeModelKey(storeId))) ?? undefined;
}

/**
 * Make `modelId` the active model of every running process: in one MULTI, SET the key, INCR the
 * global decision epoch and PUBLISH the id on {@link modelChannel}. Call it after writing the model
 * as the store's newest (deploy, rollback); it does not check that the id exists (the watchers do).
 * Then the new global epoch is published on the epoch channel (policies/src/epoch-push.ts).
 * @throws the Redis client's error when Redis refuses or is unreachable (nothing was published by
 *   the MULTI; when only the epoch message failed, the switch itself was published).
 */
export async function publishActiveModel(redis: RedisClient, storeId: string, modelId: string): Promise<void> {
  const res = await redis.multi().set(activeModelKey(storeId), modelId).incr(globalEpochKey(storeId)).publish(modelChannel(storeId), modelId).exec();
  const failed = res?.find(([err]) => err)?.[0];
  if (!res || failed) throw failed ?? new Error('publishActiveModel: the transaction was discarded');
  // the sidecars' epoch views learn the new global epoch by push (the model id is part of every
  // decision key anyway, so a lost message here cannot serve a decision across the switch)
  await redis.publish(epochChannel(storeId), encodeEpochBumps([[globalEpochKey(storeId), Number(res[1]![1])]]));
}

/** An OpenFGA client for the store whose calls give up after `timeoutMs` (one retry on 429/5xx). */
function storeClient(apiUrl: string, storeId: string, timeoutMs: number): OpenFgaClient {
  return new OpenFgaClient({ apiUrl, storeId, baseOptions: { timeout: timeoutMs }, retryParams: { maxRetry: 1, minWaitInMs: 50 } });
}

/**
 * Is `err` a refusal of the request itself (unknown or malformed id: OpenFGA answers 400
 * `authorization_model_not_found`; the SDK rejects a non-ULID before sending) rather than a
 * failure that a retry may cure (network, timeout, 429, 5xx)?
 */
function isPermanent(err: unknown): boolean {
  const e = err as { name?: string; statusCode?: number };
  if (e.name === 'FgaValidationError') return true;
  return typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500 && e.statusCode !== 429;
}

/**
 * The model a process starting now must use: the id in Redis when it names a model of the store,
 * else the store's newest model; only a store without any model gets the local model file written
 * (bootstrap of a fresh store — a running platform's model is never overwritten by a process start).
 * @param opts.redis a client to read the key with; null, or a failing read, → the newest model.
 * @param opts.modelFile the DSL written into an empty store (default policies/model.fga).
 * @param opts.create create the store when it is missing (default true).
 * @returns the store id, the model (content + id) and where the id came from.
 * @throws as `resolveStore` / `loadModel` (bootstrap only); the SDK's error when OpenFGA is unreachable.
 */
export async function resolveActiveModel(opts: {
  apiUrl: string;
  storeName: string;
  redis?: RedisClient | null;
  modelFile?: string;
  create?: boolean;
  log?: ActiveModelLog;
}): Promise<{ storeId: string; modelId: string; model: AuthorizationModel; source: 'redis' | 'newest' | 'bootstrap' }> {
  const storeId = await resolveStore(opts.apiUrl, opts.storeName, { create: opts.create ?? true });
  let keyed: string | undefined;
  if (opts.redis) {
    try {
      keyed = await readActiveModel(opts.redis, storeId);
    } catch (err) {
      opts.log?.warn({ err: { message: (err as Error).message } }, 'active model: Redis unreadable at start; using the store\u2019s newest model');
    }
  }
  if (keyed) {
    try {
      const model = (await storeClient(opts.apiUrl, storeId, 5000).readAuthorizationModel({ authorizationModelId: keyed })).authorization_model;
      if (model) return { storeId, modelId: model.id, model, source: 'redis' };
    } catch (err) {
      if (!isPermanent(err)) throw err;
      opts.log?.error({ modelId: keyed, err: { message: (err as Error).message } }, 'active model: the id in Redis names no model of the store; using the newest model');
    }
  }
  const newest = await readLatestModel(opts.apiUrl, storeId);
  if (newest) return { storeId, modelId: newest.id, model: newest, source: 'newest' };
  const { modelId } = await writeModelIfChanged(opts.apiUrl, storeId, loadModel(opts.modelFile));
  const model = (await storeClient(opts.apiUrl, storeId, 5000).readAuthorizationModel({ authorizationModelId: modelId })).authorization_model!;
  return { storeId, modelId, model, source: 'bootstrap' };
}

/** Options of {@link watchActiveModel}. Durations in milliseconds. */
export type WatchActiveModelOptions = {
  /** a client for GET of the key (fail-fast settings are fine: a failed poll is retried next period) */
  redis: RedisClient;
  /**
   * a dedicated connection for SUBSCRIBE (a subscribed connection can do nothing else); closed by
   * `close()`. A plain `Redis` also on a cluster (policies/src/redis.ts `createRedisSubscriber`), so
   * the PING heartbeat travels the subscribed connection itself.
   */
  subscriber: Redis;
  /** OpenFGA HTTP API, to validate a new id (ReadAuthorizationModel) and to read the newest model */
  apiUrl: string;
  storeId: string;
  /** the model in use at start (from {@link resolveActiveModel}) */
  initial: string;
  /** extra validation of a new model; throw to refuse it (e.g. route rules naming a relation it lacks) */
  check?(model: AuthorizationModel): void;
  /** after `current` changed */
  onChange?(modelId: string, previous: string, model: AuthorizationModel): void;
  /** a new id was refused (unknown to the store, or `check` threw); the current model stays */
  onRejected?(modelId: string, err: Error): void;
  /** how often the key is re-read and the subscriber pinged (default 1000) */
  pollMs?: number;
  /** OpenFGA timeout of one validation or newest-model read (default 2000) */
  timeoutMs?: number;
  log: ActiveModelLog;
};

/** The watcher: `current` is the model id to decide with. */
export type ActiveModelWatcher = ModelRef & {
  /** Subscribe, then re-read the key once; resolves also when Redis is down (polls retry). */
  start(): Promise<void>;
  /** Re-read the key (absent → the newest model) now and switch if it changed; never throws. */
  refresh(): Promise<void>;
  close(): Promise<void>;
};

/**
 * Follow the store's active model: a message on {@link modelChannel} switches at once (after
 * validation), a poll every `pollMs` re-reads {@link activeModelKey} (absent → ReadAuthorizationModels,
 * the newest) so a lost push costs at most one period, and a PING on the subscriber every `pollMs`
 * (no answer within `pollMs` → reconnect) keeps a silently dead push channel from lasting — the
 * approach of sidecar/src/identity/session-revocations.ts.
 *
 * Switching: one change at a time, always towards the latest wanted id (a message that arrives
 * while a poll is in flight wins over the poll's older answer). A new id is read from OpenFGA
 * (it must be a model of this store) and passed to `check`; refused → logged as an error once per
 * id, `onRejected`, the current model kept (a bad publish never breaks authorization). A
 * transient failure (OpenFGA unreachable) is retried at the next poll. Requests already in flight
 * finish with the id they started with (models are immutable, so it stays valid).
 */
export function watchActiveModel(o: WatchActiveModelOptions): ActiveModelWatcher {
  const pollMs = o.pollMs ?? 1000;
  const fga = storeClient(o.apiUrl, o.storeId, o.timeoutMs ?? 2000);
  const channel = modelChannel(o.storeId);
  let current = o.initial;
  let wanted: string | undefined;
  let switching: Promise<void> | null = null;
  const refused = new Set<string>(); // ids refused for good (unknown, failed `check`)
  const transient = new Set<string>(); // ids whose validation failed transiently (logged once)
  let pushes = 0; // messages received: a poll started before one is stale
  let polling = false;
  let readFailing = false;
  let closed = false;
  let timer: NodeJS.Timeout | null = null;

  const validate = async (id: string): Promise<AuthorizationModel> => {
    const model = (await fga.readAuthorizationModel({ authorizationModelId: id })).authorization_model;
    if (!model) throw new Error(`model ${id} not found`);
    o.check?.(model);
    return model;
  };
  /** Switch towards `wanted` until it is reached or refused. */
  const drain = async () => {
    while (!closed && wanted !== undefined && wanted !== current) {
      const id = wanted;
      if (refused.has(id)) {
        if (wanted === id) wanted = undefined;
        continue;
      }
      let model: AuthorizationModel;
      try {
        model = await validate(id);
      } catch (err) {
        // a refusal by OpenFGA, or by `check` / "not found" (our own plain Errors) → for good
        const permanent = isPermanent(err) || !(err as { name?: string }).name?.startsWith('Fga');
        if (permanent) {
          refused.add(id);
          o.log.error({ modelId: id, current, err: { message: (err as Error).message } }, 'authorization model refused: keeping the current model');
          o.onRejected?.(id, err as Error);
        } else if (!transient.has(id)) {
          transient.add(id);
          o.log.warn({ modelId: id, current, err: { message: (err as Error).message } }, 'authorization model cannot be validated yet (OpenFGA); retrying at the next poll');
        }
        if (wanted === id) wanted = undefined;
        continue;
      }
      if (wanted !== id || closed) continue; // superseded meanwhile: validate the newer one
      const previous = current;
      current = id;
      transient.delete(id);
      o.log.info({ from: previous, to: id }, 'authorization model switched');
      o.onChange?.(id, previous, model);
    }
  };
  const want = (id: string): Promise<void> => {
    wanted = id;
    switching ??= drain().finally(() => (switching = null));
    return switching;
  };

  /** The id the store says is active now: the key, or (absent) the newest model. @throws on Redis/OpenFGA errors */
  const readWanted = async (): Promise<string | undefined> => {
    const keyed = await readActiveModel(o.redis, o.storeId);
    if (keyed) return keyed;
    const res = await fga.readAuthorizationModels({ pageSize: 1 });
    return res.authorization_models?.[0]?.id;
  };
  const refresh = async () => {
    if (polling || closed) return;
    polling = true;
    const seen = pushes;
    try {
      const id = await readWanted();
      if (readFailing) o.log.info({}, 'active model: the active model id is readable again');
      readFailing = false;
      if (id && seen === pushes) await want(id);
    } catch (err) {
      if (!readFailing) o.log.warn({ err: { message: (err as Error).message } }, 'active model: cannot re-read the active model id (Redis, or OpenFGA when the key is absent); keeping the current model');
      readFailing = true;
    } finally {
      polling = false;
    }
  };

  o.subscriber.on('message', (ch: string, text: string) => {
    if (ch !== channel || typeof text !== 'string' || text.length === 0 || text.length > 100) return;
    pushes++;
    void want(text);
  });
  // ioredis re-subscribes after a reconnect; messages published meanwhile were lost: re-read.
  ownResubscription(o.subscriber); // we subscribe on 'ready' below
  o.subscriber.on('ready', () => {
    if (!closed) void o.subscriber.subscribe(channel).then(() => refresh(), () => undefined);
  });
  o.subscriber.on('error', () => undefined);

  let beating = false;
  const heartbeat = async () => {
    if (beating || closed || o.subscriber.status !== 'ready') return;
    beating = true;
    let timeout: NodeJS.Timeout | undefined;
    const answered = await Promise.race([
      o.subscriber.ping().then(() => true, () => false),
      new Promise<false>((r) => (timeout = setTimeout(() => r(false), pollMs))),
    ]);
    clearTimeout(timeout);
    beating = false;
    if (!answered && !closed) {
      o.log.warn({}, 'active model: the push channel is silent; reconnecting it');
      o.subscriber.disconnect(true);
    }
  };

  return {
    get current() {
      return current;
    },
    refresh,
    async start() {
      // bounded: a partitioned Redis accepts and never answers, and connect() would wait for good
      if (o.subscriber.status === 'wait') await connectRedis(o.subscriber, REDIS_START_WAIT_MS).catch(() => undefined);
      else if (o.subscriber.status === 'ready') await o.subscriber.subscribe(channel).catch(() => undefined);
      await refresh();
      timer = setInterval(() => {
        void refresh();
        void heartbeat();
      }, pollMs);
      timer.unref();
    },
    async close() {
      closed = true;
      if (timer) clearInterval(timer);
      o.subscriber.disconnect();
      await switching?.catch(() => undefined);
    },
  };
}

/**
 * Open a short-lived Redis client (CLI, API handlers) — a single Redis at `url`, or the cluster or
 * sentinel deployment a {@link RedisConnectionConfig} names (policies/src/redis.ts) — run `fn`,
 * then close it. Fails fast: 2 s to connect, ready within 5 s (connectRedis), no retries beyond one.
 * @throws whatever `fn` throws, or the connection error.
 */
export async function withRedis<T>(target: string | RedisConnectionConfig, fn: (redis: RedisClient) => Promise<T>): Promise<T> {
  const conn = typeof target === 'string' ? { url: target } : target;
  const redis = createRedisClient(conn, { lazyConnect: true, connectTimeout: 2000, maxRetriesPerRequest: 1, retryStrategy: () => null });
  redis.on('error', () => undefined);
  try {
    await connectRedis(redis, 5000);
    return await fn(redis);
  } finally {
    redis.disconnect();
  }
}

/**
 * After a deploy or rollback: publish `modelId` ({@link publishActiveModel}) when it was just
 * written, or when Redis names another id (a stale key is repaired); otherwise nothing changes and
 * nothing is bumped.
 * @returns whether it published.
 * @throws the Redis client's error (the model is in OpenFGA but running processes were not told:
 *   they still find it within one poll when the key is absent, not when it is stale — publish again).
 */
export async function announceActiveModel(redis: RedisClient, storeId: string, modelId: string, written: boolean): Promise<boolean> {
  if (!written && (await readActiveModel(redis, storeId)) === modelId) return false;
  await publishActiveModel(redis, storeId, modelId);
  return true;
}
