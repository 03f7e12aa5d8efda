/**
 * The sidecar's admin listener (issue 9 §2; docs/CONTRACTS.md, "Runtime and layout"): a second,
 * small Fastify instance on ADMIN_HOST:ADMIN_PORT (loopback by default) that serves only
 * `GET /metrics` (Prometheus text format) and `GET /healthz`. Every other path is a problem+json 404;
 * nothing here reaches the upstream or runs the pipeline. The public port has no /metrics of its own:
 * there a route rule decides (no rule → 404), like for any other path.
 */
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import { ProblemError, kindForStatus, sendProblem } from './problem.ts';

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
};

/**
 * Build the admin listener (does not listen).
 * @param opts.registry the sidecar's prom-client registry (metrics.ts)
 * @param opts.host / opts.port the default address of {@link SidecarAdmin.listen} (config.ts `admin`)
 * @param opts.log the sidecar's logger; the admin instance logs through a child `{listener: 'admin'}`
 * @returns the {@link SidecarAdmin}; closing `app` stops the listener (app.ts closes it with the sidecar)
 */
export function createAdmin(opts: { registry: Registry; host: string; port: number; log: FastifyBaseLogger }): SidecarAdmin {
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
    sendProblem(reply, new ProblemError(404, 'not-found', 'The admin listener serves only /metrics and /healthz.'), request.id),
  );
  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/metrics', async (_request, reply) => {
    reply.type(opts.registry.contentType);
    reply.header('cache-control', 'no-store');
    return opts.registry.metrics();
  });
  return {
    app,
    async listen(at = {}) {
      return app.listen({ host: at.host ?? opts.host, port: at.port ?? opts.port });
    },
    port() {
      const address = app.server.address();
      return address && typeof address === 'object' ? address.port : undefined;
    },
  };
}
