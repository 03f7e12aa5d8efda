/**
 * The sidecar's configuration from the environment, validated with zod.
 * Names and defaults: docs/CONTRACTS.md, "Environment"; the tuning knobs below the contract's list
 * (timeouts, limits) are sidecar-local and documented here.
 */
import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { rateLimitText } from '../../policies/src/rate-limits.ts';
import { DEFAULT_CACHE_BYPASS_MS } from '../../policies/src/openfga-caches.ts';
import { parseApiUrls } from './pdp/openfga.ts';
import { redisConnectionFromEnv, type RedisConnectionConfig } from '../../policies/src/redis.ts';

const csv = z
  .string()
  .transform((s) => s.split(',').map((x) => x.trim()).filter(Boolean));
/** JWS algorithms an issuer may be trusted with (asymmetric only: RFC 8725 §3.1). */
const ALGORITHMS = ['ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'] as const;

/** One entry of JWT_ISSUERS. */
const issuerSchema = z
  .strictObject({
    issuer: z.string().min(1),
    audience: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
    jwks_uri: z.url().optional(),
    discovery_url: z.url().optional(),
    algorithms: z.array(z.enum(ALGORITHMS)).min(1).default(['ES256', 'EdDSA', 'RS256']),
    typ: z.string().min(1).default('at+jwt'),
    subject_claim: z.string().min(1).default('sub'),
    sessions: z.boolean().default(false),
    max_token_age_s: z.number().int().positive().default(86_400),
  })
  .refine((i) => !i.jwks_uri !== !i.discovery_url, { message: 'give exactly one of jwks_uri and discovery_url' })
  .transform((i) => ({
    issuer: i.issuer,
    audience: i.audience,
    jwksUri: i.jwks_uri,
    discoveryUrl: i.discovery_url,
    algorithms: i.algorithms as string[],
    typ: i.typ,
    subjectClaim: i.subject_claim,
    sessions: i.sessions,
    maxTokenAgeS: i.max_token_age_s,
  }));

const int = (def: number) => z.coerce.number().int().nonnegative().default(def);
const positive = (def: number) => z.coerce.number().int().positive().default(def);
const url = (def: string) => z.url().default(def);
/** A comma-separated list of http(s) URLs (pdp/openfga.ts parseApiUrls). */
const apiUrls = z.string().transform((s, ctx) => {
  try {
    return parseApiUrls(s);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: `must be http(s) URLs separated by commas (${(err as Error).message})` });
    return z.NEVER;
  }
});
/** A fraction in (0, 1]. */
const share = (def: number) => z.coerce.number().gt(0).lte(1).default(def);

