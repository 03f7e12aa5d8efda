/**
 * 0011 — an RLS context that SQL running as `catalog_app` cannot forge, and a role of their own for
 * the relays and jobs (docs/CONTRACTS.md, "Database roles and RLS context"; issue 9 §2).
 *
 * Before: every policy, helper, trigger and column default read `current_setting('app.publisher_id')`,
 * `app.user_id`, `app.access_scope` and `app.department_id`, which any statement of `catalog_app` can
 * set with `set_config` — SQL injected into a handler could re-run it with another publisher.
 *
 * After:
 * - `app_request_contexts` (UNLOGGED, owned by `catalog_owner`, no privilege for anyone else, RLS
 *   enabled without policies): one row per backend, `(backend_pid, xid, user_id, publisher_id,
 *   access_scope, department_id)`. Only SECURITY DEFINER functions write it.
 * - `app_begin_request(user_id, publisher_id)` (SECURITY DEFINER, EXECUTE for `catalog_app` only)
 *   is the only way to set a context: it records the caller's context for the current transaction
 *   (`pg_current_xact_id()`), derives the access scope and department itself from the caller's rows
 *   — the rule catalog-api/src/db/context.ts's SCOPE_SQL had (system admin → `publisher`, `platform`
 *   without a publisher; creator → `own`; a department membership → `department`; another role →
 *   `publisher`; nothing while the user is not active, without a membership, or while the
 *   publisher is suspended or archived) — and returns what the request needs (role, permissions,
 *   the publisher's status and sign-in settings, read-only). A second call in the same transaction
 *   raises 42501, so SQL injected after the API's first statement cannot switch the context; a new
 *   transaction starts without one.
 * - `app_current_user()`, `app_current_publisher()`, `app_current_scope()` (text, null when unset)
 *   and `app_current_department()` (STABLE SECURITY DEFINER PL/pgSQL, pinned search_path, the table
 *   schema-qualified so no temporary table can stand in for it) return the row of this backend only
 *   when its xid is the current transaction's (`pg_current_xact_id_if_assigned()`), otherwise null:
 *   no context → zero rows. Fallback: in a session whose login role is the schema owner (or a
 *   superuser) — who could lift RLS anyway — and only without a recorded context, they read the
 *   `app.*` settings as before (the seed sets several contexts in one transaction that way).
 *   `session_user` is not changed by SET ROLE or by entering a SECURITY DEFINER function, so
 *   `catalog_app` never gets the fallback.
 * - Every policy, function (trigger functions and helpers included) and column default that read one
 *   of the four settings is rewritten in place to call the readers (the catalogue is the source:
 *   `pg_policies`, `pg_get_functiondef`, `pg_attrdef`), keeping the `(select …)` wrapping of the
 *   policies so each reader runs once per statement; the migration fails if any reference is left.
 *   `metering_record_measurements` — which set the settings to read one publisher's rows under
 *   FORCE RLS — records that publisher's context in the table instead and puts the caller's back.
 *   New policies use {@link CONTEXT}, never `current_setting('app.…')`.
 * - The relays' and jobs' SECURITY DEFINER functions (authz outbox claim/mark, the domain-event
 *   relay and operator functions, the metering roll-up's) are executable by `catalog_jobs` (LOGIN
 *   NOSUPERUSER NOBYPASSRLS, created by scripts/services.sh; no table privilege at all) instead of
 *   `catalog_app`.
 *
 * Design notes: the table is keyed by backend so it holds one row per connection (fillfactor 50:
 * updates stay HOT; a connection's first call deletes the rows of backends that have gone);
 * UNLOGGED because a context never outlives its transaction (nothing to recover after a crash, no
 * WAL per request). The readers are PL/pgSQL (cached plans; see
 * `reader`) and PARALLEL UNSAFE (the xid functions are), like the existing helpers. The price: every
 * request transaction, reads included, now gets a transaction id (writing the row needs one), so
 * anti-wraparound autovacuum comes round sooner. Settings alone could not do it: a value the
 * caller can clear cannot say "already called in this transaction".
 */
import { Migration } from '@mikro-orm/migrations';

/** `(select …)`-wrapped readers of the request context, for policies of later migrations. */
export const CONTEXT = {
  publisher: '(select app_current_publisher())',
  user: '(select app_current_user())',
  scope: '(select app_current_scope())',
  department: '(select app_current_department())',
} as const;

