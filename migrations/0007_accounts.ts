/**
 * 0007 — accounts (docs/CONTRACTS.md, "Accounts and usage"): each publisher's subscription, the
 * plans it can be on, and the daily usage the metering fills in.
 *
 * - `plans`: the plan types (starter, professional, enterprise, custom) with their limits — seats,
 *   API calls per month, storage bytes (null = unlimited) — and what happens over the API-call
 *   limit (`block`: 429, `warn`: a header only).
 * - `accounts`: one row per publisher (created by a trigger with the publisher, so the 1:1 holds
 *   whatever code path creates a publisher): plan, billing cycle, seat limit, status (trial,
 *   active, past_due, cancelled), trial end, billing contact, an opaque payment-method reference
 *   (a payment provider's token — never card data; the column refuses anything but a token shape).
 * - Read-only publishers: an account is read-only while its trial has ended without a chosen plan,
 *   or while it is cancelled. `app_publisher_read_only(p)` says so from the clock (exact, for RLS and
 *   the catalog API); `accounts_expire_trials()` (the catalog API calls it on a timer, as the
 *   sign-in service's role, which also writes the stamped accounts' audit rows) stamps
 *   `read_only_since` on trials that ended, and a trigger mirrors the state into OpenFGA as
 *   `publisher:<p>#read_only@user:*` through the relationship outbox, so every sidecar and /ext-authz
 *   refuse the same writes (policies/model.fga `frozen`). `app_caller_can` (0006) is redefined to
 *   refuse the blocked permissions (policies/src/permissions.ts `READ_ONLY_BLOCKED_PERMISSIONS`,
 *   copied here as they were when this was written) at a read-only publisher — system admins
 *   excepted, as in the model.
 * - `account_usage` (per publisher and UTC day: API calls, storage bytes, seats used) and
 *   `api_client_usage` (API calls per API client and day), readable with usage:read; the metering
 *   (a later migration) writes them through its own functions.
 *
 * RLS: accounts are readable with accounts:read at the context publisher and by system admins
 * without a publisher context (GET /api/v1/accounts); changeable with accounts:change_plan. The
 * sign-in service's role reads them (seat limits). The schema owner has a policy of its own: the
 * SECURITY DEFINER trigger and functions above run as the owner.
 */
import { Migration } from '@mikro-orm/migrations';
import { CTX } from './0003_rls.ts';

const lit = (s: string) => `'${s.replace(/'/g, "''")}'`;
const CAN = (permission: string) => `(select app_caller_can(${lit(permission)}))`;

/** policies/src/permissions.ts READ_ONLY_BLOCKED_PERMISSIONS when this migration was written. */
const READ_ONLY_BLOCKED = [
  'works:create', 'works:update', 'works:delete',
  'songwriters:create', 'songwriters:update', 'songwriters:delete',
  'recordings:create', 'recordings:update', 'recordings:delete',
  'publishers:update', 'publisher_settings:update', 'branding:update', 'departments:manage',
  'members:invite', 'members:update_role', 'roles:manage', 'api_clients:manage',
];

/** 0006's `app_caller_can` body from `exists (` on (restored by `down`). */
const CALLER_HOLDS = `exists (
    select 1
      from user_publishers m
      join users u on u.id = m.user_id and u.status = 'active' and u.deleted_at is null
      join publishers p on p.id = m.publisher_id and p.status in ('active', 'trial') and p.deleted_at is null
      join roles r on (m.custom_role_id is not null and r.id = m.custom_role_id)
                   or (m.custom_role_id is null and r.publisher_id is null
                       and r.name = case when m.department_id is null then m.role else 'department-' || m.role end)
      join role_permissions rp on rp.role_id = r.id and rp.permission = app_caller_can.permission
     where m.user_id = ${CTX.user} and m.publisher_id = ${CTX.publisher} and m.role <> 'creator'
       and (m.department_id is null or m.department_id = app_caller_can.department))`;

const callerCan = (body: string) => `create or replace function app_caller_can(permission text, department uuid default null) returns boolean
language sql stable security definer set search_path = public, pg_temp as $fn$
  select ${body}
$fn$;`;

const GIB = 1024 ** 3;

