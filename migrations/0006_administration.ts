/**
 * 0006 — administration (docs/CONTRACTS.md, "Administration"): the permission catalogue and roles
 * (system roles with their permission sets, publishers' custom roles), departments, invitations,
 * API clients, user profile and kind, publisher branding — and the second wall for all of it:
 *
 * - Permissions in RLS: `app_caller_can(permission, department)` (SECURITY DEFINER, STABLE) says
 *   whether the context user holds a permission at the context publisher: a system admin always; a
 *   member through their system role, custom role or department role — never while the publisher
 *   is suspended or archived or the user disabled. Every catalog write policy, the membership,
 *   role, department, invitation and API-client policies, and the publishers guard ask it, so the
 *   database refuses what the sidecar would refuse even for SQL injected as catalog_app.
 * - Access scopes (`app.access_scope`): `publisher`, `own` (creators), and new `department` with
 *   `app.department_id` (a department member sees that department's rows only) and `platform` (a
 *   system admin without a publisher context sees every user and membership: user administration).
 * - Guards (BEFORE UPDATE triggers): a publisher's profile, settings, branding and status each need
 *   their own permission (status: system admins; archiving: publishers:archive); a user's email
 *   never changes through the app, status and deletion are a system admin's (never on oneself), the
 *   profile is the user's own. A custom role's name and publisher never change (they are its
 *   OpenFGA object id).
 * - Keep an admin: demoting or removing the last admin of a publisher that is not archived is
 *   refused, serialised per publisher with an advisory lock, so concurrent demotions cannot both
 *   pass (each checks with a fresh snapshot after taking the lock).
 * - Outbox triggers for the new relationships (policies/model.fga): custom role membership
 *   (`role:<p>/<name>#assignee`), department membership (`department:<d>#<role>`), custom role grants
 *   (`publisher:<p>#grant_<permission>@role:<p>/<name>#assignee`), role and department links, a
 *   catalog row's department, a publisher's status (`publisher:<p>#suspended@user:*` while suspended
 *   or archived) and a user's status (`system:platform#disabled@user:<u>` while disabled or
 *   deleted).
 *
 * The permission list and the system roles' sets are those of policies/src/permissions.ts when this
 * migration was written; later changes come with their own migration (a test keeps the database
 * and the catalogue equal).
 */
import { Migration } from '@mikro-orm/migrations';
import { CTX, USERS_SELECT_POLICY, MEMBERSHIP_SELECT_POLICY, MEMBERSHIP_WRITE_POLICIES, PUBLISHER_POLICIES, USER_WRITE_POLICIES, WORK_SONGWRITER_POLICIES, catalogPolicies } from './0003_rls.ts';

const PERMISSIONS: [string, string][] = [
  ["works:read", "Read works"],
  ["works:create", "Create works"],
  ["works:update", "Update works"],
  ["works:delete", "Delete works"],
  ["songwriters:read", "Read songwriters"],
  ["songwriters:create", "Create songwriters"],
  ["songwriters:update", "Update songwriters"],
  ["songwriters:delete", "Delete songwriters"],
  ["recordings:read", "Read recordings"],
  ["recordings:create", "Create recordings"],
  ["recordings:update", "Update recordings"],
  ["recordings:delete", "Delete recordings"],
  ["publishers:read", "Read the publisher's profile"],
  ["publishers:update", "Change the publisher's name and profile"],
  ["publishers:archive", "Archive the publisher (a system admin can restore it)"],
  ["publisher_settings:read", "Read the publisher's settings"],
  ["publisher_settings:update", "Change the publisher's settings (sign-in policy, MFA, locale, seats)"],
  ["branding:read", "Read the publisher's branding"],
  ["branding:update", "Change the publisher's branding"],
  ["departments:manage", "Create, rename and delete departments"],
  ["members:read", "List members and invitations"],
  ["members:invite", "Invite people and revoke invitations"],
  ["members:update_role", "Change a member's role or department"],
  ["members:remove", "Remove a member (and end their sessions here)"],
  ["roles:read", "List roles and permissions"],
  ["roles:manage", "Create, change and delete custom roles"],
  ["accounts:read", "Read the publisher's account and plan"],
  ["accounts:change_plan", "Change the plan"],
  ["usage:read", "Read usage (API calls, storage, seats)"],
  ["audit:read", "Read the audit trail"],
  ["api_clients:manage", "Register, rotate and revoke API clients"],
];

const CATALOG = { works: 'work', songwriters: 'songwriter', recordings: 'recording' } as const;
const catalogPerms = (actions: string[]) => Object.keys(CATALOG).flatMap((r) => actions.map((a) => `${r}:${a}`));
const profile = ['publishers:read', 'branding:read'];