/** The relays' and jobs' functions that move from catalog_app to catalog_jobs. */
export const JOB_FUNCTIONS = [
  'authz_outbox_claim(integer)',
  'authz_outbox_mark(bigint[], text)',
  'domain_events_claim(integer)',
  'domain_events_mark_published(bigint[])',
  'domain_events_mark_failed(bigint[], text, boolean, integer, integer, integer)',
  'domain_events_stats()',
  'domain_events_prune(integer)',
  'domain_event_dead_letters_open()',
  'domain_event_dead_letter_resolve(bigint, text)',
  'metering_publishers()',
  'metering_set_api_calls(uuid, date, bigint, uuid[], bigint[])',
  'metering_record_measurements(uuid, date, integer)',
] as const;

/** Functions this migration writes itself (the generic rewrite leaves them alone). */
const OWN_FUNCTIONS = ['app_current_user', 'app_current_publisher', 'app_current_scope', 'app_current_department', 'app_begin_request', 'metering_record_measurements'];

const DEFINER = 'security definer set search_path = public, pg_temp';

/** The row of this backend, if it belongs to the current transaction. */
const THIS_TX = `c.backend_pid = pg_backend_pid() and c.xid = pg_current_xact_id_if_assigned()`;

/**
 * A reader: the recorded value, else (owner or superuser sessions only) the old setting. PL/pgSQL,
 * not SQL: a SQL function that cannot be inlined (SECURITY DEFINER) is planned again at every
 * statement, PL/pgSQL keeps its plan for the session — measured, it makes the readers as cheap
 * per statement as `current_setting` was.
 */
const reader = (name: string, value: string, type: 'uuid' | 'text', setting: string) => `
create function ${name}() returns ${type}
language plpgsql stable ${DEFINER} as $fn$
declare
  v ${type};
begin
  select ${value} into v from public.app_request_contexts c where ${THIS_TX};
  if found then
    return v;
  end if;
  if pg_has_role(session_user, 'catalog_owner', 'MEMBER') then
    return nullif(current_setting('${setting}', true), '')${type === 'uuid' ? '::uuid' : ''};
  end if;
  return null;
end $fn$;
revoke all on function ${name}() from public;
grant execute on function ${name}() to catalog_app, catalog_auth, catalog_jobs;`;

/** The settings the readers replace, with their reader and type. */
const SETTINGS: [setting: string, reader: string, type: 'uuid' | 'text'][] = [
  ['app.publisher_id', 'app_current_publisher()', 'uuid'],
  ['app.user_id', 'app_current_user()', 'uuid'],
  ['app.department_id', 'app_current_department()', 'uuid'],
  ['app.access_scope', 'app_current_scope()', 'text'],
];

/**
 * `pg_temp.app_context_rewrite(s, up)`: `s` with every read of the four settings replaced by its
 * reader (`up`), or the readers by the reads of 0003–0010 (`not up`). Covers the forms PostgreSQL
 * deparses policies and defaults to (`(NULLIF(current_setting('app.x'::text, true), ''::text))::uuid`)
 * and the forms the function bodies were written in (`nullif(current_setting('app.x', true), '')::uuid`,
 * a bare `current_setting('app.x', true)`).
 */
const REWRITE_FN = String.raw`
create function pg_temp.app_context_rewrite(s text, up boolean) returns text language plpgsql immutable as $fn$
declare
  settings text[] := array[${SETTINGS.map(([s]) => `'${s}'`).join(', ')}];
  readers text[] := array[${SETTINGS.map(([, r]) => `'${r}'`).join(', ')}];
  types text[] := array[${SETTINGS.map(([, , t]) => `'${t}'`).join(', ')}];
  pat text;
  empty text := '''''(::text)?';
begin
  if s is null then return null; end if;
  for i in 1 .. array_length(settings, 1) loop
    if up then
      pat := 'current_setting\(''' || replace(settings[i], '.', '\.') || '''(::text)?,\s*true\)';
      if types[i] = 'uuid' then
        s := regexp_replace(s, '\(nullif\(' || pat || ',\s*' || empty || '\)\)::uuid', readers[i], 'gi');
        s := regexp_replace(s, 'nullif\(' || pat || ',\s*' || empty || '\)::uuid', readers[i], 'gi');
        s := regexp_replace(s, 'nullif\(' || pat || ',\s*' || empty || '\)', '(' || readers[i] || ')::text', 'gi');
        s := regexp_replace(s, pat, 'coalesce((' || readers[i] || ')::text, '''')', 'gi');
      else
        s := regexp_replace(s, 'nullif\(' || pat || ',\s*' || empty || '\)', readers[i], 'gi');
        s := regexp_replace(s, pat, 'coalesce(' || readers[i] || ', '''')', 'gi');
      end if;
    else
      s := replace(s, readers[i], case when types[i] = 'uuid'
        then '(nullif(current_setting(''' || settings[i] || ''', true), '''')::uuid)'
        else 'nullif(current_setting(''' || settings[i] || ''', true), '''')' end);
    end if;
  end loop;
  return s;
end $fn$;`;

