/**
 * Stages 2b, 3b and 5a — request rate limits (docs/CONTRACTS.md, "Rate limits"), each kind with
 * its own limit: per client IP right after the route rule (before authentication, so a flood of
 * bad tokens is stopped before it costs signature checks), per subject after authentication and the
 * session check, per publisher after authorization (counting before it would let anyone spend a
 * stranger publisher's budget with a forged X-Publisher-Id) and before the meter, so a limited
 * request is neither metered nor forwarded.
 *
 * The limits: the route rule's `rate_limit` (policies/routes.yaml) for that kind, else the default
 * from the environment (RATE_LIMIT_IP, RATE_LIMIT_SUBJECT, RATE_LIMIT_PUBLISHER); `off` = none.
 * A rule's own limit counts in a bucket of its own (that rule only); every rule on the default
 * shares one bucket per key. Windows are fixed (rate-limiter-flexible's Redis script: SET NX EX,
 * then INCRBY).
 *
 * Library: rate-limiter-flexible (RateLimiterRedis with a RateLimiterMemory as its
 * `insuranceLimiter`) rather than @fastify/rate-limit, which the catalog API uses: that plugin
 * decides in a Fastify hook from the request alone, while the subject and the publisher are known
 * only in the middle of the pipeline, and /ext-authz must apply the same limits to the original
 * request, not to its own route. rate-limiter-flexible is a plain `consume(key)` that fits a stage.
 *
 * Redis (its own ioredis connection, app.ts: no offline queue, a short command timeout) holds the
 * counters shared by every sidecar. A sidecar reserves a busy key's requests in leases
 * (rate-limit-leases.ts: up to RATE_LIMIT_LEASE_MAX with one command, smaller near the limit, one
 * by one in the last LEASE_DIVISOR requests), so the sidecars together never admit more than the
 * limit and a busy key costs one round trip per lease, not per request. When Redis is down (not ready) or slower than the command
 * timeout, the request is counted in this process by the insurance limiter with the same limit —
 * limits become per process (looser by the number of sidecars), never absent — and for the next
 * {@link LOCAL_HOLD_MS} ms every request is counted locally without asking Redis, so a slow Redis
 * delays at most the requests that were waiting when it failed, by at most the command timeout.
 * Then Redis is asked again; counting returns to it as soon as it answers.
 *
 * Answers: `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds until the window
 * resets; the RateLimit header fields draft, as the catalog API sends them) of the most restrictive
 * limit that applied (least remaining; on a tie the later reset), on every answer once a limit
 * applied; over a limit: 429 `too-many-requests` problem+json with those fields and `Retry-After`
 * (seconds). /ext-authz answers the same.
 */
import { createHash } from 'node:crypto';
import { BlockList, isIP } from 'node:net';
import type { RedisClient } from '../../../policies/src/redis.ts';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { rateLimitKey, ruleBucket, type RateLimitKind, type RateLimitSetting } from '../../../policies/src/rate-limits.ts';
import { ProblemError } from '../problem.ts';
import { TokenLeases, type Reservation } from './rate-limit-leases.ts';
import type { Identity } from './authenticate.ts';
import type { RouteMatch, RouteRule } from './route.ts';

export type { RateLimitKind };

/** How long (ms) the limits count in process without asking Redis after Redis failed a request. */
export const LOCAL_HOLD_MS = 1000;

/** Options of {@link createRateLimits}. */
export type RateLimitsOptions = {
  /** The limits' own connection: enableOfflineQueue false and a short commandTimeout (app.ts). */
  redis: RedisClient;
  /** Key prefix (RATE_LIMIT_KEY_PREFIX). */
  prefix: string;
  /** The default limit of each kind. */
  defaults: Record<RateLimitKind, RateLimitSetting>;
  /**
   * Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` names the client; empty = the TCP
   * peer is the client (the sidecar is the edge).
   */
  trustedProxies: readonly string[];
  /**
   * Largest lease (requests reserved in Redis with one command and spent in process,
   * rate-limit-leases.ts; RATE_LIMIT_LEASE_MAX); 1 (the default here) = one Redis command per request.
   */
  maxLease?: number;
  /** Called for every request over a limit (metrics). */
  onLimited?: (kind: RateLimitKind) => void;
  /** Called for every request counted in process because Redis failed (metrics). */
  onLocal?: (kind: RateLimitKind) => void;
  /** Called for every lease reserved (one Redis command, or the insurance when Redis failed; metrics). */
  onReserve?: (kind: RateLimitKind) => void;
};

