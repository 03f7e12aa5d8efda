/**
 * 0002 — the publisher architecture (docs/CONTRACTS.md, "Database schema after the publisher
 * migration"): tenants → publishers, tenant_id → publisher_id, users, memberships, audit columns,
 * soft delete, songwriter name split, work_songwriters with CWR roles and shares, check constraints,
 * indexes led by publisher_id and a `tenants` compatibility view (security_invoker).
 *
 * Zero data loss: every legacy row keeps its id and values. Legacy values that the new constraints
 * would reject are normalised (ISWC `T-034.524.680-1` → `T0345246801`, ISRC `US-RC1-76-07839` →
 * `USRC17607839`, IPI name numbers padded to 11 digits — a 9-digit CAE number becomes its IPI name
 * number with two leading zeros, per CWR's "CAE/IPI Name #" field —, slugs lower-cased); values that
 * cannot be normalised (or would break a uniqueness rule) become NULL. Every changed value is kept
 * in `legacy_value_originals` (owner-only, no grants) and `down` puts the original back, unless the
 * row was edited since. The songwriter's `name` is split at the last space (`first_name` = the rest,
 * NULL for a single word); `down` rebuilds `name` from the parts, or takes the original when the
 * split was not reversible (extra spaces).
 *
 * The legacy tenant policies and grants are dropped here; 0003 creates the publisher policies and
 * grants. Between the two the app role has no privileges (fail closed).
 */
import { Migration } from '@mikro-orm/migrations';
import { DROP_LEGACY_POLICIES_SQL, LEGACY_POLICIES_SQL } from './0001_legacy_tenants.ts';

/** SQL of the current user from the RLS context, NULL when unset (used for created_by/updated_by). */
const CONTEXT_USER = `nullif(current_setting('app.user_id', true), '')::uuid`;

/** Audit columns for the tables 0002 adds them to (besides created_at, which the legacy tables have). */
const AUDIT_COLUMNS = `
  add column updated_at timestamptz not null default now(),
  add column created_by uuid default ${CONTEXT_USER},
  add column updated_by uuid default ${CONTEXT_USER},
  add column deleted_at timestamptz`;

/** The catalog tables that 0002 converts from tenant to publisher scope. */
const CATALOG = ['works', 'songwriters', 'recordings'] as const;

/** Moves the legacy tenant schema to the publisher schema and back. */
export class Migration0002Publishers extends Migration {
  override name = '0002_publishers';

