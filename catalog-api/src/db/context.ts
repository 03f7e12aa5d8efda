/**
 * The request transaction: every /api/v1 request runs in exactly one database transaction whose
 * first statement sets the RLS context (docs/CONTRACTS.md, "Database roles and RLS context"):
 * `select * from app_begin_request(user, publisher)` (migration 0011, SECURITY DEFINER). It records
 * the context for this transaction in a table `catalog_app` cannot write — the policies read it
 * through `app_current_user()`, `app_current_publisher()`, `app_current_scope()` and
 * `app_current_department()`, never from `set_config` settings — and may run once per transaction
 * (a second call raises), so SQL injected into a later statement cannot switch to another
 * publisher. From the caller's own `users` row and `user_publishers` row for (user, publisher), the
 * context publisher's status and sign-in settings, it derives the access scope — `publisher` for a
 * system admin or a publisher-wide role, `own` for a creator, `department` for a membership scoped
 * to a department, `platform` for a system admin without a publisher, '' (sees nothing) without a
 * membership or while the publisher is suspended or archived (system admins excepted) — and returns
 * the caller's permissions there (their system, custom or department role's `role_permissions`).
 * The caller's authentication methods (the assertion's `amr`) must satisfy the publisher's sign-in
 * settings — else 403 `auth-method-not-allowed` / `mfa-required` (system admins excepted).
 *
 * Everything the handler does afterwards sees only what RLS lets that context see; application code
 * never adds `publisher_id` filters to reads.
 */
import type { EntityManager } from '@mikro-orm/postgresql';
import { query, type Orm } from './orm.ts';
import { ProblemError, problem } from '../errors.ts';
import { READ_ONLY_BLOCKED_PERMISSIONS } from '../../../policies/src/permissions.ts';

import type { Role } from '../modules/users/membership.entity.ts';

/** The access scope `app_begin_request` derives (`platform`: a system admin without a publisher context). */
export type AccessScope = 'publisher' | 'own' | 'department' | 'platform' | '';

/** The caller as the request transaction established it. */
export type RequestContext = {
  userId: string;
  /** null when the request carries no publisher context */
  publisherId: string | null;
  scope: AccessScope;
  /** the membership role at `publisherId` (null without a membership or without a publisher) */
  role: Role | null;
  /** the custom role of the membership (role `custom`) */
  customRoleId: string | null;
  /** the department a department-scoped membership is limited to */
  departmentId: string | null;
  /** the permissions the caller holds at `publisherId` (in its scope); a system admin holds all */
  permissions: ReadonlySet<string>;
  isSystemAdmin: boolean;
  /** the context publisher's status (null without a publisher) */
  publisherStatus: string | null;
  /** false when the `users` row is missing or not `active` */
  userActive: boolean;
  /** the context publisher's `settings.auth_policy` (null: no publisher, or not set = internal) */
  authPolicy: string | null;
  /** the context publisher's `settings.require_mfa` */
  requireMfa: boolean;
  /** the context publisher's account is read-only now (trial ended without a plan, or cancelled) */
  readOnly: boolean;
  /** `users.kind` of the caller: a person, or the subject of an API client (the audit log's actor kind) */
  userKind: 'person' | 'api_client';
};

/** What the audit log records about the request (modules/audit): its id, the client address and user agent. */
export type RequestMeta = {
  /** the sidecar's request id (the assertion's `request_id`, else `X-Request-Id`) */
  requestId: string | null;
  /** the client address (Fastify `request.ip`: the sidecar's X-Forwarded-For) */
  ip: string | null;
  userAgent: string | null;
};

/** No request behind the transaction (scripts, tests). */
export const NO_REQUEST_META: RequestMeta = Object.freeze({ requestId: null, ip: null, userAgent: null });

/** The handle a handler gets: the transaction's EntityManager, the context, and a SQL helper. */
export type RequestTx = {
  em: EntityManager;
  ctx: RequestContext;
  /** Parameterised SQL inside this transaction (see `db/orm.ts` `query`). */
  sql: <R = Record<string, unknown>>(text: string, params?: readonly unknown[]) => Promise<R[]>;
  /** the request the transaction serves (for the audit log) */
  meta: RequestMeta;
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
  /** the request behind the transaction (default {@link NO_REQUEST_META}) */
  meta?: RequestMeta;
};

/**
 * The first statement of every request transaction: migration 0011's `app_begin_request`, which
 * records the context for this transaction only (once: a second call raises), derives the scope and
 * department from the caller's rows and returns the rest of the context.
 */
const BEGIN_REQUEST_SQL = `select * from app_begin_request($1::uuid, nullif($2, '')::uuid)`;

/**
 * Run `fn` in one transaction with the caller's RLS context set first (see the module comment).
 * Commits when `fn` resolves, rolls back when it throws (the error propagates unchanged).
 * @throws ProblemError 400 `publisher-context` (publisher required, none given),
 *         403 `forbidden` (unknown/disabled user, or no membership and not a system admin),
 *         403 `publisher-suspended` / `publisher-archived` (a member of such a publisher),
 *         403 `auth-method-not-allowed` / `mfa-required` (the publisher's sign-in rules)
 */
