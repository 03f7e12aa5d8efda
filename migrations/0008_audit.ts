/**
 * 0008 — the append-only audit log (docs/CONTRACTS.md, "Audit log"): `audit_events`, one row per
 * write, appended in the transaction of the change.
 *
 * - Append-only: the app roles may INSERT (both) and SELECT (`catalog_app`) only — no UPDATE,
 *   DELETE or TRUNCATE grant — and BEFORE UPDATE/DELETE and BEFORE TRUNCATE triggers raise for
 *   every role, so even a grant made by mistake cannot edit history. (The owner and a superuser can
 *   still disable a trigger; `npm run audit -- verify` finds what they change.)
 * - Hash chain: each row carries `chain_seq` (1, 2, 3 … per chain) and `hash` = SHA-256 over its
 *   canonical text (below), which includes `prev_hash`, the hash of the row before it in its chain.
 *   A chain is a publisher's rows; rows without a publisher (sign-in events, user administration,
 *   your own profile) form the platform chain. The BEFORE INSERT trigger `audit_events_chain()`
 *   (SECURITY DEFINER, owner `catalog_owner`) takes `pg_advisory_xact_lock` on the chain, reads its
 *   head, and sets `chain_seq`, `prev_hash`, `occurred_at` (clock_timestamp(), after the lock, so
 *   times rise along a chain) and `hash` — whatever the inserting statement said. The lock is held
 *   to the end of the inserting transaction, so concurrent transactions append one after the other
 *   and cannot fork a chain; a unique index on (chain, chain_seq) refuses a fork even so.
 * - Canonical text (version `audit-v1`), hashed as its UTF-8 bytes, lower-case hex:
 *     `audit-v1` and then, each on its own line (`\n`), the fields
 *     publisher_id, chain_seq, prev_hash, id, occurred_at, actor_id, actor_kind, action,
 *     object_type, object_id, before, after, request_id, client_ip, user_agent
 *   each written as `<UTF-8 byte length>:<text>`, or `-` for NULL, where the text is:
 *   uuids and chain_seq as PostgreSQL prints them (`uuid::text`, decimal); occurred_at in UTC as
 *   `YYYY-MM-DDThh:mm:ss.ffffffZ` (always six fraction digits); before/after as `jsonb::text`
 *   (PostgreSQL's normalised jsonb output); client_ip as `inet::text`; every other field verbatim.
 *   `audit_event_canonical(audit_events)` is that text in SQL; the verifier
 *   (catalog-api/src/modules/audit/verify.ts) builds it again in TypeScript from the stored values.
 * - Row-level security (ENABLE + FORCE): `catalog_app` inserts rows whose actor is the context user
 *   in the context publisher's chain, the platform chain, or (a system admin) any chain; it sees a
 *   publisher's rows in that publisher's context with `audit:read`, and every row as a system admin
 *   with scope `platform`. `catalog_auth` (sign-in events, invitation acceptance, session
 *   revocation) inserts any row and reads none. The owner reads every row (the trigger's head
 *   lookup, the verifier).
 */
import { Migration } from '@mikro-orm/migrations';
import { CTX } from './0003_rls.ts';

/** The chain key of the platform chain (rows without a publisher). */
export const PLATFORM_CHAIN = '00000000-0000-0000-0000-000000000000';

const CHAIN = (t: string) => `coalesce(${t}.publisher_id, '${PLATFORM_CHAIN}'::uuid)`;
const IS_SYSTEM_ADMIN = `(select app_caller_is_system_admin())`;

/** Creates `audit_events`, its chain and append-only triggers, policies and grants; `down` drops them. */
export class Migration0008Audit extends Migration {
  override name = '0008_audit';

