/**
 * A publisher's members and invitations (docs/CONTRACTS.md, "Administration"):
 * GET /api/v1/publishers/{id}/users (filters: role, department, status; keyset pages),
 * POST …/users/invite, PUT …/users/{user_id}/role, DELETE …/users/{user_id},
 * GET …/invitations, DELETE …/invitations/{invitation_id}, and the invitee's
 * POST /api/v1/invitations/{token}/accept (public: the token is the credential).
 *
 * A department admin sees and manages only their department's members (RLS shows no others).
 * Nobody hands out permissions they do not hold (members.service.ts). A non-member and an unknown
 * user get the same 404.
 */
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { problem } from '../../errors.ts';
import { isoTimestamp } from '../../db/base.entity.ts';
import type { AuthDeps } from '../auth/deps.ts';
import { MAX_PASSWORD_LENGTH } from '../auth/passwords.ts';
import { isUuid, pathId, requestMeta, type RouteDeps } from '../common/http.ts';
import { afterCursor, listQuerySchema, pageSchema } from '../common/pagination.ts';
import { commonErrors, emailAddress, problemSchema, timestamp } from '../common/schemas.ts';
import { inPublisher } from '../publishers/in-publisher.ts';
import { Invitation } from './invitation.entity.ts';
import { acceptInvitation, createInvitation, invitationMail } from './invitations.ts';
import { Membership, ROLES } from './membership.entity.ts';
import { assertGrantable, changeMembership, grantBody, memberSchema, presentMembers, removeMembership, reserveSeat, resolveGrant } from './members.service.ts';
import { USER_STATUSES, User } from './user.entity.ts';
import { recordAudit } from '../audit/audit.service.ts';

/** What the routes need: the app pool, and the sign-in service (mail, its pool for seats and invitations). */
export type MembersRouteDeps = RouteDeps & { auth: AuthDeps; /** accept attempts per client IP per minute (the sign-in limit) */ signInRateLimit: number };

const tags = ['members'];
const params = z.object({ publisherId: z.string() });
const memberParams = params.extend({ userId: z.string() });

const invitationSchema = z.object({
  id: z.uuid(),
  publisher_id: z.uuid(),
  email: z.string(),
  role: z.string(),
  custom_role_id: z.uuid().nullable(),
  department_id: z.uuid().nullable(),
  created_at: timestamp,
  expires_at: timestamp,
  membership_expires_at: timestamp.nullable().describe('when the membership it creates ends (null: no end)'),
});
const presentInvitation = (i: Invitation) => ({
  id: i.id,
  publisher_id: i.publisherId,
  email: i.email,
  role: i.role,
  custom_role_id: i.customRoleId ?? null,
  department_id: i.departmentId ?? null,
  created_at: isoTimestamp(i.createdAt),
  expires_at: i.expiresAt.toISOString(),
  membership_expires_at: i.membershipExpiresAt?.toISOString() ?? null,
});