/** Rewrite every policy, function (but {@link OWN_FUNCTIONS}) and column default of the public schema. */
const REWRITE_ALL = (up: boolean) => String.raw`
do $rewrite$
declare
  r record;
  q text;
  c text;
  needle text := ${up ? `'current_setting\\(''app\\.(publisher_id|user_id|access_scope|department_id)'''` : `'app_current_(publisher|user|scope|department)\\(\\)'`};
begin
  for r in select p.schemaname, p.tablename, p.policyname, p.qual, p.with_check from pg_policies p
            where p.schemaname = 'public' and (coalesce(p.qual, '') ~* needle or coalesce(p.with_check, '') ~* needle) loop
    q := pg_temp.app_context_rewrite(r.qual, ${up});
    c := pg_temp.app_context_rewrite(r.with_check, ${up});
    execute format('alter policy %I on %I.%I', r.policyname, r.schemaname, r.tablename)
      || coalesce(' using (' || q || ')', '') || coalesce(' with check (' || c || ')', '');
  end loop;
  for r in select p.oid from pg_proc p
            where p.pronamespace = 'public'::regnamespace and p.prokind = 'f' and p.prosrc ~* needle
              and p.proname <> all (array[${OWN_FUNCTIONS.map((f) => `'${f}'`).join(', ')}]) loop
    execute pg_temp.app_context_rewrite(pg_get_functiondef(r.oid), ${up});
  end loop;
  for r in select cl.relname, a.attname, pg_get_expr(d.adbin, d.adrelid) as expr
             from pg_attrdef d join pg_class cl on cl.oid = d.adrelid
             join pg_attribute a on a.attrelid = d.adrelid and a.attnum = d.adnum
            where cl.relnamespace = 'public'::regnamespace and pg_get_expr(d.adbin, d.adrelid) ~* needle loop
    execute format('alter table public.%I alter column %I set default ', r.relname, r.attname) || pg_temp.app_context_rewrite(r.expr, ${up});
  end loop;
  -- nothing may be left: policies, functions, defaults, check constraints, trigger conditions, views
  select string_agg(what, ', ') into q from (
    select 'policy ' || tablename || '.' || policyname as what from pg_policies
     where schemaname = 'public' and (coalesce(qual, '') ~* needle or coalesce(with_check, '') ~* needle)
    union all select 'function ' || proname from pg_proc
     where pronamespace = 'public'::regnamespace and prosrc ~* needle
       and proname <> all (array[${OWN_FUNCTIONS.map((f) => `'${f}'`).join(', ')}])
    union all select 'default of ' || cl.relname from pg_attrdef d join pg_class cl on cl.oid = d.adrelid
     where cl.relnamespace = 'public'::regnamespace and pg_get_expr(d.adbin, d.adrelid) ~* needle
    union all select 'constraint ' || conname from pg_constraint
     where connamespace = 'public'::regnamespace and conbin is not null and pg_get_expr(conbin, conrelid) ~* needle
    union all select 'trigger ' || tgname from pg_trigger where not tgisinternal and pg_get_triggerdef(oid) ~* needle
    union all select 'view ' || viewname from pg_views where schemaname = 'public' and definition ~* needle) left_over;
  if q is not null then
    raise exception '0011: still reading the request context the old way: %', q;
  end if;
end $rewrite$;`;

