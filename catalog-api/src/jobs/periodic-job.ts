/**
 * A background job of the catalog API (outbox relays, the trial sweep, the metering jobs): runs on
 * a timer and on demand, one run at a time in this process. A call made while a run is in progress
 * queues exactly one more run after it (calls made meanwhile share that one), so whatever was
 * committed before a call is covered when its promise resolves. Runs across processes are each
 * job's own business (advisory locks, idempotent writes). A job that loops (the relays' drains)
 * checks the signal it is given between its steps, so that {@link PeriodicJob.stop} (SIGTERM) waits
 * for one step, not for a whole backlog.
 */
export class PeriodicJob<T> {
  readonly #job: (signal: AbortSignal) => Promise<T>;
  readonly #stopping = new AbortController();
  readonly #intervalMs: number;
  #timer: NodeJS.Timeout | null = null;
  #tail: Promise<unknown> = Promise.resolve();
  #queued: Promise<T> | null = null;

  /**
   * @param job one run; it should not throw (a rejection is passed to that run's callers only);
   *   `signal` is aborted once {@link stop} was called: a looping job ends after its current step
   * @param intervalMs timer period, ms; 0 = no timer (only {@link run})
   */
  constructor(job: (signal: AbortSignal) => Promise<T>, intervalMs: number) {
    this.#job = job;
    this.#intervalMs = intervalMs;
  }

  /** Start the timer (idempotent; it does not keep the process alive). */
  start(): void {
    if (this.#timer || this.#intervalMs <= 0) return;
    this.#timer = setInterval(() => void this.run().catch(() => undefined), this.#intervalMs);
    this.#timer.unref();
  }

  /**
   * Stop the timer, tell the run in progress to end after its current step, and wait for it (and
   * a queued one, which then does at most one step). Never throws.
   */
  async stop(): Promise<void> {
    this.#stopping.abort();
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    await this.#tail.catch(() => undefined);
  }

  /** Run now, after the run in progress if any (see the module comment). */
  run(): Promise<T> {
    if (this.#queued) return this.#queued;
    const next = this.#tail
      .catch(() => undefined)
      .then(() => {
        this.#queued = null;
        return this.#job(this.#stopping.signal);
      });
    this.#queued = next;
    this.#tail = next;
    return next;
  }
}
