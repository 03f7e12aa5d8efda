/**
 * 0003 — row-level security for the publisher schema (docs/CONTRACTS.md, "Database roles and RLS
 * context"). ENABLE + FORCE on every publisher-scoped table (the owner is subject to it too), the
 * policies read the per-transaction settings `app.publisher_id`, `app.user_id`, `app.access_scope`
 * (`publisher` | `own` | empty) through `(select nullif(current_setting(…, true), '')…)`, so they are
 * evaluated once per statement and an unset context (`''` after a transaction) matches nothing.
 *
 * Grants to `catalog_app`: SELECT/INSERT/UPDATE on the catalog tables (no DELETE: soft delete),
 * DELETE only on the link tables `user_publishers` and `work_songwriters`; a `users` row is updatable
 * only by its own user (`id = app.user_id`: the row is shared by all the user's publishers) and only
 * in its profile columns (never `is_system_admin` or `deleted_at`). `catalog_app` owns nothing.
 *
 * Identity rows are the second wall behind the API's rules (catalog-api/src/routes/users.ts), so
 * that even SQL injected as catalog_app under a legitimately set context cannot escalate:
 * - `user_publishers`: update (only the `role` column) and delete need the context user to be an
 *   admin of the context publisher or a system admin; insert (enrolling a non-member) needs a
 *   system admin. "The last admin stays" is the API's rule (409), not enforced here.
 * - `users`: insert needs a system-admin context (there is no user-creation endpoint).
 * The policies ask two STABLE SECURITY DEFINER helpers (owned by catalog_owner, pinned
 * search_path, EXECUTE for catalog_app only), `app_caller_is_system_admin()` and
 * `app_caller_is_publisher_admin()`. FORCE RLS applies to their queries too (owner = definer), but
 * they read only the caller's own `users` row and `user_publishers` rows, which the select
 * policies always show to `app.user_id` — and those select policies call no helper, so there is no
 * recursion. An active, not deleted user only (as the API's scope lookup).
 */
import { Migration } from '@mikro-orm/migrations';

/**
 * `(select …)`-wrapped readers of the RLS context, as the policies of 0003–0010 use them. Migration
 * 0011 rewrote every such read to its unforgeable readers: new policies use 0011's `CONTEXT`, never these.
 */
export const CTX = {
  publisher: `(select nullif(current_setting('app.publisher_id', true), '')::uuid)`,
  user: `(select nullif(current_setting('app.user_id', true), '')::uuid)`,
  scope: `(select nullif(current_setting('app.access_scope', true), ''))`,
} as const;

/** Tables with ENABLE + FORCE row-level security after this migration. */
export const RLS_TABLES = ['publishers', 'users', 'user_publishers', 'works', 'songwriters', 'recordings', 'work_songwriters'] as const;

const CATALOG = ['works', 'songwriters', 'recordings'] as const;

/** The context user is an active system admin (`users.is_system_admin`, not deleted). */
const IS_SYSTEM_ADMIN = `(select app_caller_is_system_admin())`;
/** The context user is an admin of the context publisher, or a system admin. */
const IS_PUBLISHER_ADMIN = `(select app_caller_is_publisher_admin())`;
/** A membership row of the context publisher under scope publisher. */
const memberRow = `user_publishers.publisher_id = ${CTX.publisher} and ${CTX.scope} = 'publisher'`;

/** A catalog row is visible/writable: context publisher and (scope publisher, or scope own and owned). */
const catalogRow = (t: string) => `${t}.publisher_id = ${CTX.publisher} and (
    ${CTX.scope} = 'publisher'
    or (${CTX.scope} = 'own' and ${t}.owner_user_id = ${CTX.user}))`;

/** Writes under scope own must also keep the row live: a creator cannot soft-delete. */
const catalogWrite = (t: string) => `${t}.publisher_id = ${CTX.publisher} and (
    ${CTX.scope} = 'publisher'
    or (${CTX.scope} = 'own' and ${t}.owner_user_id = ${CTX.user} and ${t}.deleted_at is null))`;

