/**
 * Users (docs/CONTRACTS.md, "Administration"):
 * - GET / PUT /api/v1/users/me — the caller's profile (display name, phone, timezone, language,
 *   avatar URL; never email, status or roles) and memberships;
 * - POST /api/v1/users, PUT /api/v1/users/{id}/status, DELETE /api/v1/users/{id} — system admins
 *   (disabling or deleting ends every session of the user at once, on every sidecar; deleting also
 *   removes their memberships — their catalog rows stay, audit columns intact);
 * - GET /api/v1/users/{id} and …/publishers — the user, for themself, a system admin, or someone
 *   holding `members:read` at a publisher the user belongs to (only those memberships); anyone else
 *   gets the same 404 as for an unknown id;
 * - POST /api/v1/users/{id}/publishers (system admins), PUT / DELETE …/publishers/{publisher_id}
 *   (that publisher's `members:update_role` / `members:remove`).
 */
import { raw } from '@mikro-orm/core';
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { problem } from '../../errors.ts';
import type { RequestTx } from '../../db/context.ts';
import type { AuthDeps } from '../auth/deps.ts';
import { revokeAndAnnounce } from '../auth/sessions.service.ts';
import { inRequestTx, location, pathId, type RouteDeps } from '../common/http.ts';
import { commonErrors, emailAddress, languageTag, problemSchema, timeZone } from '../common/schemas.ts';
import { Publisher } from '../publishers/publisher.entity.ts';
import { inPublisher } from '../publishers/in-publisher.ts';
import { Role } from '../roles/role.entity.ts';
import { Membership, ROLES } from './membership.entity.ts';
import { NO_SUCH_MEMBER, addMembership, changeMembership, grantBody, memberSchema, publishersAdministeringUser, removeMembership } from './members.service.ts';
import { AUTH_SOURCES, USER_KINDS, USER_STATUSES, User } from './user.entity.ts';
import { recordAudit } from '../audit/audit.service.ts';

/** A user as the audit log shows it (profile, status, kind; the log's allow-list drops the rest). */
const userFields = (u: User) => ({
  email: u.email ?? null,
  display_name: u.displayName,
  phone: u.phone ?? null,
  timezone: u.timezone ?? null,
  language: u.language ?? null,
  avatar_url: u.avatarUrl ?? null,
  status: u.status,
  kind: u.kind,
  auth_source: u.authSource,
});

/** What the routes need: the app pool, and the sign-in service (its pool, session revocation). */
export type UsersRouteDeps = RouteDeps & { auth: AuthDeps };

const tags = ['users'];
const params = z.object({ userId: z.string() });
const NO_SUCH_USER = 'No such user.';

const membershipSchema = z.object({
  publisher_id: z.uuid(),
  name: z.string(),
  slug: z.string(),
  role: z.enum(ROLES),
  custom_role: z.object({ id: z.uuid(), name: z.string() }).nullable(),
  department_id: z.uuid().nullable(),
});
const userSchema = z.object({
  id: z.uuid(),
  kind: z.enum(USER_KINDS),
  email: z.string().nullable(),
  display_name: z.string(),
  phone: z.string().nullable(),
  timezone: z.string().nullable(),
  language: z.string().nullable(),
  avatar_url: z.string().nullable(),
  status: z.enum(USER_STATUSES),
  auth_source: z.enum(AUTH_SOURCES),
  is_system_admin: z.boolean(),
  memberships: z.array(membershipSchema),
}).meta({ id: 'User' });
type UserView = z.infer<typeof userSchema>;

const profileBody = z.strictObject({
  display_name: z.string().trim().min(1).max(200).optional(),
  phone: z.string().regex(/^\+[1-9][0-9]{6,14}$/, 'must be an E.164 number like +442071234567').nullable().optional(),
  timezone: timeZone.nullable().optional(),
  language: languageTag.nullable().optional(),
  avatar_url: z.url({ protocol: /^https$/, message: 'must be an https:// URL' }).max(2048).nullable().optional(),
});