/** The limits of one kind and bucket: the shared counters and their in-process insurance. */
type Limiter = {
  kind: RateLimitKind;
  points: number;
  bucket: string;
  remote: RateLimiterRedis;
  local: Insurance;
  leases: TokenLeases;
  /** Reserve `n` requests of `key` (see {@link reserve}), counted by `onReserve`. */
  reserve: (key: string, n: number) => Promise<Reservation>;
};

/** The built limits (app.ts, once per process); what {@link rateLimitStage} takes. */
export type RateLimits = {
  /** The limiter of `kind` for `rule` (its own limit, else the default); null = off. Cached per rule. */
  limiterFor(rule: RouteRule, kind: RateLimitKind): Limiter | null;
  /** Count in process until this time (ms since the epoch): Redis failed recently. */
  localUntil: number;
  /** The Redis key prefix. */
  prefix: string;
  /**
   * The client's address: the TCP peer, or — when the peer is a trusted proxy — the rightmost
   * `X-Forwarded-For` entry that is not itself a trusted proxy.
   */
  clientAddress(peer: string | undefined, headers: Record<string, string | string[] | undefined>): string | undefined;
  onLimited: (kind: RateLimitKind) => void;
  onLocal: (kind: RateLimitKind) => void;
  onReserve: (kind: RateLimitKind) => void;
};

/** What one limit said: its size, what is left and when the window resets (ms from now). */
export type RateLimitVerdict = { limit: number; remaining: number; resetMs: number };

/** What the stage limits: the client IP, the authenticated subject, or the publisher. */
export type RateLimitTarget =
  | { kind: 'ip'; /** the client's address as {@link RateLimits.clientAddress} resolved it */ address: string | undefined }
  | { kind: 'subject'; identity: Identity }
  | { kind: 'publisher'; contextPublisher: string | undefined };

/** The insurance limiter; `consume` is what RateLimiterRedis calls when Redis failed. */
class Insurance extends RateLimiterMemory {
  onFallback: () => void = () => undefined;
  override consume(key: string | number, points?: number, options?: { [key: string]: unknown }): Promise<RateLimiterRes> {
    this.onFallback();
    return super.consume(key, points, options);
  }
  /** Count in process without marking a Redis failure (while the limits hold local). */
  direct(key: string): Promise<RateLimiterRes> {
    return super.consume(key);
  }
}

/** `1.2.3.4`, `::ffff:1.2.3.4` → `1.2.3.4`; an IPv6 address → its /64 (`2001:db8:0:1::/64`); else undefined. */
export function ipKey(address: string | undefined): string | undefined {
  if (!address) return undefined;
  const a = address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
  const version = isIP(a);
  if (version === 4) return a;
  if (version !== 6) return undefined;
  // An end site gets at least a /64 (RFC 6177): count the /64 as one client.
  let s = a.split('%')[0]!.toLowerCase();
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(s);
  if (v4) {
    const b = v4.slice(1).map(Number) as [number, number, number, number];
    s = s.slice(0, v4.index) + `${((b[0] << 8) | b[1]).toString(16)}:${((b[2] << 8) | b[3]).toString(16)}`;
  }
  const [head, tail] = s.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return `${groups.slice(0, 4).map((g) => parseInt(g, 16).toString(16)).join(':')}::/64`;
}

function blockList(entries: readonly string[]): BlockList | undefined {
  if (entries.length === 0) return undefined;
  const list = new BlockList();
  for (const entry of entries) {
    const [address, bits] = entry.split('/') as [string, string | undefined];
    const type = isIP(address) === 6 ? 'ipv6' : 'ipv4';
    if (!isIP(address) || (bits !== undefined && !/^\d{1,3}$/.test(bits))) throw new Error(`not an IP address or CIDR block: ${entry}`);
    if (bits === undefined) list.addAddress(address, type);
    else list.addSubnet(address, Number(bits), type);
  }
  return list;
}

/**
 * Build the limits: one RateLimiterRedis (with its RateLimiterMemory insurance) per kind and
 * bucket, created at the first request of a rule.
 * @throws Error when a trusted proxy is neither an IP address nor a CIDR block.
 */