  /** Table, functions, triggers, policies, grants. */
  up(): void {
    this.addSql(`
create table audit_events (
  id uuid primary key,
  publisher_id uuid,
  chain_seq bigint not null constraint audit_events_chain_seq_check check (chain_seq > 0),
  prev_hash text constraint audit_events_prev_hash_check check (prev_hash ~ '^[0-9a-f]{64}$'),
  hash text not null constraint audit_events_hash_check check (hash ~ '^[0-9a-f]{64}$'),
  occurred_at timestamptz not null,
  actor_id uuid,
  actor_kind text not null constraint audit_events_actor_kind_check check (actor_kind in ('user', 'api_client', 'anonymous', 'system')),
  action text not null constraint audit_events_action_check check (action ~ '^[a-z][a-z_]*\\.[a-z][a-z_]*$' and length(action) <= 100),
  object_type text not null constraint audit_events_object_type_check check (object_type ~ '^[a-z][a-z_]*$' and length(object_type) <= 50),
  object_id uuid,
  before jsonb constraint audit_events_before_check check (jsonb_typeof(before) = 'object'),
  after jsonb constraint audit_events_after_check check (jsonb_typeof(after) = 'object'),
  request_id text constraint audit_events_request_id_check check (length(request_id) <= 200),
  client_ip inet,
  user_agent text constraint audit_events_user_agent_check check (length(user_agent) <= 512),
  -- people and API clients are named; a failed sign-in of an unknown email and background jobs are not
  constraint audit_events_actor_check check ((actor_kind in ('anonymous', 'system')) = (actor_id is null))
);
comment on table audit_events is 'Append-only audit log: one row per write, hash-chained per publisher (null publisher = the platform chain); see migration 0008';
comment on column audit_events.before is 'The changed fields before the change (allow-listed per object type; never secrets)';
comment on column audit_events.after is 'The changed fields after the change (allow-listed per object type; never secrets)';
-- No foreign keys: history outlives the rows it is about, and a cascade would have to delete it.
create unique index audit_events_chain_key on audit_events ((${CHAIN('audit_events')}), chain_seq);
create index audit_events_publisher_time_idx on audit_events (publisher_id, occurred_at, id);
create index audit_events_time_idx on audit_events (occurred_at, id);
create index audit_events_actor_idx on audit_events (actor_id, occurred_at) where actor_id is not null;
create index audit_events_object_idx on audit_events (object_type, object_id, occurred_at);

-- One field of the canonical text: "<UTF-8 byte length>:<text>", or "-" for NULL.
create function audit_canonical_field(v text) returns text
language sql immutable set search_path = public, pg_temp as $fn$
  select case when v is null then '-' else octet_length(v)::text || ':' || v end
$fn$;

-- The canonical text a row's hash covers (the module comment of migration 0008 spells it out).
create function audit_event_canonical(e audit_events) returns text
language sql stable set search_path = public, pg_temp as $fn$
  select concat_ws(E'\\n', 'audit-v1',
    audit_canonical_field(e.publisher_id::text),
    audit_canonical_field(e.chain_seq::text),
    audit_canonical_field(e.prev_hash),
    audit_canonical_field(e.id::text),
    audit_canonical_field(to_char(e.occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')),
    audit_canonical_field(e.actor_id::text),
    audit_canonical_field(e.actor_kind),
    audit_canonical_field(e.action),
    audit_canonical_field(e.object_type),
    audit_canonical_field(e.object_id::text),
    audit_canonical_field(e.before::text),
    audit_canonical_field(e.after::text),
    audit_canonical_field(e.request_id),
    audit_canonical_field(e.client_ip::text),
    audit_canonical_field(e.user_agent))
$fn$;

-- Append to the row's chain: serialised per chain for the rest of the transaction, so two
-- transactions never read the same head. Runs as the owner, whose select policy shows every row.
create function audit_events_chain() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  head_seq bigint;
  head_hash text;
begin
  perform pg_advisory_xact_lock(hashtextextended('audit-chain:' || coalesce(new.publisher_id::text, 'platform'), 0));
  select e.chain_seq, e.hash into head_seq, head_hash
    from audit_events e
   where ${CHAIN('e')} = coalesce(new.publisher_id, '${PLATFORM_CHAIN}'::uuid)
   order by e.chain_seq desc
   limit 1;
  new.chain_seq := coalesce(head_seq, 0) + 1;
  new.prev_hash := head_hash;
  new.occurred_at := clock_timestamp();
  new.hash := encode(sha256(convert_to(audit_event_canonical(new), 'UTF8')), 'hex');
  return new;
end $$;
create trigger audit_events_chain before insert on audit_events for each row execute function audit_events_chain();

-- History is never edited: for every role, whatever its grants.
create function audit_events_append_only() returns trigger
language plpgsql set search_path = public, pg_temp as $$
begin
  raise exception 'audit_events is append-only: % is not allowed', tg_op using errcode = '42501';
end $$;
create trigger audit_events_no_update before update or delete on audit_events for each row execute function audit_events_append_only();
create trigger audit_events_no_truncate before truncate on audit_events for each statement execute function audit_events_append_only();

revoke all on function audit_events_chain(), audit_events_append_only() from public;

alter table audit_events enable row level security;
alter table audit_events force row level security;
create policy audit_events_owner on audit_events for select to catalog_owner using (true);
create policy audit_events_select on audit_events for select to catalog_app using (
  (audit_events.publisher_id = ${CTX.publisher} and ${CTX.scope} = 'publisher' and (select app_caller_can('audit:read')))
  or (${CTX.scope} = 'platform' and ${IS_SYSTEM_ADMIN}));
create policy audit_events_insert on audit_events for insert to catalog_app with check (
  audit_events.actor_id = ${CTX.user}
  and ((audit_events.publisher_id = ${CTX.publisher} and ${CTX.scope} in ('publisher', 'own', 'department'))
       or audit_events.publisher_id is null
       or ${IS_SYSTEM_ADMIN}));
create policy audit_events_auth on audit_events for insert to catalog_auth with check (true);

revoke all on audit_events from public;
grant select, insert on audit_events to catalog_app;
grant insert on audit_events to catalog_auth;
`);
  }

  /** Drop the table and its functions. */
  override down(): void {
    this.addSql(`
drop function audit_event_canonical(audit_events);
drop table audit_events;
drop function audit_events_chain();
drop function audit_events_append_only();
drop function audit_canonical_field(text);
`);
  }
}
