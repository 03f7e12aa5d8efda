/**
 * Writing the audit log (docs/CONTRACTS.md, "Audit log"): every write appends one `audit_events`
 * row in the transaction of the change, so a change and its record commit or roll back together.
 *
 * Handlers on the app pool call {@link recordAudit} with their request transaction; the sign-in
 * service (its own pool and role, no request transaction) calls {@link recordAuditEvent} with its
 * EntityManager and names the actor itself.
 *
 * What a row says about the object: the CHANGED fields only, before and after, restricted to the
 * allow-list of its object type ({@link AUDITED_FIELDS}). Nothing outside the list is ever stored,
 * so password hashes, TOTP secrets, recovery codes, client secrets and tokens — which no list names
 * — cannot reach the log even when a caller passes a whole row.
 */
import { isDeepStrictEqual } from 'node:util';
import type { EntityManager } from '@mikro-orm/postgresql';
import type { RequestMeta, RequestTx } from '../../db/context.ts';
import { AuditEvent, type ActorKind } from './audit-event.entity.ts';

/**
 * The fields each object type may show in `before`/`after` (API names). Only these are stored; a
 * field not listed here is dropped, whatever the caller passes.
 */
export const AUDITED_FIELDS = {
  work: ['title', 'iswc', 'language', 'owner_user_id', 'department_id', 'songwriters'],
  songwriter: ['first_name', 'last_name', 'ipi_name_number', 'pro', 'owner_user_id', 'department_id'],
  recording: ['title', 'isrc', 'work_id', 'duration_ms', 'release_date', 'owner_user_id', 'department_id'],
  publisher: ['name', 'slug', 'type', 'business_model', 'status'],
  publisher_settings: ['default_territory', 'timezone', 'language', 'require_mfa', 'auth_policy', 'session_max_age_s'],
  publisher_branding: ['display_name', 'logo_url', 'primary_color', 'secondary_color', 'accent_color'],
  department: ['name', 'description'],
  member: ['role', 'custom_role_id', 'department_id', 'invitation_id', 'sessions_revoked', 'reason'],
  invitation: ['email', 'role', 'custom_role_id', 'department_id', 'expires_at', 'revoked'],
  role: ['name', 'display_name', 'description', 'permissions'],
  api_client: ['name', 'rotated', 'revoked', 'reason'],
  // bind_secret_ref names where the bind password is (env:NAME, file:/path), never the password
  directory_config: [
    'url', 'start_tls', 'ca_file', 'tls_server_name', 'base_dn', 'bind_dn', 'bind_secret_ref', 'login_attribute',
    'email_domains', 'group_role_map', 'connect_timeout_ms', 'operation_timeout_ms', 'enabled',
  ],
  user: [
    'email', 'display_name', 'phone', 'timezone', 'language', 'avatar_url', 'status', 'kind', 'auth_source',
    'session_id', 'amr', 'reason', 'locked_until', 'lockout_level', 'mfa_enabled', 'sessions_revoked', 'email_verified',
  ],
  session: ['reason', 'amr'],
  // the payment method's token is a credential of the payment provider: its change shows as payment_method_changed
  account: ['plan_type', 'billing_cycle', 'seats', 'status', 'read_only', 'billing_email', 'billing_address', 'payment_method_changed'],
  // a version of the OpenFGA authorization model (modules/authz; ids are ULIDs, so fields, not object_id)
  authz_model: ['model_id', 'previous_model_id', 'written', 'restored_from', 'changed_decisions', 'accepted_changes'],
} as const satisfies Record<string, readonly string[]>;

/** The kinds of object the log knows. */
export type AuditObjectType = keyof typeof AUDITED_FIELDS;

/**
 * Every action the API records (`<object>.<verb>`), listed in docs/CONTRACTS.md ("Audit log").
 * A new action is added here first.
 */
export const AUDIT_ACTIONS = [
  'work.created', 'work.updated', 'work.deleted',
  'songwriter.created', 'songwriter.updated', 'songwriter.deleted',
  'recording.created', 'recording.updated', 'recording.deleted',
  'publisher.created', 'publisher.updated', 'publisher.archived', 'publisher.status_changed',
  'publisher_settings.updated', 'publisher_branding.updated',
  'department.created', 'department.updated', 'department.deleted',
  'member.added', 'member.role_changed', 'member.removed', 'member.sessions_revoked',
  'invitation.created', 'invitation.revoked',
  'role.created', 'role.updated', 'role.deleted',
  'api_client.created', 'api_client.secret_rotated', 'api_client.revoked',
  'directory_config.created', 'directory_config.updated', 'directory_config.deleted',
  'user.created', 'user.status_changed', 'user.deleted', 'user.profile_updated',
  'user.password_changed', 'user.password_reset_requested', 'user.password_reset',
  'user.email_verification_requested', 'user.email_verified',
  'user.mfa_enrolment_started', 'user.mfa_enabled', 'user.mfa_disabled',
  'auth.login_succeeded', 'auth.mfa_challenged', 'auth.login_failed', 'auth.locked_out', 'auth.logout',
  'auth.client_token_issued', 'auth.client_auth_failed',
  'session.refreshed', 'session.revoked',
  'account.plan_changed', 'account.trial_ended',
  'authz.model_deployed', 'authz.model_rolled_back',
] as const;

