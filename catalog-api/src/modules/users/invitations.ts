/**
 * Invitations (docs/CONTRACTS.md, "Administration"): an admin invites an email with a grant; the
 * invitee receives a single-use token, valid 7 days, by mail; accepting it makes them a member —
 * a new person sets a password (internal sign-in), an existing internal user confirms theirs.
 *
 * The token is a random UUID (122 bits from the CSPRNG) so that it fits the accept route's path
 * (`POST /api/v1/invitations/{token}/accept`, whose parameter the sidecar requires to be a UUID);
 * only its SHA-256 digest is stored, and both services mask it in their request logs. Inviting the
 * same email again replaces the open invitation; revoking ends it. Accepting runs on the sign-in
 * service's pool (the invitee is not signed in; that role creates people, credentials and
 * memberships) in one transaction: an unknown, used, revoked or expired token, and an invitation to
 * a suspended or archived publisher, all get the same 400 `invalid-grant`.
 */
import { randomUUID } from 'node:crypto';
import { LockMode } from '@mikro-orm/core';
import type { EntityManager } from '@mikro-orm/postgresql';
import { ProblemError, problem } from '../../errors.ts';
import type { RequestTx } from '../../db/context.ts';
import type { Mail } from '../../mail/mailer.ts';
import type { AuthDeps } from '../auth/deps.ts';
import { Credential } from '../auth/credential.entity.ts';
import { hashPassword, passwordProblems, verifyPassword } from '../auth/passwords.ts';
import { digest } from '../auth/secrets.ts';
import { findUserByEmail } from '../auth/sign-in.service.ts';
import { Publisher } from '../publishers/publisher.entity.ts';
import { Invitation } from './invitation.entity.ts';
import { Membership } from './membership.entity.ts';
import type { Grant } from './members.service.ts';
import { User } from './user.entity.ts';
import { NO_REQUEST_META, type RequestMeta } from '../../db/context.ts';
import { recordAudit, recordAuditEvent } from '../audit/audit.service.ts';

/** How long an invitation is valid (ms): 7 days. */
export const INVITATION_TTL_MS = 7 * 24 * 3_600_000;

/** The invitation mail. */
export function invitationMail(to: string, publisherName: string, baseUrl: string, token: string): Mail {
  const link = `${baseUrl}/invitations/${token}`;
  return {
    to,
    subject: `You are invited to ${publisherName} on Music Publishing`,
    text: [
      `You have been invited to join ${publisherName}.`,
      '',
      `Open ${link}`,
      `or accept with POST /api/v1/invitations/${token}/accept`,
      '  (a new account sends {"password": "…", "display_name": "…"}; an existing one its current password).',
      '',
      'The invitation works once, for 7 days. If you did not expect it, ignore this message.',
    ].join('\n'),
  };
}

/**
 * Create (or replace) the open invitation of `email` at the request's publisher.
 * @returns the invitation and its token (for the mail only; never in an API answer)
 * @throws ProblemError 409 when the email already belongs to a member
 */
export async function createInvitation(tx: RequestTx, email: string, grant: Grant): Promise<{ invitation: Invitation; token: string }> {
  const publisherId = tx.ctx.publisherId!;
  const lower = email.toLowerCase();
  // A member's row is visible here (RLS shows the context publisher's members) — except to a
  // department admin outside their department, whom the insert below refuses anyway.
  const user = await findUserByEmail(tx.em, lower);
  if (user && (await tx.em.findOne(Membership, { publisherId, userId: user.id }))) throw problem.conflict('This email already belongs to a member of this publisher.');
  const now = new Date();
  await tx.em.nativeUpdate(Invitation, { publisherId, email: lower, acceptedAt: null, revokedAt: null }, { revokedAt: now });
  const token = randomUUID();
  const invitation = tx.em.create(Invitation, {
    publisherId,
    email: lower,
    role: grant.role,
    customRoleId: grant.customRoleId,
    departmentId: grant.departmentId,
    membershipExpiresAt: grant.expiresAt,
    tokenHash: digest(token),
    expiresAt: new Date(now.getTime() + INVITATION_TTL_MS),
    createdBy: tx.ctx.userId,
  });
  await tx.em.flush();
  await tx.em.refresh(invitation);
  await recordAudit(tx, {
    action: 'invitation.created',
    objectType: 'invitation',
    objectId: invitation.id,
    after: { email: invitation.email, role: invitation.role, custom_role_id: invitation.customRoleId, department_id: invitation.departmentId, expires_at: invitation.expiresAt },
  });
  return { invitation, token };
}

