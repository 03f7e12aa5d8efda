/**
 * The trial sweep: stamps accounts whose trial ended without a chosen plan as read-only
 * (`accounts_expire_trials()`, migration 0007, SECURITY DEFINER) every `intervalMs` — each with an
 * `account.trial_ended` audit row by the `system` actor, in the same transaction on the sign-in
 * service's pool (the role that may call it) — then delivers the outbox so every sidecar learns
 * `publisher:<p>#read_only` at once. The catalog API itself
 * needs no sweep (its request context reads the trial end from the clock); the sweep bounds how
 * long the sidecars lag behind it: intervalMs + one outbox delivery.
 */
import fp from 'fastify-plugin';
import type { FastifyInstance } from 'fastify';
import type { EntityManager } from '@mikro-orm/postgresql';
import { query, type Orm } from '../../db/orm.ts';
import { NO_REQUEST_META } from '../../db/context.ts';
import { recordAuditEvent } from '../audit/audit.service.ts';
import { PeriodicJob } from '../../jobs/periodic-job.ts';

/** Options of {@link trialSweepPlugin}. */
export type TrialSweepOptions = {
  /** the sign-in service's pool (`catalog_auth`) */
  authOrm: Orm;
  /** period, ms; 0 = no timer (tests call `app.trialSweep.run()`) */
  intervalMs: number;
  /** deliver the relationship outbox after accounts were stamped */
  flushOutbox: () => Promise<void>;
};

declare module 'fastify' {
  interface FastifyInstance {
    trialSweep: {
      /** Stamp the ended trials now (after a sweep in progress) and deliver their tuples. @returns how many were stamped; never throws (logs) */
      run(): Promise<number>;
    };
  }
}

/** Fastify plugin: decorates `trialSweep`, runs it on a timer between `onReady` and `onClose`. */
export const trialSweepPlugin = fp(
  async (app: FastifyInstance, opts: TrialSweepOptions) => {
    const sweep = async (): Promise<number> => {
      try {
        const stamped = await opts.authOrm.em.fork().transactional(async (em: EntityManager) => {
          const rows = await query<{ publisher_id: string }>(em, 'select accounts_expire_trials() as publisher_id');
          for (const { publisher_id } of rows) {
            await recordAuditEvent(em, { id: null, kind: 'system' }, NO_REQUEST_META, {
              action: 'account.trial_ended', objectType: 'account', objectId: publisher_id, publisherId: publisher_id,
              before: { read_only: false }, after: { read_only: true },
            });
          }
          return rows.length;
        });
        if (stamped > 0) {
          app.log.info({ stamped }, 'accounts: trials ended, publishers are read-only');
          await opts.flushOutbox();
        }
        return stamped;
      } catch (err) {
        app.log.warn({ err: { message: (err as Error).message } }, 'accounts: trial sweep failed; retrying on the next tick');
        return 0;
      }
    };
    const job = new PeriodicJob(sweep, opts.intervalMs);
    app.decorate('trialSweep', { run: () => job.run() });
    app.addHook('onReady', async () => job.start());
    app.addHook('onClose', async () => job.stop());
  },
  { name: 'catalog-trial-sweep', dependencies: ['catalog-outbox'] },
);
