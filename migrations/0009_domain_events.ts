/**
 * 0009 — domain events through a transactional outbox (docs/CONTRACTS.md, "Domain events").
 *
 * Triggers write one row of `domain_events` per domain event in the same transaction as the change,
 * whatever code path made it (the catalog API, the sign-in service, the seed, a migration); the
 * relay (catalog-api/src/events/) publishes them to an Amazon SQS FIFO queue. Events:
 *
 * - `works`, `songwriters`, `recordings` → `work.*`, `songwriter.*`, `recording.*`: a live row
 *   (deleted_at IS NULL) inserted → `.created`; a public field changed → `.updated` (with `previous`);
 *   soft delete (deleted_at set) or hard delete of a live row → `.deleted`; a soft-deleted row made
 *   live again → `.created`; a live row moved to another publisher → `.deleted` there, `.created` here.
 * - `publishers`: insert → `publisher.created`; status becomes `suspended` → `publisher.suspended`;
 *   becomes archived (status `archived` or deleted_at set) → `publisher.archived`.
 * - `user_publishers`: insert → `member.added`; role, custom role or department changed →
 *   `member.role_changed` (with `previous`); delete → `member.removed`.
 * - `users`: status becomes `disabled` → `user.disabled`.
 * - `accounts` (0007): plan_type changed → `account.plan_changed` (with `previous`).
 *
 * Each row holds the message body (`payload`): `id` (the event's uuid, also the SQS
 * MessageDeduplicationId), `type`, `version` (1), `publisher_id` (null for user events),
 * `object_id`, `occurred_at` (transaction time, UTC), `actor_user_id` (`app.user_id`, or null),
 * `data` — the row's public fields, an explicit list per table below (never secrets, contact
 * details or settings; a column added later is not published until it is listed) — and, for
 * updates, `previous` (the old values of the public fields that changed). `group_key` is the SQS
 * MessageGroupId: the publisher id, or `user:<id>` for events without a publisher. The `id` column
 * (bigserial) is the order of the outbox.
 *
 * The app role has no privilege on either table. The relay reaches them through SECURITY DEFINER
 * functions executable by catalog_app only: `domain_events_claim(batch_size)` (takes the relay's
 * advisory lock; the oldest ≤ 100 due rows whose group is not waiting — behind an earlier row that
 * is backing off, or behind an unresolved dead letter — FOR UPDATE),
 * `domain_events_mark_published(ids)`, `domain_events_mark_failed(ids, error, event_fault,
 * max_attempts, base_ms, cap_ms)` (attempts + 1, exponential backoff; an event fault at
 * max_attempts moves the row to `domain_event_dead_letters`), `domain_events_stats()` (the lag
 * metric), `domain_events_prune(keep_seconds)`, and for operators `domain_event_dead_letters_open()`
 * and `domain_event_dead_letter_resolve(id, action)` (`retry`: back into the outbox at its old place
 * in the order; `discard`: its group goes on without it). Each event sends `NOTIFY domain_events`.
 */
import { Migration } from '@mikro-orm/migrations';

/** Public fields of each table's rows, as they appear in an event's `data` (docs/CONTRACTS.md). */
export const EVENT_FIELDS = {
  works: ['id', 'publisher_id', 'title', 'iswc', 'language', 'owner_user_id', 'department_id', 'created_at', 'updated_at', 'created_by', 'updated_by', 'deleted_at'],
  songwriters: ['id', 'publisher_id', 'first_name', 'last_name', 'ipi_name_number', 'pro', 'owner_user_id', 'department_id', 'created_at', 'updated_at', 'created_by', 'updated_by', 'deleted_at'],
  recordings: ['id', 'publisher_id', 'work_id', 'title', 'isrc', 'duration_ms', 'release_date', 'owner_user_id', 'department_id', 'created_at', 'updated_at', 'created_by', 'updated_by', 'deleted_at'],
  publishers: ['id', 'name', 'slug', 'type', 'business_model', 'status', 'created_at', 'updated_at', 'deleted_at'],
  user_publishers: ['publisher_id', 'user_id', 'role', 'custom_role_id', 'department_id', 'created_at', 'updated_at'],
  users: ['id', 'kind', 'status', 'auth_source', 'created_at', 'updated_at', 'deleted_at'],
  accounts: ['publisher_id', 'plan_type', 'billing_cycle', 'seats', 'status', 'trial_ends_at', 'created_at', 'updated_at'],
} as const;