/** System roles (fixed ids) and their permission sets. The department-* roles are what a department-scoped membership holds. */
export const SYSTEM_ROLES: { id: string; name: string; description: string; permissions: string[] }[] = [
  { id: '00000000-0000-4000-a000-000000000001', name: 'admin', description: 'Everything in the publisher', permissions: PERMISSIONS.map(([n]) => n) },
  {
    id: '00000000-0000-4000-a000-000000000002',
    name: 'manager',
    description: 'The catalog, including deletes; reads the administration',
    permissions: [...catalogPerms(['read', 'create', 'update', 'delete']), ...profile, 'publisher_settings:read', 'branding:update', 'members:read', 'roles:read', 'usage:read'],
  },
  { id: '00000000-0000-4000-a000-000000000003', name: 'editor', description: 'Reads, creates and changes the catalog', permissions: [...catalogPerms(['read', 'create', 'update']), ...profile] },
  { id: '00000000-0000-4000-a000-000000000004', name: 'viewer', description: 'Reads the catalog', permissions: [...catalogPerms(['read']), ...profile] },
  { id: '00000000-0000-4000-a000-000000000005', name: 'api_user', description: 'Machine access to the catalog: read, create, update', permissions: catalogPerms(['read', 'create', 'update']) },
  { id: '00000000-0000-4000-a000-000000000006', name: 'creator', description: 'Their own works, songwriters and recordings', permissions: [...catalogPerms(['read', 'create', 'update']), ...profile] },
  {
    id: '00000000-0000-4000-a000-000000000011',
    name: 'department-admin',
    description: "A department's catalog and members",
    permissions: [...catalogPerms(['read', 'create', 'update']), ...profile, 'members:read', 'members:invite', 'members:update_role', 'members:remove'],
  },
  { id: '00000000-0000-4000-a000-000000000012', name: 'department-editor', description: "Reads, creates and changes a department's catalog", permissions: [...catalogPerms(['read', 'create', 'update']), ...profile] },
  { id: '00000000-0000-4000-a000-000000000013', name: 'department-viewer', description: "Reads a department's catalog", permissions: [...catalogPerms(['read']), ...profile] },
];

const lit = (s: string) => `'${s.replace(/'/g, "''")}'`;
const CAN = (permission: string, department = 'null') => `(select app_caller_can(${lit(permission)}, ${department}))`;
const IS_SYSTEM_ADMIN = `(select app_caller_is_system_admin())`;
const CONTEXT_USER = `nullif(current_setting('app.user_id', true), '')::uuid`;
const DEPT = `(select nullif(current_setting('app.department_id', true), '')::uuid)`;
const AUDIT = `
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  created_by uuid default ${CONTEXT_USER},
  updated_by uuid default ${CONTEXT_USER}`;

/** A catalog row is visible: context publisher and the scope's rows. */
const catalogRow = (t: string) => `${t}.publisher_id = ${CTX.publisher} and (
    ${CTX.scope} = 'publisher'
    or (${CTX.scope} = 'own' and ${t}.owner_user_id = ${CTX.user})
    or (${CTX.scope} = 'department' and ${t}.department_id = ${DEPT}))`;

/** Creating a catalog row needs `<t>:create` in the row's scope. */
const catalogInsert = (t: string) => `${t}.publisher_id = ${CTX.publisher} and ${t}.deleted_at is null and (
    (${CTX.scope} = 'publisher' and ${CAN(`${t}:create`)})
    or (${CTX.scope} = 'own' and ${t}.owner_user_id = ${CTX.user})
    or (${CTX.scope} = 'department' and ${t}.department_id = ${DEPT} and app_caller_can(${lit(`${t}:create`)}, ${t}.department_id)))`;

/** Changing needs `<t>:update`; soft-deleting (deleted_at set) `<t>:delete`, which only publisher-wide roles hold. */
const catalogUpdate = (t: string) => `${t}.publisher_id = ${CTX.publisher} and (
    (${CTX.scope} = 'publisher' and ((${t}.deleted_at is null and ${CAN(`${t}:update`)}) or (${t}.deleted_at is not null and ${CAN(`${t}:delete`)})))
    or (${CTX.scope} = 'own' and ${t}.owner_user_id = ${CTX.user} and ${t}.deleted_at is null)
    or (${CTX.scope} = 'department' and ${t}.department_id = ${DEPT} and ${t}.deleted_at is null and app_caller_can(${lit(`${t}:update`)}, ${t}.department_id)))`;

/** A split follows its work: visible with it, written by whoever may write the work. */
const splitWork = (check: string) => `work_songwriters.publisher_id = ${CTX.publisher} and exists (
    select 1 from works w where w.id = work_songwriters.work_id and w.publisher_id = work_songwriters.publisher_id and (${check}))`;
const splitRead = splitWork(`${CTX.scope} = 'publisher'
      or (${CTX.scope} = 'own' and w.owner_user_id = ${CTX.user})
      or (${CTX.scope} = 'department' and w.department_id = ${DEPT})`);
const splitWrite = (perm: string) => splitWork(`(${CTX.scope} = 'publisher' and ${CAN(perm)})
      or (${CTX.scope} = 'own' and w.owner_user_id = ${CTX.user})
      or (${CTX.scope} = 'department' and w.department_id = ${DEPT} and app_caller_can(${lit(perm)}, w.department_id))`);

/** Membership administration: publisher-wide, or a department admin within their department. */
const memberAdmin = (perm: string) => `user_publishers.publisher_id = ${CTX.publisher} and (
    (${CTX.scope} = 'publisher' and ${CAN(perm)})
    or (${CTX.scope} = 'department' and user_publishers.department_id = ${DEPT} and app_caller_can(${lit(perm)}, user_publishers.department_id)))`;

/** 0003's policies and grants of the tables whose policies this migration replaces (for `down`). */
const DOWN_POLICIES = `
${Object.keys(CATALOG).map((t) => `drop policy ${t}_select on ${t}; drop policy ${t}_insert on ${t}; drop policy ${t}_update on ${t};${catalogPolicies(t)}`).join('\n')}
drop policy work_songwriters_select on work_songwriters; drop policy work_songwriters_insert on work_songwriters;
drop policy work_songwriters_update on work_songwriters; drop policy work_songwriters_delete on work_songwriters;
${WORK_SONGWRITER_POLICIES}
drop policy user_publishers_select on user_publishers; drop policy user_publishers_insert on user_publishers;
drop policy user_publishers_update on user_publishers; drop policy user_publishers_delete on user_publishers;
${MEMBERSHIP_SELECT_POLICY}
${MEMBERSHIP_WRITE_POLICIES}
drop policy publishers_select on publishers; drop policy publishers_insert on publishers; drop policy publishers_update on publishers;
${PUBLISHER_POLICIES}
drop policy users_select on users; drop policy users_insert on users; drop policy users_update on users;
${USERS_SELECT_POLICY}
${USER_WRITE_POLICIES}
revoke update on users from catalog_app;
grant update (email, display_name, status, updated_at, updated_by) on users to catalog_app;
`;