/** One action name. */
export type AuditAction = (typeof AUDIT_ACTIONS)[number];

/** A JSON-ish object (an API item, an entity's fields in API names). */
type Fields = Record<string, unknown>;

/** What a handler says about one write. */
export type AuditEntry = {
  action: AuditAction;
  objectType: AuditObjectType;
  /** the object's id (null: none is known, e.g. a failed sign-in of an unknown email) */
  objectId: string | null;
  /** the object before the write (omit for a create) */
  before?: Fields | null;
  /** the object after the write (omit for a delete) */
  after?: Fields | null;
  /** the chain: default the request's publisher context (null = the platform chain) */
  publisherId?: string | null;
};

/** Who acted. `id` is null exactly for `anonymous` and `system`. */
export type AuditActor = { id: string | null; kind: ActorKind };

/** A value as it is stored: JSON's view (dates as ISO strings, no undefined). */
function normalise(v: unknown): unknown {
  return v === undefined ? undefined : JSON.parse(JSON.stringify(v));
}

const isEmpty = (v: unknown) => v === null || v === undefined || (Array.isArray(v) && v.length === 0);

/**
 * The allow-listed fields that changed between `before` and `after`.
 * - create (no `before`): every allow-listed field of `after` that has a value;
 * - delete (no `after`): every allow-listed field of `before` that has a value;
 * - update: the allow-listed fields whose values differ (deep equality of their JSON forms).
 * @returns `before`/`after` objects (null for the side that does not exist)
 */
export function changedFields(objectType: AuditObjectType, before: Fields | null | undefined, after: Fields | null | undefined): { before: Fields | null; after: Fields | null } {
  const allowed: readonly string[] = AUDITED_FIELDS[objectType];
  const pick = (o: Fields) => Object.fromEntries(allowed.filter((k) => !isEmpty(o[k])).map((k) => [k, normalise(o[k])]));
  if (!before && !after) return { before: null, after: null };
  if (!before) return { before: null, after: pick(after!) };
  if (!after) return { before: pick(before), after: null };
  const b: Fields = {};
  const a: Fields = {};
  for (const k of allowed) {
    if (!(k in before) && !(k in after)) continue;
    const was = normalise(before[k]) ?? null;
    const now = normalise(after[k]) ?? null;
    if (!isDeepStrictEqual(was, now)) {
      b[k] = was;
      a[k] = now;
    }
  }
  return { before: b, after: a };
}

/** Longest stored user agent (the column's check). */
const USER_AGENT_MAX = 512;
/** Longest stored request id (the column's check). */
const REQUEST_ID_MAX = 200;

/**
 * Append one audit row through `em` and flush it (in `em`'s transaction). The database sets the
 * chain fields and the time; RLS checks that the actor is the context user (app pool).
 * @param em the EntityManager of the transaction that makes the change
 * @throws the driver's error when the row is refused (the change then rolls back with it)
 */
export async function recordAuditEvent(em: EntityManager, actor: AuditActor, meta: RequestMeta, entry: AuditEntry & { publisherId: string | null }): Promise<AuditEvent> {
  const { before, after } = changedFields(entry.objectType, entry.before, entry.after);
  const row = em.create(AuditEvent, {
    publisherId: entry.publisherId,
    actorId: actor.id,
    actorKind: actor.kind,
    action: entry.action,
    objectType: entry.objectType,
    objectId: entry.objectId,
    before,
    after,
    requestId: meta.requestId?.slice(0, REQUEST_ID_MAX) ?? null,
    clientIp: meta.ip,
    userAgent: meta.userAgent?.slice(0, USER_AGENT_MAX) ?? null,
  });
  await em.flush();
  return row;
}

/**
 * Append the audit row of a write made in the request transaction `tx`: the actor is the caller
 * (a person or an API client), the request id, client IP and user agent are the request's, the
 * chain is `entry.publisherId` or else the request's publisher context.
 * Call it after the write, in the same transaction (it flushes). For example, a plan change
 * (modules/accounts, PUT /api/v1/publishers/{id}/account/plan), with `before` taken before it:
 *
 *   await recordAudit(tx, { action: 'account.plan_changed', objectType: 'account', objectId: publisherId,
 *     before: { plan_type, billing_cycle, seats, status }, after: { plan_type, billing_cycle, seats, status } });
 *
 * @throws the driver's error when the row is refused (the request then fails and nothing is written)
 */
export async function recordAudit(tx: RequestTx, entry: AuditEntry): Promise<AuditEvent> {
  const publisherId = entry.publisherId !== undefined ? entry.publisherId : tx.ctx.publisherId;
  return recordAuditEvent(tx.em, { id: tx.ctx.userId, kind: tx.ctx.userKind === 'api_client' ? 'api_client' : 'user' }, tx.meta, { ...entry, publisherId });
}
