/**
 * Reading and operating the domain-event outbox (migration 0009) as the app role, through its
 * SECURITY DEFINER functions: the lag numbers, the open dead letters, and resolving one.
 */
import { query, type Orm } from '../db/orm.ts';

/** The outbox at a glance. */
export type EventStats = {
  /** events not yet published */
  pending: number;
  /** occurred_at of the oldest of them (ISO 8601), or null */
  oldestPendingAt: string | null;
  /** its age, seconds (0 when nothing is pending): the lag metric */
  lagSeconds: number;
  /** dead letters nobody resolved yet (each holds its group's later events back) */
  deadLetters: number;
};

/**
 * `domain_events_stats()`.
 * @throws database errors
 */
export async function eventStats(orm: Orm): Promise<EventStats> {
  const [row] = await query<{ pending: string; oldest: Date | null; lag: number; dead: string }>(
    orm.em.fork(),
    `select s.pending::text, s.oldest_pending_at as oldest, s.lag_seconds as lag, s.dead_letters::text as dead from domain_events_stats() s`,
  );
  return {
    pending: Number(row!.pending),
    oldestPendingAt: row!.oldest ? new Date(row!.oldest).toISOString() : null,
    lagSeconds: Number(row!.lag),
    deadLetters: Number(row!.dead),
  };
}

/** An open dead letter. */
export type DeadLetter = {
  /** the dead letter's id (what retry/discard take) */
  id: string;
  /** the event's place in the outbox order */
  eventSeq: string;
  eventId: string;
  type: string;
  /** the SQS MessageGroupId: publisher id or `user:<id>` */
  groupKey: string;
  publisherId: string | null;
  objectId: string;
  attempts: number;
  lastError: string;
  occurredAt: string;
  deadAt: string;
};

/**
 * The open dead letters, in outbox order (`domain_event_dead_letters_open()`).
 * @throws database errors
 */
export async function openDeadLetters(orm: Orm): Promise<DeadLetter[]> {
  const rows = await query<Record<string, unknown>>(
    orm.em.fork(),
    `select d.id::text, d.event_seq::text, d.event_id::text, d.type, d.group_key, d.publisher_id::text, d.object_id::text, d.attempts, d.last_error,
            d.occurred_at, d.dead_at from domain_event_dead_letters_open() d`,
  );
  return rows.map((r) => ({
    id: r.id as string,
    eventSeq: r.event_seq as string,
    eventId: r.event_id as string,
    type: r.type as string,
    groupKey: r.group_key as string,
    publisherId: (r.publisher_id as string | null) ?? null,
    objectId: r.object_id as string,
    attempts: r.attempts as number,
    lastError: r.last_error as string,
    occurredAt: new Date(r.occurred_at as Date).toISOString(),
    deadAt: new Date(r.dead_at as Date).toISOString(),
  }));
}

/** What to do with a dead letter: put the event back at its place in the order, or drop it. */
export type DeadLetterAction = 'retry' | 'discard';

/**
 * Resolve an open dead letter (`domain_event_dead_letter_resolve`): `retry` puts the event back
 * into the outbox (same id and event id, attempts 0) ahead of its group's waiting events;
 * `discard` lets the group go on without it (it is never published).
 * @param id the dead letter's id (decimal)
 * @returns false when there is no open dead letter with that id
 * @throws RangeError for an id that is not a positive integer; database errors
 */
export async function resolveDeadLetter(orm: Orm, id: string, action: DeadLetterAction): Promise<boolean> {
  if (!/^[1-9][0-9]{0,18}$/.test(id)) throw new RangeError(`not a dead letter id: ${id}`);
  const em = orm.em.fork();
  return em.transactional(async (tem) => {
    const [row] = await query<{ ok: boolean }>(tem, `select domain_event_dead_letter_resolve($1::bigint, $2) as ok`, [id, action]);
    return row!.ok;
  });
}
