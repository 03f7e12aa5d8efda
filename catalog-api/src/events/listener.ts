/**
 * `LISTEN domain_events` on a connection of its own (the pool's connections come and go), calling
 * back on every notification the outbox triggers send at commit — and once after each (re)connect,
 * for whatever was committed while it was away. A lost connection is retried with backoff
 * (1 s doubling to 30 s); the relay's timer covers the gap.
 */
import pg from 'pg';
import type { Logger } from '../logger.ts';

/** The channel migration 0009's triggers notify. */
export const EVENTS_CHANNEL = 'domain_events';

/** Options of {@link NotifyListener}. */
export type NotifyListenerOptions = {
  /** a postgres URL (the relays' role catalog_jobs, JOBS_DATABASE_URL) */
  connectionString: string;
  onNotify: () => void;
  logger?: Logger;
  /** first reconnect delay, ms (default 1000; doubles up to 30 s) */
  retryMs?: number;
};

/** Wakes the relay on `NOTIFY domain_events`. */
export class NotifyListener {
  readonly #opts: NotifyListenerOptions;
  #client: pg.Client | null = null;
  #stopped = true;
  #retryMs: number;
  #retryTimer: NodeJS.Timeout | null = null;

  constructor(opts: NotifyListenerOptions) {
    this.#opts = opts;
    this.#retryMs = opts.retryMs ?? 1000;
  }

  /** Connect and listen (idempotent). Never throws; failures are retried. */
  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    void this.#connect();
  }

  /** Stop listening and close the connection. Never throws. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    const c = this.#client;
    this.#client = null;
    await c?.end().catch(() => undefined);
  }

  async #connect(): Promise<void> {
    if (this.#stopped) return;
    const client = new pg.Client({ connectionString: this.#opts.connectionString, application_name: 'catalog-api-events', connectionTimeoutMillis: 5000 });
    const lost = (err?: Error) => {
      if (this.#client !== client) return; // already replaced or stopped
      this.#client = null;
      client.end().catch(() => undefined);
      if (this.#stopped) return;
      this.#opts.logger?.warn({ err: err ? { message: err.message } : undefined, retryMs: this.#retryMs }, 'domain events: LISTEN connection lost, reconnecting');
      this.#retryTimer = setTimeout(() => void this.#connect(), this.#retryMs);
      this.#retryTimer.unref();
      this.#retryMs = Math.min(this.#retryMs * 2, 30_000);
    };
    this.#client = client;
    client.on('error', lost);
    client.on('end', () => lost());
    client.on('notification', (n) => {
      if (n.channel === EVENTS_CHANNEL) this.#opts.onNotify();
    });
    try {
      await client.connect();
      await client.query(`listen ${EVENTS_CHANNEL}`);
      this.#retryMs = this.#opts.retryMs ?? 1000;
      this.#opts.onNotify();
    } catch (err) {
      lost(err as Error);
    }
  }
}
