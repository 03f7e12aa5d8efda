/**
 * `GET /metrics` of the catalog API (Prometheus text format, no assertion needed, outside the OpenAPI
 * document) on the API's own port, CATALOG_PORT — which is not a public port: only the sidecar (or
 * the ext_authz proxy) reaches it, and no route rule forwards /metrics, so from outside it is a 404
 * (docs/CONTRACTS.md, "Runtime and layout"; the sidecar serves its own on its admin listener). Scrape
 * it next to the API, like the sidecar's ADMIN_PORT. One prom-client Registry
 * per instance, with the process default metrics, decorated as `app.metrics.registry` for other
 * plugins to register on (plugins/domain-events.ts: the event lag).
 */
import fp from 'fastify-plugin';
import type { FastifyInstance } from 'fastify';
import { Registry, collectDefaultMetrics } from 'prom-client';

declare module 'fastify' {
  interface FastifyInstance {
    metrics: { registry: Registry };
  }
}

/** Fastify plugin: decorates `metrics`, serves /metrics. */
export const metricsPlugin = fp(
  async (app: FastifyInstance) => {
    const registry = new Registry();
    collectDefaultMetrics({ register: registry });
    app.decorate('metrics', { registry });
    app.get('/metrics', { config: { public: true }, schema: { hide: true } }, async (_request, reply) => {
      reply.type(registry.contentType);
      return registry.metrics();
    });
  },
  { name: 'catalog-metrics' },
);
