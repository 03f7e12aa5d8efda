/**
 * Memberships as the administration changes them (docs/CONTRACTS.md, "Administration"): what a
 * grant is (a system role, a custom role, or a department role), who may hand it out, seats, and
 * the member listing. The outbox triggers turn every membership change into OpenFGA tuples, and
 * migration 0006's trigger keeps an admin per publisher.
 *
 * Rules:
 * - You cannot hand out what you do not hold: every permission a grant confers must be one of the
 *   caller's (system admins excepted), so a role with `members:invite` cannot invite an admin.
 * - A department admin grants only department roles in their own department.
 * - Seats: memberships (API clients excepted) plus open invitations never exceed the seats of
 *   the publisher's account (modules/accounts; 409 `seats-exhausted`). Counted on the sign-in service's pool, which sees the
 *   whole publisher, under a per-publisher advisory lock held by the request transaction, so two
 *   concurrent invitations cannot both take the last seat.
 */
import { z } from 'zod';
import { DEPARTMENT_ROLE_PERMISSIONS, SYSTEM_ROLE_PERMISSIONS, type DepartmentRole, type SystemRole } from '../../../../policies/src/permissions.ts';
import { ProblemError, problem } from '../../errors.ts';
import { query, type Orm } from '../../db/orm.ts';
import { isoTimestamp } from '../../db/base.entity.ts';
import type { RequestTx } from '../../db/context.ts';
import { timestamp } from '../common/schemas.ts';
import { Department } from '../publishers/department.entity.ts';
import type { Publisher } from '../publishers/publisher.entity.ts';
import { Role, RolePermission } from '../roles/role.entity.ts';
import { Membership, ROLES, type Role as MembershipRole } from './membership.entity.ts';
import { User } from './user.entity.ts';
import { recordAudit } from '../audit/audit.service.ts';

/** A membership's grant as the audit log shows it. */
const grantFields = (m: Membership) => ({ role: m.role, custom_role_id: m.customRoleId ?? null, department_id: m.departmentId ?? null, expires_at: m.expiresAt?.toISOString() ?? null });

/** Roles a person can be given (api_user belongs to API clients only). */
export const GRANTABLE_ROLES = ['admin', 'manager', 'editor', 'viewer', 'creator', 'custom'] as const;

/** The body fields of a grant. */
export const grantBody = {
  role: z.enum(GRANTABLE_ROLES).describe('a system role, or `custom` with custom_role_id'),
  custom_role_id: z.uuid().nullish().describe('the custom role (role `custom`)'),
  department_id: z.uuid().nullish().describe('limit the membership to a department (roles admin, editor, viewer)'),
  expires_at: z.iso
    .datetime({ offset: true })
    .nullish()
    .describe("the membership ends at this time (RFC 3339, in the future), e.g. an external auditor's week; the authorization model stops counting it then. Omitted or null: no end"),
};

/** A grant as a request names it. */
type GrantInput = { role: MembershipRole; custom_role_id?: string | null; department_id?: string | null; expires_at?: string | null };

/** What a membership confers. */
export type Grant = { role: MembershipRole; customRoleId: string | null; departmentId: string | null; expiresAt: Date | null };

/**
 * Check a grant against the publisher: the custom role and the department exist there, and the
 * role fits (custom needs a custom role; a department needs admin, editor or viewer). A department
 * admin's grants are in their department unless the body names one.
 * @throws ProblemError 422 naming the field
 */
export async function resolveGrant(tx: RequestTx, body: GrantInput): Promise<Grant> {
  const customRoleId = body.custom_role_id?.toLowerCase() ?? null;
  const departmentId = (body.department_id ?? (tx.ctx.scope === 'department' ? tx.ctx.departmentId : null))?.toLowerCase() ?? null;
  if ((body.role === 'custom') !== (customRoleId !== null)) {
    throw problem.validation([{ field: 'custom_role_id', reason: body.role === 'custom' ? 'required with role custom' : 'only with role custom' }]);
  }
  if (customRoleId && !(await tx.em.findOne(Role, { id: customRoleId, publisherId: tx.ctx.publisherId! }))) {
    throw problem.validation([{ field: 'custom_role_id', reason: 'no such role of this publisher' }]);
  }
  if (departmentId) {
    if (!['admin', 'editor', 'viewer'].includes(body.role)) throw problem.validation([{ field: 'department_id', reason: 'only roles admin, editor and viewer can be limited to a department' }]);
    if (!(await tx.em.findOne(Department, { id: departmentId }))) throw problem.validation([{ field: 'department_id', reason: 'no such department' }]);
  }
  const expiresAt = body.expires_at ? new Date(body.expires_at) : null;
  if (expiresAt && expiresAt.getTime() <= Date.now()) throw problem.validation([{ field: 'expires_at', reason: 'must be in the future' }]);
  return { role: body.role, customRoleId, departmentId, expiresAt };
}

