/**
 * The catalog's routes: works, songwriters and recordings (one {@link catalogResource} each).
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { RouteDeps } from '../common/http.ts';
import { recordingsRoutes } from './recordings.ts';
import { songwritersRoutes } from './songwriters.ts';
import { worksRoutes } from './works.ts';

/** Fastify plugin: every catalog route (paths are absolute). */
export const catalogRoutes: FastifyPluginAsyncZod<RouteDeps> = async (app, deps) => {
  await app.register(worksRoutes, deps);
  await app.register(songwritersRoutes, deps);
  await app.register(recordingsRoutes, deps);
};
