/**
 * Assembles the sidecar (policy enforcement point) as a Fastify instance:
 * - every request: request id, then the canonical-path check on the raw target (global hook);
 * - `/healthz`, `/readyz`, `/.well-known/jwks.json`: the sidecar's own endpoints on the public port;
 *   `/metrics` is served only by the admin listener (admin.ts, ADMIN_HOST:ADMIN_PORT, loopback by
 *   default; `app.admin`), so on the public port /metrics is an ordinary path (no rule → 404);
 * - `/ext-authz[/*]`: the decision only (Envoy ext_authz HTTP service, nginx auth_request, Traefik
 *   forwardAuth); in header mode the proxy must set/overwrite the original method AND URI headers
 *   (stages/ext-authz-target.ts: nginx `proxy_set_header X-Original-Method $request_method;
 *   proxy_set_header X-Original-URI $request_uri;`) — the auth request's own method is never used;
 * - everything else: the pipeline (pipeline.ts) in the route's onRequest hook — before any body
 *   handling — then forward.ts streams to the upstream.
 * Every error is `application/problem+json` (RFC 9457), including Fastify's own 400/404/413/415
 * and Node's client errors.
 * Client-side timeouts (config.ts `server`): REQUEST_TIMEOUT_MS bounds receiving a whole request
 * (headers + body; Node's requestTimeout, checked every {@link connectionsCheckInterval} ms, and —
 * precisely — the proxied body's deadline in forward.ts) → 408; CONNECTION_TIMEOUT_MS is the socket
 * inactivity timeout; KEEP_ALIVE_TIMEOUT_MS the idle time of a kept-alive connection.
 */
import { STATUS_CODES } from 'node:http';
import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { REDIS_START_WAIT_MS, SUBSCRIBER_OPTIONS, connectRedis, createRedisClient, createRedisSubscriber, type RedisClient, type RedisConnectionConfig } from '../../policies/src/redis.ts';
import { modelContent } from '../../policies/src/model.ts';
import { resolveActiveModel, watchActiveModel } from '../../policies/src/active-model.ts';
import { loadRouteRules, loggedRequest, validateRoutesAgainstModel } from '../../policies/src/routes.ts';
import type { SidecarConfig } from './config.ts';
import { createAssertionSigner } from './identity/assertion.ts';
import { createMetrics } from './metrics.ts';
import { createAdmin, type SidecarAdmin } from './admin.ts';
import { createMeteringFlusher } from './metering/flusher.ts';
import { createMeter } from './metering/meter.ts';
import { createDecisionLog } from './decision-log.ts';
import { createAccessLog } from './access-log.ts';
import { createDecisionCache } from './pdp/decision-cache.ts';
import { createEpochView } from './pdp/epoch-view.ts';
import { createOpenFgaPdp } from './pdp/openfga.ts';
import { runPipeline, type PipelineDeps, type PipelineResult } from './pipeline.ts';
import { ProblemError, kindForStatus, problemBody, sendProblem } from './problem.ts';
import { createJwtAuthenticator } from './stages/authenticate.ts';
import { createSessionRevocations } from './identity/session-revocations.ts';
import { checkCanonicalPath, type CanonicalTarget } from './stages/canonical-path.ts';
import { EXT_AUTHZ, extAuthzTarget } from './stages/ext-authz-target.ts';
import { createForwarder, hasBody } from './stages/forward.ts';
import { requestIdFrom } from './stages/mutate-headers.ts';
import { compileRoutes } from './stages/route.ts';
import { createRateLimits } from './stages/rate-limit.ts';
import type { MeteringDeps } from './stages/meter.ts';

declare module 'fastify' {
  interface FastifyRequest {
    sidecarRequestId: string;
    pipeline: PipelineResult | null;
    /** The request target checked and split by the onRequest hook (canonical-path stage). */
    canonicalTarget: CanonicalTarget | null;
  }
}

/** Methods the proxy route accepts (Fastify's supported set; others get a problem+json 404). */
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE', 'QUERY'];