  /** Legacy → publisher schema, converting the data in place. */
  up(): void {
    this.addSql(DROP_LEGACY_POLICIES_SQL);
    this.addSql(`
create table legacy_value_originals (
  table_name text not null,
  row_id uuid not null,
  column_name text not null,
  original_value text,
  migrated_value text,
  primary key (table_name, row_id, column_name)
);
comment on table legacy_value_originals is
  'Legacy values that migration 0002 normalised or cleared; its down migration restores them. Owner only.';

create function set_updated_audit() returns trigger language plpgsql set search_path = public, pg_temp as $$
begin
  new.updated_at := now();
  if new.updated_by is not distinct from old.updated_by then
    new.updated_by := coalesce(${CONTEXT_USER}, new.updated_by);
  end if;
  return new;
end $$;

create table users (
  id uuid primary key default gen_random_uuid(),
  email text not null constraint users_email_check check (email ~ '^[^@[:space:]]+@[^@[:space:]]+$'),
  display_name text not null default '',
  is_system_admin boolean not null default false,
  status text not null default 'active' constraint users_status_check check (status in ('active', 'disabled')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  created_by uuid constraint users_created_by_fkey references users (id),
  updated_by uuid constraint users_updated_by_fkey references users (id),
  deleted_at timestamptz
);
create unique index users_email_lower_key on users (lower(email));
`);

    // ---- tenants → publishers ----
    this.addSql(`
alter table tenants rename to publishers;
alter table publishers rename constraint tenants_pkey to publishers_pkey;
alter table publishers rename constraint tenants_slug_key to publishers_slug_key;

with norm as (
  select id, slug as original,
         left(trim(both '-' from regexp_replace(lower(slug), '[^a-z0-9-]+', '-', 'g')), 63) as s
  from publishers
), ranked as (
  select id, original, s, row_number() over (partition by s order by (s = original) desc, id) as rn from norm
), target as (
  select id, original,
         case when length(s) < 2 then 'publisher-' || left(replace(id::text, '-', ''), 12)
              when rn = 1 then s
              else left(s, 50) || '-' || left(replace(id::text, '-', ''), 12) end as slug
  from ranked
), changed as (
  insert into legacy_value_originals (table_name, row_id, column_name, original_value, migrated_value)
  select 'publishers', id, 'slug', original, slug from target where slug is distinct from original
  returning row_id, migrated_value
)
update publishers p set slug = c.migrated_value from changed c where p.id = c.row_id;

alter table publishers
  add column type text not null default 'professional'
    constraint publishers_type_check check (type in ('enterprise', 'professional', 'platform', 'boutique')),
  add column business_model text not null default 'traditional'
    constraint publishers_business_model_check check (business_model in ('traditional', 'platform', 'hybrid')),
  add column status text not null default 'active'
    constraint publishers_status_check check (status in ('active', 'suspended', 'trial', 'archived')),
  add column settings jsonb not null default '{}'::jsonb
    constraint publishers_settings_check check (jsonb_typeof(settings) = 'object'),
  ${AUDIT_COLUMNS},
  add constraint publishers_slug_check check (slug ~ '^[a-z0-9-]{2,63}$'),
  add constraint publishers_created_by_fkey foreign key (created_by) references users (id),
  add constraint publishers_updated_by_fkey foreign key (updated_by) references users (id);
update publishers set updated_at = created_at;

create view tenants with (security_invoker = true) as
  select id, name, slug, created_at from publishers;
comment on view tenants is 'Legacy name of publishers (compatibility; RLS of publishers applies to the caller).';

create table user_publishers (
  publisher_id uuid not null constraint user_publishers_publisher_id_fkey references publishers (id) on delete cascade,
  user_id uuid not null constraint user_publishers_user_id_fkey references users (id) on delete cascade,
  role text not null constraint user_publishers_role_check check (role in ('admin', 'manager', 'editor', 'viewer', 'creator')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  created_by uuid default ${CONTEXT_USER} constraint user_publishers_created_by_fkey references users (id),
  updated_by uuid default ${CONTEXT_USER} constraint user_publishers_updated_by_fkey references users (id),
  constraint user_publishers_pkey primary key (publisher_id, user_id)
);
create index user_publishers_user_id_idx on user_publishers (user_id);
`);

    // ---- catalog tables: tenant_id → publisher_id, owner, audit, soft delete ----
    for (const t of CATALOG) {
      this.addSql(`
alter table ${t} rename column tenant_id to publisher_id;
alter table ${t} rename constraint ${t}_tenant_id_fkey to ${t}_publisher_id_fkey;
drop index ${t}_tenant_id_idx;
alter table ${t}
  add column owner_user_id uuid constraint ${t}_owner_user_id_fkey references users (id),
  ${AUDIT_COLUMNS},
  add constraint ${t}_created_by_fkey foreign key (created_by) references users (id),
  add constraint ${t}_updated_by_fkey foreign key (updated_by) references users (id),
  add constraint ${t}_publisher_id_id_key unique (publisher_id, id);
update ${t} set updated_at = created_at;
create index ${t}_publisher_created_idx on ${t} (publisher_id, created_at, id);
create index ${t}_publisher_owner_idx on ${t} (publisher_id, owner_user_id) where owner_user_id is not null;
`);
    }

    // ---- works: ISWC normalised to T + 10 digits, unique per publisher ----
    this.addSql(`
alter table works add column language text constraint works_language_check check (language ~ '^[a-z]{2}$');
with norm as (
  select id, publisher_id, iswc as original, upper(regexp_replace(iswc, '[^0-9A-Za-z]', '', 'g')) as v, created_at
  from works where iswc is not null
), valid as (
  select id, original, case when v ~ '^T[0-9]{10}$' then v end as v, publisher_id, created_at from norm
), ranked as (
  select id, original,
         case when v is not null and row_number() over (partition by publisher_id, v order by (v = original) desc, created_at, id) = 1
              then v end as v
  from valid
), changed as (
  insert into legacy_value_originals (table_name, row_id, column_name, original_value, migrated_value)
  select 'works', id, 'iswc', original, v from ranked where v is distinct from original
  returning row_id, migrated_value
)
update works w set iswc = c.migrated_value from changed c where w.id = c.row_id;
alter table works add constraint works_iswc_check check (iswc ~ '^T[0-9]{10}$');
create unique index works_publisher_iswc_key on works (publisher_id, iswc) where iswc is not null;
create index works_publisher_title_idx on works (publisher_id, lower(title));
`);

    // ---- songwriters: name → first/last, ipi → ipi_name_number (11 digits), pro ----
    this.addSql(`
alter table songwriters
  add column first_name text,
  add column last_name text,
  add column pro text;
update songwriters set
  first_name = case when position(' ' in btrim(name)) > 0
                    then btrim(left(btrim(name), length(btrim(name)) - position(' ' in reverse(btrim(name))))) end,
  last_name = case when position(' ' in btrim(name)) > 0
                   then right(btrim(name), position(' ' in reverse(btrim(name))) - 1)
                   else btrim(name) end;
insert into legacy_value_originals (table_name, row_id, column_name, original_value, migrated_value)
  select 'songwriters', id, 'name', name, concat_ws(' ', first_name, last_name)
  from songwriters where concat_ws(' ', first_name, last_name) is distinct from name;
alter table songwriters drop column name;
alter table songwriters alter column last_name set not null;
alter table songwriters rename column ipi to ipi_name_number;
with norm as (
  select id, ipi_name_number as original, regexp_replace(ipi_name_number, '[^0-9]', '', 'g') as d
  from songwriters where ipi_name_number is not null
), target as (
  select id, original, case when length(d) between 1 and 11 then lpad(d, 11, '0') end as v from norm
), changed as (
  insert into legacy_value_originals (table_name, row_id, column_name, original_value, migrated_value)
  select 'songwriters', id, 'ipi', original, v from target where v is distinct from original
  returning row_id, migrated_value
)
update songwriters s set ipi_name_number = c.migrated_value from changed c where s.id = c.row_id;
alter table songwriters
  add constraint songwriters_ipi_name_number_check check (ipi_name_number ~ '^[0-9]{11}$'),
  add constraint songwriters_pro_check check (length(btrim(pro)) between 1 and 40);
create index songwriters_publisher_name_idx on songwriters (publisher_id, lower(last_name), lower(first_name));
create index songwriters_publisher_ipi_idx on songwriters (publisher_id, ipi_name_number) where ipi_name_number is not null;
`);

    // ---- recordings: ISRC normalised, unique per publisher; work in the same publisher ----
    this.addSql(`
alter table recordings
  add column duration_ms integer constraint recordings_duration_ms_check check (duration_ms > 0),
  add column release_date date;
with norm as (
  select id, publisher_id, isrc as original, upper(regexp_replace(isrc, '[^0-9A-Za-z]', '', 'g')) as v, created_at
  from recordings where isrc is not null
), valid as (
  select id, original, publisher_id, created_at,
         case when v ~ '^[A-Z]{2}[A-Z0-9]{3}[0-9]{7}$' then v end as v from norm
), ranked as (
  select id, original,
         case when v is not null and row_number() over (partition by publisher_id, v order by (v = original) desc, created_at, id) = 1
              then v end as v
  from valid
), changed as (
  insert into legacy_value_originals (table_name, row_id, column_name, original_value, migrated_value)
  select 'recordings', id, 'isrc', original, v from ranked where v is distinct from original
  returning row_id, migrated_value
)
update recordings r set isrc = c.migrated_value from changed c where r.id = c.row_id;
alter table recordings
  add constraint recordings_isrc_check check (isrc ~ '^[A-Z]{2}[A-Z0-9]{3}[0-9]{7}$'),
  add constraint recordings_work_same_publisher_fkey foreign key (publisher_id, work_id)
    references works (publisher_id, id) not valid;
create unique index recordings_publisher_isrc_key on recordings (publisher_id, isrc) where isrc is not null;
create index recordings_publisher_work_idx on recordings (publisher_id, work_id);
do $$ begin
  -- legacy rows may point at another tenant's work; keep them (no data loss) and validate only when clean
  if not exists (select 1 from recordings r join works w on w.id = r.work_id where w.publisher_id <> r.publisher_id) then
    alter table recordings validate constraint recordings_work_same_publisher_fkey;
  else
    raise warning 'recordings reference works of another publisher; recordings_work_same_publisher_fkey left NOT VALID';
  end if;
end $$;
`);

    // ---- work_songwriters ----
    this.addSql(`
create table work_songwriters (
  work_id uuid not null,
  songwriter_id uuid not null,
  publisher_id uuid not null,
  role text not null constraint work_songwriters_role_check check (role in ('CA', 'C', 'A', 'AR', 'AD')),
  performance_share numeric(5,2) not null default 0
    constraint work_songwriters_performance_share_check check (performance_share between 0 and 100),
  mechanical_share numeric(5,2) not null default 0
    constraint work_songwriters_mechanical_share_check check (mechanical_share between 0 and 100),
  sync_share numeric(5,2) not null default 0
    constraint work_songwriters_sync_share_check check (sync_share between 0 and 100),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  created_by uuid default ${CONTEXT_USER} constraint work_songwriters_created_by_fkey references users (id),
  updated_by uuid default ${CONTEXT_USER} constraint work_songwriters_updated_by_fkey references users (id),
  constraint work_songwriters_pkey primary key (work_id, songwriter_id),
  constraint work_songwriters_work_fkey foreign key (publisher_id, work_id) references works (publisher_id, id),
  constraint work_songwriters_songwriter_fkey foreign key (publisher_id, songwriter_id) references songwriters (publisher_id, id)
);
create index work_songwriters_publisher_work_idx on work_songwriters (publisher_id, work_id);
create index work_songwriters_publisher_songwriter_idx on work_songwriters (publisher_id, songwriter_id);

-- Per work and right, the shares sum to at most 100. Runs as the caller: every context allowed to
-- write a work_songwriters row sees all rows of that work (RLS is per work), so the sum is complete.
-- The advisory lock serialises concurrent writers of one work (READ COMMITTED sees the other's row).
create function work_songwriters_check_shares() returns trigger language plpgsql
set search_path = public, pg_temp as $$
declare
  w uuid := case when tg_op = 'DELETE' then old.work_id else new.work_id end;
  p numeric; m numeric; s numeric;
begin
  perform pg_advisory_xact_lock(hashtextextended('work_songwriters:' || w::text, 0));
  select coalesce(sum(performance_share), 0), coalesce(sum(mechanical_share), 0), coalesce(sum(sync_share), 0)
    into p, m, s from work_songwriters where work_id = w;
  if p > 100 or m > 100 or s > 100 then
    raise exception 'shares of work % exceed 100 (performance %, mechanical %, sync %)', w, p, m, s
      using errcode = 'check_violation', constraint = 'work_songwriters_share_sum';
  end if;
  return null;
end $$;
create constraint trigger work_songwriters_share_sum
  after insert or update of work_id, performance_share, mechanical_share, sync_share on work_songwriters
  deferrable initially immediate for each row execute function work_songwriters_check_shares();
`);

    for (const t of ['publishers', 'users', 'user_publishers', ...CATALOG, 'work_songwriters']) {
      this.addSql(`create trigger ${t}_updated before update on ${t} for each row execute function set_updated_audit();`);
    }
  }

