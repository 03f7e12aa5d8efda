/**
 * Admission to the upstream connection pool: at most `max` proxied requests use an upstream
 * connection at once (UPSTREAM_CONNECTIONS); the others wait in FIFO order for at most
 * UPSTREAM_QUEUE_TIMEOUT_MS. undici's own pool queue has no bound on the wait and ignores an
 * abort until the request leaves the queue, so forward.ts waits here instead — a waiter gives up
 * at its deadline (→ 503 `upstream-unavailable` + Retry-After) or at once when its request is
 * aborted (client gone, body deadline, body limit), and never holds a connection meanwhile.
 */

/** The wait for a free slot took longer than the queue timeout. */
export class QueueTimeout extends Error {
  constructor(timeoutMs: number) {
    super(`no upstream connection became free within ${timeoutMs} ms`);
    this.name = 'QueueTimeout';
  }
}

/** Returns the slot; calling it more than once has no further effect. */
export type Release = () => void;

/** The admission gate of {@link createUpstreamSlots}. */
export type UpstreamSlots = {
  /**
   * Take a slot, waiting FIFO when all are in use.
   * @param timeoutMs the longest wait (ms); 0 = fail at once when none is free.
   * @param signal aborting it leaves the queue at once.
   * @returns the release function (call it when the upstream exchange is over).
   * @throws QueueTimeout after `timeoutMs`; `signal.reason` when aborted.
   */
  acquire(timeoutMs: number, signal: AbortSignal): Promise<Release>;
  /** Current use: slots held and requests waiting. */
  stats(): { active: number; waiting: number };
};

type Waiter = { grant(): void };

/**
 * Create the gate.
 * @param max number of slots; 0 = unlimited (nobody ever waits).
 */
export function createUpstreamSlots(max: number): UpstreamSlots {
  let active = 0;
  const waiters: Waiter[] = [];

  const take = (): Release => {
    active++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      active--;
      const next = waiters.shift();
      next?.grant();
    };
  };

  return {
    acquire(timeoutMs, signal) {
      if (signal.aborted) return Promise.reject(signal.reason);
      if (max <= 0 || (active < max && waiters.length === 0)) return Promise.resolve(take());
      return new Promise<Release>((resolve, reject) => {
        const leave = () => {
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          const i = waiters.indexOf(waiter);
          if (i !== -1) waiters.splice(i, 1);
        };
        const waiter: Waiter = {
          grant: () => {
            leave();
            resolve(take());
          },
        };
        const onAbort = () => {
          leave();
          reject(signal.reason);
        };
        const timer = setTimeout(() => {
          leave();
          reject(new QueueTimeout(timeoutMs));
        }, timeoutMs);
        signal.addEventListener('abort', onAbort, { once: true });
        waiters.push(waiter);
      });
    },
    stats: () => ({ active, waiting: waiters.length }),
  };
}