/** The sidecar's environment variables. */
const envObject = z.object({
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    SIDECAR_HOST: z.string().default('127.0.0.1'),
    SIDECAR_PORT: int(8000),
    /**
     * Processes serving SIDECAR_PORT (main.ts, workers.ts): 1 = one process, as before; more = a
     * node:cluster primary forking that many workers that share the port, the primary serving the
     * admin listener with the workers' metrics summed. Default: the number of cores.
     */
    SIDECAR_WORKERS: positive(availableParallelism()),
    /**
     * The admin listener (admin.ts): `/metrics` and `/healthz` only, never on the public port.
     * Loopback by default; port 0 = a free one (tests).
     */
    ADMIN_HOST: z.string().min(1).default('127.0.0.1'),
    ADMIN_PORT: z.coerce.number().int().min(0).max(65535).default(9464),
    UPSTREAM_URL: url('http://127.0.0.1:8001'),
    UPSTREAM_AUDIENCE: z.string().min(1).default('catalog-api'),
    SIDECAR_SIGNING_KEY_FILE: z.string().default('.data/sidecar-signing-key.pem'),
    ASSERTION_ISSUER: z.string().min(1).default('urn:music-publishing:sidecar'),
    /**
     * The trusted issuers as JSON: `[{issuer, audience, jwks_uri | discovery_url, algorithms?, typ?,
     * subject_claim?, sessions?, max_token_age_s?}]` (docs/CONTRACTS.md, "Access token"). Unset: one
     * issuer from JWT_ISSUER, JWT_AUDIENCE, JWT_JWKS_URL and JWT_ALGORITHMS, with revocable sessions.
     */
    JWT_ISSUERS: z.string().optional(),
    JWT_ISSUER: z.string().min(1).default('http://127.0.0.1:8000'),
    JWT_AUDIENCE: z.string().min(1).default('music-publishing'),
    JWT_ALGORITHMS: csv.default(['ES256', 'EdDSA', 'RS256']).pipe(z.array(z.enum(ALGORITHMS)).min(1)),
    JWT_JWKS_URL: z.url().default('http://127.0.0.1:8001/api/v1/auth/jwks.json'),
    /** JWKS fetch timeout (ms), minimum time between refetches on an unknown `kid` (ms), and max age of a fetched JWKS (ms). */
    JWT_JWKS_TIMEOUT_MS: int(2000),
    JWT_JWKS_COOLDOWN_MS: int(30_000),
    JWT_JWKS_CACHE_MAX_AGE_MS: int(300_000),
    /** Verified-token cache: max life of an entry (ms; 0 = off; never beyond the token's exp) and max entries. */
    JWT_CACHE_TTL_MS: int(60_000),
    JWT_CACHE_MAX_ENTRIES: int(10_000),
    /**
     * OpenFGA's HTTP API: one URL, or a comma-separated list of instances on one datastore
     * (round-robin over the healthy ones, pdp/openfga.ts); OPENFGA_API_URLS, when set, is the list
     * instead. The first URL also serves the store and model look-ups (policies/src/active-model.ts).
     */
    OPENFGA_API_URL: apiUrls.default(['http://127.0.0.1:8080']),
    OPENFGA_API_URLS: apiUrls.optional(),
    /** Health-check period of every OpenFGA instance (`GET /healthz`; ms; 0 = none). */
    OPENFGA_HEALTH_INTERVAL_MS: int(1000),
    OPENFGA_STORE_NAME: z.string().min(1).default('music-publishing'),
    /** Per-Check attempt timeout (ms); at most one retry (pdp/openfga.ts). */
    OPENFGA_TIMEOUT_MS: int(1000),
    /**
     * How long after a decision's epochs change its Checks bypass OpenFGA's caches
     * (HIGHER_CONSISTENCY; pdp/decision-cache.ts): at least OpenFGA's check cache TTL + its
     * request timeout (ms; policies/src/openfga-caches.ts, what scripts/services.sh runs); 0 =
     * OpenFGA runs without its check caches.
     */
    OPENFGA_CACHE_BYPASS_MS: int(DEFAULT_CACHE_BYPASS_MS),
    /** How often the active model id is re-read from Redis when a push was lost (ms; policies/src/active-model.ts). */
    MODEL_POLL_INTERVAL_MS: positive(1000),
    REDIS_URL: z.string().default('redis://127.0.0.1:6379/0'),
    /**
     * Redis Cluster seed nodes (`host:port,…`; REDIS_URL then lends only its credentials), or
     * Redis Sentinel (`host:port,…` + the primary's name); policies/src/redis.ts.
     */
    REDIS_CLUSTER_NODES: z.string().optional(),
    REDIS_SENTINELS: z.string().optional(),
    REDIS_SENTINEL_NAME: z.string().optional(),
    /** ioredis commandTimeout (ms): a slow Redis counts as down for that request. */
    REDIS_COMMAND_TIMEOUT_MS: int(250),
    /**
     * Session revocation (identity/session-revocations.ts): how long the revoked-session view may
     * be out of touch with Redis before session-bound tokens are refused with 503 (ms), and how
     * often the whole set is re-read (ms).
     */
    REVOCATION_MAX_STALENESS_MS: int(5000),
    REVOCATION_RESYNC_INTERVAL_MS: positive(30_000),
    ROUTES_FILE: z.string().default('policies/routes.yaml'),
    DECISION_CACHE_TTL_MS: int(30_000),
    DECISION_CACHE_MAX_ENTRIES: int(10_000),
    /**
     * The in-process epoch view (pdp/epoch-view.ts): a pushed epoch bump may go unseen at most this
     * long (ms) — past it, while the push channel is down or unverified, every decision reads its
     * epochs from Redis (MGET) again. 0 = no view: one MGET per decision.
     */
    EPOCH_STALENESS_MS: int(500),
    /**
     * The request time's bucket (ms) in the Checks' condition context: cached decisions are keyed
     * by client IP and bucket, and a grant that ends is honoured at most this long after its end
     * (pdp/condition-context.ts).
     */
    CONDITION_TIME_BUCKET_MS: positive(30_000),
    /** Upstream (undici) timeouts in ms; body limit of proxied requests in bytes (10 MiB). */
    UPSTREAM_CONNECT_TIMEOUT_MS: int(2000),
    UPSTREAM_HEADERS_TIMEOUT_MS: int(30_000),
    UPSTREAM_BODY_TIMEOUT_MS: int(30_000),
    UPSTREAM_CONNECTIONS: int(64),
    /**
     * Longest wait (ms) of a proxied request for a free upstream connection when all
     * UPSTREAM_CONNECTIONS are busy; then 503 `upstream-unavailable` with `Retry-After: 1`.
     * 0 = answer 503 at once.
     */
    UPSTREAM_QUEUE_TIMEOUT_MS: int(5000),
    PROXY_BODY_LIMIT_BYTES: int(10 * 1024 * 1024),
    /**
     * Upstream admission (stages/forward.ts; docs/CONTRACTS.md, "Upstream admission"): upstream
     * responses up to PROXY_RESPONSE_BUFFER_BYTES are read whole and their connection freed before
     * the client reads (0 = always stream); request and response body bytes held at once, all
     * requests together, stay within PROXY_BUFFER_TOTAL_BYTES (a request body that does not fit →
     * 503 + Retry-After); no subject / publisher holds more than UPSTREAM_SHARE_PER_SUBJECT /
     * UPSTREAM_SHARE_PER_PUBLISHER (fractions in (0, 1]) of the connections or of that buffer.
     */
    PROXY_RESPONSE_BUFFER_BYTES: int(1024 * 1024),
    PROXY_BUFFER_TOTAL_BYTES: positive(256 * 1024 * 1024),
    UPSTREAM_SHARE_PER_SUBJECT: share(0.25),
    UPSTREAM_SHARE_PER_PUBLISHER: share(0.5),
    /**
     * Client side (ms). REQUEST_TIMEOUT_MS: the whole request (headers and body) must be received
     * within this time of its start, else 408 and the connection (and any upstream request) is
     * aborted — Fastify `requestTimeout`, also Node's headersTimeout, and the proxied body's
     * deadline. CONNECTION_TIMEOUT_MS: socket inactivity timeout (Fastify `connectionTimeout`;
     * 0 = none; keep it above UPSTREAM_HEADERS_TIMEOUT_MS + UPSTREAM_QUEUE_TIMEOUT_MS, as the
     * client's socket is idle while the upstream works). KEEP_ALIVE_TIMEOUT_MS: idle time of a
     * kept-alive connection (Fastify `keepAliveTimeout`; above a load balancer's idle timeout).
     * LISTEN_BACKLOG: the kernel's queue of connections not yet accepted (listen(2) backlog, capped
     * by net.core.somaxconn). Node's default, 511, overflows under a burst of new connections — an
     * open-loop client falling behind opens thousands — and every dropped handshake costs its
     * client a SYN retransmission (1 s, then 3 s, 7 s …): README "Benchmarks", open loop.
     */
    REQUEST_TIMEOUT_MS: positive(30_000),
    CONNECTION_TIMEOUT_MS: int(60_000),
    KEEP_ALIVE_TIMEOUT_MS: positive(72_000),
    LISTEN_BACKLOG: positive(4096),
    /**
     * API-call metering (docs/CONTRACTS.md, "Metering"): the Redis key prefix (shared with the
     * catalog API's roll-up), how often the in-process counters are flushed (ms; a crash loses at
     * most this much of counts), how often the published limits are re-read (ms), the timeout of
     * the metering's own Redis connection (ms), the in-process bound (publishers of the month plus
     * unflushed past days), and the route-rule paths the limit never blocks (only warns).
     */
    METERING_KEY_PREFIX: z.string().regex(/^[A-Za-z0-9:_-]{1,64}$/).default('metering'),
    METERING_FLUSH_INTERVAL_MS: positive(1000),
    METERING_LIMITS_RELOAD_MS: positive(5000),
    METERING_COMMAND_TIMEOUT_MS: positive(1000),
    METERING_MAX_KEYS: positive(100_000),
    METERING_NEVER_BLOCK: csv.default([
      '/api/v1/publishers/{publisherId}/account',
      '/api/v1/publishers/{publisherId}/account/plan',
      '/api/v1/publishers/{publisherId}/account/usage',
    ]),
    /**
     * Request rate limits (stages/rate-limit.ts; docs/CONTRACTS.md, "Rate limits"): the defaults per
     * client IP, per subject and per publisher (`<requests>/<window>`, e.g. `600/min`, or `off`;
     * a route rule's `rate_limit` overrides them), the Redis key prefix, the command timeout of the
     * limits' own Redis connection (ms; slower → counted in process), the largest lease of
     * requests reserved in Redis with one command (stages/rate-limit-leases.ts; 1 = one command per
     * request), and the proxies whose X-Forwarded-For names the client (addresses or CIDR blocks;
     * none = the TCP peer is the client).
     */
    RATE_LIMIT_IP: rateLimitText.prefault('30000/min'),
    RATE_LIMIT_SUBJECT: rateLimitText.prefault('6000/min'),
    RATE_LIMIT_PUBLISHER: rateLimitText.prefault('60000/min'),
    RATE_LIMIT_KEY_PREFIX: z.string().regex(/^[A-Za-z0-9:_-]{1,64}$/).default('rate-limit'),
    RATE_LIMIT_COMMAND_TIMEOUT_MS: positive(25),
    RATE_LIMIT_LEASE_MAX: z.coerce.number().int().min(1).max(10_000).default(64),
    /**
     * Decision log (decision-log.ts; docs/CONTRACTS.md, "Decision log"): the probability (0..1) that
     * an allowed decision is recorded (denies always are), the in-process ring buffer's size
     * (records, served by the admin listener's /decisions), how often records are appended to the
     * Redis stream (ms) and the stream's cap (entries, XADD MAXLEN ~).
     */
    DECISION_LOG_ALLOW_SAMPLE: z.coerce.number().min(0).max(1).default(1),
    DECISION_LOG_BUFFER: positive(10_000),
    DECISION_LOG_FLUSH_MS: positive(1000),
    DECISION_LOG_STREAM_MAXLEN: positive(10_000),
    /**
     * Access log (access-log.ts): the probability (0..1) that a request answered below 400 gets a
     * `request completed` line (≥ 400 always do), and the most lines per second (0 = none); every
     * request is counted in `sidecar_access_log_total{outcome}` either way.
     */
    ACCESS_LOG_SAMPLE: z.coerce.number().min(0).max(1).default(1),
    ACCESS_LOG_MAX_PER_S: int(100),
    TRUSTED_PROXIES: csv
      .default([])
      .pipe(z.array(z.string().refine((s) => isIP(s.split('/')[0]!) !== 0 && /^[^/]+(\/\d{1,3})?$/.test(s), { error: 'each entry must be an IP address or a CIDR block' }))),
  });