/** What an invitee sends. */
export type Acceptance = { password: string; display_name?: string };

/**
 * Accept an invitation (see the module comment).
 * @returns the new membership's publisher, user and role
 * @throws ProblemError 400 `invalid-grant` (token), 401 (an existing account's password is wrong),
 *   403 `auth-method-not-allowed` (a directory account: it joins through its directory), 409 (already
 *   a member), 422 (a new account's password or name)
 */
export async function acceptInvitation(
  deps: Pick<AuthDeps, 'orm' | 'flushOutbox'>,
  token: string,
  a: Acceptance,
  meta: RequestMeta = NO_REQUEST_META,
): Promise<{ publisherId: string; userId: string; role: string }> {
  const result = await deps.orm.em.fork().transactional(async (em: EntityManager) => {
    const inv = await em.findOne(Invitation, { tokenHash: digest(token.toLowerCase()) }, { lockMode: LockMode.PESSIMISTIC_WRITE });
    const now = new Date();
    const publisher = inv ? await em.findOne(Publisher, inv.publisherId) : null;
    if (!inv || inv.acceptedAt || inv.revokedAt || inv.expiresAt <= now || !publisher || !['active', 'trial'].includes(publisher.status)) {
      throw problem.invalidGrant(400, 'The invitation is invalid, used, revoked or expired; ask for a new one.');
    }
    let user = await findUserByEmail(em, inv.email);
    if (user) {
      if (user.authSource !== 'internal') throw new ProblemError(403, 'auth-method-not-allowed', 'This account signs in with its directory; its directory groups decide its memberships.');
      const cred = await em.findOne(Credential, user.id);
      if (user.status !== 'active' || !(await verifyPassword(cred?.passwordHash, a.password))) throw problem.signInFailed();
      if (await em.findOne(Membership, { publisherId: inv.publisherId, userId: user.id })) throw problem.conflict('You are already a member of this publisher.');
    } else {
      const errors = passwordProblems(a.password, inv.email).map((reason) => ({ field: 'password', reason }));
      if (!a.display_name?.trim()) errors.push({ field: 'display_name', reason: 'required for a new account' });
      if (errors.length) throw problem.validation(errors);
      user = em.create(User, { email: inv.email, displayName: a.display_name!.trim(), authSource: 'internal', emailVerifiedAt: now });
      await em.flush();
      em.create(Credential, { userId: user.id, passwordHash: await hashPassword(a.password), passwordChangedAt: now, failedLoginCount: 0, lockoutLevel: 0, updatedAt: now });
    }
    em.create(Membership, { publisherId: inv.publisherId, userId: user.id, role: inv.role as Membership['role'], customRoleId: inv.customRoleId ?? null, departmentId: inv.departmentId ?? null, expiresAt: inv.membershipExpiresAt ?? null });
    inv.acceptedAt = now;
    inv.acceptedBy = user.id;
    await em.flush();
    // the invitee is the actor: the token proved who they are
    await recordAuditEvent(em, { id: user.id, kind: 'user' }, meta, {
      action: 'member.added',
      objectType: 'member',
      objectId: user.id,
      publisherId: inv.publisherId,
      after: { role: inv.role, custom_role_id: inv.customRoleId, department_id: inv.departmentId, invitation_id: inv.id },
    });
    return { publisherId: inv.publisherId, userId: user.id, role: inv.role };
  });
  await deps.flushOutbox(); // the new membership's tuple
  return result;
}
