/**
 * The decision-cache epochs (policies/src/epochs.ts) held in process, kept current by push
 * (policies/src/epoch-push.ts), so a decision served from the LRU costs no Redis round trip.
 *
 * - Values: an LRU (lru-cache, at most `maxEntries` keys) of epoch key → value. A key not held is
 *   read once with MGET ({@link EpochView.load}) and kept; a pushed bump updates a held key
 *   (epochs only grow: the larger value wins) and is ignored for keys not held (a later read sees it).
 * - Push channel: a dedicated subscriber connection on {@link epochChannel}. On every (re)subscribe
 *   the view re-reads every key it holds (resync) and counts as complete only once that read,
 *   begun after the subscription, has landed.
 * - A periodic resync (`resyncMs`) repairs a bump made without a push (a bare INCR).
 * - Bounded staleness: a PING on the subscriber every `heartbeatMs` (Redis answers in order, so
 *   every message published before the PING has arrived when its answer does). The view is
 *   {@link EpochView.fresh} while subscribed, resynced and the last answered PING was sent at most
 *   `stalenessMs` ago; otherwise the caller reads the epochs per decision (MGET), as without a view.
 *   A PING unanswered for `stalenessMs` makes the subscriber reconnect (a partition leaves it
 *   "connected" and silent) — the approach of sidecar/src/identity/session-revocations.ts.
 * - The race "bump published while the MGET of a key is in flight": every key being read is
 *   registered while its read is in flight and a push for it is recorded there; the value kept is
 *   the larger of the read and the pushed one. A read that spans a drop of the push channel is
 *   used for its own decision only (like a per-request MGET) and not kept.
 * - {@link EpochView.generation} grows with every change of a held value, so a caller can tell
 *   that epochs it used may have moved while it waited (decision-cache.ts re-decides then).
 * - {@link EpochView.recentlyChanged}: whether a key's value changed (push, resync, `apply`) or was
 *   first read within the last `recentMs`. The decision cache asks OpenFGA with
 *   HIGHER_CONSISTENCY (no OpenFGA cache) for such keys: OpenFGA's own caches may still hold an
 *   answer from before the change. A key is forgotten by the view (held) whenever its change time
 *   would be pushed out of that LRU, so a change is never forgotten while it is recent.
 */
import { LRUCache } from 'lru-cache';
import type { Cluster, Redis } from 'ioredis';
import { REDIS_START_WAIT_MS, connectRedis, ownResubscription } from '../../../policies/src/redis.ts';
import { decodeEpochBumps, epochChannel, type EpochBump } from '../../../policies/src/epoch-push.ts';

/** Minimal logger (pino-compatible). */
type Log = { warn(obj: object, msg?: string): void; info(obj: object, msg?: string): void };

/** The in-process epoch view. */
export type EpochView = {
  /** True while pushed bumps are known to arrive within `stalenessMs` (see the module doc). No I/O. */
  fresh(): boolean;
  /** The held values of `keys`, or undefined when one is not held. No I/O. */
  peek(keys: readonly string[]): number[] | undefined;
  /**
   * Read `keys` with one MGET (missing = 0) and keep them when the view is fresh throughout.
   * @returns the values, each ≥ any bump pushed while the read was in flight.
   * @throws the Redis client's error.
   */
  load(keys: readonly string[]): Promise<number[]>;
  /** Apply bumps this process made itself (the result of `bumpEpochs`). */
  apply(bumps: readonly EpochBump[]): void;
  /** Grows with every change of a held value (pushes, resyncs, `apply`). */
  generation(): number;
  /**
   * True when one of `keys` changed, or was first read, within the last `recentMs` — or is not
   * held (unknown history). No I/O.
   */
  recentlyChanged(keys: readonly string[]): boolean;
  /** Milliseconds since the view was last known complete (0 while fresh; Infinity before the first sync). */
  staleForMs(): number;
  /** Connect the subscriber, subscribe and start the heartbeat; resolves once fresh, or after 1 s (Redis down: per-request reads until fresh). */
  start(): Promise<void>;
  close(): Promise<void>;
};

