/**
 * The request transaction: every /api/v1 request runs in exactly one database transaction whose
 * first statements set the RLS context (docs/CONTRACTS.md, "Database roles and RLS context"):
 *
 *   1. `select set_config('app.publisher_id', $1, true), set_config('app.user_id', $2, true)`
 *      — emitted by MikroORM right after BEGIN from `em.fork({ session: { variables } })`;
 *   2. one statement that reads the caller's own `users` row and `user_publishers` row for
 *      (user, publisher) — visible under RLS because they are the context user's rows — and sets
 *      `app.access_scope` with `set_config(…, true)`: `publisher` for a system admin or any role but
 *      creator, `own` for a creator, '' (sees nothing) without a membership. The same statement reads
 *      the context publisher's sign-in settings (auth policy, MFA requirement), which the caller's
 *      authentication methods (the assertion's `amr`) must satisfy — else 403
 *      `auth-method-not-allowed` / `mfa-required` (system admins excepted).
 *
 * Everything the handler does afterwards sees only what RLS lets that context see; application code
 * never adds `publisher_id` filters to reads.
 */
import type { EntityManager } from '@mikro-orm/postgresql';
import { query, type Orm } from './orm.ts';
import { ProblemError, problem } from '../errors.ts';

import type { Role } from '../modules/users/membership.entity.ts';
export { ROLES, type Role } from '../modules/users/membership.entity.ts';

/** What `app.access_scope` is set to. */
export type AccessScope = 'publisher' | 'own' | '';

/** The caller as the request transaction established it. */
export type RequestContext = {
  userId: string;
  /** null when the request carries no publisher context */
  publisherId: string | null;
  scope: AccessScope;
  /** the membership role at `publisherId` (null without a membership or without a publisher) */
  role: Role | null;
  isSystemAdmin: boolean;
  /** false when the `users` row is missing or not `active` */
  userActive: boolean;
  /** the context publisher's `settings.auth_policy` (null: no publisher, or not set = internal) */
  authPolicy: string | null;
  /** the context publisher's `settings.require_mfa` */
  requireMfa: boolean;
};

/** The handle a handler gets: the transaction's EntityManager, the context, and a SQL helper. */
export type RequestTx = {
  em: EntityManager;
  ctx: RequestContext;
  /** Parameterised SQL inside this transaction (see `db/orm.ts` `query`). */
  sql: <R = Record<string, unknown>>(text: string, params?: readonly unknown[]) => Promise<R[]>;
};

/**
 * Who is asking: from the verified identity assertion. `amr` (RFC 8176) is how they authenticated;
 * absent or empty means "not stated" and skips the publisher's auth-policy check (not its MFA rule).
 */
export type Caller = { userId: string; publisherId: string | null; amr?: readonly string[] };

/** Options of {@link withRequestTransaction}. */
export type RequestTxOptions = {
  /**
   * `required` (default): a publisher context must be present (else 400 `publisher-context`) and
   * the caller must have a membership there or be a system admin (else 403).
   * `none`: the publisher context is ignored (`app.publisher_id` = ''), e.g. for /users/me.
   */
  publisher?: 'required' | 'none';
};

const SCOPE_SQL = `
  with me as (
    select u.is_system_admin, u.status, m.role,
           p.settings ->> 'auth_policy' as auth_policy,
           coalesce(p.settings -> 'require_mfa' = 'true'::jsonb, false) as require_mfa
    from users u
    left join user_publishers m on m.user_id = u.id and m.publisher_id = nullif($2, '')::uuid
    left join publishers p on p.id = nullif($2, '')::uuid
    where u.id = $1::uuid and u.deleted_at is null
  )
  select is_system_admin, status, role, auth_policy, require_mfa,
         set_config('app.access_scope',
           case when $2 = '' or status is distinct from 'active' then ''
                when is_system_admin then 'publisher'
                when role = 'creator' then 'own'
                when role is not null then 'publisher'
                else '' end, true) as access_scope
  from me`;

/**
 * Run `fn` in one transaction with the caller's RLS context set first (see the module comment).
 * Commits when `fn` resolves, rolls back when it throws (the error propagates unchanged).
 * @throws ProblemError 400 `publisher-context` (publisher required, none given),
 *         403 `forbidden` (unknown/disabled user, or no membership and not a system admin)
 */
export async function withRequestTransaction<T>(orm: Orm, caller: Caller, fn: (tx: RequestTx) => Promise<T>, options: RequestTxOptions = {}): Promise<T> {
  const needsPublisher = (options.publisher ?? 'required') === 'required';
  if (needsPublisher && !caller.publisherId) throw problem.publisherContext();
  const publisherId = needsPublisher ? caller.publisherId! : '';
  const em = orm.em.fork({
    session: { variables: { 'app.publisher_id': publisherId, 'app.user_id': caller.userId } },
  });
  return em.transactional(async (tem) => {
    const ctx = await establishScope(tem, caller.userId, publisherId);
    if (!ctx.userActive) throw problem.forbidden('Your account is unknown or disabled.');
    if (needsPublisher && ctx.scope === '') throw problem.forbidden('You are not a member of this publisher.');
    if (needsPublisher) checkSignInPolicy(ctx, caller.amr ?? []);
    return fn({ em: tem, ctx, sql: (text, params) => query(tem, text, params) });
  });
}

/**
 * The context publisher's sign-in rules against how the caller signed in (`amr`): auth policy `ad`
 * needs a directory sign-in (`ldap`), `internal` a non-directory one; `require_mfa` needs `mfa`.
 * System admins are exempt (they are the platform's staff, not the publisher's).
 * @throws ProblemError 403 `auth-method-not-allowed` or `mfa-required`
 */
export function checkSignInPolicy(ctx: RequestContext, amr: readonly string[]): void {
  if (ctx.isSystemAdmin) return;
  if (amr.length > 0) {
    const directory = amr.includes('ldap');
    if (ctx.authPolicy === 'ad' && !directory) throw new ProblemError(403, 'auth-method-not-allowed', 'This publisher requires signing in with its directory account.');
    if ((ctx.authPolicy ?? 'internal') === 'internal' && directory) throw new ProblemError(403, 'auth-method-not-allowed', 'This publisher does not accept directory sign-ins.');
  }
  if (ctx.requireMfa && !amr.includes('mfa')) throw new ProblemError(403, 'mfa-required', 'This publisher requires a second factor: enrol TOTP (POST /api/v1/users/me/mfa/totp) and sign in again.');
}

/**
 * Second statement of the request transaction: look up the membership and set `app.access_scope`.
 * Exported for tests. Must run inside a transaction whose `app.user_id`/`app.publisher_id` are set.
 * @returns the context (scope '' and `userActive` false when the user row is not visible)
 */
export async function establishScope(em: EntityManager, userId: string, publisherId: string): Promise<RequestContext> {
  const rows = await query<{ is_system_admin: boolean; status: string; role: Role | null; access_scope: AccessScope; auth_policy: string | null; require_mfa: boolean }>(
    em,
    SCOPE_SQL,
    [userId, publisherId],
  );
  const row = rows[0];
  return {
    userId,
    publisherId: publisherId || null,
    scope: row?.access_scope ?? '',
    role: row?.role ?? null,
    isSystemAdmin: row?.is_system_admin ?? false,
    userActive: row !== undefined && row.status === 'active',
    authPolicy: row?.auth_policy ?? null,
    requireMfa: row?.require_mfa ?? false,
  };
}