/** The scope rule and permissions of the request (was catalog-api/src/db/context.ts SCOPE_SQL); 0012 amends it. */
export const BEGIN_REQUEST = `
create function app_begin_request(p_user uuid, p_publisher uuid default null)
returns table (is_system_admin boolean, status text, kind text, role text, custom_role_id uuid, department_id uuid,
               publisher_status text, auth_policy text, require_mfa boolean, read_only boolean,
               access_scope text, scoped_department uuid, permissions text[])
language plpgsql volatile ${DEFINER} as $fn$
#variable_conflict use_column
declare
  tx xid8 := pg_current_xact_id();
  me record;
  v_scope text;
  v_department uuid;
  first_of_backend boolean;
begin
  if p_user is null then
    raise exception 'app_begin_request: a user id is required' using errcode = '22004';
  end if;
  if exists (select 1 from public.app_request_contexts c where c.backend_pid = pg_backend_pid() and c.xid = tx) then
    raise exception 'app_begin_request: this transaction already has its request context'
      using errcode = '42501', hint = 'a request context is set once, by the first statement of its transaction';
  end if;
  -- the caller's own rows are visible to this context (users, memberships, the context publisher)
  insert into public.app_request_contexts as c (backend_pid, xid, user_id, publisher_id, access_scope, department_id)
  values (pg_backend_pid(), tx, p_user, p_publisher, '', null)
  on conflict (backend_pid) do update
    set xid = excluded.xid, user_id = excluded.user_id, publisher_id = excluded.publisher_id, access_scope = '', department_id = null
  returning (c.xmax = 0) into first_of_backend;
  -- a new connection: drop the rows of backends that are gone (rows another one is deleting are skipped)
  if first_of_backend then
    delete from public.app_request_contexts c
     where c.backend_pid in (select o.backend_pid from public.app_request_contexts o
                              where o.backend_pid <> pg_backend_pid()
                                and not exists (select 1 from pg_stat_activity a where a.pid = o.backend_pid)
                                for update skip locked);
  end if;

  select u.is_system_admin, u.status, u.kind, m.role, m.custom_role_id, m.department_id,
         case when p.deleted_at is not null then 'archived' else p.status end as publisher_status,
         p.settings ->> 'auth_policy' as auth_policy,
         coalesce(p.settings -> 'require_mfa' = 'true'::jsonb, false) as require_mfa,
         coalesce(app_publisher_read_only(p.id), false) as read_only
    into me
    from public.users u
    left join public.user_publishers m on m.user_id = u.id and m.publisher_id = p_publisher
    left join public.publishers p on p.id = p_publisher
   where u.id = p_user and u.deleted_at is null;
  if not found then
    return; -- unknown or deleted user: no row, scope stays empty
  end if;

  v_scope := case when me.status is distinct from 'active' then ''
                  when p_publisher is null and me.is_system_admin then 'platform'
                  when p_publisher is null then ''
                  when me.is_system_admin then 'publisher'
                  when me.publisher_status is distinct from 'active' and me.publisher_status is distinct from 'trial' then ''
                  when me.role = 'creator' then 'own'
                  when me.role is not null and me.department_id is not null then 'department'
                  when me.role is not null then 'publisher'
                  else '' end;
  v_department := case when v_scope = 'department' then me.department_id end;
  update public.app_request_contexts c set access_scope = v_scope, department_id = v_department
   where c.backend_pid = pg_backend_pid();

  return query
  select me.is_system_admin, me.status, me.kind, me.role, me.custom_role_id, me.department_id,
         me.publisher_status, me.auth_policy, me.require_mfa, me.read_only, v_scope, v_department,
         (select coalesce(array_agg(rp.permission order by rp.permission), '{}')
            from public.role_permissions rp join public.roles r on r.id = rp.role_id
           where v_scope <> ''
             and ((me.is_system_admin and r.publisher_id is null and r.name = 'admin')
               or (not me.is_system_admin and me.custom_role_id is not null and r.id = me.custom_role_id)
               or (not me.is_system_admin and me.custom_role_id is null and r.publisher_id is null
                   and r.name = case when me.department_id is null then me.role else 'department-' || me.role end)));
end $fn$;
revoke all on function app_begin_request(uuid, uuid) from public;
grant execute on function app_begin_request(uuid, uuid) to catalog_app;`;

/** Storage is read under the measured publisher's context, recorded in the table (was: set_config). */
const MEASUREMENTS_UP = `
create or replace function metering_record_measurements(p uuid, d date, seats_used integer) returns bigint
language plpgsql volatile ${DEFINER} as $$
declare
  bytes bigint;
  saved public.app_request_contexts;
begin
  select * into saved from public.app_request_contexts c where c.backend_pid = pg_backend_pid();
  insert into public.app_request_contexts as c (backend_pid, xid, user_id, publisher_id, access_scope, department_id)
  values (pg_backend_pid(), pg_current_xact_id(), null, p, 'publisher', null)
  on conflict (backend_pid) do update
    set xid = excluded.xid, user_id = null, publisher_id = excluded.publisher_id, access_scope = 'publisher', department_id = null;
  select coalesce((select sum(pg_column_size(w.*)) from works w where w.publisher_id = p), 0)
       + coalesce((select sum(pg_column_size(s.*)) from songwriters s where s.publisher_id = p), 0)
       + coalesce((select sum(pg_column_size(r.*)) from recordings r where r.publisher_id = p), 0)
       + coalesce((select sum(pg_column_size(ws.*)) from work_songwriters ws where ws.publisher_id = p), 0)
    into bytes;
  -- the caller's row back (an error aborts the (sub)transaction, which undoes these writes too)
  if saved.backend_pid is null then
    delete from public.app_request_contexts c where c.backend_pid = pg_backend_pid();
  else
    update public.app_request_contexts c
       set xid = saved.xid, user_id = saved.user_id, publisher_id = saved.publisher_id,
           access_scope = saved.access_scope, department_id = saved.department_id
     where c.backend_pid = pg_backend_pid();
  end if;
  insert into account_usage as u (publisher_id, day, storage_bytes, seats_used) values (p, d, bytes, metering_record_measurements.seats_used)
    on conflict (publisher_id, day) do update set storage_bytes = excluded.storage_bytes, seats_used = excluded.seats_used, updated_at = now();
  return bytes;
end $$;`;