export function createRateLimits(opts: RateLimitsOptions): RateLimits {
  const trusted = blockList(opts.trustedProxies);
  const isTrusted = (ip: string) => trusted?.check(ip, isIP(ip) === 6 ? 'ipv6' : 'ipv4') ?? false;
  const shared = new Map<string, Limiter>();
  const perRule = new WeakMap<RouteRule, Partial<Record<RateLimitKind, Limiter | null>>>();

  const limits: RateLimits = {
    localUntil: 0,
    prefix: opts.prefix,
    onLimited: opts.onLimited ?? (() => undefined),
    onLocal: opts.onLocal ?? (() => undefined),
    onReserve: opts.onReserve ?? (() => undefined),
    limiterFor(rule, kind) {
      let entry = perRule.get(rule);
      if (!entry) perRule.set(rule, (entry = {}));
      const known = entry[kind];
      if (known !== undefined) return known;
      const own = rule.rate_limit?.[kind];
      const setting = own ?? opts.defaults[kind];
      let limiter: Limiter | null = null;
      if (setting !== 'off') {
        const bucket = own ? ruleBucket(rule.method, rule.path) : 'default';
        const id = `${kind} ${bucket} ${setting.points}/${setting.seconds}`;
        limiter = shared.get(id) ?? null;
        if (!limiter) {
          const local = new Insurance({ keyPrefix: '', points: setting.points, duration: setting.seconds });
          local.onFallback = () => {
            limits.localUntil = Date.now() + LOCAL_HOLD_MS;
            limits.onLocal(kind);
          };
          const remote = new RateLimiterRedis({
            storeClient: opts.redis,
            keyPrefix: '', // the whole key is rateLimitKey()
            points: setting.points,
            duration: setting.seconds,
            rejectIfRedisNotReady: true,
            // Once Redis says a key is over, refuse it here until its window ends: a client that
            // keeps hammering costs no more Redis calls.
            inMemoryBlockOnConsumed: setting.points + 1,
            insuranceLimiter: local,
          });
          const l: Limiter = {
            kind,
            points: setting.points,
            bucket,
            remote,
            local,
            leases: new TokenLeases({ maxLease: opts.maxLease ?? 1 }),
            reserve: (key, n) => {
              limits.onReserve(kind);
              return reserve(l, key, n);
            },
          };
          limiter = l;
          shared.set(id, limiter);
        }
      }
      entry[kind] = limiter;
      return limiter;
    },
    clientAddress(peer, headers) {
      const p = peer?.startsWith('::ffff:') && isIP(peer.slice(7)) === 4 ? peer.slice(7) : peer;
      if (!p || !isTrusted(p)) return p;
      const xff = headers['x-forwarded-for'];
      const hops = (Array.isArray(xff) ? xff.join(',') : (xff ?? '')).split(',').map((s) => s.trim()).filter(Boolean);
      // From the right: the first address a trusted proxy did not add itself is the client's.
      let client = p;
      for (let i = hops.length - 1; i >= 0; i--) {
        const hop = hops[i]!;
        if (!isIP(hop)) break; // garbage: believe the last trusted hop
        client = hop;
        if (!isTrusted(hop)) break;
      }
      return client;
    },
  };
  return limits;
}

/** Per rule: the path parameter naming the publisher (`publisher:{param}`), or '' = the publisher context. */
function publisherOf(match: RouteMatch, contextPublisher: string | undefined): string | undefined {
  const param = /^publisher:\{([^}]+)\}$/.exec(match.rule.object ?? '')?.[1];
  return param !== undefined && param !== 'publisher' ? match.params[param] : contextPublisher;
}

/** The subject key of each identity seen (see keyValue). */
const subjectKeys = new WeakMap<Identity, string>();

function keyValue(limits: RateLimits, target: RateLimitTarget): string | undefined {
  switch (target.kind) {
    case 'ip':
      return ipKey(target.address);
    case 'subject': {
      // issuer + subject: two issuers' subjects never share a budget; a digest keeps any byte of a
      // foreign issuer's `sub` (a brace: the hash tag) out of the key. Once per identity object
      // (the verified-token cache hands out the same one for every request with that token).
      let key = subjectKeys.get(target.identity);
      if (key === undefined) {
        key = createHash('sha256').update(`${target.identity.issuer}\n${target.identity.subject}`).digest('base64url').slice(0, 22);
        subjectKeys.set(target.identity, key);
      }
      return key;
    }
    case 'publisher':
      return undefined; // resolved from the match by the caller
  }
}

