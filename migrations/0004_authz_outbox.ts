/**
 * 0004 — the relationship outbox (docs/CONTRACTS.md, "Database schema …", `authz_outbox`).
 *
 * Triggers record every relationship change in the same transaction as the change itself, as
 * OpenFGA tuple operations (`object#relation@subject`), delivered in id order by the catalog API's
 * relay (`catalog-api/src/outbox/`):
 *
 * - `user_publishers` insert → write `publisher:<p>#<role>@user:<u>`; update of role/keys → delete
 *   the old tuple, write the new one; delete → delete the tuple.
 * - `users.is_system_admin` (and `deleted_at`): becomes an effective admin → write
 *   `system:platform#admin@user:<u>`; stops being one → delete it.
 * - `works`, `songwriters`, `recordings`: a live row (deleted_at IS NULL) has
 *   `<type>:<id>#publisher@publisher:<p>` and, when owned, `<type>:<id>#owner@user:<u>`; insert writes
 *   them, a change of publisher_id/owner_user_id deletes the old and writes the new, a soft delete
 *   (deleted_at set) deletes them, an undelete writes them again, a hard delete deletes them.
 *
 * The trigger functions are SECURITY DEFINER (owned by catalog_owner, `SET search_path`), so the
 * app role needs no privilege on the outbox; it has none (the outbox holds every publisher's
 * tuples). The relay reaches it only through two SECURITY DEFINER functions executable by
 * catalog_app alone: `authz_outbox_claim(batch_size)` (the oldest ≤ 100 pending rows in id order,
 * FOR UPDATE SKIP LOCKED — the locks hold until the caller's transaction ends) and
 * `authz_outbox_mark(ids, error)` (pending rows among `ids` → delivered when `error` is null, else
 * attempts + 1 and last_error).
 * Each change also sends `NOTIFY authz_outbox` (delivered at commit) for a listening relay.
 */
import { Migration } from '@mikro-orm/migrations';

/** Creates the outbox and its triggers; `down` drops them (pending rows are lost). */
export class Migration0004AuthzOutbox extends Migration {
  override name = '0004_authz_outbox';

