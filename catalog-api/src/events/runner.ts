/**
 * A running domain-event publisher: the SQS sink, the relay on its timer and the LISTEN wake-up,
 * built from the configuration. Used by the API's plugin (plugins/domain-events.ts) and by the
 * standalone relay (`npm run events -- run`, cli.ts).
 */
import type { CatalogConfig } from '../config.ts';
import type { Orm } from '../db/orm.ts';
import type { Logger } from '../logger.ts';
import { NotifyListener } from './listener.ts';
import { DomainEventRelay, type RelayMetrics } from './relay.ts';
import { SqsEventSink, createSqsClient, type EventSink } from './sqs.ts';

/** The settings a publisher reads. */
export type PublisherConfig = Pick<
  CatalogConfig,
  | 'JOBS_DATABASE_URL'
  | 'SQS_ENDPOINT_URL'
  | 'SQS_QUEUE_URL'
  | 'SQS_PROTOCOL'
  | 'AWS_REGION'
  | 'AWS_ACCESS_KEY_ID'
  | 'AWS_SECRET_ACCESS_KEY'
  | 'AWS_SESSION_TOKEN'
  | 'SQS_REQUEST_TIMEOUT_MS'
  | 'SQS_MAX_MESSAGE_BYTES'
  | 'EVENTS_INTERVAL_MS'
  | 'EVENTS_BATCH_SIZE'
  | 'EVENTS_MAX_ATTEMPTS'
  | 'EVENTS_RETRY_BASE_MS'
  | 'EVENTS_RETRY_MAX_MS'
  | 'EVENTS_RETENTION_S'
>;

/** A relay with its sink and listener. */
export type EventPublisher = {
  relay: DomainEventRelay;
  /** start the timer and the listener (the first drain follows at once) */
  start(): void;
  /** stop both, wait for a drain in progress, close the SQS client. Never throws. */
  stop(): Promise<void>;
};

/**
 * Build (not start) a publisher for `config`.
 * @param opts.sink another sink instead of SQS_QUEUE_URL's (tests)
 * @param orm  the relays' pool (JOBS_DATABASE_URL: `catalog_jobs` executes the relay's functions)
 * @param opts.listen false: no LISTEN connection (timer only)
 * @throws Error when SQS_QUEUE_URL is unset and no sink is given, or JOBS_DATABASE_URL is unset and `listen` is not false
 */
export function createEventPublisher(
  config: PublisherConfig,
  orm: Orm,
  opts: { logger?: Logger; metrics?: RelayMetrics; sink?: EventSink; listen?: boolean } = {},
): EventPublisher {
  let sink = opts.sink;
  if (!sink) {
    if (!config.SQS_QUEUE_URL) throw new Error('SQS_QUEUE_URL is not set: there is no queue to publish domain events to');
    sink = new SqsEventSink(createSqsClient(config), config.SQS_QUEUE_URL);
  }
  const relay = new DomainEventRelay({
    orm,
    sink,
    logger: opts.logger,
    metrics: opts.metrics,
    batchSize: config.EVENTS_BATCH_SIZE,
    intervalMs: config.EVENTS_INTERVAL_MS,
    maxAttempts: config.EVENTS_MAX_ATTEMPTS,
    retryBaseMs: config.EVENTS_RETRY_BASE_MS,
    retryMaxMs: config.EVENTS_RETRY_MAX_MS,
    maxMessageBytes: config.SQS_MAX_MESSAGE_BYTES,
    retentionS: config.EVENTS_RETENTION_S,
  });
  if (opts.listen !== false && !config.JOBS_DATABASE_URL) throw new Error('JOBS_DATABASE_URL is not set: the domain-event relay listens as the role catalog_jobs');
  const listener = opts.listen === false ? null : new NotifyListener({ connectionString: config.JOBS_DATABASE_URL!, onNotify: () => void relay.drain(), logger: opts.logger });
  const usedSink = sink;
  return {
    relay,
    start() {
      relay.start();
      if (listener) listener.start();
      else void relay.drain();
    },
    async stop() {
      await listener?.stop();
      await relay.stop();
      usedSink.close();
    },
  };
}