/**
 * How often (ms) Node checks connections against requestTimeout/headersTimeout: a tenth of the
 * request timeout, within 50…1000 ms (Node's default, 30 s, would let a request overrun by that much).
 */
export function connectionsCheckInterval(requestTimeoutMs: number): number {
  return Math.min(1000, Math.max(50, Math.floor(requestTimeoutMs / 10)));
}


/** The sidecar's Fastify instance (the public listener) with its admin listener. */
export type SidecarInstance = FastifyInstance & {
  /** The admin listener (/metrics, /healthz): `await app.admin.listen()` after `app.listen()`; closed with `app`. */
  admin: SidecarAdmin;
};

/**
 * A Redis client (single, cluster or sentinel: policies/src/redis.ts) that fails fast instead of
 * queueing (no offline queue, one retry, a command timeout in ms) and reconnects on its own every
 * ≤ 2 s; not connected yet (`lazyConnect`). Its 'error' events are swallowed: each user reports
 * outages once in its own way.
 */
function fastFailRedis(conn: RedisConnectionConfig, commandTimeoutMs: number): RedisClient {
  const client = createRedisClient(conn, {
    lazyConnect: true,
    commandTimeout: commandTimeoutMs,
    connectTimeout: 1000,
    enableOfflineQueue: false,
    enableAutoPipelining: true,
    maxRetriesPerRequest: 1,
    retryStrategy: (times) => Math.min(times * 200, 2000),
  });
  client.on('error', () => undefined);
  return client;
}

/**
 * Build the sidecar: find the store's active model (policies/src/active-model.ts: the id in Redis,
 * else the newest; the local model is written only into an empty store) and follow it — a
 * published change is used within MODEL_POLL_INTERVAL_MS without a restart — load and validate
 * the route rules against it, connect Redis (lazily; a down Redis degrades the
 * decision cache, and session-bound tokens get 503 once the revocation view is older than its
 * bound), load the assertion signing key, set up the API-call metering (its flusher starts when
 * the server is ready), register all routes and build the admin listener. Listens on neither port.
 * @param config from `loadConfig()` (config.ts).
 * @param opts.logStream where pino writes the log lines (default stdout).
 * @param opts.epochSubscriber the subscriber connection of the epoch view (default: a new one to
 *   REDIS_URL; tests pass one through a fault proxy to silence the push channel alone).
 * @returns the Fastify instance with `admin` (admin.ts: `admin.listen()` binds ADMIN_HOST:ADMIN_PORT);
 *   `close()` also closes the admin listener, flushes the metering counters and closes the upstream
 *   pool and Redis.
 * @throws when OpenFGA is unreachable at start (the model cannot be pinned), the route rules are
 *   invalid or name relations missing from the model, or the signing key is unreadable.
 */