export async function withRequestTransaction<T>(orm: Orm, caller: Caller, fn: (tx: RequestTx) => Promise<T>, options: RequestTxOptions = {}): Promise<T> {
  const needsPublisher = (options.publisher ?? 'required') === 'required';
  if (needsPublisher && !caller.publisherId) throw problem.publisherContext();
  const publisherId = needsPublisher ? caller.publisherId! : '';
  const em = orm.em.fork();
  return em.transactional(async (tem) => {
    const ctx = await establishScope(tem, caller.userId, publisherId);
    if (!ctx.userActive) throw problem.forbidden('Your account is unknown or disabled.');
    if (needsPublisher && ctx.scope === '') {
      if (ctx.role && ctx.publisherStatus === 'suspended') throw new ProblemError(403, 'publisher-suspended', 'This publisher is suspended: its members can do nothing until a system admin reactivates it.');
      if (ctx.role && ctx.publisherStatus === 'archived') throw new ProblemError(403, 'publisher-archived', 'This publisher is archived.');
      throw problem.forbidden('You are not a member of this publisher.');
    }
    if (needsPublisher) checkSignInPolicy(ctx, caller.amr ?? []);
    return fn({ em: tem, ctx, sql: (text, params) => query(tem, text, params), meta: options.meta ?? NO_REQUEST_META });
  });
}

/**
 * The context publisher's sign-in rules against how the caller signed in (`amr`): auth policy `ad`
 * needs a directory sign-in (`ldap`), `internal` a non-directory one; `require_mfa` needs `mfa`.
 * System admins are exempt (they are the platform's staff, not the publisher's), and so are API
 * clients (their grant is the client credentials one).
 * @throws ProblemError 403 `auth-method-not-allowed` or `mfa-required`
 */
function checkSignInPolicy(ctx: RequestContext, amr: readonly string[]): void {
  // API clients sign in with client credentials, which no sign-in policy is about
  if (ctx.isSystemAdmin || ctx.role === 'api_user') return;
  if (amr.length > 0) {
    const directory = amr.includes('ldap');
    if (ctx.authPolicy === 'ad' && !directory) throw new ProblemError(403, 'auth-method-not-allowed', 'This publisher requires signing in with its directory account.');
    if ((ctx.authPolicy ?? 'internal') === 'internal' && directory) throw new ProblemError(403, 'auth-method-not-allowed', 'This publisher does not accept directory sign-ins.');
  }
  if (ctx.requireMfa && !amr.includes('mfa')) throw new ProblemError(403, 'mfa-required', 'This publisher requires a second factor: enrol TOTP (POST /api/v1/users/me/mfa/totp) and sign in again.');
}

/**
 * First statement of the request transaction: `app_begin_request` records the context and returns
 * the membership, scope and permissions. Must be the transaction's first call of it.
 * @returns the context (scope '' and `userActive` false for an unknown or deleted user)
 * @throws the driver's error when the transaction already has a context (SQLSTATE 42501)
 */
async function establishScope(em: EntityManager, userId: string, publisherId: string): Promise<RequestContext> {
  type Row = {
    is_system_admin: boolean;
    status: string;
    kind: 'person' | 'api_client';
    role: Role | null;
    custom_role_id: string | null;
    department_id: string | null;
    publisher_status: string | null;
    access_scope: AccessScope;
    scoped_department: string | null;
    auth_policy: string | null;
    require_mfa: boolean;
    read_only: boolean;
    permissions: string[];
  };
  const [row] = await query<Row>(em, BEGIN_REQUEST_SQL, [userId, publisherId]);
  const scope = row?.access_scope ?? '';
  return {
    userId,
    publisherId: publisherId || null,
    scope,
    role: row?.role ?? null,
    customRoleId: row?.custom_role_id ?? null,
    departmentId: row?.scoped_department || null,
    permissions: new Set(row?.permissions ?? []),
    isSystemAdmin: row?.is_system_admin ?? false,
    publisherStatus: row?.publisher_status ?? null,
    userActive: row !== undefined && row.status === 'active',
    authPolicy: row?.auth_policy ?? null,
    requireMfa: row?.require_mfa ?? false,
    readOnly: row?.read_only ?? false,
    userKind: row?.kind ?? 'person',
  };
}

/**
 * Defence in depth behind the sidecar (and beside RLS): does the caller hold `permission` in the
 * request's context (its scope: creators their own rows, department members their department)?
 * At a read-only publisher the permissions of policies/src/permissions.ts
 * `READ_ONLY_BLOCKED_PERMISSIONS` are refused to everyone but system admins (as in the model).
 * @throws ProblemError 403 `forbidden` naming the permission, 403 `publisher-read-only`
 */
export function requirePermission(tx: RequestTx, permission: string): void {
  if (!tx.ctx.permissions.has(permission)) throw problem.forbidden(`This needs the permission ${permission}.`);
  if (tx.ctx.readOnly && !tx.ctx.isSystemAdmin && READ_ONLY_BLOCKED_PERMISSIONS.includes(permission)) throw problem.readOnly();
}
