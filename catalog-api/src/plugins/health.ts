/**
 * Health endpoints (public, outside the OpenAPI document): `GET /healthz` (the process answers) and
 * `GET /readyz` (the database answers with the app role; else 503 problem+json).
 */
import fp from 'fastify-plugin';
import type { FastifyInstance } from 'fastify';
import { checkDatabase, type Orm } from '../db/orm.ts';
import { problem } from '../errors.ts';
import { sendProblem } from './problems.ts';

/** Fastify plugin: /healthz and /readyz. */
export const healthPlugin = fp(
  async (app: FastifyInstance, opts: { orm: Orm }) => {
    app.get('/healthz', { config: { public: true }, schema: { hide: true } }, async () => ({ status: 'ok' }));
    app.get('/readyz', { config: { public: true }, schema: { hide: true } }, async (request, reply) => {
      if (await checkDatabase(opts.orm)) return { status: 'ready' };
      return sendProblem(reply, request, problem.unavailable('The database is not reachable.'));
    });
  },
  { name: 'catalog-health' },
);