/**
 * A user with the memberships `em` shows (optionally only at `publisherIds`).
 * @param em an EntityManager of either pool
 */
async function present(em: RequestTx['em'], user: User, publisherIds?: readonly string[]): Promise<UserView> {
  // an ended membership (expires_at passed, migration 0012) is not shown
  const all = await em.find(Membership, {
    userId: user.id,
    $or: [{ expiresAt: null }, { expiresAt: { $gt: new Date() } }],
    ...(publisherIds ? { publisherId: { $in: [...publisherIds] } } : {}),
  });
  const publishers = all.length ? await em.find(Publisher, { id: { $in: all.map((m) => m.publisherId) } }) : [];
  const roleIds = all.map((m) => m.customRoleId).filter((x): x is string => !!x);
  const roles = roleIds.length ? await em.find(Role, { id: { $in: roleIds } }) : [];
  const pById = new Map(publishers.map((p) => [p.id, p]));
  const rById = new Map(roles.map((r) => [r.id, r]));
  const memberships = all
    .filter((m) => pById.has(m.publisherId))
    .map((m) => {
      const p = pById.get(m.publisherId)!;
      const r = m.customRoleId ? rById.get(m.customRoleId) : undefined;
      return { publisher_id: p.id, name: p.name, slug: p.slug, role: m.role, custom_role: r ? { id: r.id, name: r.name } : null, department_id: m.departmentId ?? null };
    })
    .sort((a, b) => a.name.localeCompare(b.name) || a.publisher_id.localeCompare(b.publisher_id));
  return {
    id: user.id,
    kind: user.kind,
    email: user.email ?? null,
    display_name: user.displayName,
    phone: user.phone ?? null,
    timezone: user.timezone ?? null,
    language: user.language ?? null,
    avatar_url: user.avatarUrl ?? null,
    status: user.status,
    auth_source: user.authSource,
    is_system_admin: user.isSystemAdmin,
    memberships,
  };
}