/** Creates the administration schema, its policies, guards and outbox triggers; `down` removes them. */
export class Migration0006Administration extends Migration {
  override name = '0006_administration';

  /** Tables, seed rows, functions, policies, triggers, grants. */
  up(): void {
    // ---------------------------------------------------------------- tables
    this.addSql(`
create table permissions (
  name text primary key constraint permissions_name_check check (name ~ '^[a-z_]+:[a-z_]+$'),
  description text not null
);

create table roles (
  id uuid primary key default gen_random_uuid(),
  publisher_id uuid constraint roles_publisher_id_fkey references publishers (id) on delete cascade,
  name text not null constraint roles_name_check check (name ~ '^[a-z][a-z0-9_-]{1,39}$'),
  display_name text not null default '' constraint roles_display_name_check check (length(display_name) <= 100),
  description text not null default '' constraint roles_description_check check (length(description) <= 500),
  ${AUDIT},
  constraint roles_publisher_id_id_key unique (publisher_id, id)
);
comment on table roles is 'System roles (publisher_id null) and custom roles of a publisher; role:<publisher>/<name> in OpenFGA';
create unique index roles_system_name_key on roles (name) where publisher_id is null;
create unique index roles_publisher_name_key on roles (publisher_id, name) where publisher_id is not null;
create trigger roles_updated before update on roles for each row execute function set_updated_audit();

create table role_permissions (
  role_id uuid not null constraint role_permissions_role_id_fkey references roles (id) on delete cascade,
  permission text not null constraint role_permissions_permission_fkey references permissions (name),
  constraint role_permissions_pkey primary key (role_id, permission)
);

create table departments (
  id uuid primary key default gen_random_uuid(),
  publisher_id uuid not null constraint departments_publisher_id_fkey references publishers (id) on delete cascade,
  name text not null constraint departments_name_check check (length(trim(name)) between 1 and 100),
  description text not null default '' constraint departments_description_check check (length(description) <= 500),
  ${AUDIT},
  deleted_at timestamptz,
  constraint departments_publisher_id_id_key unique (publisher_id, id)
);
create unique index departments_publisher_name_key on departments (publisher_id, lower(name)) where deleted_at is null;
create trigger departments_updated before update on departments for each row execute function set_updated_audit();

alter table user_publishers
  add column custom_role_id uuid,
  add column department_id uuid,
  drop constraint user_publishers_role_check,
  add constraint user_publishers_role_check check (role in ('admin', 'manager', 'editor', 'viewer', 'creator', 'api_user', 'custom')),
  add constraint user_publishers_custom_role_check check ((role = 'custom') = (custom_role_id is not null)),
  add constraint user_publishers_department_role_check check (department_id is null or role in ('admin', 'editor', 'viewer')),
  add constraint user_publishers_custom_role_fkey foreign key (publisher_id, custom_role_id) references roles (publisher_id, id),
  add constraint user_publishers_department_fkey foreign key (publisher_id, department_id) references departments (publisher_id, id);
create index user_publishers_custom_role_idx on user_publishers (publisher_id, custom_role_id) where custom_role_id is not null;
create index user_publishers_department_idx on user_publishers (publisher_id, department_id) where department_id is not null;
`);
    for (const t of Object.keys(CATALOG)) {
      this.addSql(`
alter table ${t} add column department_id uuid,
  add constraint ${t}_department_fkey foreign key (publisher_id, department_id) references departments (publisher_id, id);
create index ${t}_publisher_department_idx on ${t} (publisher_id, department_id, created_at, id) where department_id is not null;
`);
    }
    this.addSql(`
alter table users
  add column kind text not null default 'person' constraint users_kind_check check (kind in ('person', 'api_client')),
  add column phone text constraint users_phone_check check (phone ~ '^\\+[1-9][0-9]{6,14}$'),
  add column timezone text constraint users_timezone_check check (length(timezone) between 1 and 64),
  add column language text constraint users_language_check check (language ~ '^[a-z]{2}(-[A-Z]{2})?$'),
  add column avatar_url text constraint users_avatar_url_check check (avatar_url ~ '^https://' and length(avatar_url) <= 2048),
  alter column email drop not null,
  add constraint users_email_required_check check (kind = 'api_client' or email is not null);
comment on column users.kind is 'person, or api_client: the subject of an API client (api_clients), which has no email and no password';

alter table publishers
  add column branding jsonb not null default '{}'::jsonb constraint publishers_branding_check check (jsonb_typeof(branding) = 'object');

create table invitations (
  id uuid primary key default gen_random_uuid(),
  publisher_id uuid not null constraint invitations_publisher_id_fkey references publishers (id) on delete cascade,
  email text not null constraint invitations_email_check check (email ~ '^[^@[:space:]]+@[^@[:space:]]+$'),
  role text not null constraint invitations_role_check check (role in ('admin', 'manager', 'editor', 'viewer', 'creator', 'custom')),
  custom_role_id uuid,
  department_id uuid,
  token_hash text not null constraint invitations_token_hash_key unique,
  expires_at timestamptz not null,
  ${AUDIT},
  accepted_at timestamptz,
  accepted_by uuid constraint invitations_accepted_by_fkey references users (id),
  revoked_at timestamptz,
  constraint invitations_custom_role_check check ((role = 'custom') = (custom_role_id is not null)),
  constraint invitations_department_role_check check (department_id is null or role in ('admin', 'editor', 'viewer')),
  constraint invitations_custom_role_fkey foreign key (publisher_id, custom_role_id) references roles (publisher_id, id) on delete cascade,
  constraint invitations_department_fkey foreign key (publisher_id, department_id) references departments (publisher_id, id)
);
comment on column invitations.token_hash is 'SHA-256 of the single-use invitation token (the token itself is only in the mail)';
create unique index invitations_open_key on invitations (publisher_id, lower(email)) where accepted_at is null and revoked_at is null;
create trigger invitations_updated before update on invitations for each row execute function set_updated_audit();

create table api_clients (
  id uuid primary key constraint api_clients_id_fkey references users (id) on delete cascade,
  publisher_id uuid not null constraint api_clients_publisher_id_fkey references publishers (id) on delete cascade,
  name text not null constraint api_clients_name_check check (length(trim(name)) between 1 and 100),
  secret_hash text not null,
  ${AUDIT},
  rotated_at timestamptz,
  revoked_at timestamptz,
  last_used_at timestamptz
);
comment on table api_clients is 'OAuth 2.0 clients (client credentials grant) of a publisher; id = the users row of kind api_client they act as';
comment on column api_clients.secret_hash is 'SHA-256 of the client secret (256 random bits; shown once)';
create index api_clients_publisher_idx on api_clients (publisher_id, created_at);
create trigger api_clients_updated before update on api_clients for each row execute function set_updated_audit();
`);

    // ---------------------------------------------------------------- catalogue and system roles
    this.addSql(
      `insert into permissions (name, description) values ${PERMISSIONS.map(([n, d]) => `(${lit(n)}, ${lit(d)})`).join(', ')};`,
    );
    for (const r of SYSTEM_ROLES) {
      this.addSql(`insert into roles (id, publisher_id, name, display_name, description) values (${lit(r.id)}, null, ${lit(r.name)}, ${lit(r.name)}, ${lit(r.description)});`);
      this.addSql(`insert into role_permissions (role_id, permission) values ${r.permissions.map((p) => `(${lit(r.id)}, ${lit(p)})`).join(', ')};`);
    }

    // ---------------------------------------------------------------- permission check
    this.addSql(`
-- Does the context user hold "permission" at the context publisher (for a department-scoped
-- membership: in "department")? Reads only rows the context user's own select policies show
-- (its users row and memberships, the context publisher, system and context-publisher roles), so
-- FORCE RLS on the owner does not hide them and no policy here calls it back (no recursion).
create function app_caller_can(permission text, department uuid default null) returns boolean
language sql stable security definer set search_path = public, pg_temp as $fn$
  select app_caller_is_system_admin() or exists (
    select 1
      from user_publishers m
      join users u on u.id = m.user_id and u.status = 'active' and u.deleted_at is null
      join publishers p on p.id = m.publisher_id and p.status in ('active', 'trial') and p.deleted_at is null
      join roles r on (m.custom_role_id is not null and r.id = m.custom_role_id)
                   or (m.custom_role_id is null and r.publisher_id is null
                       and r.name = case when m.department_id is null then m.role else 'department-' || m.role end)
      join role_permissions rp on rp.role_id = r.id and rp.permission = app_caller_can.permission
     where m.user_id = ${CTX.user} and m.publisher_id = ${CTX.publisher} and m.role <> 'creator'
       and (m.department_id is null or m.department_id = app_caller_can.department))
$fn$;
revoke all on function app_caller_can(text, uuid) from public;
grant execute on function app_caller_can(text, uuid) to catalog_app;
`);

    // ---------------------------------------------------------------- RLS: catalog
    for (const t of Object.keys(CATALOG)) {
      this.addSql(`
drop policy ${t}_select on ${t}; drop policy ${t}_insert on ${t}; drop policy ${t}_update on ${t};
create policy ${t}_select on ${t} for select using (${catalogRow(t)});
create policy ${t}_insert on ${t} for insert with check (${catalogInsert(t)});
create policy ${t}_update on ${t} for update using (${catalogRow(t)}) with check (${catalogUpdate(t)});
`);
    }
    this.addSql(`
drop policy work_songwriters_select on work_songwriters; drop policy work_songwriters_insert on work_songwriters;
drop policy work_songwriters_update on work_songwriters; drop policy work_songwriters_delete on work_songwriters;
create policy work_songwriters_select on work_songwriters for select using (${splitRead});
create policy work_songwriters_insert on work_songwriters for insert with check (${splitWrite('works:update')} or ${splitWrite('works:create')});
create policy work_songwriters_update on work_songwriters for update using (${splitRead}) with check (${splitWrite('works:update')});
create policy work_songwriters_delete on work_songwriters for delete using (${splitWrite('works:update')});
`);

    // ---------------------------------------------------------------- RLS: memberships, users, publishers
    this.addSql(`
drop policy user_publishers_select on user_publishers;
drop policy user_publishers_insert on user_publishers;
drop policy user_publishers_update on user_publishers;
drop policy user_publishers_delete on user_publishers;
create policy user_publishers_select on user_publishers for select using (
  user_publishers.user_id = ${CTX.user}
  or ${CTX.scope} = 'platform'
  or (user_publishers.publisher_id = ${CTX.publisher} and (
        ${CTX.scope} = 'publisher'
        or (${CTX.scope} = 'department' and user_publishers.department_id = ${DEPT}))));
-- Enrolling: a system admin; or an admin with api_clients:manage enrolling its own API client as api_user.
-- (Invitations are accepted by the sign-in service's role, migration 0005's policy.)
create policy user_publishers_insert on user_publishers for insert with check (
  user_publishers.publisher_id = ${CTX.publisher} and ${CTX.scope} = 'publisher' and (
    ${IS_SYSTEM_ADMIN}
    or (user_publishers.role = 'api_user' and ${CAN('api_clients:manage')}
        and exists (select 1 from api_clients c where c.id = user_publishers.user_id and c.publisher_id = user_publishers.publisher_id))));
create policy user_publishers_update on user_publishers for update
  using (${memberAdmin('members:update_role')}) with check (${memberAdmin('members:update_role')});
create policy user_publishers_delete on user_publishers for delete using (
  ${memberAdmin('members:remove')} or (${CTX.scope} = 'platform' and ${IS_SYSTEM_ADMIN}));
grant update (role, custom_role_id, department_id, updated_at, updated_by) on user_publishers to catalog_app;
grant update (custom_role_id, department_id) on user_publishers to catalog_auth;

-- Scope platform: a system admin's request without a publisher context (user administration). The
-- select policy must not call a helper that reads users (recursion), so it trusts the scope the
-- request transaction derived from the caller's own row — as every scope is trusted (0003).
drop policy users_select on users;
create policy users_select on users for select using (
  users.id = ${CTX.user}
  or ${CTX.scope} = 'platform'
  or exists (select 1 from user_publishers m where m.user_id = users.id and m.publisher_id = ${CTX.publisher})
  -- the API client subject its creator just inserted (before its membership exists; INSERT … RETURNING reads it)
  or (users.kind = 'api_client' and users.created_by = ${CTX.user}));
drop policy users_update on users;
create policy users_update on users for update
  using (users.id = ${CTX.user} or ${IS_SYSTEM_ADMIN})
  with check (users.id = ${CTX.user} or ${IS_SYSTEM_ADMIN});
-- API clients are created by their publisher's admins (api_clients:manage); people by system admins.
drop policy users_insert on users;
create policy users_insert on users for insert with check (
  ${IS_SYSTEM_ADMIN}
  or (users.kind = 'api_client' and ${CTX.publisher} is not null and ${CTX.scope} = 'publisher' and ${CAN('api_clients:manage')}));
revoke update on users from catalog_app;
grant update (display_name, phone, timezone, language, avatar_url, status, deleted_at, updated_at, updated_by) on users to catalog_app;
grant insert (kind) on users to catalog_app;
grant insert (kind) on users to catalog_auth;

drop policy publishers_select on publishers;
drop policy publishers_insert on publishers;
drop policy publishers_update on publishers;
create policy publishers_select on publishers for select using (
  publishers.id = ${CTX.publisher}
  or exists (select 1 from user_publishers m where m.publisher_id = publishers.id and m.user_id = ${CTX.user})
  or ${IS_SYSTEM_ADMIN});
create policy publishers_insert on publishers for insert with check (${IS_SYSTEM_ADMIN});
create policy publishers_update on publishers for update
  using (publishers.id = ${CTX.publisher} and (${IS_SYSTEM_ADMIN} or ${CAN('publishers:update')} or ${CAN('publisher_settings:update')} or ${CAN('branding:update')} or ${CAN('publishers:archive')}))
  with check (publishers.id = ${CTX.publisher});
`);

    // ---------------------------------------------------------------- guards
    this.addSql(`
-- Which column changes need which permission (the update policy only says "some of them").
-- The guards judge the app role only: the sign-in service's role is limited by its column grants,
-- and the owner (migrations, seed) may change anything anyway.
create function publishers_guard() returns trigger language plpgsql set search_path = public, pg_temp as $$
begin
  if current_user <> 'catalog_app' then return new; end if;
  if (new.name) is distinct from (old.name) and not app_caller_can('publishers:update') then
    raise exception 'changing the publisher''s profile needs publishers:update' using errcode = '42501';
  end if;
  if new.settings is distinct from old.settings and not app_caller_can('publisher_settings:update') then
    raise exception 'changing settings needs publisher_settings:update' using errcode = '42501';
  end if;
  if new.branding is distinct from old.branding and not app_caller_can('branding:update') then
    raise exception 'changing branding needs branding:update' using errcode = '42501';
  end if;
  if (new.slug, new.type, new.business_model) is distinct from (old.slug, old.type, old.business_model) and not app_caller_is_system_admin() then
    raise exception 'slug, type and business model are a system admin''s to change' using errcode = '42501';
  end if;
  if (new.status, new.deleted_at) is distinct from (old.status, old.deleted_at) and not app_caller_is_system_admin()
     and not (old.status <> 'archived' and new.status = 'archived' and new.deleted_at is not null and app_caller_can('publishers:archive')) then
    raise exception 'only a system admin changes a publisher''s status (archiving needs publishers:archive)' using errcode = '42501';
  end if;
  return new;
end $$;
create trigger publishers_guard before update on publishers for each row execute function publishers_guard();

create function users_guard() returns trigger language plpgsql set search_path = public, pg_temp as $$
declare
  caller uuid := ${CONTEXT_USER};
begin
  if current_user <> 'catalog_app' then return new; end if;
  if new.email is distinct from old.email then
    raise exception 'the email address is not changed through the API' using errcode = '42501';
  end if;
  if (new.status, new.deleted_at) is distinct from (old.status, old.deleted_at) and (new.id = caller or not app_caller_is_system_admin()) then
    raise exception 'status and deletion are a system admin''s to change, never on oneself' using errcode = '42501';
  end if;
  if (new.display_name, new.phone, new.timezone, new.language, new.avatar_url)
       is distinct from (old.display_name, old.phone, old.timezone, old.language, old.avatar_url)
     and new.id is distinct from caller and not app_caller_is_system_admin() then
    raise exception 'a profile is its user''s to change' using errcode = '42501';
  end if;
  return new;
end $$;
create trigger users_guard before update on users for each row execute function users_guard();

create function roles_guard() returns trigger language plpgsql set search_path = public, pg_temp as $$
begin
  if (new.name, new.publisher_id) is distinct from (old.name, old.publisher_id) then
    raise exception 'a role''s name and publisher never change (they are its OpenFGA object); create a new role' using errcode = '42501';
  end if;
  return new;
end $$;
create trigger roles_guard before update on roles for each row execute function roles_guard();

-- Keep an admin: the last admin membership of a publisher that is not archived cannot be demoted or
-- removed. Serialised per publisher (advisory lock); VOLATILE, so the count after the lock sees
-- every committed concurrent change (READ COMMITTED takes a new snapshot per statement).
create function user_publishers_keep_admin() returns trigger language plpgsql volatile
set search_path = public, pg_temp as $$
declare
  left_admins integer;
begin
  if old.role <> 'admin' or old.department_id is not null then return coalesce(new, old); end if;
  if tg_op = 'UPDATE' and new.role = 'admin' and new.department_id is null and new.publisher_id = old.publisher_id then return new; end if;
  perform pg_advisory_xact_lock(hashtextextended('publisher-admins:' || old.publisher_id, 0));
  if exists (select 1 from publishers p where p.id = old.publisher_id and (p.status = 'archived' or p.deleted_at is not null)) then
    return coalesce(new, old);
  end if;
  select count(*) into left_admins from user_publishers m
   where m.publisher_id = old.publisher_id and m.role = 'admin' and m.department_id is null and m.user_id <> old.user_id;
  if left_admins = 0 then
    raise exception 'a publisher must keep at least one admin' using errcode = '23514', constraint = 'user_publishers_keep_admin';
  end if;
  return coalesce(new, old);
end $$;
create trigger user_publishers_keep_admin before update or delete on user_publishers
  for each row execute function user_publishers_keep_admin();
`);

    // ---------------------------------------------------------------- RLS: the new tables
    this.addSql(`
alter table permissions enable row level security; alter table permissions force row level security;
create policy permissions_read on permissions for select using (true);
grant select on permissions to catalog_app, catalog_auth;

alter table roles enable row level security; alter table roles force row level security;
create policy roles_select on roles for select using (roles.publisher_id is null or roles.publisher_id = ${CTX.publisher});
create policy roles_insert on roles for insert with check (roles.publisher_id = ${CTX.publisher} and ${CAN('roles:manage')});
create policy roles_update on roles for update using (roles.publisher_id = ${CTX.publisher} and ${CAN('roles:manage')})
  with check (roles.publisher_id = ${CTX.publisher});
create policy roles_delete on roles for delete using (roles.publisher_id = ${CTX.publisher} and ${CAN('roles:manage')});
create policy roles_auth on roles for select to catalog_auth using (true);
-- The outbox triggers (SECURITY DEFINER, owned by catalog_owner) name a custom role's object by its
-- name, whatever the context of the change (an accepted invitation, a platform-wide user deletion).
create policy roles_owner on roles for select to catalog_owner using (true);
grant select, insert, delete on roles to catalog_app;
grant update (display_name, description, updated_at, updated_by) on roles to catalog_app;
grant select on roles to catalog_auth;

alter table role_permissions enable row level security; alter table role_permissions force row level security;
create policy role_permissions_select on role_permissions for select using (
  exists (select 1 from roles r where r.id = role_permissions.role_id));
create policy role_permissions_insert on role_permissions for insert with check (
  exists (select 1 from roles r where r.id = role_permissions.role_id and r.publisher_id = ${CTX.publisher}) and ${CAN('roles:manage')});
create policy role_permissions_delete on role_permissions for delete using (
  exists (select 1 from roles r where r.id = role_permissions.role_id and r.publisher_id = ${CTX.publisher}) and ${CAN('roles:manage')});
create policy role_permissions_auth on role_permissions for select to catalog_auth using (true);
grant select, insert, delete on role_permissions to catalog_app;
grant select on role_permissions to catalog_auth;

alter table departments enable row level security; alter table departments force row level security;
create policy departments_select on departments for select using (departments.publisher_id = ${CTX.publisher} and ${CTX.scope} in ('publisher', 'department', 'own'));
create policy departments_insert on departments for insert with check (departments.publisher_id = ${CTX.publisher} and ${CAN('departments:manage')});
create policy departments_update on departments for update using (departments.publisher_id = ${CTX.publisher} and ${CAN('departments:manage')})
  with check (departments.publisher_id = ${CTX.publisher});
create policy departments_auth on departments for select to catalog_auth using (true);
grant select, insert on departments to catalog_app;
grant update (name, description, deleted_at, updated_at, updated_by) on departments to catalog_app;
grant select on departments to catalog_auth;

alter table invitations enable row level security; alter table invitations force row level security;
create policy invitations_select on invitations for select using (
  invitations.publisher_id = ${CTX.publisher} and (
    (${CTX.scope} = 'publisher' and ${CAN('members:read')})
    or (${CTX.scope} = 'department' and invitations.department_id = ${DEPT} and app_caller_can('members:read', invitations.department_id))));
create policy invitations_insert on invitations for insert with check (
  invitations.publisher_id = ${CTX.publisher} and invitations.accepted_at is null and (
    (${CTX.scope} = 'publisher' and ${CAN('members:invite')})
    or (${CTX.scope} = 'department' and invitations.department_id = ${DEPT} and app_caller_can('members:invite', invitations.department_id))));
create policy invitations_update on invitations for update using (
  invitations.publisher_id = ${CTX.publisher} and (
    (${CTX.scope} = 'publisher' and ${CAN('members:invite')})
    or (${CTX.scope} = 'department' and invitations.department_id = ${DEPT} and app_caller_can('members:invite', invitations.department_id))))
  with check (invitations.publisher_id = ${CTX.publisher} and invitations.accepted_at is null);
create policy invitations_auth on invitations to catalog_auth using (true) with check (true);
grant select, insert on invitations to catalog_app;
grant update (revoked_at, updated_at, updated_by) on invitations to catalog_app;
grant select on invitations to catalog_auth;
grant update (accepted_at, accepted_by, updated_at, updated_by) on invitations to catalog_auth;

alter table api_clients enable row level security; alter table api_clients force row level security;
create policy api_clients_admin on api_clients using (api_clients.publisher_id = ${CTX.publisher} and ${CAN('api_clients:manage')})
  with check (api_clients.publisher_id = ${CTX.publisher} and ${CAN('api_clients:manage')});
create policy api_clients_auth on api_clients to catalog_auth using (true) with check (true);
grant select, insert on api_clients to catalog_app;
grant update (name, secret_hash, rotated_at, revoked_at, updated_at, updated_by) on api_clients to catalog_app;
grant select on api_clients to catalog_auth;
grant update (last_used_at) on api_clients to catalog_auth;
`);

    // ---------------------------------------------------------------- outbox triggers
    this.addSql(`
-- The tuple of one membership row (docs/CONTRACTS.md, "Authorization model").
create function authz_membership_tuple(m user_publishers) returns text[]
language plpgsql stable security definer set search_path = public, pg_temp as $$
declare
  role_name text;
begin
  if m.custom_role_id is not null then
    select r.name into role_name from roles r where r.id = m.custom_role_id;
    return array['role:' || m.publisher_id || '/' || role_name, 'assignee', 'user:' || m.user_id];
  elsif m.department_id is not null then
    return array['department:' || m.department_id, m.role, 'user:' || m.user_id];
  end if;
  return array['publisher:' || m.publisher_id, m.role, 'user:' || m.user_id];
end $$;
revoke all on function authz_membership_tuple(user_publishers) from public;

create or replace function authz_outbox_membership() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  prev text[];
  next text[];
begin
  if tg_op in ('UPDATE', 'DELETE') then prev := authz_membership_tuple(old); end if;
  if tg_op in ('INSERT', 'UPDATE') then next := authz_membership_tuple(new); end if;
  if prev is not null and prev is distinct from next then perform authz_outbox_emit('delete', prev[1], prev[2], prev[3]); end if;
  if next is not null and next is distinct from prev then perform authz_outbox_emit('write', next[1], next[2], next[3]); end if;
  return null;
end $$;
drop trigger user_publishers_authz_outbox on user_publishers;
create trigger user_publishers_authz_outbox after insert or update or delete on user_publishers
  for each row execute function authz_outbox_membership();

-- A custom role is linked to its publisher; its grants are tuples on the publisher.
create function authz_outbox_role() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
begin
  if tg_op = 'INSERT' and new.publisher_id is not null then
    perform authz_outbox_emit('write', 'role:' || new.publisher_id || '/' || new.name, 'publisher', 'publisher:' || new.publisher_id);
  elsif tg_op = 'DELETE' and old.publisher_id is not null then
    perform authz_outbox_emit('delete', 'role:' || old.publisher_id || '/' || old.name, 'publisher', 'publisher:' || old.publisher_id);
  end if;
  return null;
end $$;
create trigger roles_authz_outbox after insert or delete on roles for each row execute function authz_outbox_role();

create function authz_outbox_role_permission() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  r roles;
  rp role_permissions := coalesce(new, old);
begin
  select * into r from roles where id = rp.role_id;
  if r.id is null or r.publisher_id is null then return null; end if; -- system roles live in the model
  perform authz_outbox_emit(case when tg_op = 'DELETE' then 'delete' else 'write' end,
    'publisher:' || r.publisher_id, 'grant_' || replace(rp.permission, ':', '_'),
    'role:' || r.publisher_id || '/' || r.name || '#assignee');
  return null;
end $$;
create trigger role_permissions_authz_outbox after insert or delete on role_permissions
  for each row execute function authz_outbox_role_permission();

-- A live department links its roles to the publisher (department_<role>@department:<d>#<role>).
create function authz_outbox_department() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  was boolean := tg_op in ('UPDATE', 'DELETE') and old.deleted_at is null;
  is_now boolean := tg_op in ('INSERT', 'UPDATE') and new.deleted_at is null;
  d departments := coalesce(new, old);
  op text;
  r text;
begin
  if was = is_now then return null; end if;
  op := case when is_now then 'write' else 'delete' end;
  perform authz_outbox_emit(op, 'department:' || d.id, 'publisher', 'publisher:' || d.publisher_id);
  foreach r in array array['admin', 'editor', 'viewer'] loop
    perform authz_outbox_emit(op, 'publisher:' || d.publisher_id, 'department_' || r, 'department:' || d.id || '#' || r);
  end loop;
  return null;
end $$;
create trigger departments_authz_outbox after insert or update of deleted_at or delete on departments
  for each row execute function authz_outbox_department();

-- A catalog row's department (besides 0004's publisher and owner tuples).
create function authz_outbox_catalog_department() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  typ text := tg_argv[0];
  prev text;
  next text;
begin
  if tg_op in ('UPDATE', 'DELETE') and old.deleted_at is null and old.department_id is not null then prev := 'department:' || old.department_id; end if;
  if tg_op in ('INSERT', 'UPDATE') and new.deleted_at is null and new.department_id is not null then next := 'department:' || new.department_id; end if;
  if prev is not null and prev is distinct from next then perform authz_outbox_emit('delete', typ || ':' || old.id, 'department', prev); end if;
  if next is not null and next is distinct from prev then perform authz_outbox_emit('write', typ || ':' || new.id, 'department', next); end if;
  return null;
end $$;
`);
    for (const [t, typ] of Object.entries(CATALOG)) {
      this.addSql(`create trigger ${t}_authz_outbox_department after insert or update of department_id, deleted_at or delete on ${t}
  for each row execute function authz_outbox_catalog_department('${typ}');`);
    }
    this.addSql(`
-- Status: suspended or archived (or deleted) publishers shut their members out (publisher#suspended@user:*).
create function authz_outbox_publisher_status() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  was boolean := tg_op in ('UPDATE', 'DELETE') and (old.status in ('suspended', 'archived') or old.deleted_at is not null);
  is_now boolean := tg_op in ('INSERT', 'UPDATE') and (new.status in ('suspended', 'archived') or new.deleted_at is not null);
  p uuid := coalesce(new.id, old.id);
begin
  if was and not is_now then perform authz_outbox_emit('delete', 'publisher:' || p, 'suspended', 'user:*');
  elsif is_now and not was then perform authz_outbox_emit('write', 'publisher:' || p, 'suspended', 'user:*');
  end if;
  return null;
end $$;
create trigger publishers_authz_outbox_status after insert or update of status, deleted_at or delete on publishers
  for each row execute function authz_outbox_publisher_status();

-- Disabled or deleted users are shut out everywhere (system:platform#disabled@user:<u>).
create function authz_outbox_user_status() returns trigger
language plpgsql security definer set search_path = public, pg_temp as $$
declare
  was boolean := tg_op in ('UPDATE', 'DELETE') and (old.status <> 'active' or old.deleted_at is not null);
  is_now boolean := tg_op in ('INSERT', 'UPDATE') and (new.status <> 'active' or new.deleted_at is not null);
  u uuid := coalesce(new.id, old.id);
begin
  if was and not is_now then perform authz_outbox_emit('delete', 'system:platform', 'disabled', 'user:' || u);
  elsif is_now and not was then perform authz_outbox_emit('write', 'system:platform', 'disabled', 'user:' || u);
  end if;
  return null;
end $$;
create trigger users_authz_outbox_status after insert or update of status, deleted_at or delete on users
  for each row execute function authz_outbox_user_status();

-- Existing rows: statuses that already shut someone out.
insert into authz_outbox (operation, object, relation, subject)
  select 'write', 'publisher:' || id, 'suspended', 'user:*' from publishers where status in ('suspended', 'archived') or deleted_at is not null
  union all select 'write', 'system:platform', 'disabled', 'user:' || id from users where status <> 'active' or deleted_at is not null;

-- Functions are executable by PUBLIC when created; none of these is anyone's to call.
revoke all on function publishers_guard(), users_guard(), roles_guard(), user_publishers_keep_admin(),
  authz_outbox_role(), authz_outbox_role_permission(), authz_outbox_department(), authz_outbox_catalog_department(),
  authz_outbox_publisher_status(), authz_outbox_user_status() from public;
`);
  }