export async function buildSidecar(
  config: SidecarConfig,
  opts: { logStream?: { write(line: string): void }; epochSubscriber?: import('ioredis').Redis } = {},
): Promise<SidecarInstance> {
  const app = Fastify({
    logger: {
      level: config.logLevel,
      // credential path segments (invitation tokens) never reach the logs
      serializers: { req: loggedRequest },
      ...(opts.logStream ? { stream: opts.logStream } : {}), // tests read the lines
    },
    genReqId: (req) => requestIdFrom(req.headers),
    // one sampled, rate-capped line per request instead of two (access-log.ts; onResponse below)
    logController: new LogController({ disableRequestLogging: true }),
    return503OnClosing: true,
    bodyLimit: config.upstream.bodyLimitBytes,
    requestTimeout: config.server.requestTimeoutMs,
    connectionTimeout: config.server.connectionTimeoutMs,
    keepAliveTimeout: config.server.keepAliveTimeoutMs,
    http: {
      headersTimeout: config.server.requestTimeoutMs,
      connectionsCheckingInterval: connectionsCheckInterval(config.server.requestTimeoutMs),
    },
    routerOptions: { ignoreTrailingSlash: false, ignoreDuplicateSlashes: false, caseSensitive: true },
    clientErrorHandler: (err, socket) => {
      // Node's parser rejected the request (bad request line/headers) or the request timed out:
      // answer RFC 9457 and close — unless a response is already under way on this socket.
      const pending = (socket as { _httpMessage?: { headersSent?: boolean } })._httpMessage;
      if (!socket.writable || pending?.headersSent) return socket.destroy(err);
      const code = (err as { code?: string }).code;
      const status = code === 'HPE_HEADER_OVERFLOW' ? 431 : code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
      const body = JSON.stringify(problemBody(status, 'bad-request', 'The request could not be parsed.'));
      socket.end(
        `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/problem+json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    },
    frameworkErrors: (err, req, reply) => {
      // Fastify's router rejects malformed URLs (bad %-escapes) before our hooks: report the
      // canonical-path verdict when there is one, so the kind is the same either way.
      try {
        checkCanonicalPath(req.raw.url);
      } catch (canonical) {
        if (canonical instanceof ProblemError) return void sendProblem(reply, canonical, req.id);
      }
      const status = (err as { statusCode?: number }).statusCode ?? 400;
      void sendProblem(reply, new ProblemError(status, kindForStatus(status), 'The request could not be routed.'), req.id);
    },
  });
  const log = app.log;

  // --- dependencies --------------------------------------------------------------------------
  const redis = fastFailRedis(config.redis, config.redis.commandTimeoutMs); // outages: reported by the decision cache / readyz
  await connectRedis(redis, REDIS_START_WAIT_MS).catch((err: Error) => log.warn({ err: { message: err.message } }, 'redis not reachable at start; deciding without the cache'));
  // The active model (policies/src/active-model.ts): the id in Redis, else the store's newest;
  // the local model file is written only into an empty store (a start never overwrites a deploy).
  const active = await resolveActiveModel({
    apiUrl: config.openfga.apiUrl,
    storeName: config.openfga.storeName,
    redis,
    log,
    ...(config.openfga.modelFile ? { modelFile: config.openfga.modelFile } : {}),
  });
  const { storeId } = active;
  log.info({ storeId, modelId: active.modelId, source: active.source }, 'authorization model in use');
  const rules = loadRouteRules(config.routesFile);
  validateRoutesAgainstModel(rules, modelContent(active.model));
  const routes = compileRoutes(rules);
  // A subscribed connection can do nothing else: the revocation push channel gets its own.
  // (on a cluster: a plain connection to one node, moving to another on reconnect — policies/src/redis.ts)
  const subscriber = createRedisSubscriber(config.redis, SUBSCRIBER_OPTIONS, redis);
  const revocations = createSessionRevocations({ redis, subscriber, ...config.revocations, log });
  await revocations.start();

  const metrics = createMetrics();
  // Hot model switch: pushed ids (own subscriber connection) and a poll every MODEL_POLL_INTERVAL_MS;
  // a model the route rules do not fit is refused, the current one kept.
  const modelSubscriber = createRedisSubscriber(config.redis, SUBSCRIBER_OPTIONS, redis);
  const model = watchActiveModel({
    redis,
    subscriber: modelSubscriber,
    apiUrl: config.openfga.apiUrl,
    storeId,
    initial: active.modelId,
    check: (m) => validateRoutesAgainstModel(rules, modelContent(m)),
    onChange: (id) => {
      metrics.model.use(id);
      metrics.model.switches.inc();
    },
    onRejected: () => metrics.model.rejected.inc(),
    pollMs: config.openfga.modelPollMs,
    timeoutMs: 2 * config.openfga.timeoutMs,
    log,
  });
  metrics.model.use(active.modelId);
  await model.start();
  // several OpenFGA instances: round-robin over the healthy ones (pdp/openfga.ts)
  const pdp = createOpenFgaPdp({ apiUrls: config.openfga.apiUrls, storeId, modelId: model, timeoutMs: config.openfga.timeoutMs, healthIntervalMs: config.openfga.healthIntervalMs, metrics: metrics.openfga });
  // Epochs held in process, kept current by pushed bumps (own subscriber connection); stale beyond
  // EPOCH_STALENESS_MS → per-request MGET (pdp/epoch-view.ts). EPOCH_STALENESS_MS=0: no view.
  // Without the decision cache it still tells when OpenFGA's caches may be used (decision-cache.ts).
  const epochView =
    config.cache.epochStalenessMs > 0 && (config.cache.ttlMs > 0 || config.openfga.cacheBypassMs > 0)
      ? createEpochView({
          redis,
          subscriber: opts.epochSubscriber ?? createRedisSubscriber(config.redis, SUBSCRIBER_OPTIONS, redis),
          storeId,
          maxEntries: config.cache.maxEntries,
          stalenessMs: config.cache.epochStalenessMs,
          recentMs: config.openfga.cacheBypassMs,
          log,
        })
      : undefined;
  await epochView?.start();
  if (epochView) metrics.epochView.observe(() => ({ staleSeconds: epochView.staleForMs() / 1000 }));
  const cache = createDecisionCache({ redis, pdp, storeId, modelId: model, ttlMs: config.cache.ttlMs, maxEntries: config.cache.maxEntries, metrics, log, cacheBypassMs: config.openfga.cacheBypassMs, ...(epochView ? { epochView } : {}) });
  const signer = await createAssertionSigner({
    keyFile: config.assertion.signingKeyFile,
    issuer: config.assertion.issuer,
    audience: config.assertion.audience,
    warn: (m) => log.warn(m),
  });
  const tokenCache = { hit: metrics.tokenCache.labels('hit'), miss: metrics.tokenCache.labels('miss') };
  const authenticators = [createJwtAuthenticator({ ...config.jwt, onCache: (result) => tokenCache[result].inc() })];
  const forwarder = createForwarder(config.upstream, metrics.upstream);

  // Metering: counters in process, flushed to Redis on a connection of their own (a slow flush
  // never delays a decision-cache read); limits re-read from Redis (docs/CONTRACTS.md, "Metering").
  const meter = createMeter({ maxKeys: config.metering.maxKeys, onDrop: () => metrics.metering.dropped.inc() });
  const meteringRedis = fastFailRedis(config.redis, config.metering.commandTimeoutMs); // outages: reported by the flusher
  // the three connections below connect at once; the start waits for them together, at most REDIS_START_WAIT_MS
  const connecting = [connectRedis(meteringRedis, REDIS_START_WAIT_MS)];
  const flusher = createMeteringFlusher({ meter, redis: meteringRedis, prefix: config.metering.prefix, intervalMs: config.metering.flushIntervalMs, reloadMs: config.metering.reloadMs, metrics: metrics.metering, log });
  for (const path of config.metering.neverBlock) {
    if (!rules.some((r) => r.path === path)) log.warn({ path }, 'METERING_NEVER_BLOCK names a path no route rule has');
  }
  const metering: MeteringDeps = {
    meter,
    neverBlock: new Set(config.metering.neverBlock),
    overLimit: { blocked: metrics.metering.overLimit.labels('blocked'), warned: metrics.metering.overLimit.labels('warned') },
  };
  // Rate limits: counters in Redis on a connection of their own that fails fast (no offline queue,
  // a short command timeout), so a slow Redis costs a request at most that long (stages/rate-limit.ts).
  const rateLimitRedis = fastFailRedis(config.redis, config.rateLimits.commandTimeoutMs); // outages: sidecar_rate_limit_local_total
  connecting.push(connectRedis(rateLimitRedis, REDIS_START_WAIT_MS));
  const rateLimits = createRateLimits({
    redis: rateLimitRedis,
    ...config.rateLimits,
    onLimited: (kind) => metrics.rateLimited.labels(kind).inc(),
    onLocal: (kind) => metrics.rateLimitLocal.labels(kind).inc(),
    onReserve: (kind) => metrics.rateLimitReservations.labels(kind).inc(),
  });
  // Decision log: ring buffer + log line + span per decision; its Redis stream on a connection of
  // its own that fails fast (a slow append never delays a decision-cache read).
  const decisionLogRedis = fastFailRedis(config.redis, config.metering.commandTimeoutMs); // outages: sidecar_decision_log_dropped_total
  connecting.push(connectRedis(decisionLogRedis, REDIS_START_WAIT_MS));
  await Promise.all(connecting.map((c) => c.catch(() => undefined))); // outages: reported by each user
  const decisionLog = createDecisionLog({ ...config.decisionLog, log, redis: decisionLogRedis, storeId, modelId: () => model.current, metrics: metrics.decisionLog });
  const deps: PipelineDeps = { routes, authenticators, cache, signer, revocations, metering, rateLimits, decisionLog, conditionTimeBucketMs: config.cache.conditionTimeBucketMs };

  const admin = createAdmin({ registry: metrics.registry, host: config.admin.host, port: config.admin.port, log, decisions: (q) => decisionLog.recent(q) });
  app.decorate('admin', admin);

  app.addHook('onReady', async () => flusher.start());
  app.addHook('onReady', async () => decisionLog.start());
  app.addHook('onClose', async () => {
    await admin.app.close(); // no scrape outlives the sidecar
    await flusher.close(); // after the last request: flush what it counted
    await decisionLog.close(); // and append the last decisions
    await forwarder.close().catch(() => undefined);
    await pdp.close?.().catch(() => undefined);
    await revocations.close();
    await model.close();
    await epochView?.close();
    redis.disconnect();
    rateLimitRedis.disconnect();
  });

  // --- errors --------------------------------------------------------------------------------
  app.setErrorHandler((err, request, reply) => {
    if (err instanceof ProblemError) {
      if (err.status >= 500) request.log.warn({ kind: err.kind, cause: (err.cause as Error | undefined)?.message }, err.message);
      return sendProblem(reply, err, request.id);
    }
    const e = err as { statusCode?: number; message?: string };
    const status = e.statusCode && e.statusCode >= 400 && e.statusCode < 600 ? e.statusCode : 500;
    if (status >= 500) request.log.error({ err }, 'unhandled error');
    const detail = status >= 500 ? 'An internal error occurred.' : (e.message ?? 'Bad request.');
    return sendProblem(reply, new ProblemError(status, kindForStatus(status), detail), request.id);
  });
  app.setNotFoundHandler((request, reply) =>
    sendProblem(reply, new ProblemError(404, 'not-found', 'No route rule matches this method and path.'), request.id),
  );

  // --- bodies: never parsed, never buffered: the raw stream is forwarded -----------------------
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, payload, done) => done(null, payload));

  // --- every request: request id + canonical target --------------------------------------------
  app.decorateRequest('sidecarRequestId', '');
  app.decorateRequest('pipeline', null);
  app.decorateRequest('canonicalTarget', null);
  app.addHook('onRequest', async (request, reply) => {
    request.sidecarRequestId = request.id;
    reply.header('x-request-id', request.id);
    request.canonicalTarget = checkCanonicalPath(request.raw.url);
  });
  const accessLogged = { written: metrics.accessLog.labels('written'), sampled_out: metrics.accessLog.labels('sampled_out'), capped: metrics.accessLog.labels('capped') };
  const accessLog = createAccessLog({ ...config.accessLog, enabled: ['info', 'debug', 'trace'].includes(config.logLevel), count: (o) => accessLogged[o].inc() });
  app.addHook('onResponse', (request, reply, done) => {
    accessLog.record(request.log, { req: () => loggedRequest({ method: request.method, url: request.raw.url, headers: request.headers, ip: request.ip }), statusCode: reply.statusCode, responseTimeMs: reply.elapsedTime });
    done();
  });

  const pipelineFor = (request: FastifyRequest, reply: FastifyReply, method: string, rawTarget: string | undefined, htuPrefix: string) =>
    runPipeline(deps, {
      method,
      rawTarget,
      // the proxy's target was checked by the onRequest hook; ext_authz's original URI was not
      canonical: rawTarget === request.raw.url ? (request.canonicalTarget ?? undefined) : undefined,
      htuPrefix,
      headers: request.headers,
      rawHeaders: request.raw.rawHeaders,
      requestId: request.id,
      // the TCP peer, or the client a trusted proxy names (TRUSTED_PROXIES): rate limits, shares, X-Forwarded-For
      clientIp: rateLimits.clientAddress(request.socket.remoteAddress, request.headers),
      proto: (request.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http',
      setResponseHeader: (k, v) => void reply.header(k, v),
    });

  // --- own endpoints -----------------------------------------------------------------------------
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_request, reply) => {
    const [openfga, redisOk, upstream] = await Promise.all([
      pdp.probe!(1000).then((healthy) => healthy > 0), // ready while ≥ 1 OpenFGA instance is healthy
      redis.ping().then(() => true, () => false), // bounded by commandTimeout; fails at once while disconnected
      forwarder.probe(1000),
    ]);
    const stale = revocations.staleForMs();
    const sessionsOk = stale <= config.revocations.maxStalenessMs;
    const checks = {
      openfga: openfga ? 'ok' : 'fail',
      redis: redisOk ? 'ok' : 'degraded',
      upstream: upstream ? 'ok' : 'fail',
      // stale beyond the bound: session-bound tokens get 503 until Redis answers again
      session_revocations: stale === 0 ? 'ok' : sessionsOk ? 'degraded' : 'fail',
    };
    if (!openfga || !upstream) {
      const kind = openfga ? 'upstream-unavailable' : 'pdp-unavailable';
      const failed = Object.entries(checks).filter(([, v]) => v === 'fail').map(([k]) => k);
      return reply
        .code(503)
        .type('application/problem+json')
        .send({ ...problemBody(503, kind, `Not ready: ${failed.join(', ')} unavailable.`), checks, model_id: model.current });
    }
    // Redis is only a cache: without it decisions are still correct (just slower) → ready, degraded.
    return { status: redisOk ? 'ok' : 'degraded', checks, model_id: model.current }; // the authorization model deciding now
  });
  app.get('/.well-known/jwks.json', async (_request, reply) => {
    reply.header('cache-control', 'public, max-age=300');
    return signer.jwks();
  });

  // --- /ext-authz: the decision only ---------------------------------------------------------
  const extAuthz = async (request: FastifyRequest, reply: FastifyReply) => {
    const { method, target } = extAuthzTarget(request.method, request.raw.url ?? '', request.headers);
    const result = await pipelineFor(request, reply, method, target, ''); // htu: the original path
    if (result.assertion) reply.header('x-identity-assertion', result.assertion);
    if (result.publisherId) reply.header('x-publisher-id', result.publisherId);
    reply.header('cache-control', 'no-store');
    return reply.code(200).send();
  };
  app.route({ method: METHODS, url: EXT_AUTHZ, exposeHeadRoute: false, handler: extAuthz });
  app.route({ method: METHODS, url: `${EXT_AUTHZ}/*`, exposeHeadRoute: false, handler: extAuthz });

  // --- the proxy ---------------------------------------------------------------------------------
  app.route({
    method: METHODS,
    url: '/*',
    exposeHeadRoute: false,
    onRequest: async (request, reply) => {
      request.pipeline = await pipelineFor(request, reply, request.method, request.raw.url, forwarder.basePath);
    },
    handler: async (request, reply) => {
      const result = request.pipeline!;
      return forwarder.forward(
        {
          method: request.method,
          pathAndQuery: request.raw.url!,
          headers: result.upstreamHeaders,
          body: hasBody(request.headers) ? request.raw : undefined,
          // The whole request must be received within REQUEST_TIMEOUT_MS of its start.
          bodyDeadlineMs: config.server.requestTimeoutMs - reply.elapsedTime,
          // Whose shares of the upstream slots and the buffer it uses (anonymous: the client's address).
          owner: { subject: result.identity?.subject ?? `ip:${result.clientIp}`, publisher: result.publisherId },
        },
        reply,
      );
    },
  });

  return app as unknown as SidecarInstance; // `admin` was decorated above
}