const workSongwriterRow = `work_songwriters.publisher_id = ${CTX.publisher} and (
    ${CTX.scope} = 'publisher'
    or (${CTX.scope} = 'own' and exists (
      select 1 from works w where w.id = work_songwriters.work_id and w.publisher_id = work_songwriters.publisher_id
        and w.owner_user_id = ${CTX.user})))`;

/** The select/insert/update policies of catalog table `t` (exported for 0006's down). */
export const catalogPolicies = (t: string) => `
create policy ${t}_select on ${t} for select using (${catalogRow(t)});
create policy ${t}_insert on ${t} for insert with check (${catalogWrite(t)});
create policy ${t}_update on ${t} for update using (${catalogRow(t)}) with check (${catalogWrite(t)});`;

/** The policies of `work_songwriters` (exported for 0006's down). */
export const WORK_SONGWRITER_POLICIES = `create policy work_songwriters_select on work_songwriters for select using (${workSongwriterRow});
create policy work_songwriters_insert on work_songwriters for insert with check (${workSongwriterRow});
create policy work_songwriters_update on work_songwriters for update using (${workSongwriterRow}) with check (${workSongwriterRow});
create policy work_songwriters_delete on work_songwriters for delete using (${workSongwriterRow});`;

/** The select policy of `user_publishers` (exported for 0006's down). */
export const MEMBERSHIP_SELECT_POLICY = `create policy user_publishers_select on user_publishers for select using (
  user_publishers.user_id = ${CTX.user}
  or (user_publishers.publisher_id = ${CTX.publisher} and ${CTX.scope} = 'publisher'));`;

/** The write policies of `user_publishers` (exported for 0006's down). */
export const MEMBERSHIP_WRITE_POLICIES = `create policy user_publishers_insert on user_publishers for insert with check (
  ${memberRow} and ${IS_SYSTEM_ADMIN});
create policy user_publishers_update on user_publishers for update
  using (${memberRow} and ${IS_PUBLISHER_ADMIN})
  with check (${memberRow} and ${IS_PUBLISHER_ADMIN});
create policy user_publishers_delete on user_publishers for delete using (
  ${memberRow} and ${IS_PUBLISHER_ADMIN});`;

/** The policies of `publishers` (exported for 0006's down). */
export const PUBLISHER_POLICIES = `create policy publishers_select on publishers for select using (
  publishers.id = ${CTX.publisher}
  or exists (select 1 from user_publishers m where m.publisher_id = publishers.id and m.user_id = ${CTX.user}));
create policy publishers_insert on publishers for insert with check (
  publishers.id = ${CTX.publisher} and ${CTX.scope} = 'publisher');
create policy publishers_update on publishers for update
  using (publishers.id = ${CTX.publisher} and ${CTX.scope} = 'publisher')
  with check (publishers.id = ${CTX.publisher} and ${CTX.scope} = 'publisher');`;

/** The select policy of `users` (exported for 0006's down). */
export const USERS_SELECT_POLICY = `create policy users_select on users for select using (
  users.id = ${CTX.user}
  or exists (select 1 from user_publishers m where m.user_id = users.id and m.publisher_id = ${CTX.publisher}));`;

/** The insert/update policies of `users` (exported for 0006's down). */
export const USER_WRITE_POLICIES = `create policy users_insert on users for insert with check (
  ${CTX.publisher} is not null and ${CTX.scope} = 'publisher' and ${IS_SYSTEM_ADMIN});
-- A users row is shared by every publisher its user belongs to, so no publisher context may edit
-- it: only the user themself (app.user_id), whatever the publisher context and scope.
create policy users_update on users for update
  using (users.id = ${CTX.user})
  with check (users.id = ${CTX.user});`;

/** Creates the publisher policies and the app role's grants; `down` removes them. */
export class Migration0003Rls extends Migration {
  override name = '0003_rls';