/** The tables whose writes a read-only publisher refuses (its catalog). */
const CATALOG_TABLES = ['works', 'songwriters', 'recordings', 'work_songwriters'];
/** A row of `t` may be written: its publisher is not read-only, or the caller is a system admin. */
const WRITABLE = (t: string) => `(not (select app_publisher_read_only(${t}.publisher_id)) or (select app_caller_is_system_admin()))`;

/** Plans, accounts, usage; the read-only state in RLS and in the outbox. */
export class Migration0007Accounts extends Migration {
  override name = '0007_accounts';

  /** Tables, triggers, functions, policies, grants; an account (trial) for every publisher. */
  up(): void {
    this.addSql(`
create table plans (
  id text primary key constraint plans_id_check check (id in ('starter', 'professional', 'enterprise', 'custom')),
  name text not null,
  seats integer not null constraint plans_seats_check check (seats between 1 and 100000),
  api_calls_per_month bigint constraint plans_api_calls_check check (api_calls_per_month >= 0),
  storage_bytes bigint constraint plans_storage_check check (storage_bytes >= 0),
  over_limit text not null default 'block' constraint plans_over_limit_check check (over_limit in ('block', 'warn')),
  position integer not null
);
comment on table plans is 'Plan types and their limits (null limit = unlimited); over_limit: block (429) or warn';
insert into plans (id, name, seats, api_calls_per_month, storage_bytes, over_limit, position) values
  ('starter', 'Starter', 5, 100000, ${1 * GIB}, 'block', 1),
  ('professional', 'Professional', 50, 2000000, ${50 * GIB}, 'block', 2),
  ('enterprise', 'Enterprise', 2000, 50000000, ${1024 * GIB}, 'warn', 3),
  ('custom', 'Custom', 100000, null, null, 'warn', 4);
grant select on plans to catalog_app, catalog_auth;

create table accounts (
  publisher_id uuid primary key constraint accounts_publisher_id_fkey references publishers (id) on delete cascade,
  plan_type text not null default 'starter' constraint accounts_plan_type_fkey references plans (id),
  billing_cycle text not null default 'monthly' constraint accounts_billing_cycle_check check (billing_cycle in ('monthly', 'annual', 'enterprise')),
  seats integer not null constraint accounts_seats_check check (seats between 1 and 100000),
  status text not null default 'trial' constraint accounts_status_check check (status in ('trial', 'active', 'past_due', 'cancelled')),
  trial_ends_at timestamptz,
  read_only_since timestamptz,
  billing_email text constraint accounts_billing_email_check check (length(billing_email) <= 254 and billing_email ~ '^[^@\\s]+@[^@\\s]+$'),
  billing_address jsonb not null default '{}' constraint accounts_billing_address_check check (jsonb_typeof(billing_address) = 'object'),
  -- an opaque token of the payment provider (e.g. pm_1Nq…); 13–19 digits in a row would be a card number
  payment_method_ref text constraint accounts_payment_method_ref_check check (
    payment_method_ref ~ '^[A-Za-z][A-Za-z0-9_:.-]{2,199}$' and payment_method_ref !~ '[0-9]{13}'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  updated_by uuid default nullif(current_setting('app.user_id', true), '')::uuid,
  constraint accounts_trial_check check (status <> 'trial' or trial_ends_at is not null)
);
comment on column accounts.read_only_since is 'set by accounts_expire_trials() when a trial ended without a chosen plan';
create index accounts_plan_status_idx on accounts (plan_type, status);
create trigger accounts_updated before update on accounts for each row execute function set_updated_audit();

-- A publisher always has an account: a 14-day trial of the starter plan until a plan is chosen.
create function accounts_for_new_publisher() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  insert into accounts (publisher_id, plan_type, seats, status, trial_ends_at)
    select new.id, 'starter', p.seats, 'trial', now() + interval '14 days' from plans p where p.id = 'starter';
  return null;
end $$;
revoke all on function accounts_for_new_publisher() from public;
create trigger publishers_account after insert on publishers for each row execute function accounts_for_new_publisher();

-- Existing publishers were customers before accounts existed: active, with the seats they had
-- (settings.seats, 25 by default, or the members and open invitations they use, if more) — on the
-- professional plan when that fits its 50 seats, else on the custom plan.
with had as (
  select pub.id, greatest(
      coalesce(case when pub.settings ->> 'seats' ~ '^[0-9]{1,6}$' then (pub.settings ->> 'seats')::int end, 25),
      (select count(*) from user_publishers m where m.publisher_id = pub.id and m.role <> 'api_user')::int
        + (select count(*) from invitations i where i.publisher_id = pub.id and i.accepted_at is null and i.revoked_at is null and i.expires_at > now())::int,
      1) as seats
  from publishers pub)
insert into accounts (publisher_id, plan_type, seats, status, billing_cycle)
  select id, case when seats <= 50 then 'professional' else 'custom' end, least(seats, 100000), 'active', 'monthly' from had;
-- the table forces RLS and has no update policy: lift it for this one statement (DDL is transactional)
alter table permissions no force row level security;
update permissions set description = 'Change the publisher''s settings (sign-in policy, MFA, locale)' where name = 'publisher_settings:update';
alter table permissions force row level security;

-- Is publisher p read-only now? (trial ended without a plan, or cancelled; exact, from the clock)
create function app_publisher_read_only(p uuid) returns boolean
language sql stable security definer set search_path = public, pg_temp as $$
  select exists (select 1 from accounts a where a.publisher_id = app_publisher_read_only.p
                   and (a.status = 'cancelled' or a.read_only_since is not null
                        or (a.status = 'trial' and a.trial_ends_at <= now())))
$$;
revoke all on function app_publisher_read_only(uuid) from public;
grant execute on function app_publisher_read_only(uuid) to catalog_app;

-- Stamp the trials that ended (the catalog API's timer, on the sign-in pool, which also writes the
-- audit rows); returns the publishers it stamped.
create function accounts_expire_trials() returns setof uuid
language sql volatile security definer set search_path = public, pg_temp as $$
  update accounts set read_only_since = now(), updated_by = null
   where status = 'trial' and trial_ends_at <= now() and read_only_since is null
  returning publisher_id
$$;
revoke all on function accounts_expire_trials() from public;
grant execute on function accounts_expire_trials() to catalog_auth;

-- The read-only state in OpenFGA (publisher:<p>#read_only@user:*), as the status of 0006.
create function authz_outbox_account_read_only() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  was boolean := tg_op in ('UPDATE', 'DELETE') and (old.status = 'cancelled' or old.read_only_since is not null);
  is_now boolean := tg_op in ('INSERT', 'UPDATE') and (new.status = 'cancelled' or new.read_only_since is not null);
  p uuid := coalesce(new.publisher_id, old.publisher_id);
begin
  if was and not is_now then perform authz_outbox_emit('delete', 'publisher:' || p, 'read_only', 'user:*');
  elsif is_now and not was then perform authz_outbox_emit('write', 'publisher:' || p, 'read_only', 'user:*');
  end if;
  return null;
end $$;
revoke all on function authz_outbox_account_read_only() from public;
create trigger accounts_authz_outbox after insert or update of status, read_only_since or delete on accounts
  for each row execute function authz_outbox_account_read_only();

${callerCan(`app_caller_is_system_admin() or (${CALLER_HOLDS}
    and not (app_caller_can.permission = any (array[${READ_ONLY_BLOCKED.map(lit).join(', ')}]::text[])
             and app_publisher_read_only(${CTX.publisher})))`)}

-- The plan rules in the database too (the API checks them first): the custom plan is a system
-- admin's, other plans hold at most their seats.
create function accounts_guard() returns trigger language plpgsql set search_path = public, pg_temp as $$
begin
  if current_user <> 'catalog_app' then return new; end if;
  if new.plan_type = 'custom' and old.plan_type is distinct from 'custom' and not app_caller_is_system_admin() then
    raise exception 'the custom plan is set by a system admin' using errcode = '42501';
  end if;
  if new.plan_type <> 'custom' and new.seats > (select p.seats from plans p where p.id = new.plan_type) then
    raise exception 'more seats than the plan allows' using errcode = '23514';
  end if;
  return new;
end $$;
revoke all on function accounts_guard() from public;
create trigger accounts_guard before update on accounts for each row execute function accounts_guard();

-- Every role's catalog writes stop at a read-only publisher (creators' policies never ask
-- app_caller_can): restrictive policies, ANDed with the permissive ones of 0003/0006.
${CATALOG_TABLES.map((t) => `create policy ${t}_read_only_insert on ${t} as restrictive for insert with check (${WRITABLE(t)});
create policy ${t}_read_only_update on ${t} as restrictive for update using (${WRITABLE(t)});
create policy ${t}_read_only_delete on ${t} as restrictive for delete using (${WRITABLE(t)});`).join('\n')}

alter table accounts enable row level security; alter table accounts force row level security;
create policy accounts_select on accounts for select using (
  (accounts.publisher_id = ${CTX.publisher} and ${CAN('accounts:read')})
  or (${CTX.scope} = 'platform' and (select app_caller_is_system_admin())));
create policy accounts_update on accounts for update using (accounts.publisher_id = ${CTX.publisher} and ${CAN('accounts:change_plan')})
  with check (accounts.publisher_id = ${CTX.publisher});
create policy accounts_auth on accounts for select to catalog_auth using (true);
create policy accounts_owner on accounts to catalog_owner using (true) with check (true);
grant select on accounts to catalog_app;
grant select (publisher_id, seats) on accounts to catalog_auth;   -- seat limits only, no billing data
grant update (plan_type, billing_cycle, seats, status, read_only_since, billing_email, billing_address, payment_method_ref, updated_at, updated_by) on accounts to catalog_app;

create table account_usage (
  publisher_id uuid not null constraint account_usage_publisher_id_fkey references publishers (id) on delete cascade,
  day date not null,
  api_calls bigint not null default 0 constraint account_usage_api_calls_check check (api_calls >= 0),
  storage_bytes bigint constraint account_usage_storage_check check (storage_bytes >= 0),
  seats_used integer constraint account_usage_seats_check check (seats_used >= 0),
  updated_at timestamptz not null default now(),
  primary key (publisher_id, day)
);
comment on table account_usage is 'Per publisher and UTC day: allowed API calls (the metering total of that day), storage bytes and seats used (last measured)';
create table api_client_usage (
  publisher_id uuid not null constraint api_client_usage_publisher_id_fkey references publishers (id) on delete cascade,
  client_id uuid not null constraint api_client_usage_client_id_fkey references users (id) on delete cascade,
  day date not null,
  api_calls bigint not null default 0 constraint api_client_usage_api_calls_check check (api_calls >= 0),
  updated_at timestamptz not null default now(),
  primary key (publisher_id, client_id, day)
);
`);
    for (const t of ['account_usage', 'api_client_usage']) {
      this.addSql(`
alter table ${t} enable row level security; alter table ${t} force row level security;
create policy ${t}_select on ${t} for select using (${t}.publisher_id = ${CTX.publisher} and ${CAN('usage:read')});
create policy ${t}_owner on ${t} to catalog_owner using (true) with check (true);
grant select on ${t} to catalog_app;
`);
    }
  }

  /** Drop what `up` created and restore 0006's `app_caller_can`. */
  override down(): void {
    this.addSql(`
${callerCan(`app_caller_is_system_admin() or ${CALLER_HOLDS}`)}
${CATALOG_TABLES.map((t) => `drop policy ${t}_read_only_insert on ${t}; drop policy ${t}_read_only_update on ${t}; drop policy ${t}_read_only_delete on ${t};`).join('\n')}
drop trigger accounts_guard on accounts; drop function accounts_guard();
-- the table forces RLS and has no update policy: lift it for this one statement (DDL is transactional)
alter table permissions no force row level security;
update permissions set description = 'Change the publisher''s settings (sign-in policy, MFA, locale, seats)' where name = 'publisher_settings:update';
alter table permissions force row level security;
drop table api_client_usage, account_usage;
drop trigger accounts_authz_outbox on accounts; drop function authz_outbox_account_read_only();
drop function accounts_expire_trials(); drop function app_publisher_read_only(uuid);
drop trigger publishers_account on publishers; drop function accounts_for_new_publisher();
drop table accounts, plans;
delete from authz_outbox where relation = 'read_only' and delivered_at is null;
`);
  }
}