/** One trusted issuer, as the JWT authenticator takes it. */
export type TrustedIssuer = z.output<typeof issuerSchema>;

/** Schema of the sidecar's environment. Every key has a default, so `{}` is a valid dev config. */
export const sidecarEnvSchema = envObject.transform((e, ctx) => {
    // JWT_ISSUERS, or the one issuer of JWT_ISSUER/JWT_AUDIENCE/JWT_JWKS_URL (session-bound)
    let input: unknown = [{ issuer: e.JWT_ISSUER, audience: e.JWT_AUDIENCE, jwks_uri: e.JWT_JWKS_URL, algorithms: e.JWT_ALGORITHMS, sessions: true }];
    if (e.JWT_ISSUERS) {
      try {
        input = JSON.parse(e.JWT_ISSUERS);
      } catch {
        ctx.addIssue({ code: 'custom', path: ['JWT_ISSUERS'], message: 'must be a JSON array' });
        return z.NEVER;
      }
    }
    const parsed = z.array(issuerSchema).min(1).safeParse(input);
    if (!parsed.success) {
      for (const i of parsed.error.issues) ctx.addIssue({ code: 'custom', path: ['JWT_ISSUERS', ...i.path.map(String)], message: i.message });
      return z.NEVER;
    }
    const issuers = parsed.data;
    let redis: RedisConnectionConfig;
    try {
      redis = redisConnectionFromEnv({ REDIS_URL: e.REDIS_URL, REDIS_CLUSTER_NODES: e.REDIS_CLUSTER_NODES, REDIS_SENTINELS: e.REDIS_SENTINELS, REDIS_SENTINEL_NAME: e.REDIS_SENTINEL_NAME });
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: ['REDIS_CLUSTER_NODES'], message: (err as Error).message });
      return z.NEVER;
    }
    // A body of the largest allowed size must fit one subject's (and one publisher's) share of the buffer.
    const bodyRoom = Math.floor(e.PROXY_BUFFER_TOTAL_BYTES * Math.min(e.UPSTREAM_SHARE_PER_SUBJECT, e.UPSTREAM_SHARE_PER_PUBLISHER));
    if (bodyRoom < e.PROXY_BODY_LIMIT_BYTES) {
      ctx.addIssue({ code: 'custom', path: ['PROXY_BUFFER_TOTAL_BYTES'], message: 'times the smaller UPSTREAM_SHARE_PER_* must be at least PROXY_BODY_LIMIT_BYTES' });
      return z.NEVER;
    }
    return toConfig(e, issuers, redis);
  });