/** Fastify plugin: the user routes. */
export const usersRoutes: FastifyPluginAsyncZod<UsersRouteDeps> = async (app, deps) => {
  /**
   * The user `id` as the caller may see them: themself and system admins through RLS (scope
   * platform), administrators of one of their publishers through the sign-in pool, restricted to
   * those publishers' memberships.
   */
  const visibleUser = async (tx: RequestTx, id: string): Promise<UserView> => {
    if (id === tx.ctx.userId || tx.ctx.scope === 'platform') {
      const u = await tx.em.findOne(User, id);
      if (!u) throw problem.notFound(NO_SUCH_USER);
      return present(tx.em, u);
    }
    const shared = await publishersAdministeringUser(deps.auth.orm, tx.ctx.userId, id);
    if (shared.length === 0) throw problem.notFound(NO_SUCH_USER);
    const em = deps.auth.orm.em.fork();
    const u = await em.findOne(User, id);
    if (!u) throw problem.notFound(NO_SUCH_USER);
    return present(em, u, shared);
  };

  /** Run `fn` as a system admin without a publisher context (scope platform). */
  const asSystemAdmin = <T>(request: Parameters<typeof inRequestTx>[1], fn: (tx: RequestTx) => Promise<T>, mutating = false) =>
    inRequestTx(
      deps,
      request,
      async (tx) => {
        if (!tx.ctx.isSystemAdmin) throw problem.forbidden('Only a system admin can do this.');
        return fn(tx);
      },
      { publisher: 'none', mutating },
    );

  app.get(
    '/api/v1/users/me',
    { schema: { description: 'Your profile and every membership: publisher, role (system or custom), department.', tags, operationId: 'getMe', summary: 'The caller: profile and memberships', response: { 200: userSchema, ...commonErrors } } },
    async (request) => inRequestTx(deps, request, (tx) => visibleUser(tx, tx.ctx.userId), { publisher: 'none' }),
  );

  app.put(
    '/api/v1/users/me',
    {
      schema: {
        tags,
        operationId: 'updateMe',
        summary: 'Change your profile',
        description: 'Display name, phone (E.164), time zone (IANA), language (BCP 47), avatar URL (https). Email, status and roles are not yours to change here.',
        body: profileBody,
        response: { 200: userSchema, ...commonErrors },
      },
    },
    async (request) =>
      inRequestTx(
        deps,
        request,
        async (tx) => {
          const me = await tx.em.findOne(User, tx.ctx.userId);
          if (!me) throw problem.notFound(NO_SUCH_USER);
          const b = request.body;
          const changes = Object.fromEntries(
            Object.entries({ displayName: b.display_name, phone: b.phone, timezone: b.timezone, language: b.language, avatarUrl: b.avatar_url }).filter(([, v]) => v !== undefined),
          );
          const before = userFields(me);
          tx.em.assign(me, changes);
          await tx.em.flush();
          await recordAudit(tx, { action: 'user.profile_updated', objectType: 'user', objectId: me.id, before, after: userFields(me) });
          return visibleUser(tx, me.id);
        },
        { publisher: 'none' },
      ),
  );

  app.post(
    '/api/v1/users',
    {
      schema: {
        tags,
        operationId: 'createUser',
        summary: 'Create a person (system admins)',
        description: 'An internal account without a password: the person sets one through POST /api/v1/auth/password/forgot, or joins a publisher by invitation.',
        body: z.strictObject({ email: emailAddress, display_name: z.string().trim().min(1).max(200) }),
        response: { 201: userSchema, ...commonErrors, 409: problemSchema },
      },
    },
    async (request, reply) => {
      const created = await asSystemAdmin(
        request,
        async (tx) => {
          const u = tx.em.create(User, { email: request.body.email.toLowerCase(), displayName: request.body.display_name, createdBy: tx.ctx.userId });
          await tx.em.flush();
          await recordAudit(tx, { action: 'user.created', objectType: 'user', objectId: u.id, after: { email: u.email, display_name: u.displayName, kind: 'person', status: 'active' } });
          return visibleUser(tx, u.id);
        },
        true,
      );
      return reply.status(201).header('location', location('users', created.id)).send(created);
    },
  );

  app.get(
    '/api/v1/users/:userId',
    {
      schema: {
        tags,
        operationId: 'getUser',
        summary: 'A user',
        description: 'For themself, a system admin, or someone holding members:read at a publisher the user belongs to (then only those memberships). Otherwise 404, as for an unknown id.',
        params,
        response: { 200: userSchema, ...commonErrors },
      },
    },
    async (request) => inRequestTx(deps, request, (tx) => visibleUser(tx, pathId(request.params.userId)), { publisher: 'none' }),
  );

  app.get(
    '/api/v1/users/:userId/publishers',
    {
      schema: { description: 'Visible to the same callers as the user.', tags, operationId: 'listUserPublishers', summary: "A user's memberships (as GET /api/v1/users/{id} shows them)", params, response: { 200: z.object({ items: z.array(membershipSchema) }), ...commonErrors } },
    },
    async (request) => inRequestTx(deps, request, async (tx) => ({ items: (await visibleUser(tx, pathId(request.params.userId))).memberships }), { publisher: 'none' }),
  );

  app.put(
    '/api/v1/users/:userId/status',
    {
      schema: {
        tags,
        operationId: 'setUserStatus',
        summary: "Enable or disable a user (system admins)",
        description: 'A disabled user is refused everywhere at once: their sessions end (every sidecar within a second) and OpenFGA holds nothing for them. Not on yourself.',
        params,
        body: z.strictObject({ status: z.enum(USER_STATUSES) }),
        response: { 200: userSchema, ...commonErrors },
      },
    },
    async (request) => {
      const id = pathId(request.params.userId);
      const view = await asSystemAdmin(
        request,
        async (tx) => {
          if (id === tx.ctx.userId) throw problem.forbidden('You cannot change your own status.');
          const u = await tx.em.findOne(User, id);
          if (!u) throw problem.notFound(NO_SUCH_USER);
          const before = { status: u.status };
          u.status = request.body.status;
          await tx.em.flush();
          await recordAudit(tx, { action: 'user.status_changed', objectType: 'user', objectId: id, before, after: { status: u.status } });
          return visibleUser(tx, id);
        },
        true,
      );
      if (request.body.status === 'disabled') await revokeAndAnnounce(deps.auth, { userId: id }, 'user_disabled');
      return view;
    },
  );

  app.delete(
    '/api/v1/users/:userId',
    {
      schema: {
        tags,
        operationId: 'deleteUser',
        summary: 'Delete a user (system admins)',
        description: "Soft delete: their memberships go (409 `last-admin` if that would leave a publisher without an admin), their sessions end, their catalog rows stay. Not yourself.",
        params,
        response: { 204: z.null(), ...commonErrors, 409: problemSchema },
      },
    },
    async (request, reply) => {
      const id = pathId(request.params.userId);
      await asSystemAdmin(
        request,
        async (tx) => {
          if (id === tx.ctx.userId) throw problem.forbidden('You cannot delete yourself.');
          const u = await tx.em.findOne(User, id);
          if (!u) throw problem.notFound(NO_SUCH_USER);
          const before = userFields(u);
          await tx.em.nativeDelete(Membership, { userId: id });
          tx.em.assign(u, { deletedAt: raw('now()') } as never);
          await tx.em.flush();
          await recordAudit(tx, { action: 'user.deleted', objectType: 'user', objectId: id, before });
        },
        true,
      );
      await revokeAndAnnounce(deps.auth, { userId: id }, 'user_deleted');
      return reply.status(204).send(null);
    },
  );

  app.post(
    '/api/v1/users/:userId/publishers',
    {
      schema: {
        tags,
        operationId: 'addUserToPublisher',
        summary: 'Add a user to a publisher (system admins)',
        description: 'Takes a seat (409 `seats-exhausted` when none is left). Publisher admins invite instead.',
        params,
        body: z.strictObject({ publisher_id: z.uuid(), ...grantBody }),
        response: { 201: memberSchema, ...commonErrors, 409: problemSchema, 422: problemSchema },
      },
    },
    async (request, reply) => {
      const userId = pathId(request.params.userId);
      const member = await inPublisher(
        deps,
        request,
        request.body.publisher_id,
        null,
        async (tx, p) => {
          if (!tx.ctx.isSystemAdmin) throw problem.forbidden('Only a system admin adds members directly; invite them instead.');
          return addMembership(tx, deps.auth.orm, p, userId, request.body);
        },
        { mutating: true },
      );
      return reply.status(201).header('location', location(`users/${userId}/publishers`, member.publisher_id)).send(member);
    },
  );

  const membershipParams = params.extend({ publisherId: z.string() });
  app.put(
    '/api/v1/users/:userId/publishers/:publisherId',
    {
      schema: {
        tags,
        operationId: 'setUserRoleAtPublisher',
        summary: "Change a user's role at a publisher",
        description: `Needs members:update_role there; the same as PUT /api/v1/publishers/{publisher_id}/users/{user_id}/role. ${NO_SUCH_MEMBER.replace('.', '')} → 404.`,
        params: membershipParams,
        body: z.strictObject(grantBody),
        response: { 200: memberSchema, ...commonErrors, 409: problemSchema, 422: problemSchema },
      },
    },
    async (request) =>
      inPublisher(deps, request, request.params.publisherId, 'members:update_role', (tx) => changeMembership(tx, pathId(request.params.userId), request.body), { mutating: true }),
  );

  app.delete(
    '/api/v1/users/:userId/publishers/:publisherId',
    {
      schema: {
        tags,
        operationId: 'removeUserFromPublisher',
        summary: 'Remove a user from a publisher',
        description: 'Needs members:remove there; the same as DELETE /api/v1/publishers/{publisher_id}/users/{user_id}.',
        params: membershipParams,
        response: { 204: z.null(), ...commonErrors, 409: problemSchema },
      },
    },
    async (request, reply) => {
      await inPublisher(deps, request, request.params.publisherId, 'members:remove', (tx) => removeMembership(tx, pathId(request.params.userId)), { mutating: true });
      return reply.status(204).send(null);
    },
  );
};