/** Fastify plugin: members and invitations. */
export const membersRoutes: FastifyPluginAsyncZod<MembersRouteDeps> = async (app, deps) => {
  app.get(
    '/api/v1/publishers/:publisherId/users',
    {
      schema: {
        tags,
        operationId: 'listMembers',
        summary: "A publisher's members",
        description: 'Keyset pages, oldest membership first; filter by role, department or user status. A department admin sees their department only.',
        params,
        querystring: listQuerySchema.extend({ role: z.enum(ROLES).optional(), department_id: z.uuid().optional(), status: z.enum(USER_STATUSES).optional() }),
        response: { 200: pageSchema(memberSchema), ...commonErrors },
      },
    },
    async (request) =>
      inPublisher(deps, request, request.params.publisherId, 'members:read', async (tx, p) => {
        const { limit, cursor, role, department_id, status } = request.query;
        // an ended membership (expires_at passed) is no longer listed; its row stays until removed or renewed
        const where: Record<string, unknown> = { publisherId: p.id, $or: [{ expiresAt: null }, { expiresAt: { $gt: new Date() } }] };
        if (role) where.role = role;
        if (department_id) where.departmentId = department_id.toLowerCase();
        if (status) where.userId = { $in: tx.em.createQueryBuilder(User, 'u').select('u.id').where({ status }) };
        const page = await tx.em.findByCursor(Membership, { where, first: limit, after: afterCursor(cursor), includeCount: false, orderBy: { createdAt: 'asc', userId: 'asc' } });
        return { items: await presentMembers(tx, page.items), next_cursor: page.hasNextPage ? page.endCursor : null };
      }),
  );

  app.post(
    '/api/v1/publishers/:publisherId/users/invite',
    {
      schema: {
        tags,
        operationId: 'inviteMember',
        summary: 'Invite someone to the publisher',
        description:
          'Mails a single-use link, valid 7 days (the token is never in an answer). Inviting the same email again replaces the open invitation. ' +
          'An invitation takes a seat (409 `seats-exhausted` when none is left); you cannot grant permissions you do not hold.',
        params,
        body: z.strictObject({ email: emailAddress, ...grantBody }),
        response: { 201: invitationSchema, ...commonErrors, 409: problemSchema, 422: problemSchema },
      },
    },
    async (request, reply) => {
      const { mail, invitation } = await inPublisher(
        deps,
        request,
        request.params.publisherId,
        'members:invite',
        async (tx, p) => {
          const grant = await resolveGrant(tx, request.body);
          await assertGrantable(tx, grant);
          await reserveSeat(tx, deps.auth.orm, p);
          const { invitation, token } = await createInvitation(tx, request.body.email, grant);
          return { invitation: presentInvitation(invitation), mail: invitationMail(invitation.email, p.name, deps.auth.appBaseUrl, token) };
        },
        { mutating: true },
      );
      deps.auth.mailer.send(mail); // after the commit: no mail for an invitation that did not happen
      return reply.status(201).send(invitation);
    },
  );

  app.get(
    '/api/v1/publishers/:publisherId/invitations',
    {
      schema: { description: 'Not yet accepted, revoked or expired (members:read; a department admin sees its department).', tags, operationId: 'listInvitations', summary: 'Open invitations', params, response: { 200: z.object({ items: z.array(invitationSchema) }), ...commonErrors } },
    },
    async (request) =>
      inPublisher(deps, request, request.params.publisherId, 'members:read', async (tx) => ({
        items: (await tx.em.find(Invitation, { acceptedAt: null, revokedAt: null, expiresAt: { $gt: new Date() } }, { orderBy: { createdAt: 'asc', id: 'asc' } })).map(presentInvitation),
      })),
  );

  app.delete(
    '/api/v1/publishers/:publisherId/invitations/:invitationId',
    {
      schema: { description: 'Its link stops working (members:invite).',
        tags,
        operationId: 'revokeInvitation',
        summary: 'Revoke an open invitation (frees its seat)',
        params: params.extend({ invitationId: z.string() }),
        response: { 204: z.null(), ...commonErrors },
      },
    },
    async (request, reply) => {
      await inPublisher(
        deps,
        request,
        request.params.publisherId,
        'members:invite',
        async (tx) => {
          const id = pathId(request.params.invitationId);
          const n = await tx.em.nativeUpdate(Invitation, { id, acceptedAt: null, revokedAt: null }, { revokedAt: new Date() });
          if (n === 0) throw problem.notFound('No such open invitation.');
          await recordAudit(tx, { action: 'invitation.revoked', objectType: 'invitation', objectId: id, before: { revoked: false }, after: { revoked: true } });
        },
        { mutating: true },
      );
      return reply.status(204).send(null);
    },
  );

  app.put(
    '/api/v1/publishers/:publisherId/users/:userId/role',
    {
      schema: {
        tags,
        operationId: 'setMemberRole',
        summary: "Change a member's role (or custom role, or department)",
        description: 'You cannot grant permissions you do not hold. Demoting the last admin is refused with 409 `last-admin`.',
        params: memberParams,
        body: z.strictObject(grantBody),
        response: { 200: memberSchema, ...commonErrors, 409: problemSchema, 422: problemSchema },
      },
    },
    async (request) =>
      inPublisher(
        deps,
        request,
        request.params.publisherId,
        'members:update_role',
        async (tx) => changeMembership(tx, pathId(request.params.userId), request.body),
        { mutating: true },
      ),
  );

  app.delete(
    '/api/v1/publishers/:publisherId/users/:userId',
    {
      schema: {
        tags,
        operationId: 'removeMember',
        summary: 'Remove a member',
        description: 'Their access to this publisher ends at the next request on every sidecar. Removing the last admin is refused with 409 `last-admin`.',
        params: memberParams,
        response: { 204: z.null(), ...commonErrors, 409: problemSchema },
      },
    },
    async (request, reply) => {
      await inPublisher(
        deps,
        request,
        request.params.publisherId,
        'members:remove',
        async (tx) => removeMembership(tx, pathId(request.params.userId)),
        { mutating: true },
      );
      return reply.status(204).send(null);
    },
  );

  app.post(
    '/api/v1/invitations/:token/accept',
    {
      config: { public: true, rateLimit: { max: deps.signInRateLimit, timeWindow: 60_000, groupId: 'sign-in' } },
      schema: {
        tags,
        operationId: 'acceptInvitation',
        summary: 'Accept an invitation',
        description:
          'A new account sends a password (12+ characters) and a display name; an existing internal account its current password. ' +
          'Then sign in with POST /api/v1/auth/login.',
        security: [],
        params: z.object({ token: z.string() }),
        body: z.strictObject({ password: z.string().max(MAX_PASSWORD_LENGTH), display_name: z.string().trim().min(1).max(200).optional() }),
        response: { 200: z.object({ publisher_id: z.uuid(), user_id: z.uuid(), role: z.string() }), 400: problemSchema, 401: problemSchema, 403: problemSchema, 409: problemSchema, 422: problemSchema, 429: problemSchema },
      },
    },
    async (request) => {
      const token = request.params.token;
      if (!isUuid(token)) throw problem.invalidGrant(400, 'The invitation is invalid, used, revoked or expired; ask for a new one.');
      const r = await acceptInvitation(deps.auth, token, request.body, requestMeta(request));
      return { publisher_id: r.publisherId, user_id: r.userId, role: r.role };
    },
  );
};
