/**
 * Admission to the upstream connection pool: at most `max` proxied requests use an upstream
 * connection at once (UPSTREAM_CONNECTIONS), and no single subject or publisher holds more than
 * its share of them (UPSTREAM_SHARE_PER_SUBJECT / UPSTREAM_SHARE_PER_PUBLISHER; shares.ts). A
 * request that does not fit waits in FIFO order for at most UPSTREAM_QUEUE_TIMEOUT_MS; a waiter
 * held back by its own share does not hold back the waiters behind it (whenever a slot is given
 * back, the first waiters that fit are granted, in order). undici's own pool queue has no bound
 * on the wait and ignores an abort until the request leaves the queue, so forward.ts waits here
 * instead — a waiter gives up at its deadline (→ 503 `upstream-unavailable` + Retry-After) or at
 * once when its request is aborted (client gone), and never holds a connection meanwhile.
 */
import { createShareLedger, type ShareBlocker, type ShareLimits, type ShareOwner } from './shares.ts';

/** The wait for a free slot took longer than the queue timeout. */
export class QueueTimeout extends Error {
  /** What kept the request waiting when it gave up: all slots in use, or its subject's / publisher's share. */
  readonly blocker: ShareBlocker;
  constructor(timeoutMs: number, blocker: ShareBlocker) {
    super(
      blocker === 'total'
        ? `no upstream connection became free within ${timeoutMs} ms`
        : `the ${blocker}'s share of upstream connections stayed in use for ${timeoutMs} ms`,
    );
    this.name = 'QueueTimeout';
    this.blocker = blocker;
  }
}

/** Returns the slot; calling it more than once has no further effect. */
export type Release = () => void;

/** Options of {@link createUpstreamSlots}. */
export type UpstreamSlotsOptions = {
  /** Per-subject and per-publisher fractions of `max` (default: no share caps). */
  shares?: ShareLimits;
  /** Called once per request that has to wait, with what it waits for. */
  onWait?: (blocker: ShareBlocker) => void;
};

/** The admission gate of {@link createUpstreamSlots}. */
export type UpstreamSlots = {
  /**
   * Take a slot for `owner`, waiting (FIFO among those that fit) when none fits.
   * @param timeoutMs the longest wait (ms); 0 = fail at once when none fits.
   * @param signal aborting it leaves the queue at once.
   * @param owner whose share the slot counts against (default: nobody's).
   * @returns the release function (call it when the upstream exchange is over).
   * @throws QueueTimeout after `timeoutMs`; `signal.reason` when aborted.
   */
  acquire(timeoutMs: number, signal: AbortSignal, owner?: ShareOwner): Promise<Release>;
  /** Current use: slots held and requests waiting. */
  stats(): { active: number; waiting: number };
  /** The caps in slots (Infinity when unlimited). */
  readonly caps: { total: number; subject: number; publisher: number };
};

type Waiter = { owner: ShareOwner; grant(): void };

/**
 * Create the gate.
 * @param max number of slots; 0 = unlimited (nobody ever waits, no share caps).
 * @throws RangeError when a share is not in (0, 1].
 */
export function createUpstreamSlots(max: number, opts: UpstreamSlotsOptions = {}): UpstreamSlots {
  const ledger = createShareLedger(max > 0 ? max : Infinity, opts.shares ?? { perSubject: 1, perPublisher: 1 });
  const waiters: Waiter[] = [];

  const take = (owner: ShareOwner): Release => {
    ledger.add(owner, 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      ledger.remove(owner, 1);
      grantWaiters();
    };
  };

  /** Grant, in queue order, every waiter that fits now (those held back by a share stay queued). */
  const grantWaiters = () => {
    for (let i = 0; i < waiters.length && ledger.used() < ledger.capacity; ) {
      const w = waiters[i]!;
      if (ledger.blocker(w.owner, 1) === undefined) {
        waiters.splice(i, 1);
        w.grant();
      } else i++;
    }
  };

  return {
    caps: { total: ledger.capacity, ...ledger.caps },
    acquire(timeoutMs, signal, owner = {}) {
      if (signal.aborted) return Promise.reject(signal.reason);
      // Every waiter that fits is granted as soon as it fits, so the queue holds only requests
      // that do not: one that fits now may go ahead of them.
      const blocker = ledger.blocker(owner, 1);
      if (blocker === undefined) return Promise.resolve(take(owner));
      opts.onWait?.(blocker);
      return new Promise<Release>((resolve, reject) => {
        const leave = () => {
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          const i = waiters.indexOf(waiter);
          if (i !== -1) waiters.splice(i, 1);
        };
        const waiter: Waiter = {
          owner,
          grant: () => {
            leave();
            resolve(take(owner));
          },
        };
        const onAbort = () => {
          leave();
          reject(signal.reason);
        };
        const timer = setTimeout(() => {
          leave();
          reject(new QueueTimeout(timeoutMs, ledger.blocker(owner, 1) ?? blocker));
        }, timeoutMs);
        signal.addEventListener('abort', onAbort, { once: true });
        waiters.push(waiter);
      });
    },
    stats: () => ({ active: ledger.used(), waiting: waiters.length }),
  };
}