  /** Outbox table, trigger functions, triggers, grants. */
  up(): void {
    this.addSql(`
create table authz_outbox (
  id bigserial primary key,
  operation text not null constraint authz_outbox_operation_check check (operation in ('write', 'delete')),
  object text not null,
  relation text not null,
  subject text not null,
  created_at timestamptz not null default now(),
  delivered_at timestamptz,
  attempts integer not null default 0,
  last_error text
);
create index authz_outbox_pending_idx on authz_outbox (id) where delivered_at is null;
revoke all on authz_outbox from catalog_app;

-- The relay's only access (catalog_app has no privilege on the table itself): claim the oldest
-- pending rows, locked FOR UPDATE SKIP LOCKED until the caller's transaction ends …
create function authz_outbox_claim(batch_size integer) returns setof authz_outbox
language sql security definer set search_path = public, pg_temp as $$
  select * from authz_outbox
   where delivered_at is null
   order by id
   limit least(greatest(coalesce(authz_outbox_claim.batch_size, 1), 1), 100)
   for update skip locked
$$;
revoke all on function authz_outbox_claim(integer) from public;
grant execute on function authz_outbox_claim(integer) to catalog_app;

-- … and record the outcome for still-pending rows: delivered (error null) or attempts + 1/last_error.
-- Returns how many rows it marked.
create function authz_outbox_mark(ids bigint[], error text) returns integer
language sql security definer set search_path = public, pg_temp as $$
  with marked as (
    update authz_outbox o
       set delivered_at = case when authz_outbox_mark.error is null then now() end,
           attempts = o.attempts + case when authz_outbox_mark.error is null then 0 else 1 end,
           last_error = coalesce(left(authz_outbox_mark.error, 2000), o.last_error)
     where o.id = any (authz_outbox_mark.ids) and o.delivered_at is null
    returning 1)
  select count(*)::integer from marked
$$;
revoke all on function authz_outbox_mark(bigint[], text) from public;
grant execute on function authz_outbox_mark(bigint[], text) to catalog_app;

create function authz_outbox_emit(op text, obj text, rel text, subj text) returns void
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  insert into authz_outbox (operation, object, relation, subject) values (op, obj, rel, subj);
  perform pg_notify('authz_outbox', '');
end $$;
revoke all on function authz_outbox_emit(text, text, text, text) from public;

create function authz_outbox_membership() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  if tg_op in ('UPDATE', 'DELETE') then
    if tg_op = 'DELETE' or (old.publisher_id, old.user_id, old.role) is distinct from (new.publisher_id, new.user_id, new.role) then
      perform authz_outbox_emit('delete', 'publisher:' || old.publisher_id, old.role, 'user:' || old.user_id);
    end if;
  end if;
  if tg_op = 'INSERT' then
    perform authz_outbox_emit('write', 'publisher:' || new.publisher_id, new.role, 'user:' || new.user_id);
  elsif tg_op = 'UPDATE' then
    if (old.publisher_id, old.user_id, old.role) is distinct from (new.publisher_id, new.user_id, new.role) then
      perform authz_outbox_emit('write', 'publisher:' || new.publisher_id, new.role, 'user:' || new.user_id);
    end if;
  end if;
  return null;
end $$;
revoke all on function authz_outbox_membership() from public;
create trigger user_publishers_authz_outbox after insert or update or delete on user_publishers
  for each row execute function authz_outbox_membership();

create function authz_outbox_system_admin() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  was boolean := false;
  is_now boolean := false;
begin
  if tg_op in ('UPDATE', 'DELETE') then was := old.is_system_admin and old.deleted_at is null; end if;
  if tg_op in ('INSERT', 'UPDATE') then is_now := new.is_system_admin and new.deleted_at is null; end if;
  if was and not is_now then
    perform authz_outbox_emit('delete', 'system:platform', 'admin', 'user:' || old.id);
  elsif is_now and not was then
    perform authz_outbox_emit('write', 'system:platform', 'admin', 'user:' || new.id);
  end if;
  return null;
end $$;
revoke all on function authz_outbox_system_admin() from public;
create trigger users_authz_outbox after insert or update of is_system_admin, deleted_at or delete on users
  for each row execute function authz_outbox_system_admin();

-- TG_ARGV[0] is the OpenFGA type of the table's rows (work, songwriter, recording).
create function authz_outbox_catalog() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  typ text := tg_argv[0];
  prev_t text[] := '{}';
  next_t text[] := '{}';
  t text;
begin
  if tg_op in ('UPDATE', 'DELETE') then
    if old.deleted_at is null then
      prev_t := array['publisher' || chr(10) || 'publisher:' || old.publisher_id];
      if old.owner_user_id is not null then prev_t := prev_t || ('owner' || chr(10) || 'user:' || old.owner_user_id); end if;
    end if;
  end if;
  if tg_op in ('INSERT', 'UPDATE') then
    if new.deleted_at is null then
      next_t := array['publisher' || chr(10) || 'publisher:' || new.publisher_id];
      if new.owner_user_id is not null then next_t := next_t || ('owner' || chr(10) || 'user:' || new.owner_user_id); end if;
    end if;
  end if;
  foreach t in array prev_t loop
    if not (t = any (next_t)) then
      perform authz_outbox_emit('delete', typ || ':' || old.id, split_part(t, chr(10), 1), split_part(t, chr(10), 2));
    end if;
  end loop;
  foreach t in array next_t loop
    if not (t = any (prev_t)) then
      perform authz_outbox_emit('write', typ || ':' || new.id, split_part(t, chr(10), 1), split_part(t, chr(10), 2));
    end if;
  end loop;
  return null;
end $$;
revoke all on function authz_outbox_catalog() from public;
create trigger works_authz_outbox after insert or update of publisher_id, owner_user_id, deleted_at or delete on works
  for each row execute function authz_outbox_catalog('work');
create trigger songwriters_authz_outbox after insert or update of publisher_id, owner_user_id, deleted_at or delete on songwriters
  for each row execute function authz_outbox_catalog('songwriter');
create trigger recordings_authz_outbox after insert or update of publisher_id, owner_user_id, deleted_at or delete on recordings
  for each row execute function authz_outbox_catalog('recording');

-- Every publisher is linked to the platform, so system:platform#admin is admin on it (model.fga).
create function authz_outbox_publisher() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  if tg_op = 'INSERT' then
    perform authz_outbox_emit('write', 'publisher:' || new.id, 'system', 'system:platform');
  elsif tg_op = 'DELETE' then
    perform authz_outbox_emit('delete', 'publisher:' || old.id, 'system', 'system:platform');
  end if;
  return null;
end $$;
revoke all on function authz_outbox_publisher() from public;
create trigger publishers_authz_outbox after insert or delete on publishers
  for each row execute function authz_outbox_publisher();

-- Rows that exist before this migration (the legacy catalog) get their relationships too.
insert into authz_outbox (operation, object, relation, subject)
  select 'write', 'publisher:' || id, 'system', 'system:platform' from publishers
  union all select 'write', 'system:platform', 'admin', 'user:' || id from users where is_system_admin and deleted_at is null
  union all select 'write', 'publisher:' || publisher_id, role, 'user:' || user_id from user_publishers
  union all select 'write', t.typ || ':' || t.id, 'publisher', 'publisher:' || t.publisher_id from (
    select 'work' as typ, id, publisher_id, owner_user_id, deleted_at from works
    union all select 'songwriter', id, publisher_id, owner_user_id, deleted_at from songwriters
    union all select 'recording', id, publisher_id, owner_user_id, deleted_at from recordings) t where t.deleted_at is null
  union all select 'write', t.typ || ':' || t.id, 'owner', 'user:' || t.owner_user_id from (
    select 'work' as typ, id, owner_user_id, deleted_at from works
    union all select 'songwriter', id, owner_user_id, deleted_at from songwriters
    union all select 'recording', id, owner_user_id, deleted_at from recordings) t
    where t.deleted_at is null and t.owner_user_id is not null;
`);
  }

  /** Drop the triggers, functions and the outbox table. */
  override down(): void {
    this.addSql(`
drop trigger publishers_authz_outbox on publishers;
drop function authz_outbox_publisher();
drop trigger recordings_authz_outbox on recordings;
drop trigger songwriters_authz_outbox on songwriters;
drop trigger works_authz_outbox on works;
drop trigger users_authz_outbox on users;
drop trigger user_publishers_authz_outbox on user_publishers;
drop function authz_outbox_catalog();
drop function authz_outbox_system_admin();
drop function authz_outbox_membership();
drop function authz_outbox_emit(text, text, text, text);
drop function authz_outbox_mark(bigint[], text);
drop function authz_outbox_claim(integer);
drop table authz_outbox;
`);
  }
}
