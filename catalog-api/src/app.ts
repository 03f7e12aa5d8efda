/**
 * The catalog API as a Fastify instance: problem+json errors, identity assertion verification,
 * OpenAPI (/api/v1/openapi.json, UI at /docs), health (/healthz, /readyz), the catalog routes, the
 * sign-in service (modules/auth, on its own database role) with the directory configuration, and
 * the relationship outbox relay; `/metrics` (Prometheus) and the domain-event relay (events/); the
 * metering roll-up and measurements (modules/metering).
 */
import Fastify, { type FastifyInstance } from 'fastify';
import { serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import type { JWTVerifyGetKey } from 'jose';
import type { CatalogConfig } from './config.ts';
import { createOrm, type Orm } from './db/orm.ts';
import { healthPlugin } from './plugins/health.ts';
import { metricsPlugin } from './plugins/metrics.ts';
import { domainEventsPlugin } from './plugins/domain-events.ts';
import { identityPlugin } from './plugins/identity.ts';
import { createReplayGuard } from './plugins/assertion-replay.ts';
import { openApiPlugin } from './plugins/openapi.ts';
import { outboxPlugin } from './plugins/outbox.ts';
import { problemsPlugin } from './plugins/problems.ts';
import type { RelationshipSink } from './outbox/relay.ts';
import formbody from '@fastify/formbody';
import { loggedRequest } from '../../policies/src/routes.ts';
import { catalogRoutes } from './modules/catalog/routes.ts';
import { usersRoutes } from './modules/users/routes.ts';
import { membersRoutes } from './modules/users/members.routes.ts';
import { publishersRoutes } from './modules/publishers/routes.ts';
import { departmentsRoutes } from './modules/publishers/departments.routes.ts';
import { rolesRoutes } from './modules/roles/routes.ts';
import { apiClientsRoutes } from './modules/api-clients/routes.ts';
import type { RouteDeps } from './modules/common/http.ts';
import { rateLimitPlugin } from './plugins/rate-limit.ts';
import { createRedis } from './redis.ts';
import { createAuthModule, type AuthModuleParts } from './modules/auth/module.ts';
import { authRoutes } from './modules/auth/routes.ts';
import { directoryRoutes } from './modules/directory/routes.ts';
import { auditRoutes } from './modules/audit/routes.ts';
import { accountsRoutes } from './modules/accounts/routes.ts';
import { trialSweepPlugin } from './modules/accounts/trial-sweep.ts';
import { meteringPlugin } from './modules/metering/plugin.ts';
import { explorerPlugin } from './modules/explorer/plugin.ts';
import { authzRoutes } from './modules/authz/routes.ts';
import { createAuthzFga } from './modules/authz/fga.ts';

/** Injectable collaborators (tests); production builds them from the configuration. */
export type CatalogDeps = {
  /** key resolver for identity assertions instead of fetching SIDECAR_JWKS_URL */
  getKey?: JWTVerifyGetKey;
  /** an existing ORM (not closed by the app) instead of a new pool */
  orm?: Orm;
  /** an existing ORM on AUTH_DATABASE_URL (not closed by the app) for the sign-in service */
  authOrm?: Orm;
  /** an existing ORM on JOBS_DATABASE_URL (not closed by the app) for the relays and the metering jobs */
  jobsOrm?: Orm;
  /** mail queue and directory gateway of the sign-in service (tests) */
  mailer?: AuthModuleParts['mailer'];
  directory?: AuthModuleParts['directory'];
  /** relationship sink for the outbox relay; `null` disables the relay */
  relationshipSink?: RelationshipSink | null;
  /** Fastify logger option (default: pino at LOG_LEVEL) */
  logger?: boolean | Record<string, unknown>;
};

/** Clock skew allowed on identity assertions, seconds (docs/CONTRACTS.md, "Identity assertion"). */
const ASSERTION_CLOCK_TOLERANCE_S = 5;

/** 1 MiB: the largest request body accepted (larger → 413 payload-too-large). */
export const BODY_LIMIT_BYTES = 1024 * 1024;

/**
 * Build (not start) the catalog API.
 * @param config validated configuration (`loadConfig()`)
 * @param deps   optional injected collaborators
 * @returns a ready Fastify instance; `close()` stops the relay and closes the pool/Redis it created
 * @throws when the ORM cannot be initialised or a plugin fails to register
 */
export async function buildCatalogApi(config: CatalogConfig, deps: CatalogDeps = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: deps.logger ?? {
      level: config.LOG_LEVEL,
      redact: ['req.headers.authorization', 'req.headers["x-identity-assertion"]'],
      serializers: { req: loggedRequest },
    },
    bodyLimit: BODY_LIMIT_BYTES,
    // Slow or stalled clients (docs: config.ts): the whole request must arrive within
    // REQUEST_TIMEOUT_MS (408), a silent socket is closed after CONNECTION_TIMEOUT_MS, an idle
    // keep-alive one after KEEP_ALIVE_TIMEOUT_MS. Node's headersTimeout (default 60 s) must not
    // exceed the request timeout.
    requestTimeout: config.REQUEST_TIMEOUT_MS,
    connectionTimeout: config.CONNECTION_TIMEOUT_MS,
    keepAliveTimeout: config.KEEP_ALIVE_TIMEOUT_MS,
    http: { headersTimeout: Math.min(60_000, config.REQUEST_TIMEOUT_MS) },
    requestIdHeader: 'x-request-id',
    // Only the sidecar's X-Forwarded-For is believed (request.ip: lockout, rate limits, sessions).
    trustProxy: config.TRUSTED_PROXIES.split(',').map((s) => s.trim()).filter(Boolean),
    routerOptions: { ignoreTrailingSlash: false, maxParamLength: 200 },
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  const ownOrm = !deps.orm;
  const orm = deps.orm ?? (await createOrm(config));
  const ownAuthOrm = !deps.authOrm;
  const authOrm = deps.authOrm ?? (await createOrm(config, 'auth'));
  // the relays and jobs run as catalog_jobs (migration 0011): catalog_app cannot execute their functions
  const ownJobsOrm = !deps.jobsOrm;
  const jobsOrm = deps.jobsOrm ?? (await createOrm(config, 'jobs'));
  const redis = createRedis(config, (err) => app.log.debug({ err: { message: err.message } }, 'redis error'));

  await app.register(problemsPlugin);
  await app.register(outboxPlugin, { orm: jobsOrm, config, sink: deps.relationshipSink });
  const routeDeps: RouteDeps = { orm, flushOutbox: () => app.outbox.flush() };

  const auth = await createAuthModule(config, { orm: authOrm, redis, flushOutbox: routeDeps.flushOutbox, log: app.log, mailer: deps.mailer, directory: deps.directory });

  app.addHook('onClose', async () => {
    await auth.close();
    redis.disconnect();
    if (ownOrm) await orm.close(true);
    if (ownAuthOrm) await authOrm.close(true);
    if (ownJobsOrm) await jobsOrm.close(true);
  });

  await app.register(rateLimitPlugin, { redis });
  await app.register(openApiPlugin, { serverUrl: config.JWT_ISSUER });
  await app.register(identityPlugin, {
    issuer: config.ASSERTION_ISSUER,
    audience: config.ASSERTION_AUDIENCE,
    jwksUrl: config.SIDECAR_JWKS_URL,
    getKey: deps.getKey,
    jwksTimeoutMs: config.JWKS_TIMEOUT_MS,
    jwksCooldownMs: config.JWKS_COOLDOWN_MS,
    clockToleranceSec: ASSERTION_CLOCK_TOLERANCE_S,
    // each assertion once, its key kept until exp + the tolerance: a replay → 401, Redis unavailable → 503 (fail closed)
    replay: createReplayGuard({ redis, prefix: config.ASSERTION_JTI_PREFIX, clockToleranceSec: ASSERTION_CLOCK_TOLERANCE_S, connectWaitMs: config.REDIS_COMMAND_TIMEOUT_MS }),
  });

  await app.register(healthPlugin, { orm, redis });
  await app.register(metricsPlugin);
  await app.register(domainEventsPlugin, { orm: jobsOrm, config });

  await app.register(formbody); // application/x-www-form-urlencoded (the OAuth token endpoint)
  const adminDeps = { ...routeDeps, auth: auth.deps, signInRateLimit: config.SIGN_IN_RATE_LIMIT_PER_MINUTE };
  await app.register(catalogRoutes, routeDeps);
  await app.register(publishersRoutes, routeDeps);
  await app.register(departmentsRoutes, routeDeps);
  await app.register(rolesRoutes, routeDeps);
  await app.register(membersRoutes, adminDeps);
  await app.register(usersRoutes, adminDeps);
  await app.register(apiClientsRoutes, adminDeps);
  await app.register(authRoutes, { ...routeDeps, auth: auth.deps, signIn: auth.signIn, account: auth.account, signInRateLimit: config.SIGN_IN_RATE_LIMIT_PER_MINUTE });
  await app.register(directoryRoutes, { ...routeDeps, directory: auth.deps.directory });
  await app.register(auditRoutes, routeDeps);
  await app.register(accountsRoutes, adminDeps);
  await app.register(trialSweepPlugin, { authOrm, intervalMs: config.TRIAL_SWEEP_INTERVAL_MS, flushOutbox: routeDeps.flushOutbox });
  await app.register(meteringPlugin, { orm: jobsOrm, authOrm, redis, prefix: config.METERING_KEY_PREFIX, rollupIntervalMs: config.METERING_ROLLUP_INTERVAL_MS, measureIntervalMs: config.METERING_MEASURE_INTERVAL_MS });
  // the security admin's endpoints (/api/v1/authz): explain, who-can, what-can, access, decisions, models
  await app.register(authzRoutes, { ...routeDeps, authOrm, fga: createAuthzFga({ apiUrl: config.OPENFGA_API_URL, storeName: config.OPENFGA_STORE_NAME, redis }), storeName: config.OPENFGA_STORE_NAME });
  await app.register(explorerPlugin); // the access explorer's static page under /explorer/

  app.addHook('onReady', async () => auth.start());
  return app;
}
