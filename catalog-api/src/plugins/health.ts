/**
 * Health endpoints (public, outside the OpenAPI document): `GET /healthz` (the process answers) and
 * `GET /readyz` (the database answers with the app role, and Redis answers — authenticated requests
 * need it to accept each identity assertion once; else 503 problem+json naming what failed).
 */
import fp from 'fastify-plugin';
import type { FastifyInstance } from 'fastify';
import type { RedisClient } from '../../../policies/src/redis.ts';
import { checkDatabase, type Orm } from '../db/orm.ts';
import { problem } from '../errors.ts';
import { sendProblem } from './problems.ts';

/** Fastify plugin: /healthz and /readyz. */
export const healthPlugin = fp(
  async (app: FastifyInstance, opts: { orm: Orm; redis: RedisClient }) => {
    app.get('/healthz', { config: { public: true }, schema: { hide: true } }, async () => ({ status: 'ok' }));
    app.get('/readyz', { config: { public: true }, schema: { hide: true } }, async (request, reply) => {
      const [database, redis] = await Promise.all([
        checkDatabase(opts.orm),
        opts.redis.ping().then(() => true, () => false), // bounded by the client's command timeout
      ]);
      if (database && redis) return { status: 'ready' };
      const failed = [database ? null : 'the database', redis ? null : 'Redis'].filter(Boolean).join(' and ');
      return sendProblem(reply, request, problem.unavailable(`Not ready: ${failed} not reachable.`));
    });
  },
  { name: 'catalog-health' },
);
