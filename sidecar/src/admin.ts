/**
 * The sidecar's admin listener (issue 9 §2; docs/CONTRACTS.md, "Runtime and layout"): a second,
 * small Fastify instance on ADMIN_HOST:ADMIN_PORT (loopback by default) that serves only
 * `GET /metrics` (Prometheus text format), `GET /healthz` and `GET /decisions?limit=&allowed=` (the
 * decision log's ring buffer, newest first: `{decisions: DecisionRecord[]}`; decision-log.ts).
 * Every other path is a problem+json 404;
 * nothing here reaches the upstream or runs the pipeline. The public port has no /metrics of its own:
 * there a route rule decides (no rule → 404), like for any other path.
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import { ProblemError, kindForStatus, sendProblem } from './problem.ts';
import type { DecisionRecord } from '../../policies/src/decision-log.ts';

/** The admin listener of one sidecar instance. */
export type SidecarAdmin = {
  /** The admin Fastify instance (not listening until {@link SidecarAdmin.listen}; `inject` works). */
  app: FastifyInstance;
  /**
   * Listen on `host`:`port` (default: the configured ADMIN_HOST / ADMIN_PORT; port 0 = a free one).
   * @returns the listener's URL, e.g. `http://127.0.0.1:9464`
   * @throws when the address cannot be bound (EADDRINUSE, EACCES …)
   */
  listen(opts?: { host?: string; port?: number }): Promise<string>;
  /** The bound port, or undefined while not listening. */
  port(): number | undefined;
  /** The registry /metrics serves (main.ts hands it to the primary's aggregation under SIDECAR_WORKERS > 1). */
  registry: Registry;
};

/**
 * Build the admin listener (does not listen).
 * @param opts.registry the sidecar's prom-client registry (metrics.ts)
 * @param opts.host / opts.port the default address of {@link SidecarAdmin.listen} (config.ts `admin`)
 * @param opts.log the sidecar's logger; the admin instance logs through a child `{listener: 'admin'}`
 * @param opts.decisions the decision log's `recent` (decision-log.ts), or — the cluster primary
 *   (workers.ts) — a merge of every worker's; without it /decisions is a 404.
 *   `GET /decisions`: `limit` 1…10000 [100], `allowed` `true`|`false` [both]; others → 400 problem+json
 * @param opts.metricsText what /metrics answers instead of `registry.metrics()` (the cluster
 *   primary: prom-client's AggregatorRegistry `clusterMetrics()`, the workers' registries summed)
 * @returns the {@link SidecarAdmin}; closing `app` stops the listener (app.ts closes it with the sidecar)
 */
export function createAdmin(opts: {
  registry: Registry;
  host: string;
  port: number;
  log: FastifyBaseLogger;
  decisions?: (q: { limit?: number; allowed?: boolean }) => DecisionRecord[] | Promise<DecisionRecord[]>;
  metricsText?: () => Promise<string>;
}): SidecarAdmin {
  const app = Fastify({
    // warn and above only: no per-request info lines for every scrape
    loggerInstance: opts.log.child({ listener: 'admin' }, { level: 'warn' }),
    routerOptions: { ignoreTrailingSlash: false, ignoreDuplicateSlashes: false, caseSensitive: true },
  });
  app.setErrorHandler((err, request, reply) => {
    const status = (err as { statusCode?: number }).statusCode;
    const code = status && status >= 400 && status < 600 ? status : 500;
    if (code >= 500) request.log.error({ err }, 'admin listener error');
    return sendProblem(reply, new ProblemError(code, kindForStatus(code), code >= 500 ? 'An internal error occurred.' : 'Bad request.'), request.id);
  });
  app.setNotFoundHandler((request, reply) =>
    sendProblem(reply, new ProblemError(404, 'not-found', 'The admin listener serves only /metrics, /healthz and /decisions.'), request.id),
  );
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/metrics', async (_request, reply) => {
    reply.type(opts.registry.contentType);
    reply.header('cache-control', 'no-store');
    return opts.metricsText ? opts.metricsText() : opts.registry.metrics();
  });
  const decisions = opts.decisions;
  if (decisions) {
    app.get('/decisions', async (request, reply) => {
      const q = request.query as Record<string, string | string[] | undefined>;
      const limit = q.limit === undefined ? 100 : /^\d{1,5}$/.test(String(q.limit)) ? Number(q.limit) : NaN;
      const allowed = q.allowed === undefined ? undefined : q.allowed === 'true' ? true : q.allowed === 'false' ? false : null;
      if (!(limit >= 1 && limit <= 10_000) || allowed === null) {
        return sendProblem(reply, new ProblemError(400, 'bad-request', 'limit must be 1…10000 and allowed true or false.'), request.id);
      }
      reply.header('cache-control', 'no-store');
      return { decisions: await decisions({ limit, ...(allowed === undefined ? {} : { allowed }) }) };
    });
  }
  return {
    app,
    registry: opts.registry,
    async listen(at = {}) {
      return app.listen({ host: at.host ?? opts.host, port: at.port ?? opts.port });
    },
    port() {
      const address = app.server.address();
      return address && typeof address === 'object' ? address.port : undefined;
    },
  };
}
