/**
 * The metering jobs as a Fastify plugin (rollup.ts does the work): the roll-up every
 * `rollupIntervalMs` (Redis counts → `account_usage`, limits → Redis) and the measurements every
 * `measureIntervalMs` (seats and storage → today's row), between `onReady` and `onClose`
 * (jobs/periodic-job.ts: one run at a time; a call during a run queues one more). 0 turns a
 * timer off (tests and the CLI call `app.metering.rollUp()` / `measure()` by hand). Safe with
 * several catalog API processes: each job takes an advisory lock and its writes are idempotent.
 */
import fp from 'fastify-plugin';
import type { FastifyInstance } from 'fastify';
import { measure, rollUp, type MeteringDeps, type RollupSummary } from './rollup.ts';
import { PeriodicJob } from '../../jobs/periodic-job.ts';

/** Options of {@link meteringPlugin}. Durations in milliseconds. */
export type MeteringPluginOptions = MeteringDeps & { rollupIntervalMs: number; measureIntervalMs: number };

declare module 'fastify' {
  interface FastifyInstance {
    metering: {
      /** Roll up now. @returns the summary, null when another process was rolling up or it failed (logged) */
      rollUp(): Promise<RollupSummary | null>;
      /** Measure seats and storage now. @returns publishers measured, null when skipped or failed (logged) */
      measure(): Promise<number | null>;
    };
  }
}

/** Fastify plugin: decorates `metering`, runs its jobs on timers. */
export const meteringPlugin = fp(
  async (app: FastifyInstance, opts: MeteringPluginOptions) => {
    const deps: MeteringDeps = { orm: opts.orm, authOrm: opts.authOrm, redis: opts.redis, prefix: opts.prefix };
    /** `job` as a periodic job whose failures are logged, not thrown (null). */
    const periodic = <T>(name: string, job: () => Promise<T | null>, intervalMs: number) =>
      new PeriodicJob(async () => {
        try {
          return await job();
        } catch (err) {
          app.log.warn({ err: { message: (err as Error).message } }, `metering: ${name} failed; retrying on the next tick`);
          return null;
        }
      }, intervalMs);
    const rollup = periodic('roll-up', () => rollUp(deps), opts.rollupIntervalMs);
    const measurement = periodic('measurement', () => measure(deps), opts.measureIntervalMs);
    app.decorate('metering', { rollUp: () => rollup.run(), measure: () => measurement.run() });
    app.addHook('onReady', async () => {
      rollup.start();
      measurement.start();
    });
    app.addHook('onClose', async () => {
      await Promise.all([rollup.stop(), measurement.stop()]);
    });
  },
  { name: 'catalog-metering' },
);
