/**
 * Fair shares of a bounded resource (issue 9 §1): a ledger of units in use — upstream connection
 * slots (upstream-slots.ts) or bytes of bodies held in memory (request-body.ts, forward.ts) — in
 * total, per subject and per publisher. No single subject may hold more than
 * UPSTREAM_SHARE_PER_SUBJECT of the capacity, no single publisher more than
 * UPSTREAM_SHARE_PER_PUBLISHER (fractions in (0, 1]; a cap is at least one unit), so one tenant
 * cannot take everything and starve the others. The ledger only counts and answers "does it fit";
 * the callers decide whether to wait (slots) or refuse (bytes).
 */

/** Who takes units: the authenticated subject (else `ip:<client address>`) and the publisher context, when any. */
export type ShareOwner = { subject?: string; publisher?: string };

/** The largest fraction of the capacity one subject / one publisher may hold, each in (0, 1]. */
export type ShareLimits = { perSubject: number; perPublisher: number };

/** What keeps units from fitting: the whole capacity, the owner's subject share, or its publisher share. */
export type ShareBlocker = 'total' | 'subject' | 'publisher';

/** The ledger of {@link createShareLedger}. */
export type ShareLedger = {
  /** The capacity (units; Infinity = unbounded). */
  readonly capacity: number;
  /** The per-subject and per-publisher caps (units), derived from the shares. */
  readonly caps: { subject: number; publisher: number };
  /** Why `n` more units for `owner` would exceed a cap (its subject's share, else its publisher's, else the total), or undefined when they fit. */
  blocker(owner: ShareOwner, n: number): ShareBlocker | undefined;
  /** Count `n` units as held by `owner` (no check: call {@link blocker} first). */
  add(owner: ShareOwner, n: number): void;
  /** Give back `n` units of `owner` (never below zero). */
  remove(owner: ShareOwner, n: number): void;
  /** Units in use, all owners together. */
  used(): number;
  /** Units `owner`'s subject / publisher hold now (0 when not named). */
  held(owner: ShareOwner): { subject: number; publisher: number };
};

/**
 * The cap of one share: `floor(share × capacity)`, at least 1; a share of 1 (or an unbounded
 * capacity) is no cap beyond the capacity.
 * @throws RangeError when `share` is not in (0, 1].
 */
export function shareCap(capacity: number, share: number): number {
  if (!(share > 0 && share <= 1)) throw new RangeError(`a share must be in (0, 1], got ${share}`);
  if (share === 1 || !Number.isFinite(capacity)) return capacity;
  return Math.max(1, Math.floor(share * capacity));
}

/**
 * Create a ledger over `capacity` units.
 * @param capacity units in all (Infinity = unbounded: only the owners' counts are kept).
 * @param shares the per-subject and per-publisher fractions.
 */
export function createShareLedger(capacity: number, shares: ShareLimits): ShareLedger {
  const caps = { subject: shareCap(capacity, shares.perSubject), publisher: shareCap(capacity, shares.perPublisher) };
  let total = 0;
  const bySubject = new Map<string, number>();
  const byPublisher = new Map<string, number>();
  const change = (map: Map<string, number>, key: string | undefined, n: number) => {
    if (key === undefined) return;
    const next = (map.get(key) ?? 0) + n;
    if (next > 0) map.set(key, next);
    else map.delete(key); // no entry per past owner: the maps stay as small as the current use
  };
  const of = (map: Map<string, number>, key: string | undefined) => (key === undefined ? 0 : (map.get(key) ?? 0));
  return {
    capacity,
    caps,
    blocker(owner, n) {
      // The owner's own shares first: they would hold it back even with room in the total.
      if (owner.subject !== undefined && of(bySubject, owner.subject) + n > caps.subject) return 'subject';
      if (owner.publisher !== undefined && of(byPublisher, owner.publisher) + n > caps.publisher) return 'publisher';
      if (total + n > capacity) return 'total';
      return undefined;
    },
    add(owner, n) {
      total += n;
      change(bySubject, owner.subject, n);
      change(byPublisher, owner.publisher, n);
    },
    remove(owner, n) {
      total = Math.max(0, total - n);
      change(bySubject, owner.subject, -n);
      change(byPublisher, owner.publisher, -n);
    },
    used: () => total,
    held: (owner) => ({ subject: of(bySubject, owner.subject), publisher: of(byPublisher, owner.publisher) }),
  };
}
