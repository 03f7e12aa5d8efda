/**
 * 0005 — identity: sign-in, sessions, MFA, password and email flows, signing keys and Active
 * Directory configuration (docs/CONTRACTS.md, "Identity").
 *
 * Who may touch what:
 * - `catalog_auth` is the sign-in service's own role (LOGIN NOSUPERUSER NOBYPASSRLS, owns nothing;
 *   created by scripts/services.sh like the others). It runs the flows that happen before anyone is
 *   authenticated (login, MFA, refresh, password reset, AD just-in-time provisioning, directory
 *   sync, the issuer's keys), so it may read and write every user's identity rows: one permissive
 *   policy `TO catalog_auth` per table. It has no privilege on the catalog tables at all.
 * - `catalog_app` (every other handler) has no privilege on credentials, sessions, refresh tokens,
 *   one-time tokens, recovery codes or signing keys: SQL injected into a catalog handler cannot read
 *   a password hash or mint a session. It may manage `directory_configs` as a system admin (the
 *   rows hold a reference to the bind secret, never the secret).
 *
 * Secrets at rest: passwords as argon2id PHC strings; refresh, reset, verification and MFA-challenge
 * tokens and recovery codes as SHA-256 digests (they are 128-bit or longer random strings); TOTP
 * secrets and the issuer's private keys as JWE (`dir` + A256GCM) under a key-encryption key that
 * lives outside the database (ISSUER_KEK_FILE).
 */
import { Migration } from '@mikro-orm/migrations';
import { CTX } from './0003_rls.ts';

/** Tables this migration creates, all with ENABLE + FORCE row-level security. */
export const IDENTITY_TABLES = [
  'user_credentials',
  'user_recovery_codes',
  'user_sessions',
  'refresh_tokens',
  'user_tokens',
  'signing_keys',
  'directory_configs',
] as const;

const IS_SYSTEM_ADMIN = `(select app_caller_is_system_admin())`;

/** Creates the identity tables, the auth role's policies and grants; `down` drops them. */
export class Migration0005Identity extends Migration {
  override name = '0005_identity';