/** The permissions a grant confers (policies/src/permissions.ts, or the custom role's rows). */
export async function grantPermissions(tx: RequestTx, g: Grant): Promise<Set<string>> {
  if (g.customRoleId) return new Set((await tx.em.find(RolePermission, { roleId: g.customRoleId })).map((r) => r.permission));
  if (g.departmentId) return new Set(DEPARTMENT_ROLE_PERMISSIONS[g.role as DepartmentRole]);
  return new Set(SYSTEM_ROLE_PERMISSIONS[g.role as SystemRole] ?? []);
}

/**
 * You cannot hand out what you do not hold; a department admin grants within their department.
 * @throws ProblemError 403 naming what is missing
 */
export async function assertGrantable(tx: RequestTx, g: Grant): Promise<void> {
  if (tx.ctx.isSystemAdmin) return;
  if (tx.ctx.scope === 'department' && g.departmentId !== tx.ctx.departmentId) {
    throw problem.forbidden('A department admin grants roles in their own department only.');
  }
  const missing = [...(await grantPermissions(tx, g))].filter((p) => !tx.ctx.permissions.has(p));
  if (missing.length) throw problem.forbidden(`You cannot grant permissions you do not hold: ${missing.join(', ')}.`);
}

/**
 * The seats a publisher uses: its memberships (API clients excepted) plus its open invitations.
 * @param authOrm the sign-in service's pool (sees every membership and invitation of the publisher)
 * @returns the count, and the account's seat limit
 */
export async function seatsOf(authOrm: Orm, publisherId: string): Promise<{ used: number; limit: number }> {
  return (await seatsOfMany(authOrm, [publisherId])).get(publisherId)!;
}

/**
 * {@link seatsOf} for several publishers in one statement.
 * @returns publisher id → seats used and limit (0 for an unknown publisher)
 */
export async function seatsOfMany(authOrm: Orm, publisherIds: readonly string[]): Promise<Map<string, { used: number; limit: number }>> {
  // raw SQL: one counting statement over three tables on the other pool
  const rows = await query<{ id: string; used: number; limit: number | null }>(
    authOrm.em.fork(),
    `select p.id::text,
            (select count(*) from user_publishers m where m.publisher_id = p.id and m.role <> 'api_user')::int
          + (select count(*) from invitations i where i.publisher_id = p.id and i.accepted_at is null and i.revoked_at is null and i.expires_at > now())::int as used,
            (select a.seats from accounts a where a.publisher_id = p.id) as limit
       from unnest($1::uuid[]) as p(id)`,
    [publisherIds],
  );
  return new Map(rows.map((r) => [r.id, { used: r.used, limit: r.limit ?? 0 }]));
}

/** Serialise seat changes of one publisher until the transaction ends (invitations, plan changes). */
export async function lockSeats(tx: RequestTx, publisherId: string): Promise<void> {
  await query(tx.em, `select pg_advisory_xact_lock(hashtextextended('publisher-seats:' || $1, 0))`, [publisherId]);
}

/**
 * Take a seat at `publisher` for one more member or invitation.
 * @param authOrm the sign-in service's pool (sees every membership and invitation of the publisher)
 * @throws ProblemError 409 `seats-exhausted` with the numbers
 */
export async function reserveSeat(tx: RequestTx, authOrm: Orm, publisher: Publisher): Promise<void> {
  await lockSeats(tx, publisher.id);
  const { used, limit } = await seatsOf(authOrm, publisher.id);
  if (used >= limit) {
    throw new ProblemError(409, 'seats-exhausted', `All ${limit} seats of this publisher are taken (${used} members and open invitations); raise the limit or free a seat.`);
  }
}

/** A member as the administration lists it. */
export const memberSchema = z.object({
  user_id: z.uuid(),
  publisher_id: z.uuid(),
  role: z.enum(ROLES),
  custom_role: z.object({ id: z.uuid(), name: z.string() }).nullable(),
  department_id: z.uuid().nullable(),
  expires_at: timestamp.nullable().describe('when the membership ends (null: no end)'),
  email: z.string().nullable(),
  display_name: z.string().nullable(),
  kind: z.enum(['person', 'api_client']),
  status: z.enum(['active', 'disabled']),
  created_at: timestamp,
}).meta({ id: 'Member' });
export type Member = z.infer<typeof memberSchema>;

/** Memberships (of one publisher, in order) → members, with their users and custom roles (two queries). */
export async function presentMembers(tx: RequestTx, rows: Membership[]): Promise<Member[]> {
  if (rows.length === 0) return [];
  const users = await tx.em.find(User, { id: { $in: rows.map((m) => m.userId) } });
  const roleIds = [...new Set(rows.map((m) => m.customRoleId).filter((x): x is string => !!x))];
  const roles = roleIds.length ? await tx.em.find(Role, { id: { $in: roleIds } }) : [];
  const userById = new Map(users.map((u) => [u.id, u]));
  const roleById = new Map(roles.map((r) => [r.id, r]));
  return rows.map((m) => {
    const u = userById.get(m.userId);
    const r = m.customRoleId ? roleById.get(m.customRoleId) : undefined;
    return {
      user_id: m.userId,
      publisher_id: m.publisherId,
      role: m.role,
      custom_role: r ? { id: r.id, name: r.name } : null,
      department_id: m.departmentId ?? null,
      expires_at: m.expiresAt?.toISOString() ?? null,
      email: u?.email ?? null,
      display_name: u?.displayName ?? null,
      kind: u?.kind ?? 'person',
      status: u?.status ?? 'active',
      created_at: isoTimestamp(m.createdAt),
    };
  });
}