function toConfig(e: z.output<typeof envObject>, issuers: TrustedIssuer[], redis: RedisConnectionConfig) {
  return {
    logLevel: e.LOG_LEVEL,
    host: e.SIDECAR_HOST,
    port: e.SIDECAR_PORT,
    workers: e.SIDECAR_WORKERS,
    admin: { host: e.ADMIN_HOST, port: e.ADMIN_PORT },
    server: { requestTimeoutMs: e.REQUEST_TIMEOUT_MS, connectionTimeoutMs: e.CONNECTION_TIMEOUT_MS, keepAliveTimeoutMs: e.KEEP_ALIVE_TIMEOUT_MS, listenBacklog: e.LISTEN_BACKLOG },
    upstream: {
      url: e.UPSTREAM_URL,
      audience: e.UPSTREAM_AUDIENCE,
      connectTimeoutMs: e.UPSTREAM_CONNECT_TIMEOUT_MS,
      headersTimeoutMs: e.UPSTREAM_HEADERS_TIMEOUT_MS,
      bodyTimeoutMs: e.UPSTREAM_BODY_TIMEOUT_MS,
      connections: e.UPSTREAM_CONNECTIONS,
      queueTimeoutMs: e.UPSTREAM_QUEUE_TIMEOUT_MS,
      bodyLimitBytes: e.PROXY_BODY_LIMIT_BYTES,
      responseBufferBytes: e.PROXY_RESPONSE_BUFFER_BYTES,
      bufferTotalBytes: e.PROXY_BUFFER_TOTAL_BYTES,
      sharePerSubject: e.UPSTREAM_SHARE_PER_SUBJECT,
      sharePerPublisher: e.UPSTREAM_SHARE_PER_PUBLISHER,
    },
    assertion: { issuer: e.ASSERTION_ISSUER, audience: e.UPSTREAM_AUDIENCE, signingKeyFile: e.SIDECAR_SIGNING_KEY_FILE as string | undefined },
    jwt: {
      issuers,
      jwksTimeoutMs: e.JWT_JWKS_TIMEOUT_MS,
      jwksCooldownMs: e.JWT_JWKS_COOLDOWN_MS,
      jwksCacheMaxAgeMs: e.JWT_JWKS_CACHE_MAX_AGE_MS,
      cacheTtlMs: e.JWT_CACHE_TTL_MS,
      cacheMaxEntries: e.JWT_CACHE_MAX_ENTRIES,
    },
    revocations: { maxStalenessMs: e.REVOCATION_MAX_STALENESS_MS, resyncMs: e.REVOCATION_RESYNC_INTERVAL_MS },
    openfga: { apiUrl: (e.OPENFGA_API_URLS ?? e.OPENFGA_API_URL)[0]!, apiUrls: e.OPENFGA_API_URLS ?? e.OPENFGA_API_URL, healthIntervalMs: e.OPENFGA_HEALTH_INTERVAL_MS, storeName: e.OPENFGA_STORE_NAME, timeoutMs: e.OPENFGA_TIMEOUT_MS, cacheBypassMs: e.OPENFGA_CACHE_BYPASS_MS, modelFile: undefined as string | undefined, modelPollMs: e.MODEL_POLL_INTERVAL_MS },
    redis: { ...redis, commandTimeoutMs: e.REDIS_COMMAND_TIMEOUT_MS },
    routesFile: e.ROUTES_FILE,
    cache: { ttlMs: e.DECISION_CACHE_TTL_MS, maxEntries: e.DECISION_CACHE_MAX_ENTRIES, conditionTimeBucketMs: e.CONDITION_TIME_BUCKET_MS, epochStalenessMs: e.EPOCH_STALENESS_MS },
    metering: {
      prefix: e.METERING_KEY_PREFIX,
      flushIntervalMs: e.METERING_FLUSH_INTERVAL_MS,
      reloadMs: e.METERING_LIMITS_RELOAD_MS,
      commandTimeoutMs: e.METERING_COMMAND_TIMEOUT_MS,
      maxKeys: e.METERING_MAX_KEYS,
      neverBlock: e.METERING_NEVER_BLOCK as string[],
    },
    accessLog: { sample: e.ACCESS_LOG_SAMPLE, maxPerSecond: e.ACCESS_LOG_MAX_PER_S },
    decisionLog: { allowSample: e.DECISION_LOG_ALLOW_SAMPLE, bufferSize: e.DECISION_LOG_BUFFER, flushMs: e.DECISION_LOG_FLUSH_MS, streamMaxLen: e.DECISION_LOG_STREAM_MAXLEN },
    rateLimits: {
      defaults: { ip: e.RATE_LIMIT_IP, subject: e.RATE_LIMIT_SUBJECT, publisher: e.RATE_LIMIT_PUBLISHER },
      prefix: e.RATE_LIMIT_KEY_PREFIX,
      commandTimeoutMs: e.RATE_LIMIT_COMMAND_TIMEOUT_MS,
      maxLease: e.RATE_LIMIT_LEASE_MAX,
      trustedProxies: e.TRUSTED_PROXIES as string[],
    },
  };
}

/** The validated, structured configuration `buildSidecar` takes. */
export type SidecarConfig = z.output<typeof sidecarEnvSchema>;

/**
 * Parse the environment (default `process.env`) into a {@link SidecarConfig}.
 * @throws Error listing every invalid variable (`NAME: reason`), never the values.
 */
export function loadConfig(env: Record<string, string | undefined> = process.env): SidecarConfig {
  const res = sidecarEnvSchema.safeParse(env);
  if (!res.success) {
    const lines = res.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new Error(`invalid sidecar environment:\n  ${lines.join('\n  ')}`);
  }
  return res.data;
}