  /** Drop what `up` created; memberships with a custom role or a department are deleted first (their roles do not exist before). */
  override down(): void {
    this.addSql(`
drop trigger users_authz_outbox_status on users; drop function authz_outbox_user_status();
drop trigger publishers_authz_outbox_status on publishers; drop function authz_outbox_publisher_status();
drop trigger works_authz_outbox_department on works; drop trigger songwriters_authz_outbox_department on songwriters;
drop trigger recordings_authz_outbox_department on recordings; drop function authz_outbox_catalog_department();
drop trigger departments_authz_outbox on departments; drop function authz_outbox_department();
drop trigger role_permissions_authz_outbox on role_permissions; drop function authz_outbox_role_permission();
drop trigger roles_authz_outbox on roles; drop function authz_outbox_role();
drop trigger user_publishers_keep_admin on user_publishers; drop function user_publishers_keep_admin();
drop trigger roles_guard on roles; drop function roles_guard();
drop trigger users_guard on users; drop function users_guard();
drop trigger publishers_guard on publishers; drop function publishers_guard();
alter table user_publishers disable trigger user_publishers_authz_outbox;
alter table user_publishers no force row level security;
delete from user_publishers where role in ('custom', 'api_user') or department_id is not null;
alter table user_publishers force row level security;
alter table user_publishers enable trigger user_publishers_authz_outbox;
`);
    // 0004's membership trigger function, as it was
    this.addSql(`
create or replace function authz_outbox_membership() returns trigger
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
drop function authz_membership_tuple(user_publishers);
`);
    // RLS policies of 0003 (catalog, memberships, users, publishers), as they were
    this.addSql(DOWN_POLICIES);
    this.addSql(`
drop table api_clients, invitations;
alter table publishers drop column branding;
delete from users where kind = 'api_client';
alter table users drop constraint users_email_required_check, drop column kind, drop column phone, drop column timezone,
  drop column language, drop column avatar_url, alter column email set not null;
`);
    for (const t of Object.keys(CATALOG)) this.addSql(`alter table ${t} drop constraint ${t}_department_fkey, drop column department_id;`);
    this.addSql(`
alter table user_publishers drop constraint user_publishers_department_fkey, drop constraint user_publishers_custom_role_fkey,
  drop constraint user_publishers_department_role_check, drop constraint user_publishers_custom_role_check,
  drop constraint user_publishers_role_check, drop column custom_role_id, drop column department_id,
  add constraint user_publishers_role_check check (role in ('admin', 'manager', 'editor', 'viewer', 'creator'));
drop table departments, role_permissions, roles, permissions;
drop function app_caller_can(text, uuid);
`);
  }
}