  /** ENABLE + FORCE RLS, policies, grants. */
  up(): void {
    for (const t of RLS_TABLES) this.addSql(`alter table ${t} enable row level security; alter table ${t} force row level security;`);

    for (const t of CATALOG) this.addSql(`${catalogPolicies(t)}
grant select, insert, update on ${t} to catalog_app;
`);
    this.addSql(`
${WORK_SONGWRITER_POLICIES}
grant select, insert, update, delete on work_songwriters to catalog_app;

${MEMBERSHIP_SELECT_POLICY}
-- Helpers of the membership/user write policies. SECURITY DEFINER (owner catalog_owner) with a
-- pinned search_path: the caller cannot redirect the lookups. FORCE RLS still applies to the owner,
-- so they see only what the select policies show the context user — its own users row and its own
-- memberships — which is all they need; the select policies call no helper (no recursion).
create function app_caller_is_system_admin() returns boolean
language sql stable security definer set search_path = public, pg_temp as $fn$
  select coalesce((
    select u.is_system_admin
      from users u
     where u.id = ${CTX.user} and u.deleted_at is null and u.status = 'active'), false)
$fn$;
revoke all on function app_caller_is_system_admin() from public;
grant execute on function app_caller_is_system_admin() to catalog_app;

create function app_caller_is_publisher_admin() returns boolean
language sql stable security definer set search_path = public, pg_temp as $fn$
  select app_caller_is_system_admin() or exists (
    select 1
      from user_publishers m join users u on u.id = m.user_id
     where m.user_id = ${CTX.user} and m.publisher_id = ${CTX.publisher} and m.role = 'admin'
       and u.deleted_at is null and u.status = 'active')
$fn$;
revoke all on function app_caller_is_publisher_admin() from public;
grant execute on function app_caller_is_publisher_admin() to catalog_app;

-- Enrolling a user who is not yet a member needs a system admin (no invitation/consent flow); a
-- publisher admin changes roles of and removes existing members (catalog-api/src/routes/users.ts).
${MEMBERSHIP_WRITE_POLICIES}
grant select, insert, delete on user_publishers to catalog_app;
-- Only the role changes: rewriting user_id would enrol a non-member without the insert policy.
grant update (role, updated_at, updated_by) on user_publishers to catalog_app;

${PUBLISHER_POLICIES}
grant select, insert, update on publishers to catalog_app;
grant select on tenants to catalog_app;

${USERS_SELECT_POLICY}
-- No user-creation endpoint: only a system admin creates users (no squatting of emails).
${USER_WRITE_POLICIES}
grant select on users to catalog_app;
grant insert (id, email, display_name, status, created_by, updated_by) on users to catalog_app;
-- No is_system_admin and no deleted_at: soft-deleting a system admin revokes system:platform#admin
-- (0004's trigger), so whether someone is an effective system admin is never the app's to change.
grant update (email, display_name, status, updated_at, updated_by) on users to catalog_app;
`);
  }

  /** Drop the policies and grants; legacy tables keep RLS enabled (not forced), new tables lose it. */
  override down(): void {
    for (const t of CATALOG) {
      this.addSql(`drop policy ${t}_select on ${t}; drop policy ${t}_insert on ${t}; drop policy ${t}_update on ${t};`);
    }
    this.addSql(`
drop policy work_songwriters_select on work_songwriters; drop policy work_songwriters_insert on work_songwriters;
drop policy work_songwriters_update on work_songwriters; drop policy work_songwriters_delete on work_songwriters;
drop policy user_publishers_select on user_publishers; drop policy user_publishers_insert on user_publishers;
drop policy user_publishers_update on user_publishers; drop policy user_publishers_delete on user_publishers;
drop policy publishers_select on publishers; drop policy publishers_insert on publishers; drop policy publishers_update on publishers;
drop policy users_select on users; drop policy users_insert on users; drop policy users_update on users;
drop function app_caller_is_publisher_admin(); drop function app_caller_is_system_admin();
revoke all on publishers, users, user_publishers, works, songwriters, recordings, work_songwriters, tenants from catalog_app;
`);
    for (const t of RLS_TABLES) {
      const legacy = (['publishers', ...CATALOG] as readonly string[]).includes(t);
      this.addSql(`alter table ${t} no force row level security;${legacy ? '' : ` alter table ${t} disable row level security;`}`);
    }
  }
}
