/**
 * The relationship outbox relay as a Fastify plugin (outbox/relay.ts does the work): started when
 * the server is ready, stopped when it closes, and `app.outbox.flush()` for handlers that must
 * deliver their tuples before answering. Without a sink (`sink: null`) there is no relay and
 * `flush()` does nothing (tests of the API alone).
 *
 * The production sink (outbox/writer.ts) is built on first use, so the API starts while OpenFGA is
 * still coming up; until then deliveries fail and are retried.
 */
import fp from 'fastify-plugin';
import type { FastifyInstance } from 'fastify';
import type { CatalogConfig } from '../config.ts';
import type { Orm } from '../db/orm.ts';
import { OutboxRelay, type RelationshipSink } from '../outbox/relay.ts';

declare module 'fastify' {
  interface FastifyInstance {
    outbox: {
      /** Deliver every pending outbox row now, waiting at most OUTBOX_FLUSH_TIMEOUT_MS; never throws (failures are retried later). */
      flush(): Promise<void>;
    };
  }
}

/** Options of {@link outboxPlugin}. */
export type OutboxOptions = {
  /** the relays' pool (`catalog_jobs`, JOBS_DATABASE_URL: EXECUTE on the outbox functions) */
  orm: Orm;
  config: Pick<CatalogConfig, 'OUTBOX_RELAY' | 'OUTBOX_BATCH_SIZE' | 'OUTBOX_INTERVAL_MS' | 'OPENFGA_API_URL' | 'OPENFGA_STORE_NAME' | 'REDIS_URL' | 'REDIS_CLUSTER_NODES' | 'REDIS_SENTINELS' | 'REDIS_SENTINEL_NAME'> &
    Partial<Pick<CatalogConfig, 'OUTBOX_FLUSH_TIMEOUT_MS'>>;
  /** a sink instead of the OpenFGA writer; `null` = no relay */
  sink?: RelationshipSink | null;
};

/** A sink that builds the real writer on first use; `close` closes it if it was built. */
function lazyWriter(config: OutboxOptions['config']): { sink: RelationshipSink; close: () => Promise<void> } {
  let handle: ReturnType<typeof import('../outbox/writer.ts').createRelationshipWriter> | null = null;
  return {
    sink: {
      async write(change) {
        if (!handle) {
          const { createRelationshipWriter } = await import('../outbox/writer.ts');
          handle = createRelationshipWriter(config as CatalogConfig);
          handle.catch(() => (handle = null));
        }
        return (await handle).sink.write(change);
      },
    },
    close: async () => {
      if (handle) await (await handle.catch(() => null))?.close();
    },
  };
}

/** Fastify plugin: decorates `outbox`, runs the relay between `onReady` and `onClose`. */
export const outboxPlugin = fp(
  async (app: FastifyInstance, opts: OutboxOptions) => {
    let relay: OutboxRelay | null = null;
    let closeWriter: (() => Promise<void>) | null = null;
    if (opts.sink !== null && (opts.sink || opts.config.OUTBOX_RELAY)) {
      let sink = opts.sink;
      if (!sink) {
        const lazy = lazyWriter(opts.config);
        sink = lazy.sink;
        closeWriter = lazy.close;
      }
      relay = new OutboxRelay({ orm: opts.orm, sink, logger: app.log, batchSize: opts.config.OUTBOX_BATCH_SIZE, intervalMs: opts.config.OUTBOX_INTERVAL_MS });
    }
    // A request waits for its tuples at most OUTBOX_FLUSH_TIMEOUT_MS: OpenFGA slow or away must not
    // hold a committed write's answer (test/faults/openfga.test.ts); the drain goes on, and what it
    // cannot deliver stays pending for the timer.
    const flushTimeoutMs = opts.config.OUTBOX_FLUSH_TIMEOUT_MS ?? 2000;
    app.decorate('outbox', {
      flush: async () => {
        if (!relay) return;
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([relay.drain(), new Promise<void>((r) => (timer = setTimeout(r, flushTimeoutMs)))]);
        clearTimeout(timer);
      },
    });
    app.addHook('onReady', async () => relay?.start());
    app.addHook('onClose', async () => {
      await relay?.stop();
      await closeWriter?.();
    });
  },
  { name: 'catalog-outbox' },
);