const CATALOG = { works: 'work', songwriters: 'songwriter', recordings: 'recording' } as const;

const lit = (s: string) => `'${s.replace(/'/g, "''")}'`;
const args = (cols: readonly string[]) => cols.map(lit).join(', ');
/** Every definer here: owner's search path, and UTC so timestamps in `data` do not depend on the writer's session. */
const DEFINER = `security definer set search_path = public, pg_temp set timezone = 'UTC'`;

/** Creates the outbox, the dead-letter table, the triggers and the relay's functions; `down` drops them (pending events are lost). */
export class Migration0009DomainEvents extends Migration {
  override name = '0009_domain_events';

  /** Tables, functions, triggers, grants. */
  up(): void {
    this.addSql(`
create table domain_events (
  id bigserial primary key,
  event_id uuid not null constraint domain_events_event_id_key unique,
  type text not null constraint domain_events_type_check check (type ~ '^[a-z_]+\\.[a-z_]+$'),
  group_key text not null constraint domain_events_group_key_check check (length(group_key) between 1 and 128),
  publisher_id uuid,
  object_id uuid not null,
  payload jsonb not null,
  occurred_at timestamptz not null,
  attempts integer not null default 0,
  -- the failed attempts that were the event's own fault: only these count toward the dead letter
  event_faults integer not null default 0,
  next_attempt_at timestamptz not null default now(),
  last_error text,
  published_at timestamptz
);
comment on table domain_events is 'Outbox of domain events (migration 0009); published to SQS by catalog-api/src/events/';
create index domain_events_pending_idx on domain_events (id) where published_at is null;
create index domain_events_pending_group_idx on domain_events (group_key, id) where published_at is null;
create index domain_events_published_idx on domain_events (published_at) where published_at is not null;
revoke all on domain_events from catalog_app, catalog_auth;
revoke all on sequence domain_events_id_seq from catalog_app, catalog_auth;

create table domain_event_dead_letters (
  id bigserial primary key,
  event_seq bigint not null,
  event_id uuid not null,
  type text not null,
  group_key text not null,
  publisher_id uuid,
  object_id uuid not null,
  payload jsonb not null,
  occurred_at timestamptz not null,
  attempts integer not null,
  last_error text not null,
  dead_at timestamptz not null default now(),
  resolved_at timestamptz,
  resolution text constraint domain_event_dead_letters_resolution_check check (resolution in ('retried', 'discarded')),
  constraint domain_event_dead_letters_resolved_check check ((resolved_at is null) = (resolution is null))
);
comment on table domain_event_dead_letters is 'Domain events that failed max_attempts times; while one is open (resolved_at null) the later events of its group wait';
comment on column domain_event_dead_letters.event_seq is 'domain_events.id the event had: its place in the order, kept by a retry';
create index domain_event_dead_letters_open_idx on domain_event_dead_letters (group_key, event_seq) where resolved_at is null;
create unique index domain_event_dead_letters_open_event_key on domain_event_dead_letters (event_id) where resolved_at is null;
revoke all on domain_event_dead_letters from catalog_app, catalog_auth;
revoke all on sequence domain_event_dead_letters_id_seq from catalog_app, catalog_auth;

-- ---------------------------------------------------------------- writing events
-- The fields "cols" of a row (as jsonb), in that order; a missing column is null.
create function domain_events_pick(r jsonb, cols text[]) returns jsonb
language sql immutable set search_path = public, pg_temp as $$
  select coalesce(jsonb_object_agg(c, r -> c), '{}'::jsonb) from unnest(cols) c
$$;
-- The old values of the fields that differ between "o" and "n" (audit columns aside); null when none.
create function domain_events_previous(o jsonb, n jsonb) returns jsonb
language sql immutable set search_path = public, pg_temp as $$
  select jsonb_object_agg(k, o -> k) from jsonb_object_keys(o) k
   where k not in ('updated_at', 'updated_by') and (o -> k) is distinct from (n -> k)
$$;

create function domain_events_emit(event_type text, group_key text, publisher uuid, object uuid, data jsonb, previous jsonb default null) returns void
language plpgsql ${DEFINER} as $$
declare
  eid uuid := gen_random_uuid();
  at timestamptz := now();
  body jsonb;
begin
  body := jsonb_build_object(
    'id', eid, 'type', event_type, 'version', 1, 'publisher_id', publisher, 'object_id', object,
    'occurred_at', at, 'actor_user_id', nullif(current_setting('app.user_id', true), '')::uuid, 'data', data);
  if previous is not null then body := body || jsonb_build_object('previous', previous); end if;
  insert into domain_events (event_id, type, group_key, publisher_id, object_id, payload, occurred_at)
    values (eid, event_type, group_key, publisher, object, body, at);
  perform pg_notify('domain_events', '');
end $$;

-- TG_ARGV[0]: the event prefix (work, songwriter, recording); the rest: the public fields.
create function domain_events_catalog() returns trigger
language plpgsql ${DEFINER} as $$
declare
  typ text := tg_argv[0];
  cols text[] := tg_argv[1:tg_nargs - 1];
  o jsonb;
  n jsonb;
  was boolean := false;
  is_now boolean := false;
  prev jsonb;
begin
  if tg_op in ('UPDATE', 'DELETE') then o := domain_events_pick(to_jsonb(old), cols); was := old.deleted_at is null; end if;
  if tg_op in ('INSERT', 'UPDATE') then n := domain_events_pick(to_jsonb(new), cols); is_now := new.deleted_at is null; end if;
  if was and is_now and old.publisher_id is distinct from new.publisher_id then
    perform domain_events_emit(typ || '.deleted', old.publisher_id::text, old.publisher_id, old.id, o);
    perform domain_events_emit(typ || '.created', new.publisher_id::text, new.publisher_id, new.id, n);
  elsif was and not is_now then
    perform domain_events_emit(typ || '.deleted', old.publisher_id::text, old.publisher_id, old.id, coalesce(n, o));
  elsif is_now and not was then
    perform domain_events_emit(typ || '.created', new.publisher_id::text, new.publisher_id, new.id, n);
  elsif was and is_now then
    prev := domain_events_previous(o, n);
    if prev is not null then
      perform domain_events_emit(typ || '.updated', new.publisher_id::text, new.publisher_id, new.id, n, prev);
    end if;
  end if;
  return null;
end $$;

-- TG_ARGV: the public fields.
create function domain_events_publisher() returns trigger
language plpgsql ${DEFINER} as $$
declare
  cols text[] := tg_argv[0:tg_nargs - 1];
  n jsonb := domain_events_pick(to_jsonb(new), cols);
  prev jsonb;
begin
  if tg_op = 'INSERT' then
    perform domain_events_emit('publisher.created', new.id::text, new.id, new.id, n);
    return null;
  end if;
  prev := domain_events_previous(domain_events_pick(to_jsonb(old), cols), n);
  if new.status = 'suspended' and old.status is distinct from 'suspended' then
    perform domain_events_emit('publisher.suspended', new.id::text, new.id, new.id, n, prev);
  end if;
  if (new.status = 'archived' or new.deleted_at is not null) and not (old.status = 'archived' or old.deleted_at is not null) then
    perform domain_events_emit('publisher.archived', new.id::text, new.id, new.id, n, prev);
  end if;
  return null;
end $$;

-- TG_ARGV: the public fields. The object of a member event is the user.
create function domain_events_member() returns trigger
language plpgsql ${DEFINER} as $$
declare
  cols text[] := tg_argv[0:tg_nargs - 1];
  o jsonb;
  n jsonb;
begin
  if tg_op in ('UPDATE', 'DELETE') then o := domain_events_pick(to_jsonb(old), cols); end if;
  if tg_op in ('INSERT', 'UPDATE') then n := domain_events_pick(to_jsonb(new), cols); end if;
  if tg_op = 'UPDATE' and (old.publisher_id, old.user_id) is distinct from (new.publisher_id, new.user_id) then
    perform domain_events_emit('member.removed', old.publisher_id::text, old.publisher_id, old.user_id, o);
    perform domain_events_emit('member.added', new.publisher_id::text, new.publisher_id, new.user_id, n);
  elsif tg_op = 'UPDATE' then
    if (old.role, old.custom_role_id, old.department_id) is distinct from (new.role, new.custom_role_id, new.department_id) then
      perform domain_events_emit('member.role_changed', new.publisher_id::text, new.publisher_id, new.user_id, n, domain_events_previous(o, n));
    end if;
  elsif tg_op = 'INSERT' then
    perform domain_events_emit('member.added', new.publisher_id::text, new.publisher_id, new.user_id, n);
  else
    perform domain_events_emit('member.removed', old.publisher_id::text, old.publisher_id, old.user_id, o);
  end if;
  return null;
end $$;

-- TG_ARGV: the public fields. A user belongs to no publisher: group user:<id>.
create function domain_events_user() returns trigger
language plpgsql ${DEFINER} as $$
declare
  cols text[] := tg_argv[0:tg_nargs - 1];
  n jsonb := domain_events_pick(to_jsonb(new), cols);
begin
  if new.status = 'disabled' and old.status is distinct from 'disabled' then
    perform domain_events_emit('user.disabled', 'user:' || new.id, null, new.id, n, domain_events_previous(domain_events_pick(to_jsonb(old), cols), n));
  end if;
  return null;
end $$;

-- TG_ARGV: the public fields. An account is its publisher's (object id = publisher id).
create function domain_events_account() returns trigger
language plpgsql ${DEFINER} as $$
declare
  cols text[] := tg_argv[0:tg_nargs - 1];
  n jsonb := domain_events_pick(to_jsonb(new), cols);
begin
  if old.plan_type is distinct from new.plan_type then
    perform domain_events_emit('account.plan_changed', new.publisher_id::text, new.publisher_id, new.publisher_id, n,
      domain_events_previous(domain_events_pick(to_jsonb(old), cols), n));
  end if;
  return null;
end $$;
`);
    for (const [t, typ] of Object.entries(CATALOG)) {
      this.addSql(`create trigger ${t}_domain_events after insert or update or delete on ${t}
  for each row execute function domain_events_catalog(${lit(typ)}, ${args(EVENT_FIELDS[t as keyof typeof CATALOG])});`);
    }
    this.addSql(`
create trigger publishers_domain_events after insert or update of status, deleted_at on publishers
  for each row execute function domain_events_publisher(${args(EVENT_FIELDS.publishers)});
create trigger user_publishers_domain_events after insert or update or delete on user_publishers
  for each row execute function domain_events_member(${args(EVENT_FIELDS.user_publishers)});
create trigger users_domain_events after update of status on users
  for each row execute function domain_events_user(${args(EVENT_FIELDS.users)});
create trigger accounts_domain_events after update of plan_type on accounts
  for each row execute function domain_events_account(${args(EVENT_FIELDS.accounts)});
`);

    // ---------------------------------------------------------------- the relay's functions
    this.addSql(`
-- One batch at a time across all relays (the lock holds until the caller's transaction ends), so
-- events leave in order. Due rows only, and only rows no earlier row of their group waits before:
-- a row backing off (next_attempt_at in the future) or an open dead letter holds the rest of its
-- group back; other groups go on. FOR UPDATE without SKIP LOCKED: under the lock nobody else
-- claims, and skipping a row locked for another reason would let its group's later rows pass it.
create function domain_events_claim(batch_size integer) returns setof domain_events
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  perform pg_advisory_xact_lock(hashtextextended('domain_events relay', 0));
  return query
    select e.* from domain_events e
     where e.published_at is null and e.next_attempt_at <= now()
       and not exists (select 1 from domain_events p
                        where p.group_key = e.group_key and p.published_at is null and p.id < e.id and p.next_attempt_at > now())
       and not exists (select 1 from domain_event_dead_letters d
                        where d.group_key = e.group_key and d.resolved_at is null and d.event_seq < e.id)
     order by e.id
     limit least(greatest(coalesce(batch_size, 1), 1), 100)
     for update of e;
end $$;

-- Pending rows among "ids" → published; returns how many.
create function domain_events_mark_published(ids bigint[]) returns integer
language sql security definer set search_path = public, pg_temp as $$
  with marked as (
    update domain_events set published_at = now(), last_error = null
     where id = any (domain_events_mark_published.ids) and published_at is null
    returning 1)
  select count(*)::integer from marked
$$;

-- A failed attempt of the pending rows among "ids": attempts + 1, last_error, and the next attempt
-- after min(cap_ms, base_ms · 2^(attempts − 1)) ms. When the failure is the event's own
-- (event_fault: SQS refused that entry, or it cannot be sent at all) and it has now failed
-- max_attempts times through its own fault (event_faults), the row moves to
-- domain_event_dead_letters. Failures of the queue itself (network, throttling, credentials) never
-- dead-letter and never count toward it: an outage must not empty the outbox.
-- Returns each row's id, attempts and whether it was dead-lettered.
create function domain_events_mark_failed(ids bigint[], error text, event_fault boolean, max_attempts integer, base_ms integer, cap_ms integer)
returns table (id bigint, attempts integer, dead boolean)
language plpgsql security definer set search_path = public, pg_temp as $$
#variable_conflict use_column
declare
  touched bigint[];
  lettered bigint[] := '{}';
begin
  with failed as (
    update domain_events e
       set attempts = e.attempts + 1,
           event_faults = e.event_faults + case when domain_events_mark_failed.event_fault then 1 else 0 end,
           last_error = left(coalesce(domain_events_mark_failed.error, 'unknown error'), 2000),
           next_attempt_at = now() + make_interval(secs => least(greatest(cap_ms, 0)::double precision,
                                                                  greatest(base_ms, 0) * power(2, least(e.attempts, 30))) / 1000.0)
     where e.id = any (domain_events_mark_failed.ids) and e.published_at is null
    returning e.id)
  select coalesce(array_agg(failed.id), '{}') into touched from failed;
  if event_fault then
    with moved as (
      delete from domain_events e where e.id = any (touched) and e.event_faults >= greatest(max_attempts, 1) returning e.*
    ), ins as (
      insert into domain_event_dead_letters (event_seq, event_id, type, group_key, publisher_id, object_id, payload, occurred_at, attempts, last_error)
        select m.id, m.event_id, m.type, m.group_key, m.publisher_id, m.object_id, m.payload, m.occurred_at, m.attempts, m.last_error from moved m
      returning domain_event_dead_letters.event_seq)
    select coalesce(array_agg(ins.event_seq), '{}') into lettered from ins;
  end if;
  return query
    select e.id, e.attempts, false from domain_events e where e.id = any (touched)
    union all
    select d.event_seq, d.attempts, true from domain_event_dead_letters d where d.event_seq = any (lettered) and d.resolved_at is null
    order by 1;
end $$;

-- The lag metric: pending events, the oldest one's occurred_at and age (seconds, 0 when none),
-- open dead letters.
create function domain_events_stats()
returns table (pending bigint, oldest_pending_at timestamptz, lag_seconds double precision, dead_letters bigint)
language sql stable security definer set search_path = public, pg_temp as $$
  select p.n, p.oldest, coalesce(extract(epoch from clock_timestamp() - p.oldest)::double precision, 0), d.n
    from (select count(*) as n, min(occurred_at) as oldest from domain_events where published_at is null) p,
         (select count(*) as n from domain_event_dead_letters where resolved_at is null) d
$$;

-- Delete published events older than keep_seconds; returns how many.
create function domain_events_prune(keep_seconds integer) returns integer
language sql security definer set search_path = public, pg_temp as $$
  with gone as (
    delete from domain_events
     where published_at is not null and published_at < now() - make_interval(secs => greatest(keep_seconds, 0))
    returning 1)
  select count(*)::integer from gone
$$;

-- Operators: the open dead letters, oldest first …
create function domain_event_dead_letters_open() returns setof domain_event_dead_letters
language sql stable security definer set search_path = public, pg_temp as $$
  select * from domain_event_dead_letters where resolved_at is null order by event_seq
$$;

-- … and resolving one: 'retry' puts the event back into the outbox at its old place (same id,
-- same event id, attempts 0), 'discard' lets its group go on without it. Takes the relay's lock.
-- Returns false when there is no open dead letter "dead_letter_id".
create function domain_event_dead_letter_resolve(dead_letter_id bigint, action text) returns boolean
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  d domain_event_dead_letters;
begin
  if action is null or action not in ('retry', 'discard') then
    raise exception 'action must be retry or discard' using errcode = '22023';
  end if;
  perform pg_advisory_xact_lock(hashtextextended('domain_events relay', 0));
  select * into d from domain_event_dead_letters
   where id = domain_event_dead_letter_resolve.dead_letter_id and resolved_at is null for update;
  if d.id is null then return false; end if;
  if action = 'retry' then
    insert into domain_events (id, event_id, type, group_key, publisher_id, object_id, payload, occurred_at, attempts, last_error)
      values (d.event_seq, d.event_id, d.type, d.group_key, d.publisher_id, d.object_id, d.payload, d.occurred_at, 0,
              left('retried after dead letter: ' || d.last_error, 2000));
    perform pg_notify('domain_events', '');
  end if;
  update domain_event_dead_letters set resolved_at = now(), resolution = case when action = 'retry' then 'retried' else 'discarded' end
   where id = d.id;
  return true;
end $$;

revoke all on function domain_events_pick(jsonb, text[]), domain_events_previous(jsonb, jsonb),
  domain_events_emit(text, text, uuid, uuid, jsonb, jsonb), domain_events_catalog(), domain_events_publisher(),
  domain_events_member(), domain_events_user(), domain_events_account(),
  domain_events_claim(integer), domain_events_mark_published(bigint[]),
  domain_events_mark_failed(bigint[], text, boolean, integer, integer, integer), domain_events_stats(),
  domain_events_prune(integer), domain_event_dead_letters_open(), domain_event_dead_letter_resolve(bigint, text) from public;
grant execute on function domain_events_claim(integer), domain_events_mark_published(bigint[]),
  domain_events_mark_failed(bigint[], text, boolean, integer, integer, integer), domain_events_stats(),
  domain_events_prune(integer), domain_event_dead_letters_open(), domain_event_dead_letter_resolve(bigint, text) to catalog_app;
`);
  }

  /** Drop the triggers, functions and both tables. */
  override down(): void {
    this.addSql(`
drop trigger accounts_domain_events on accounts;
drop trigger users_domain_events on users;
drop trigger user_publishers_domain_events on user_publishers;
drop trigger publishers_domain_events on publishers;
drop trigger recordings_domain_events on recordings;
drop trigger songwriters_domain_events on songwriters;
drop trigger works_domain_events on works;
drop function domain_event_dead_letter_resolve(bigint, text);
drop function domain_event_dead_letters_open();
drop function domain_events_prune(integer);
drop function domain_events_stats();
drop function domain_events_mark_failed(bigint[], text, boolean, integer, integer, integer);
drop function domain_events_mark_published(bigint[]);
drop function domain_events_claim(integer);
drop function domain_events_account();
drop function domain_events_user();
drop function domain_events_member();
drop function domain_events_publisher();
drop function domain_events_catalog();
drop function domain_events_emit(text, text, uuid, uuid, jsonb, jsonb);
drop function domain_events_previous(jsonb, jsonb);
drop function domain_events_pick(jsonb, text[]);
drop table domain_event_dead_letters;
drop table domain_events;
`);
  }
}