function headersOf(v: RateLimitVerdict): Record<string, string> {
  return {
    'ratelimit-limit': String(v.limit),
    'ratelimit-remaining': String(v.remaining),
    'ratelimit-reset': String(Math.max(0, Math.ceil(v.resetMs / 1000))),
  };
}

/**
 * Reserve `n` requests of `key`'s window in Redis (rate-limiter-flexible's script: the counter
 * grows by `n` even past the limit, as for a single request) — or in the insurance limiter when
 * Redis fails. Over the limit, the part of `n` still under it is granted.
 * @throws what the limiter throws other than its refusal (RateLimiterRes)
 */
async function reserve(limiter: Limiter, key: string, n: number): Promise<Reservation> {
  try {
    const res = await limiter.remote.consume(key, n);
    return { granted: n, consumed: res.consumedPoints, resetMs: res.msBeforeNext };
  } catch (err) {
    if (!(err instanceof RateLimiterRes)) throw err;
    // consumedPoints 0: refused by the library's in-memory block of an over key, Redis not asked
    const granted = err.consumedPoints > 0 ? Math.max(0, Math.min(n, limiter.points - (err.consumedPoints - n))) : 0;
    return { granted, consumed: err.consumedPoints || limiter.points, resetMs: err.msBeforeNext };
  }
}

/**
 * Count one request against the limit of `target.kind` for the matched rule.
 * @param previous the most restrictive verdict of the earlier rate-limit stages of this request
 * @param setResponseHeader sets the RateLimit fields when this limit is the most restrictive so far
 * @returns the most restrictive verdict so far (undefined while no limit applied: off, or no key
 *   such as a request without a publisher)
 * @throws ProblemError 429 `too-many-requests` with `Retry-After` (s) and the RateLimit fields of
 *   this limit when the request is over it
 */
export async function rateLimitStage(
  limits: RateLimits,
  match: RouteMatch,
  target: RateLimitTarget,
  previous: RateLimitVerdict | undefined,
  setResponseHeader: (name: string, value: string) => void,
): Promise<RateLimitVerdict | undefined> {
  const limiter = limits.limiterFor(match.rule, target.kind);
  if (!limiter) return previous;
  const value = target.kind === 'publisher' ? publisherOf(match, target.contextPublisher) : keyValue(limits, target);
  if (value === undefined) return previous;
  const key = rateLimitKey(limits.prefix, target.kind, value, limiter.bucket);
  let verdict: RateLimitVerdict;
  let over: boolean;
  if (Date.now() < limits.localUntil) {
    limits.onLocal(target.kind);
    let res: RateLimiterRes;
    over = false;
    try {
      res = await limiter.local.direct(key);
    } catch (err) {
      if (!(err instanceof RateLimiterRes)) throw err;
      res = err;
      over = true;
    }
    verdict = { limit: limiter.points, remaining: over ? 0 : res.remainingPoints, resetMs: res.msBeforeNext };
  } else {
    const pending = limiter.leases.take(key, limiter.points, limiter.reserve);
    const took = pending instanceof Promise ? await pending : pending;
    over = !took.allowed;
    verdict = { limit: limiter.points, remaining: took.remaining, resetMs: took.resetMs };
  }
  if (over) {
    limits.onLimited(target.kind);
    const retryAfter = Math.max(1, Math.ceil(verdict.resetMs / 1000));
    throw new ProblemError(429, 'too-many-requests', `Too many requests for this ${target.kind === 'ip' ? 'client address' : target.kind}: at most ${limiter.points} per window; retry in ${retryAfter} s.`, {
      headers: { ...headersOf({ ...verdict, remaining: 0, resetMs: retryAfter * 1000 }), 'retry-after': String(retryAfter) },
    });
  }
  const tighter = !previous || verdict.remaining < previous.remaining || (verdict.remaining === previous.remaining && verdict.resetMs > previous.resetMs);
  if (!tighter) return previous;
  for (const [k, v] of Object.entries(headersOf(verdict))) setResponseHeader(k, v);
  return verdict;
}