  /** Tables, columns, policies, grants. */
  up(): void {
    // set_updated_audit() maintains updated_by too, which user_credentials does not have.
    this.addSql(`
create function set_updated_at_only() returns trigger language plpgsql set search_path = public, pg_temp as $$
begin
  new.updated_at := now();
  return new;
end $$;
`);
    this.addSql(`
alter table users
  add column auth_source text not null default 'internal'
    constraint users_auth_source_check check (auth_source in ('internal', 'ad')),
  add column external_id text,
  add column email_verified_at timestamptz,
  add column last_login_at timestamptz;
comment on column users.external_id is 'AD objectGUID (RFC 4122 text) of a directory user';
create unique index users_external_id_key on users (auth_source, external_id) where external_id is not null;

create table user_credentials (
  user_id uuid primary key constraint user_credentials_user_id_fkey references users (id) on delete cascade,
  password_hash text constraint user_credentials_password_hash_check check (password_hash like '$argon2id$%'),
  password_changed_at timestamptz,
  password_expires_at timestamptz,
  failed_login_count integer not null default 0,
  first_failed_at timestamptz,
  locked_until timestamptz,
  lockout_level integer not null default 0,
  totp_secret text,
  totp_pending_secret text,
  totp_enabled_at timestamptz,
  totp_last_step bigint,
  updated_at timestamptz not null default now()
);
comment on table user_credentials is 'Sign-in secrets and lockout state; catalog_auth only';

create table user_recovery_codes (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null constraint user_recovery_codes_user_id_fkey references users (id) on delete cascade,
  code_hash text not null constraint user_recovery_codes_code_hash_key unique,
  created_at timestamptz not null default now(),
  used_at timestamptz
);
create index user_recovery_codes_user_idx on user_recovery_codes (user_id) where used_at is null;

create table user_sessions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null constraint user_sessions_user_id_fkey references users (id) on delete cascade,
  amr text[] not null,
  auth_time timestamptz not null,
  created_at timestamptz not null default now(),
  last_used_at timestamptz not null default now(),
  expires_at timestamptz not null,
  ip inet,
  user_agent text constraint user_sessions_user_agent_check check (length(user_agent) <= 512),
  revoked_at timestamptz,
  revoked_reason text,
  revocation_published_at timestamptz
);
create index user_sessions_user_idx on user_sessions (user_id, created_at);
create index user_sessions_unpublished_idx on user_sessions (revoked_at)
  where revoked_at is not null and revocation_published_at is null;

create table refresh_tokens (
  id uuid primary key default gen_random_uuid(),
  session_id uuid not null constraint refresh_tokens_session_id_fkey references user_sessions (id) on delete cascade,
  token_hash text not null constraint refresh_tokens_token_hash_key unique,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  used_at timestamptz
);
create index refresh_tokens_session_idx on refresh_tokens (session_id);

create table user_tokens (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null constraint user_tokens_user_id_fkey references users (id) on delete cascade,
  purpose text not null
    constraint user_tokens_purpose_check check (purpose in ('password_reset', 'email_verification', 'mfa_challenge')),
  token_hash text not null constraint user_tokens_token_hash_key unique,
  data jsonb not null default '{}'::jsonb,
  attempts integer not null default 0,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  used_at timestamptz
);
create index user_tokens_user_idx on user_tokens (user_id, purpose) where used_at is null;

create table signing_keys (
  kid text primary key,
  alg text not null constraint signing_keys_alg_check check (alg in ('ES256', 'EdDSA')),
  public_jwk jsonb not null,
  private_jwe text not null,
  status text not null constraint signing_keys_status_check check (status in ('next', 'active', 'retired')),
  created_at timestamptz not null default now(),
  activated_at timestamptz,
  retired_at timestamptz,
  expires_at timestamptz
);
comment on column signing_keys.private_jwe is 'Private JWK encrypted as a compact JWE (dir, A256GCM) under ISSUER_KEK_FILE';
comment on column signing_keys.expires_at is 'A retired key leaves the JWKS at this time (every token it signed has expired)';
create unique index signing_keys_one_active_key on signing_keys ((true)) where status = 'active';
create unique index signing_keys_one_next_key on signing_keys ((true)) where status = 'next';

create table directory_configs (
  publisher_id uuid primary key constraint directory_configs_publisher_id_fkey references publishers (id) on delete cascade,
  url text not null constraint directory_configs_url_check check (url ~ '^ldaps?://[^/?#]+/?$'),
  start_tls boolean not null default false,
  ca_file text,
  tls_server_name text,
  base_dn text not null,
  bind_dn text not null,
  bind_secret_ref text not null constraint directory_configs_bind_secret_ref_check check (bind_secret_ref ~ '^(env:[A-Za-z_][A-Za-z0-9_]*|file:/.+)$'),
  login_attribute text not null default 'userPrincipalName'
    constraint directory_configs_login_attribute_check check (login_attribute in ('userPrincipalName', 'sAMAccountName')),
  email_domains text[] not null constraint directory_configs_email_domains_check check (cardinality(email_domains) > 0),
  group_role_map jsonb not null default '[]'::jsonb constraint directory_configs_group_role_map_check check (jsonb_typeof(group_role_map) = 'array'),
  connect_timeout_ms integer not null default 2000 constraint directory_configs_connect_timeout_ms_check check (connect_timeout_ms between 100 and 60000),
  operation_timeout_ms integer not null default 3000 constraint directory_configs_operation_timeout_ms_check check (operation_timeout_ms between 100 and 60000),
  enabled boolean not null default true,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  created_by uuid default nullif(current_setting('app.user_id', true), '')::uuid constraint directory_configs_created_by_fkey references users (id),
  updated_by uuid default nullif(current_setting('app.user_id', true), '')::uuid constraint directory_configs_updated_by_fkey references users (id),
  -- a plain ldap:// URL is allowed only with StartTLS: a simple bind never crosses the wire in clear text
  constraint directory_configs_tls_check check (url like 'ldaps://%' or start_tls)
);
comment on column directory_configs.bind_secret_ref is 'env:NAME or file:/absolute/path: where the service bind password is, never the password';
create trigger directory_configs_updated before update on directory_configs for each row execute function set_updated_audit();
create trigger user_credentials_updated before update on user_credentials for each row execute function set_updated_at_only();
`);
    for (const t of IDENTITY_TABLES) {
      this.addSql(`
alter table ${t} enable row level security;
alter table ${t} force row level security;
create policy ${t}_auth on ${t} to catalog_auth using (true) with check (true);
`);
    }
    this.addSql(`
grant select, insert, update, delete on user_credentials, user_recovery_codes, user_sessions, refresh_tokens, user_tokens, signing_keys to catalog_auth;
grant select on directory_configs to catalog_auth;

-- The sign-in service's view of the tables it shares: it finds users by email, provisions directory
-- users and their memberships (the outbox triggers record the tuples), and reads publisher settings.
create policy users_auth on users to catalog_auth using (true) with check (true);
create policy user_publishers_auth on user_publishers to catalog_auth using (true) with check (true);
create policy publishers_auth on publishers for select to catalog_auth using (true);
grant select on users, user_publishers, publishers to catalog_auth;
grant insert (id, email, display_name, status, auth_source, external_id, email_verified_at) on users to catalog_auth;
grant update (display_name, external_id, email_verified_at, last_login_at, updated_at) on users to catalog_auth;
grant insert, delete on user_publishers to catalog_auth;
grant update (role, updated_at, updated_by) on user_publishers to catalog_auth;
grant execute on function app_caller_is_system_admin() to catalog_auth;

-- Directory configurations are a system admin's business (API: /api/v1/publishers/{id}/directory).
create policy directory_configs_admin on directory_configs to catalog_app
  using (${IS_SYSTEM_ADMIN}) with check (${IS_SYSTEM_ADMIN} and ${CTX.user} is not null);
grant select, insert, update, delete on directory_configs to catalog_app;
`);
  }

  /** Drop the identity tables and columns, the policies and grants. */
  override down(): void {
    this.addSql(`
drop policy users_auth on users;
drop policy user_publishers_auth on user_publishers;
drop policy publishers_auth on publishers;
revoke all on users, user_publishers, publishers from catalog_auth;
revoke execute on function app_caller_is_system_admin() from catalog_auth;
drop table directory_configs, signing_keys, user_tokens, refresh_tokens, user_sessions, user_recovery_codes, user_credentials;
drop function set_updated_at_only();
drop index users_external_id_key;
alter table users drop column auth_source, drop column external_id, drop column email_verified_at, drop column last_login_at;
`);
  }
}
