/**
 * `GET /metrics` of the catalog API (Prometheus text format, public, outside the OpenAPI document;
 * reached on the API's own port — the sidecar answers its own /metrics): one prom-client Registry
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
