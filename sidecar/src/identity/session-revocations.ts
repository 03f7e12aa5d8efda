/**
 * The revoked-session view of one sidecar process (contract: policies/src/session-revocations.ts).
 *
 * Held in process — a Map of session id → time until which it is refused — so checking a token
 * costs no network round trip. It is filled from Redis: at start (and after every reconnect) the
 * whole sorted set is read; in between, a subscriber connection receives each revocation as it is
 * published, within milliseconds. A periodic re-read (`resyncMs`) repairs anything a subscriber
 * could have missed.
 *
 * Freshness: the view is fresh while the subscriber is subscribed and the set has been read since
 * it (re)subscribed; a failed periodic re-read does not end that. When the push channel drops, the view is still trusted for `maxStalenessMs`
 * (a revocation made meanwhile is enforced at most that much later); after that {@link check}
 * answers `unknown` and the stage refuses session-bound tokens with 503 until the view is fresh
 * again (fail closed).
 *
 * A partition (the network drops packets, nobody resets the connection) leaves the subscriber
 * "connected" and silent, so the view cannot tell it from a quiet channel: a PING on the subscriber
 * every `heartbeatMs` proves the channel alive (Redis answers in order, so every message published
 * before the PING has arrived). An answer missing for `heartbeatMs` counts as a drop dated back to
 * the last answered PING, and the subscriber reconnects (test/faults/redis.test.ts).
 */
import type { Redis } from 'ioredis';
import { REDIS_START_WAIT_MS, connectRedis, ownResubscription, type RedisClient } from '../../../policies/src/redis.ts';
import { REVOKED_SESSIONS_KEY, SESSION_REVOKED_CHANNEL, decodeRevocation } from '../../../policies/src/session-revocations.ts';

/** Minimal logger (pino-compatible). */
type Log = { warn(obj: object, msg?: string): void; info(obj: object, msg?: string): void };

/** The answer for one session id. */
export type RevocationCheck = 'live' | 'revoked' | 'unknown';

/** The revoked-session view. */
export type SessionRevocations = {
  /** Is `sid` revoked? `unknown` when the view is staler than the bound. O(1), no I/O. */
  check(sid: string): RevocationCheck;
  /** Milliseconds since the view was last known fresh (0 while fresh). */
  staleForMs(): number;
  /** Start: subscribe and read the set (resolves once, even if Redis is down — then the view is stale). */
  start(): Promise<void>;
  close(): Promise<void>;
};

/** Options of {@link createSessionRevocations}. Durations in milliseconds. */
export type SessionRevocationsOptions = {
  /** the main client (reads the set) */
  redis: RedisClient;
  /** a dedicated connection for SUBSCRIBE (a subscribed connection can do nothing else) */
  subscriber: Redis;
  maxStalenessMs: number;
  resyncMs: number;
  /** how often the subscriber is pinged, and how long an answer may take (default maxStalenessMs / 4, within 50…1000) */
  heartbeatMs?: number;
  log: Log;
};