/** The one answer for "not a member of this publisher" — also for an unknown user. */
export const NO_SUCH_MEMBER = 'No such member of this publisher.';

/** The membership of `userId` at the request's publisher, or 404 (also for a non-member or an unknown user). */
export async function memberOrNotFound(tx: RequestTx, userId: string): Promise<Membership> {
  const m = await tx.em.findOne(Membership, { publisherId: tx.ctx.publisherId!, userId });
  if (!m) throw problem.notFound(NO_SUCH_MEMBER);
  return m;
}


/**
 * Change the role (custom role, department) of an existing member of the request's publisher.
 * @throws ProblemError 404 (no such member), 403 (not grantable), 409 (an API client; the last admin), 422
 */
export async function changeMembership(tx: RequestTx, userId: string, body: GrantInput): Promise<Member> {
  const m = await memberOrNotFound(tx, userId);
  if (m.role === 'api_user') throw problem.conflict("An API client's role does not change; manage it under /api-clients.");
  const grant = await resolveGrant(tx, body);
  await assertGrantable(tx, grant);
  const before = grantFields(m);
  tx.em.assign(m, { role: grant.role, customRoleId: grant.customRoleId, departmentId: grant.departmentId, expiresAt: grant.expiresAt }); // updated_by: the audit trigger
  await tx.em.flush();
  await tx.em.refresh(m);
  await recordAudit(tx, { action: 'member.role_changed', objectType: 'member', objectId: userId, before, after: grantFields(m) });
  const [member] = await presentMembers(tx, [m]);
  return member!;
}

/**
 * Remove a member of the request's publisher (their tuple goes through the outbox).
 * @throws ProblemError 404 (no such member), 409 `last-admin`
 */
export async function removeMembership(tx: RequestTx, userId: string): Promise<void> {
  const m = await memberOrNotFound(tx, userId);
  const before = grantFields(m);
  tx.em.remove(m);
  await tx.em.flush();
  await recordAudit(tx, { action: 'member.removed', objectType: 'member', objectId: userId, before });
}

/**
 * Make an existing user a member of the request's publisher (a system admin's call; everyone else
 * invites). Takes a seat.
 * @throws ProblemError 404 (no such user), 409 (already a member; no seat), 422
 */
export async function addMembership(tx: RequestTx, authOrm: Orm, publisher: Publisher, userId: string, body: GrantInput): Promise<Member> {
  // the sign-in pool sees every user; the request's RLS context only this publisher's members
  if (!(await authOrm.em.fork().findOne(User, { id: userId, kind: 'person' }))) throw problem.notFound('No such user.');
  if (await tx.em.findOne(Membership, { publisherId: publisher.id, userId })) throw problem.conflict('Already a member of this publisher; change the role instead.');
  const grant = await resolveGrant(tx, body);
  await assertGrantable(tx, grant);
  await reserveSeat(tx, authOrm, publisher);
  const m = tx.em.create(Membership, { publisherId: publisher.id, userId, role: grant.role, customRoleId: grant.customRoleId, departmentId: grant.departmentId, expiresAt: grant.expiresAt });
  await tx.em.flush();
  await tx.em.refresh(m);
  await recordAudit(tx, { action: 'member.added', objectType: 'member', objectId: userId, after: grantFields(m) });
  const [member] = await presentMembers(tx, [m]);
  return member!;
}

/**
 * The publishers where `callerId` may see `targetId` as a member (holds `members:read` there, for a
 * department admin in the target's department), read on the sign-in service's pool — which sees
 * every publisher — for GET /api/v1/users/{id}.
 */
export async function publishersAdministeringUser(authOrm: Orm, callerId: string, targetId: string): Promise<string[]> {
  // raw SQL: one authorization query over five tables, the SQL form of app_caller_can (migration 0006)
  const rows = await query<{ publisher_id: string }>(
    authOrm.em.fork(),
    `select distinct t.publisher_id
       from user_publishers t
       join user_publishers c on c.publisher_id = t.publisher_id and c.user_id = $1 and c.role <> 'creator'
       join users cu on cu.id = c.user_id and cu.status = 'active' and cu.deleted_at is null
       join publishers p on p.id = t.publisher_id and p.status in ('active', 'trial') and p.deleted_at is null
       join roles r on (c.custom_role_id is not null and r.id = c.custom_role_id)
                    or (c.custom_role_id is null and r.publisher_id is null
                        and r.name = case when c.department_id is null then c.role else 'department-' || c.role end)
       join role_permissions rp on rp.role_id = r.id and rp.permission = 'members:read'
      where t.user_id = $2 and (c.department_id is null or c.department_id = t.department_id)`,
    [callerId, targetId],
  );
  return rows.map((r) => r.publisher_id);
}
