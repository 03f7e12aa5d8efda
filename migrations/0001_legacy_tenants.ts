/**
 * 0001 — the platform's legacy schema as it runs today: one `tenants` table and three catalog
 * tables (`works`, `songwriters`, `recordings`) isolated per tenant by plain row-level security on
 * the `app.tenant_id` setting. Kept minimal on purpose (what the legacy app has); 0002 moves it to
 * the publisher architecture (docs/CONTRACTS.md, "Database schema after the publisher migration").
 *
 * RLS here is ENABLE only (not FORCE): the owner bypasses it, the app role `catalog_app` sees the
 * rows of `app.tenant_id` and nothing without it.
 */
import { Migration } from '@mikro-orm/migrations';

/** Legacy tenant isolation: SQL shared with 0002's down migration, which restores it. */
export const LEGACY_POLICIES_SQL = `
alter table tenants enable row level security;
alter table works enable row level security;
alter table songwriters enable row level security;
alter table recordings enable row level security;
create policy tenant_isolation on tenants
  using (id = nullif(current_setting('app.tenant_id', true), '')::uuid);
create policy tenant_isolation on works
  using (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
create policy tenant_isolation on songwriters
  using (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
create policy tenant_isolation on recordings
  using (tenant_id = nullif(current_setting('app.tenant_id', true), '')::uuid);
grant select on tenants to catalog_app;
grant select, insert, update, delete on works, songwriters, recordings to catalog_app;
`;

/** Undo of {@link LEGACY_POLICIES_SQL} (policies and the app role's grants; RLS stays enabled). */
export const DROP_LEGACY_POLICIES_SQL = `
drop policy if exists tenant_isolation on tenants;
drop policy if exists tenant_isolation on works;
drop policy if exists tenant_isolation on songwriters;
drop policy if exists tenant_isolation on recordings;
revoke all on tenants, works, songwriters, recordings from catalog_app;
`;

/** Creates the legacy tenant schema; `down` drops it (and its data). */
export class Migration0001LegacyTenants extends Migration {
  override name = '0001_legacy_tenants';

  /** Create tenants, works, songwriters, recordings with tenant RLS. */
  up(): void {
    this.addSql(`
create table tenants (
  id uuid primary key default gen_random_uuid(),
  name text not null,
  slug text not null constraint tenants_slug_key unique,
  created_at timestamptz not null default now()
);
create table works (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null constraint works_tenant_id_fkey references tenants (id),
  title text not null,
  iswc text,
  created_at timestamptz not null default now()
);
create index works_tenant_id_idx on works (tenant_id);
create table songwriters (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null constraint songwriters_tenant_id_fkey references tenants (id),
  name text not null,
  ipi text,
  created_at timestamptz not null default now()
);
create index songwriters_tenant_id_idx on songwriters (tenant_id);
create table recordings (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null constraint recordings_tenant_id_fkey references tenants (id),
  work_id uuid constraint recordings_work_id_fkey references works (id),
  title text not null,
  isrc text,
  created_at timestamptz not null default now()
);
create index recordings_tenant_id_idx on recordings (tenant_id);
`);
    this.addSql(LEGACY_POLICIES_SQL);
  }

  /** Drop the legacy tables. */
  override down(): void {
    this.addSql(`drop table recordings; drop table songwriters; drop table works; drop table tenants;`);
  }
}
