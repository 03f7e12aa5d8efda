/**
 * The catalog API's configuration: environment variables (docs/CONTRACTS.md, "Environment"),
 * validated with zod. Defaults are the contract's; the tuning knobs below the contract's list are
 * this service's own.
 */
import { z } from 'zod';
import { redisConnectionFromEnv } from '../../policies/src/redis.ts';

const port = z.coerce.number().int().min(0).max(65535);
const positiveInt = z.coerce.number().int().positive();

/** The zod schema of the environment the catalog API reads. */
export const envSchema = z.object({
  DATABASE_URL: z.url().default('postgres://catalog_app:catalog_app@127.0.0.1:5432/publishing'),
  REDIS_URL: z.url().default('redis://127.0.0.1:6379/0'),
  /**
   * Redis Cluster seed nodes (`host:port,…`; REDIS_URL then lends only its credentials), or Redis
   * Sentinel (`host:port,…` + the primary's name) — policies/src/redis.ts, docs/CONTRACTS.md.
   */
  REDIS_CLUSTER_NODES: z.string().optional(),
  REDIS_SENTINELS: z.string().optional(),
  REDIS_SENTINEL_NAME: z.string().optional(),
  OPENFGA_API_URL: z.url().default('http://127.0.0.1:8080'),
  OPENFGA_STORE_NAME: z.string().min(1).default('music-publishing'),
  CATALOG_HOST: z.string().min(1).default('127.0.0.1'),
  CATALOG_PORT: port.default(8001),
  SIDECAR_JWKS_URL: z.url().default('http://127.0.0.1:8000/.well-known/jwks.json'),
  ASSERTION_ISSUER: z.string().min(1).default('urn:music-publishing:sidecar'),
  ASSERTION_AUDIENCE: z.string().min(1).default('catalog-api'),
  /**
   * Redis key prefix of the identity assertions already accepted (`<prefix><jti>`, kept for the
   * assertion's remaining lifetime): each `jti` is accepted once (plugins/assertion-replay.ts).
   */
  ASSERTION_JTI_PREFIX: z.string().regex(/^[A-Za-z0-9:_-]{1,64}$/).default('assertion-jti:'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  // ---- identity (the sign-in service, catalog-api/src/modules/auth) ----
  /** The sign-in service's database role `catalog_auth` (docs/CONTRACTS.md, "Database roles"). */
  AUTH_DATABASE_URL: z.url().default('postgres://catalog_auth:catalog_auth@127.0.0.1:5432/publishing'),
  /**
   * The relays' and jobs' role `catalog_jobs` (docs/CONTRACTS.md, "Database roles"): the authz outbox
   * relay, the domain-event relay (and `npm run events`), the metering roll-up (and `npm run
   * metering`). No default: a process that runs one of them refuses to start without it
   * (db/orm.ts `createOrm(config, 'jobs')`); scripts/services.sh prints it.
   */
  JOBS_DATABASE_URL: z.url().optional(),
  /** The schema owner (`catalog_owner`): `npm run audit -- verify` reads the whole audit log as it. */
  DATABASE_OWNER_URL: z.url().default('postgres://catalog_owner:catalog_owner@127.0.0.1:5432/publishing'),
  /** `iss` of the access tokens this API issues: the public base URL of the sidecar in front of it. */
  JWT_ISSUER: z.url().default('http://127.0.0.1:8000'),
  /** `aud` of the access tokens this API issues. */
  JWT_AUDIENCE: z.string().min(1).default('music-publishing'),
  /** File with the 256-bit key-encryption key (base64url) that seals private keys and TOTP secrets. */
  ISSUER_KEK_FILE: z.string().min(1).default('.data/issuer-kek.key'),
  /** Access-token lifetime, seconds (RFC 9068 tokens; default 15 min). */
  ACCESS_TOKEN_TTL_S: positiveInt.max(24 * 3600).default(900),
  /** Longest life of a session (and of its refresh tokens), seconds (default 30 days). */
  SESSION_MAX_AGE_S: positiveInt.default(30 * 24 * 3600),
  /** How long a new signing key is published before `keys rotate` lets it sign, seconds. */
  ISSUER_KEY_PUBLISH_AHEAD_S: z.coerce.number().int().nonnegative().default(600),
  /** How often every process re-reads the signing keys, milliseconds. */
  ISSUER_KEY_RELOAD_MS: z.coerce.number().int().nonnegative().default(5000),
  /** Where sign-in mail goes out (nodemailer SMTP URL). */
  SMTP_URL: z.string().regex(/^smtps?:\/\//, 'must be an smtp:// or smtps:// URL').default('smtp://127.0.0.1:2525'),
  /** Connect, greeting and socket timeout of one SMTP attempt, milliseconds (mail/mailer.ts; then a retry). */
  SMTP_TIMEOUT_MS: positiveInt.default(5000),
  /** The From address of sign-in mail. */
  MAIL_FROM: z.string().min(3).default('Music Publishing <no-reply@music-publishing.example>'),
  /** Base URL of links in mail (password reset, email verification, invitations). */
  APP_BASE_URL: z.url().default('http://127.0.0.1:8000'),
  /** Sign-in attempts (login, MFA, refresh, password reset) allowed per client IP per minute. */
  SIGN_IN_RATE_LIMIT_PER_MINUTE: positiveInt.default(30),
  /** Proxies whose X-Forwarded-For is believed (Fastify `trustProxy`): the sidecar's addresses. */
  TRUSTED_PROXIES: z.string().default('127.0.0.1,::1'),
  /** Period of the directory sync job, milliseconds; 0 = only `npm run directory -- sync`. */
  DIRECTORY_SYNC_INTERVAL_MS: z.coerce.number().int().nonnegative().default(300_000),
  /** Period of the trial sweep (ended trials → read-only at the sidecars), milliseconds; 0 = off. */
  TRIAL_SWEEP_INTERVAL_MS: z.coerce.number().int().nonnegative().default(5000),
  /** Redis key prefix of the API-call metering (the sidecars' METERING_KEY_PREFIX). */
  METERING_KEY_PREFIX: z.string().regex(/^[A-Za-z0-9:_-]{1,64}$/).default('metering'),
  /** Period of the metering roll-up (Redis counts → account_usage, limits → Redis), milliseconds; 0 = off. */
  METERING_ROLLUP_INTERVAL_MS: z.coerce.number().int().nonnegative().default(5000),
  /** Period of the storage and seat measurements, milliseconds (default 1 h); 0 = off. */
  METERING_MEASURE_INTERVAL_MS: z.coerce.number().int().nonnegative().default(3_600_000),
  /** Period of the session-revocation publisher's timer, milliseconds. */
  REVOCATION_PUBLISH_INTERVAL_MS: positiveInt.default(1000),
  // ---- service-specific tuning (not part of the shared contract) ----
  /** Maximum PostgreSQL connections in the pool. */
  DB_POOL_MAX: positiveInt.default(10),
  /** Maximum PostgreSQL connections in the sign-in service's pool (`AUTH_DATABASE_URL`). */
  AUTH_DB_POOL_MAX: positiveInt.default(5),
  /** Maximum PostgreSQL connections in the relays' and jobs' pool (`JOBS_DATABASE_URL`; LISTEN has its own). */
  JOBS_DB_POOL_MAX: positiveInt.default(4),
  /** `timeout` of Redis commands (rate limits, lockout, revocations), milliseconds. */
  REDIS_COMMAND_TIMEOUT_MS: positiveInt.default(500),
  /** `statement_timeout` of every connection, milliseconds (the client waits 500 ms longer: db/orm.ts). */
  DB_STATEMENT_TIMEOUT_MS: positiveInt.default(5000),
  /** Time to open a PostgreSQL connection (TCP, TLS, authentication), milliseconds; then 503. */
  DB_CONNECT_TIMEOUT_MS: positiveInt.default(5000),
  /** How long to wait for the sidecar's JWKS, milliseconds. */
  JWKS_TIMEOUT_MS: positiveInt.default(2000),
  /** Minimum time between two JWKS refetches on an unknown `kid`, milliseconds. */
  JWKS_COOLDOWN_MS: positiveInt.default(30_000),
  /** Period of the outbox relay's timer, milliseconds. */
  OUTBOX_INTERVAL_MS: positiveInt.default(1000),
  /**
   * Longest wait of a mutating request for its tuples to reach OpenFGA, milliseconds; OpenFGA slow or
   * away → the request answers anyway and the relay's timer delivers them later (plugins/outbox.ts).
   */
  OUTBOX_FLUSH_TIMEOUT_MS: positiveInt.default(2000),
  /** Rows per outbox batch (OpenFGA accepts at most 100 tuples per write). */
  OUTBOX_BATCH_SIZE: positiveInt.max(100).default(100),
  /** `false` disables the relay (no OpenFGA/Redis connection is made); for tests of the API alone. */
  OUTBOX_RELAY: z.enum(['true', 'false']).default('true').transform((v) => v === 'true'),
  // ---- domain events (catalog-api/src/events, docs/CONTRACTS.md "Domain events") ----
  /** SQS endpoint (goaws/ElasticMQ locally); unset = the AWS endpoint of AWS_REGION. */
  SQS_ENDPOINT_URL: z.url().optional(),
  /** The FIFO queue domain events are published to; unset = no relay (events wait in the outbox). */
  SQS_QUEUE_URL: z.url().refine((u) => u.endsWith('.fifo'), 'must be a FIFO queue (name ends in .fifo)').optional(),
  /** SQS wire protocol: `json` (AWS's default) or `query` (goaws v0.4.5 speaks only this one). */
  SQS_PROTOCOL: z.enum(['json', 'query']).default('json'),
  AWS_REGION: z.string().regex(/^[a-z0-9-]{2,32}$/, 'must be a region name such as eu-west-1').default('us-east-1'),
  /** Static credentials for SQS; unset = the AWS SDK's default credential chain (instance role, profile …). */
  AWS_ACCESS_KEY_ID: z.string().min(1).optional(),
  AWS_SECRET_ACCESS_KEY: z.string().min(1).optional(),
  AWS_SESSION_TOKEN: z.string().min(1).optional(),
  /** Time for one SQS request (connect + answer), milliseconds. */
  SQS_REQUEST_TIMEOUT_MS: positiveInt.max(60_000).default(5000),
  /** Largest message body sent, bytes (the queue's MaximumMessageSize; SQS allows up to 1 MiB). */
  SQS_MAX_MESSAGE_BYTES: positiveInt.max(1024 * 1024).default(256 * 1024),
  /** `false`: no relay in this process (another process, `npm run events -- run`, publishes). */
  EVENTS_RELAY: z.enum(['true', 'false']).default('true').transform((v) => v === 'true'),
  /** Period of the domain-event relay's timer, milliseconds (NOTIFY wakes it sooner). */
  EVENTS_INTERVAL_MS: positiveInt.default(1000),
  /** Events claimed per relay transaction. */
  EVENTS_BATCH_SIZE: positiveInt.max(100).default(100),
  /** Failed attempts after which an event the queue refuses goes to the dead-letter table. */
  EVENTS_MAX_ATTEMPTS: positiveInt.max(1000).default(10),
  /** First retry delay, milliseconds; doubled per failed attempt up to EVENTS_RETRY_MAX_MS. */
  EVENTS_RETRY_BASE_MS: positiveInt.default(1000),
  EVENTS_RETRY_MAX_MS: positiveInt.default(30_000),
  /** How long published events stay in the outbox, seconds. */
  EVENTS_RETENTION_S: positiveInt.default(7 * 24 * 3600),
  /**
   * Time to receive a whole request (headers and body) from the client, milliseconds (Node's
   * `server.requestTimeout`; the headers alone get at most min(this, 60 s)); then 408 and close.
   */
  REQUEST_TIMEOUT_MS: positiveInt.default(30_000),
  /**
   * Socket inactivity timeout, milliseconds (Fastify `connectionTimeout`, Node's `server.timeout`): a
   * connection on which nothing is sent or received for this long is closed. It also runs while a
   * handler works, so keep it above the longest handler (statements are capped by
   * DB_STATEMENT_TIMEOUT_MS; the sidecar gives up after its UPSTREAM_HEADERS_TIMEOUT_MS, 30 s).
   */
  CONNECTION_TIMEOUT_MS: positiveInt.default(60_000),
  /**
   * How long an idle keep-alive connection stays open, milliseconds (Fastify `keepAliveTimeout`). Keep
   * it longer than the sidecar's upstream pool keeps idle sockets, so the server never closes a socket
   * the client is about to reuse.
   */
  KEEP_ALIVE_TIMEOUT_MS: positiveInt.default(72_000),
});

/** The validated configuration. */
export type CatalogConfig = z.infer<typeof envSchema>;

/**
 * Validate `env` (default: `process.env`) into a configuration; unset variables take the defaults.
 * @throws Error listing every invalid variable (`NAME: reason`), so `main.ts` can exit with it.
 */
export function loadConfig(env: Record<string, string | undefined> = process.env): CatalogConfig {
  const picked: Record<string, string> = {};
  for (const key of Object.keys(envSchema.shape)) {
    const value = env[key];
    if (value !== undefined && value !== '') picked[key] = value;
  }
  const parsed = envSchema.safeParse(picked);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new Error(`invalid catalog-api configuration:\n  ${lines.join('\n  ')}`);
  }
  try {
    const { REDIS_URL, REDIS_CLUSTER_NODES, REDIS_SENTINELS, REDIS_SENTINEL_NAME } = parsed.data;
    redisConnectionFromEnv({ REDIS_URL, REDIS_CLUSTER_NODES, REDIS_SENTINELS, REDIS_SENTINEL_NAME });
  } catch (err) {
    throw new Error(`invalid catalog-api configuration:\n  ${(err as Error).message}`, { cause: err });
  }
  return parsed.data;
}