/** Options of {@link createEpochView}. Durations in milliseconds. */
export type EpochViewOptions = {
  /** the main client (reads epochs) */
  redis: Redis | Cluster;
  /** a dedicated connection for SUBSCRIBE; closed by `close()` */
  subscriber: Redis;
  storeId: string;
  maxEntries: number;
  /** longest time a pushed bump may go unseen before the view is bypassed (EPOCH_STALENESS_MS) */
  stalenessMs: number;
  /** PING interval (default stalenessMs / 4, within 20…1000) */
  heartbeatMs?: number;
  /** re-read every held key this often even while fresh, repairing a bump made without a push (default 30000) */
  resyncMs?: number;
  /** how long a change counts as recent (OPENFGA_CACHE_BYPASS_MS; 0 = never: {@link EpochView.recentlyChanged} is false) */
  recentMs?: number;
  log: Log;
};

const RESYNC_CHUNK = 1000;
/** How long `start()` waits for the first subscription and sync (ms). */
const START_WAIT_MS = 1000;

/** Create the view; call `start()` before serving. */
export function createEpochView(o: EpochViewOptions): EpochView {
  const now = Date.now;
  const channel = epochChannel(o.storeId);
  const held = new LRUCache<string, number>({ max: Math.max(1, o.maxEntries) });
  const recentMs = o.recentMs ?? 0;
  /** key → when its value last changed or was first read, for `recentMs`; pushed out → the key is dropped from `held` too */
  const changed =
    recentMs > 0
      ? new LRUCache<string, number>({ max: Math.max(1, o.maxEntries), ttl: recentMs, dispose: (_at, key, reason) => reason === 'evict' && held.delete(key) })
      : undefined;
  const touch = (key: string) => changed?.set(key, now());
  /** keys being read → the largest value pushed meanwhile (-1: none); `n` reads in flight */
  const inflight = new Map<string, { pushed: number; n: number }>();
  let gen = 0;
  let subscribed = false;
  let synced = false;
  let session = 0; // grows with every drop and every new subscription
  let lastProof = 0; // when the last answered PING (or the SUBSCRIBE) was sent
  let completeAt = 0; // the view held every bump published before this time (0: never synced)
  let lostAt: number | null = null;
  let closed = false;
  let subscribing = false;
  let resyncing = false;
  let onSynced: (() => void) | null = null; // start() waits for the first sync

  const raise = (key: string, value: number) => {
    const cur = held.peek(key);
    if (cur !== undefined && value > cur) {
      held.set(key, value, { noUpdateTTL: true });
      touch(key);
      gen++;
    }
  };
  const onBumps = (bumps: readonly EpochBump[]) => {
    for (const [key, value] of bumps) {
      const f = inflight.get(key);
      if (f && value > f.pushed) f.pushed = value;
      raise(key, value);
    }
  };
  /** MGET `keys`; each result is max(read, pushed while in flight). @throws Redis errors */
  const read = async (keys: readonly string[]): Promise<number[]> => {
    for (const k of keys) {
      const f = inflight.get(k);
      if (f) f.n++;
      else inflight.set(k, { pushed: -1, n: 1 });
    }
    try {
      const raw = await o.redis.mget(...keys);
      return keys.map((k, i) => Math.max(Number(raw[i] ?? 0) || 0, inflight.get(k)!.pushed));
    } finally {
      for (const k of keys) {
        const f = inflight.get(k)!;
        if (--f.n === 0) inflight.delete(k);
      }
    }
  };
  const isFresh = () => subscribed && synced && now() - lastProof <= o.stalenessMs;

  /** Re-read every held key (the channel was down: bumps may have been missed). */
  const resync = async () => {
    if (resyncing) return;
    resyncing = true;
    try {
      await resyncOnce();
    } finally {
      resyncing = false;
    }
  };
  const resyncOnce = async () => {
    const at = session;
    const keys = [...held.keys()];
    try {
      for (let i = 0; i < keys.length; i += RESYNC_CHUNK) {
        const chunk = keys.slice(i, i + RESYNC_CHUNK);
        const values = await read(chunk);
        if (at !== session) return;
        // replace (not max): after a Redis restart the epochs may have started over
        chunk.forEach((k, j) => {
          if (held.peek(k) !== values[j]) {
            gen++;
            touch(k);
          }
          held.set(k, values[j]!);
        });
      }
    } catch (err) {
      o.log.warn({ err: { message: (err as Error).message } }, 'epoch view: resync failed; deciding with per-request epoch reads');
      return; // the heartbeat retries
    }
    if (at !== session || !subscribed) return;
    synced = true;
    completeAt = Math.max(completeAt, lastProof); // as of the SUBSCRIBE (or a later answered PING)
    if (lostAt !== null) o.log.info({}, 'epoch view: fresh again');
    lostAt = null;
    onSynced?.();
  };

  o.subscriber.on('message', (ch: string, text: string) => {
    if (ch !== channel) return;
    const bumps = decodeEpochBumps(text);
    if (bumps) onBumps(bumps);
  });
  /** SUBSCRIBE, then resync: bumps published while unsubscribed were lost, so the view counts
   * as complete only once a read begun after the subscription has landed. */
  const subscribe = () => {
    if (subscribing) return;
    subscribing = true;
    const sent = now();
    o.subscriber.subscribe(channel).then(
      () => {
        subscribing = false;
        if (closed) return;
        session++;
        subscribed = true;
        synced = false;
        lastProof = sent;
        void resync();
      },
      () => (subscribing = false),
    );
  };
  ownResubscription(o.subscriber); // we subscribe on 'ready' below
  o.subscriber.on('ready', () => {
    if (!closed) subscribe();
  });
  const dropped = () => {
    session++;
    if (subscribed && !closed) {
      lostAt = now();
      o.log.warn({}, 'epoch view: push channel lost; deciding with per-request epoch reads');
    }
    subscribed = false;
    synced = false;
  };
  o.subscriber.on('close', dropped);
  o.subscriber.on('error', () => undefined);

  const heartbeatMs = o.heartbeatMs ?? Math.max(20, Math.min(1000, Math.floor(o.stalenessMs / 4)));
  let beat: NodeJS.Timeout | null = null;
  let periodic: NodeJS.Timeout | null = null;
  let pingSent: number | null = null; // an unanswered PING's send time
  const heartbeat = () => {
    if (closed) return;
    if (!subscribed) {
      if (o.subscriber.status === 'ready') subscribe(); // a SUBSCRIBE that failed: try again
      return;
    }
    if (!synced) void resync();
    if (pingSent !== null) {
      if (now() - pingSent > o.stalenessMs) {
        pingSent = null;
        dropped();
        o.subscriber.disconnect(true); // silent beyond the bound: reconnect
      }
      return;
    }
    const sent = (pingSent = now());
    const at = session;
    o.subscriber.ping().then(
      () => {
        if (pingSent === sent) pingSent = null;
        if (at === session) {
          lastProof = Math.max(lastProof, sent);
          if (synced) completeAt = Math.max(completeAt, sent);
        }
      },
      () => {
        if (pingSent === sent) pingSent = null;
      },
    );
  };

  return {
    fresh: isFresh,
    peek(keys) {
      const out: number[] = [];
      for (const k of keys) {
        const v = held.get(k);
        if (v === undefined) return undefined;
        out.push(v);
      }
      return out;
    },
    async load(keys) {
      const at = session;
      const values = await read(keys);
      if (at === session && isFresh()) {
        keys.forEach((k, i) => {
          const cur = held.peek(k);
          if (cur === undefined || values[i]! > cur) {
            held.set(k, values[i]!);
            touch(k);
            gen++;
          }
          // a held value above the read one came from a push that landed after the read: keep it
          else values[i] = cur;
        });
      }
      return values;
    },
    apply: onBumps,
    generation: () => gen,
    recentlyChanged(keys) {
      if (!changed) return false;
      for (const k of keys) if (changed.has(k) || !held.has(k)) return true;
      return false;
    },
    staleForMs() {
      if (isFresh()) return 0;
      return completeAt > 0 ? now() - completeAt : Number.POSITIVE_INFINITY;
    },
    async start() {
      const first = new Promise<void>((r) => (onSynced = r));
      // bounded: a partitioned Redis accepts and never answers, and connect() would wait for good
      if (o.subscriber.status === 'wait') await connectRedis(o.subscriber, REDIS_START_WAIT_MS).catch(() => undefined);
      else if (o.subscriber.status === 'ready') subscribe();
      beat = setInterval(heartbeat, heartbeatMs);
      beat.unref();
      periodic = setInterval(() => void (synced && resync()), o.resyncMs ?? 30_000);
      periodic.unref();
      // serve from the start with the view when Redis answers soon; else per-request reads meanwhile
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([first, new Promise<void>((r) => (timer = setTimeout(r, START_WAIT_MS)))]);
      clearTimeout(timer);
      onSynced = null;
    },
    async close() {
      closed = true;
      if (beat) clearInterval(beat);
      if (periodic) clearInterval(periodic);
      o.subscriber.disconnect();
    },
  };
}