/** Create the view; call `start()` before serving. */
export function createSessionRevocations(o: SessionRevocationsOptions): SessionRevocations {
  const now = Date.now;
  const revoked = new Map<string, number>();
  let subscribed = false;
  let subscribedAt = 0; // when the current subscription began
  let lastFresh = 0; // when the view was last known complete
  let readyPass: Promise<unknown> | null = null; // the latest subscribe + read (start() awaits the first)
  let lostAt: number | null = null; // when the push channel dropped
  let timer: NodeJS.Timeout | null = null;
  let closed = false;

  const add = (sid: string, until: number) => {
    if (until > now()) revoked.set(sid, Math.max(until, revoked.get(sid) ?? 0));
  };
  const prune = () => {
    const t = now();
    for (const [sid, until] of revoked) if (until <= t) revoked.delete(sid);
  };
  /** Read the whole set; the view is complete as of the moment the read began. */
  const resync = async (): Promise<boolean> => {
    const began = now();
    try {
      const flat = await o.redis.zrangebyscore(REVOKED_SESSIONS_KEY, began, '+inf', 'WITHSCORES');
      for (let i = 0; i + 1 < flat.length; i += 2) add(flat[i]!, Number(flat[i + 1]));
      prune();
      if (subscribed) {
        lastFresh = began;
        if (lostAt !== null) o.log.info({}, 'session revocations: view fresh again');
        lostAt = null;
      }
      return true;
    } catch (err) {
      o.log.warn({ err: { message: (err as Error).message } }, 'session revocations: cannot read the revoked-session set');
      return false;
    }
  };

  o.subscriber.on('message', (channel: string, text: string) => {
    if (channel !== SESSION_REVOKED_CHANNEL) return;
    const m = decodeRevocation(text);
    if (m) add(m.sid, m.until);
  });
  // On every (re)connect: subscribe, then read the set — messages published while the connection
  // was down are lost, so the view counts as fresh only once a read began after the subscription.
  const subscribeAndRead = () =>
    o.subscriber.subscribe(SESSION_REVOKED_CHANNEL).then(
      () => {
        subscribed = true;
        subscribedAt = now();
        return resync();
      },
      () => undefined,
    );
  ownResubscription(o.subscriber); // we subscribe on 'ready' below
  o.subscriber.on('ready', () => {
    if (!closed) readyPass = subscribeAndRead();
  });
  /** The push channel is gone; the view was last known complete at `at`. */
  const dropped = (at = now()) => {
    if (subscribed) {
      lostAt = at;
      o.log.warn({}, 'session revocations: push channel lost; the view goes stale');
    }
    subscribed = false;
  };
  o.subscriber.on('close', () => dropped()); // ioredis emits 'close' before every 'end' too
  o.subscriber.on('error', () => undefined);

  const heartbeatMs = o.heartbeatMs ?? Math.max(50, Math.min(1000, Math.floor(o.maxStalenessMs / 4)));
  let beat: NodeJS.Timeout | null = null;
  let beating = false;
  let lastAnswered = 0; // when the last answered PING was sent
  const heartbeat = async () => {
    if (beating || closed) return;
    if (!subscribed) {
      // a SUBSCRIBE that failed on a ready connection: try again (a reconnect does it on 'ready')
      if (o.subscriber.status === 'ready') readyPass = subscribeAndRead();
      return;
    }
    // subscribed, but the read after it failed (e.g. the reading connection was not back yet):
    // read again now rather than at the next REVOCATION_RESYNC_INTERVAL_MS
    if (lastFresh < subscribedAt) void resync();
    beating = true;
    const sent = now();
    let timeout: NodeJS.Timeout | undefined;
    const answered = await Promise.race([
      o.subscriber.ping().then(() => true, () => false),
      new Promise<false>((r) => (timeout = setTimeout(() => r(false), heartbeatMs))),
    ]);
    clearTimeout(timeout);
    beating = false;
    if (answered) lastAnswered = sent;
    if (answered || !subscribed || closed) return;
    // silent beyond the heartbeat: complete only as of the last answered PING (or the subscription)
    dropped(Math.max(lastAnswered, subscribedAt));
    o.subscriber.disconnect(true);
  };

  return {
    check(sid) {
      if (this.staleForMs() > o.maxStalenessMs) return 'unknown';
      const until = revoked.get(sid);
      return until !== undefined && until > now() ? 'revoked' : 'live';
    },
    staleForMs() {
      if (subscribed && lastFresh >= subscribedAt) return 0;
      const since = lostAt ?? lastFresh;
      return since > 0 ? now() - since : Number.POSITIVE_INFINITY;
    },
    async start() {
      // bounded: a partitioned Redis accepts and never answers, and connect() would wait for good
      if (o.subscriber.status === 'wait') await connectRedis(o.subscriber, REDIS_START_WAIT_MS).catch(() => undefined);
      // 'ready' started the first pass; Redis down → just try the read (the view stays stale)
      await (readyPass ?? resync());
      timer = setInterval(() => void resync(), o.resyncMs);
      timer.unref();
      beat = setInterval(() => void heartbeat(), heartbeatMs);
      beat.unref();
    },
    async close() {
      closed = true;
      if (timer) clearInterval(timer);
      if (beat) clearInterval(beat);
      o.subscriber.disconnect();
    },
  };
}
