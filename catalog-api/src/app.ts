/**
 * The catalog API as a Fastify instance: problem+json errors, identity assertion verification,
 * OpenAPI (/api/v1/openapi.json, UI at /docs), health (/healthz, /readyz), the catalog routes, and
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

/** Injectable collaborators (tests); production builds them from the configuration. */
export type CatalogDeps = {
  /** key resolver for identity assertions instead of fetching SIDECAR_JWKS_URL */
  getKey?: JWTVerifyGetKey;
  /** an existing ORM (not closed by the app) instead of a new pool */
  orm?: Orm;
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
    routerOptions: { ignoreTrailingSlash: false, maxParamLength: 200 },
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  const ownOrm = !deps.orm;
  const orm = deps.orm ?? (await createOrm(config));

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

  app.addHook('onClose', async () => {
    await relay?.stop();
    await closeWriter?.();
    if (ownOrm) await orm.close(true);
  });

  await app.register(problemsPlugin);
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'Catalog API', version: '1.0.0', description: 'Works, songwriters and recordings of a publisher. Reached through the authorization sidecar.' },
      components: { securitySchemes: { identityAssertion: { type: 'apiKey', in: 'header', name: 'X-Identity-Assertion' } } },
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

  app.addHook('onReady', async () => {
    relay?.start();
  });
  return app;
}