  /** Publisher schema → legacy schema with the legacy data (new-only data such as users is dropped). */
  override down(): void {
    this.addSql(`
drop table work_songwriters;
drop function work_songwriters_check_shares();
drop view tenants;
drop table user_publishers;
`);
    for (const t of ['publishers', 'users', ...CATALOG]) this.addSql(`drop trigger ${t}_updated on ${t};`);

    // restore a normalised/cleared legacy value unless the row was edited since
    const restore = (table: string, column: string, current: string, key = column) => `
update ${table} x set ${current} = o.original_value
  from legacy_value_originals o
  where o.table_name = '${table}' and o.column_name = '${key}' and o.row_id = x.id
    and x.${current} is not distinct from o.migrated_value;`;

    this.addSql(`
drop index songwriters_publisher_name_idx;
drop index songwriters_publisher_ipi_idx;
alter table songwriters drop constraint songwriters_ipi_name_number_check;
${restore('songwriters', 'ipi_name_number', 'ipi_name_number', 'ipi')}
alter table songwriters rename column ipi_name_number to ipi;
alter table songwriters add column name text;
update songwriters x set name = coalesce(
  (select o.original_value from legacy_value_originals o
    where o.table_name = 'songwriters' and o.column_name = 'name' and o.row_id = x.id
      and o.migrated_value is not distinct from concat_ws(' ', x.first_name, x.last_name)),
  concat_ws(' ', x.first_name, x.last_name));
alter table songwriters alter column name set not null;
alter table songwriters drop column first_name, drop column last_name, drop column pro;

drop index works_publisher_iswc_key;
drop index works_publisher_title_idx;
alter table works drop constraint works_iswc_check, drop column language;
${restore('works', 'iswc', 'iswc')}

drop index recordings_publisher_isrc_key;
drop index recordings_publisher_work_idx;
alter table recordings drop constraint recordings_isrc_check,
  drop constraint recordings_work_same_publisher_fkey, drop column duration_ms, drop column release_date;
${restore('recordings', 'isrc', 'isrc')}
`);
    for (const t of CATALOG) {
      this.addSql(`
drop index ${t}_publisher_created_idx;
drop index ${t}_publisher_owner_idx;
alter table ${t} drop constraint ${t}_publisher_id_id_key,
  drop column owner_user_id, drop column updated_at, drop column created_by, drop column updated_by, drop column deleted_at;
alter table ${t} rename column publisher_id to tenant_id;
alter table ${t} rename constraint ${t}_publisher_id_fkey to ${t}_tenant_id_fkey;
create index ${t}_tenant_id_idx on ${t} (tenant_id);
`);
    }
    this.addSql(`
alter table publishers drop constraint publishers_slug_check,
  drop column type, drop column business_model, drop column status, drop column settings,
  drop column updated_at, drop column created_by, drop column updated_by, drop column deleted_at;
${restore('publishers', 'slug', 'slug')}
alter table publishers rename constraint publishers_slug_key to tenants_slug_key;
alter table publishers rename constraint publishers_pkey to tenants_pkey;
alter table publishers rename to tenants;
drop table users;
drop table legacy_value_originals;
drop function set_updated_audit();
`);
    this.addSql(LEGACY_POLICIES_SQL);
  }
}