/** 0010's version (for `down`). */
const MEASUREMENTS_DOWN = `
create or replace function metering_record_measurements(p uuid, d date, seats_used integer) returns bigint
language plpgsql volatile ${DEFINER} as $$
declare
  bytes bigint;
  caller_publisher text := coalesce(current_setting('app.publisher_id', true), '');
  caller_scope text := coalesce(current_setting('app.access_scope', true), '');
begin
  perform set_config('app.publisher_id', p::text, true), set_config('app.access_scope', 'publisher', true);
  select coalesce((select sum(pg_column_size(w.*)) from works w where w.publisher_id = p), 0)
       + coalesce((select sum(pg_column_size(s.*)) from songwriters s where s.publisher_id = p), 0)
       + coalesce((select sum(pg_column_size(r.*)) from recordings r where r.publisher_id = p), 0)
       + coalesce((select sum(pg_column_size(ws.*)) from work_songwriters ws where ws.publisher_id = p), 0)
    into bytes;
  -- the caller's context back (an error aborts the (sub)transaction, which undoes the set_config too)
  perform set_config('app.publisher_id', caller_publisher, true), set_config('app.access_scope', caller_scope, true);
  insert into account_usage as u (publisher_id, day, storage_bytes, seats_used) values (p, d, bytes, metering_record_measurements.seats_used)
    on conflict (publisher_id, day) do update set storage_bytes = excluded.storage_bytes, seats_used = excluded.seats_used, updated_at = now();
  return bytes;
end $$;`;

/** The request-context table, its definer, its readers, the rewrite and the jobs' grants; `down` restores 0010's state. */
export class Migration0011RequestContext extends Migration {
  override name = '0011_request_context';

  /** Table, readers, `app_begin_request`, the rewrite, `catalog_jobs`'s grants. */
  up(): void {
    this.addSql(`
create unlogged table app_request_contexts (
  backend_pid integer primary key,
  xid xid8 not null,
  user_id uuid,
  publisher_id uuid,
  access_scope text not null default '' constraint app_request_contexts_scope_check check (access_scope in ('', 'publisher', 'own', 'department', 'platform')),
  department_id uuid
) with (fillfactor = 50);
comment on table app_request_contexts is 'The RLS context of the transaction xid on backend backend_pid; written only by SECURITY DEFINER functions (app_begin_request)';
revoke all on app_request_contexts from public, catalog_app, catalog_auth, catalog_jobs;
alter table app_request_contexts enable row level security;
grant usage on schema public to catalog_jobs;
${reader('app_current_user', 'c.user_id', 'uuid', 'app.user_id')}
${reader('app_current_publisher', 'c.publisher_id', 'uuid', 'app.publisher_id')}
${reader('app_current_scope', "nullif(c.access_scope, '')", 'text', 'app.access_scope')}
${reader('app_current_department', 'c.department_id', 'uuid', 'app.department_id')}
${REWRITE_FN}
`);
    this.addSql(REWRITE_ALL(true));
    this.addSql(`drop function pg_temp.app_context_rewrite(text, boolean);`);
    this.addSql(BEGIN_REQUEST);
    this.addSql(MEASUREMENTS_UP);
    for (const f of JOB_FUNCTIONS) this.addSql(`revoke execute on function ${f} from catalog_app; grant execute on function ${f} to catalog_jobs;`);
  }

  /** Back to reading the settings; the relays' functions to catalog_app again. */
  override down(): void {
    for (const f of JOB_FUNCTIONS) this.addSql(`revoke execute on function ${f} from catalog_jobs; grant execute on function ${f} to catalog_app;`);
    this.addSql(MEASUREMENTS_DOWN);
    this.addSql(`drop function app_begin_request(uuid, uuid);`);
    this.addSql(REWRITE_FN);
    this.addSql(REWRITE_ALL(false));
    this.addSql(`
drop function pg_temp.app_context_rewrite(text, boolean);
drop function app_current_department(); drop function app_current_scope(); drop function app_current_publisher(); drop function app_current_user();
drop table app_request_contexts;
`);
  }
}
