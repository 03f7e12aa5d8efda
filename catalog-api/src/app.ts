/**
 * The catalog API as a Fastify instance: problem+json errors, identity assertion verification,
 * OpenAPI (/api/v1/openapi.json, UI at /docs), health (/healthz, /readyz), the catalog routes, the
 * sign-in service (modules/auth, on its own database role) with the directory configuration, and
 * the relationship outbox relay.
 */
import Fastify, { type FastifyInstance } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { jsonSchemaTransform, serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import type { JWTVerifyGetKey } from 'jose';
import { z } from 'zod';
import type { CatalogConfig } from './config.ts';
import { checkDatabase, createOrm, type Orm } from './db/orm.ts';
import { problem } from './errors.ts';
import { identityPlugin } from './plugins/identity.ts';
import { problemsPlugin, sendProblem } from './plugins/problems.ts';
import { OutboxRelay, type RelationshipSink } from './outbox/relay.ts';
import { worksRoutes } from './routes/works.ts';
import { songwritersRoutes } from './routes/songwriters.ts';
import { recordingsRoutes } from './routes/recordings.ts';
import { usersRoutes } from './routes/users.ts';
import type { RouteDeps } from './routes/common.ts';
import { rateLimitPlugin } from './plugins/rate-limit.ts';
import { createRedis } from './redis.ts';
import { createAuthModule, type AuthModuleParts } from './modules/auth/module.ts';
import { authRoutes } from './modules/auth/routes.ts';
import { directoryRoutes } from './modules/directory/routes.ts';

/** Injectable collaborators (tests); production builds them from the configuration. */
export type CatalogDeps = {
  /** key resolver for identity assertions instead of fetching SIDECAR_JWKS_URL */
  getKey?: JWTVerifyGetKey;
  /** an existing ORM (not closed by the app) instead of a new pool */
  orm?: Orm;
  /** an existing ORM on AUTH_DATABASE_URL (not closed by the app) for the sign-in service */
  authOrm?: Orm;
  /** mail queue and directory gateway of the sign-in service (tests) */
  mailer?: AuthModuleParts['mailer'];
  directory?: AuthModuleParts['directory'];
  /** relationship sink for the outbox relay; `null` disables the relay */
  relationshipSink?: RelationshipSink | null;
  /** Fastify logger option (default: pino at LOG_LEVEL) */
  logger?: boolean | Record<string, unknown>;
};

/** 1 MiB: the largest request body accepted (larger → 413 payload-too-large). */
export const BODY_LIMIT_BYTES = 1024 * 1024;

/**
 * A sink that builds the real `RelationshipWriter` on first use (so the API starts while OpenFGA is
 * still coming up; until then deliveries fail and are retried).
 */
function lazyWriter(config: CatalogConfig): { sink: RelationshipSink; close: () => Promise<void> } {
  let handle: Promise<{ sink: RelationshipSink; close: () => Promise<void> }> | null = null;
  return {
    sink: {
      async write(change) {
        if (!handle) {
          const { createRelationshipWriter } = await import('./outbox/writer.ts');
          handle = createRelationshipWriter(config);
          handle.catch(() => (handle = null));
        }
        return (await handle).sink.write(change);
      },
    },
    close: async () => {
      if (handle) await (await handle.catch(() => null))?.close();
    },
  };
}

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
  const redis = createRedis(config, (err) => app.log.debug({ err: { message: err.message } }, 'redis error'));

  let relay: OutboxRelay | null = null;
  let closeWriter: (() => Promise<void>) | null = null;
  if (deps.relationshipSink !== null && (deps.relationshipSink || config.OUTBOX_RELAY)) {
    let sink = deps.relationshipSink;
    if (!sink) {
      const lazy = lazyWriter(config);
      sink = lazy.sink;
      closeWriter = lazy.close;
    }
    relay = new OutboxRelay({ orm, sink, logger: app.log, batchSize: config.OUTBOX_BATCH_SIZE, intervalMs: config.OUTBOX_INTERVAL_MS });
  }
  const routeDeps: RouteDeps = {
    orm,
    flushOutbox: async () => {
      if (relay) await relay.drain();
    },
  };

  const auth = await createAuthModule(config, { orm: authOrm, redis, flushOutbox: routeDeps.flushOutbox, log: app.log, mailer: deps.mailer, directory: deps.directory });

  app.addHook('onClose', async () => {
    await auth.close();
    await relay?.stop();
    await closeWriter?.();
    redis.disconnect();
    if (ownOrm) await orm.close(true);
    if (ownAuthOrm) await authOrm.close(true);
  });

  await app.register(problemsPlugin);
  await app.register(rateLimitPlugin, { redis });
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'Catalog API', version: '1.0.0', description: 'Works, songwriters and recordings of a publisher. Reached through the authorization sidecar.' },
      components: { securitySchemes: { identityAssertion: { type: 'apiKey', in: 'header', name: 'X-Identity-Assertion' } } },
      tags: [
        { name: 'auth', description: 'Sign-in, sessions, password and email flows, the issuer metadata and keys' },
        { name: 'users', description: 'The caller and their account' },
        { name: 'members', description: 'Members of a publisher' },
        { name: 'directory', description: "Publishers' Active Directory configuration (system admins)" },
        { name: 'works', description: 'Musical works and their songwriter splits' },
        { name: 'songwriters', description: 'Songwriters' },
        { name: 'recordings', description: 'Recordings of works' },
      ],
      security: [{ identityAssertion: [] }],
    },
    transform: jsonSchemaTransform,
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  await app.register(identityPlugin, {
    issuer: config.ASSERTION_ISSUER,
    audience: config.ASSERTION_AUDIENCE,
    jwksUrl: config.SIDECAR_JWKS_URL,
    getKey: deps.getKey,
    jwksTimeoutMs: config.JWKS_TIMEOUT_MS,
    jwksCooldownMs: config.JWKS_COOLDOWN_MS,
  });

  app.get('/healthz', { config: { public: true }, schema: { hide: true } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { config: { public: true }, schema: { hide: true } }, async (request, reply) => {
    if (await checkDatabase(orm)) return { status: 'ready' };
    return sendProblem(reply, request, problem.unavailable('The database is not reachable.'));
  });
  app.get('/api/v1/openapi.json', { config: { public: true }, schema: { hide: true, response: { 200: z.any() } } }, async () => app.swagger());

  await app.register(worksRoutes, routeDeps);
  await app.register(songwritersRoutes, routeDeps);
  await app.register(recordingsRoutes, routeDeps);
  await app.register(usersRoutes, routeDeps);
  await app.register(authRoutes, { ...routeDeps, auth: auth.deps, signIn: auth.signIn, account: auth.account, signInRateLimit: config.SIGN_IN_RATE_LIMIT_PER_MINUTE });
  await app.register(directoryRoutes, { ...routeDeps, directory: auth.deps.directory });

  app.addHook('onReady', async () => {
    relay?.start();
    auth.start();
  });
  return app;
}
