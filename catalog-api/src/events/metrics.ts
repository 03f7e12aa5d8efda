/**
 * Prometheus metrics of the domain-event outbox (prom-client), registered on a given registry:
 *
 * - `catalog_domain_events_lag_seconds`: age of the oldest unpublished event (0 when none) — the
 *   lag metric; `catalog_domain_events_pending`, `catalog_domain_events_dead_letters` (open). These
 *   three are read from the database at scrape time (`domain_events_stats()`, one query per
 *   scrape), so they are right whichever process publishes; NaN when the database cannot answer.
 * - `catalog_domain_events_published_total`, `catalog_domain_events_failed_attempts_total{fault}`
 *   (`event`: SQS refused the entry or it is too large; `queue`: the call failed),
 *   `catalog_domain_events_dead_lettered_total`: what this process's relay did.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Orm } from '../db/orm.ts';
import type { Logger } from '../logger.ts';
import { eventStats, type EventStats } from './outbox.ts';
import type { RelayMetrics } from './relay.ts';

/**
 * Register the gauges and counters on `registry`.
 * @returns the counters for the relay ({@link RelayMetrics})
 * @throws when metrics of these names are already registered there
 */
export function registerDomainEventMetrics(registry: Registry, orm: Orm, log?: Logger): RelayMetrics {
  // One stats query per scrape: the lag gauge (registered first, so collected first) queries, the
  // other two gauges of the same scrape reuse its answer.
  let current: Promise<EventStats | null> | null = null;
  const fetchStats = (): Promise<EventStats | null> =>
    (current = eventStats(orm).catch((err: Error) => {
      log?.warn({ err: { message: err.message } }, 'domain events: stats unavailable');
      return null;
    }));
  const gauge = (name: string, help: string, pick: (s: EventStats) => number, fresh: boolean) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      async collect() {
        const s = await (fresh || !current ? fetchStats() : current);
        this.set(s ? pick(s) : Number.NaN);
      },
    });
  gauge('catalog_domain_events_lag_seconds', 'Age of the oldest domain event not yet published to SQS, seconds (0 when none)', (s) => s.lagSeconds, true);
  gauge('catalog_domain_events_pending', 'Domain events not yet published to SQS', (s) => s.pending, false);
  gauge('catalog_domain_events_dead_letters', 'Open dead letters (each holds the later events of its publisher back)', (s) => s.deadLetters, false);

  const published = new Counter({ name: 'catalog_domain_events_published_total', help: 'Domain events this process published to SQS', registers: [registry] });
  const failed = new Counter({
    name: 'catalog_domain_events_failed_attempts_total',
    help: 'Failed publishing attempts by fault (event = SQS refused the entry or it is too large, queue = the call failed)',
    labelNames: ['fault'] as const,
    registers: [registry],
  });
  for (const f of ['event', 'queue']) failed.inc({ fault: f }, 0);
  const dead = new Counter({ name: 'catalog_domain_events_dead_lettered_total', help: 'Domain events this process moved to the dead-letter table', registers: [registry] });
  return {
    published: (n) => published.inc(n),
    failed: (n, fault) => failed.inc({ fault }, n),
    deadLettered: (n) => dead.inc(n),
  };
}
