/**
 * Domain events in the API process (events/): the lag metrics on `/metrics` (always — they read
 * the outbox, whichever process publishes it), and the relay between `onReady` and `onClose` when
 * EVENTS_RELAY is true and SQS_QUEUE_URL is set. Without a queue the events wait in the outbox
 * (the lag metric shows it; a warning says so at start). `app.domainEvents.flush()` publishes
 * what is due now (no-op without a relay).
 */
import fp from 'fastify-plugin';
import type { FastifyInstance } from 'fastify';
import type { CatalogConfig } from '../config.ts';
import type { Orm } from '../db/orm.ts';
import { registerDomainEventMetrics } from '../events/metrics.ts';
import type { EventDrainResult } from '../events/relay.ts';
import { createEventPublisher, type EventPublisher, type PublisherConfig } from '../events/runner.ts';

declare module 'fastify' {
  interface FastifyInstance {
    domainEvents: {
      /** Publish every due event now; never throws. `null` when this process runs no relay. */
      flush(): Promise<EventDrainResult | null>;
    };
  }
}

/** Options of {@link domainEventsPlugin}. */
export type DomainEventsOptions = {
  /** the relays' pool (`catalog_jobs`, JOBS_DATABASE_URL): the relay and the lag metric's `domain_events_stats()` */
  orm: Orm;
  config: PublisherConfig & Pick<CatalogConfig, 'EVENTS_RELAY'>;
};

/** Fastify plugin: decorates `domainEvents`; needs `catalog-metrics`. */
export const domainEventsPlugin = fp(
  async (app: FastifyInstance, opts: DomainEventsOptions) => {
    const metrics = registerDomainEventMetrics(app.metrics.registry, opts.orm, app.log);
    let publisher: EventPublisher | null = null;
    if (opts.config.EVENTS_RELAY && opts.config.SQS_QUEUE_URL) {
      publisher = createEventPublisher(opts.config, opts.orm, { logger: app.log, metrics });
    } else if (opts.config.EVENTS_RELAY) {
      app.log.warn('SQS_QUEUE_URL is not set: domain events are not published (they wait in the outbox)');
    }
    app.decorate('domainEvents', { flush: async () => (publisher ? publisher.relay.drain() : null) });
    app.addHook('onReady', async () => publisher?.start());
    app.addHook('onClose', async () => publisher?.stop());
  },
  { name: 'catalog-domain-events', dependencies: ['catalog-metrics'] },
);
