/**
 * What a person does with their own credentials: forgotten and changed passwords, email
 * verification, TOTP enrolment. Runs on the sign-in service's pool; the caller's user id comes from
 * the verified identity assertion (authenticated routes) or from a single-use token (links in mail).
 *
 * - forgot password: always 202; the lookup and the mail happen after the answer, so neither the
 *   status, the body nor the time says whether the email has an account. Internal accounts get a
 *   reset link (1 h; a new request voids the older links), directory accounts a note that their
 *   password lives in the directory, unknown emails nothing.
 * - reset password: a valid link sets the password, clears the lockout and revokes every session.
 * - change password: needs the current one; revokes every other session.
 * - TOTP: enrol (secret + otpauth URI, kept pending) → confirm with a code (enabled; 10 recovery codes
 *   shown once, stored as digests) → disable with a current code.
 */
import { LockMode } from '@mikro-orm/core';
import type { EntityManager } from '@mikro-orm/postgresql';
import { ProblemError, problem } from '../../errors.ts';
import { User } from '../users/user.entity.ts';
import { Credential, RecoveryCode } from './credential.entity.ts';
import type { AuthDeps } from './deps.ts';
import { CLEAR } from './lockout.ts';
import { directoryPasswordMail, emailVerificationMail, passwordResetMail } from './mail-templates.ts';
import { hashPassword, passwordProblems, verifyPassword } from './passwords.ts';
import { digest, newOpaqueToken, seal, unseal } from './secrets.ts';
import { revokeSessions } from './sessions.service.ts';
import { credentialFor, findUserByEmail } from './sign-in.service.ts';
import { acceptTotp, newRecoveryCodes, newTotpSecret, otpauthUri } from './totp.ts';
import { UserToken, type UserTokenPurpose } from './user-token.entity.ts';
import { NO_REQUEST_META, type RequestMeta } from '../../db/context.ts';
import { recordAuditEvent, type AuditAction } from '../audit/audit.service.ts';

/**
 * Append a row about the user's own account to the platform chain. `actor` null: nobody signed in
 * asked (a forgotten password); otherwise the user themself (signed in, or proven by a link's token).
 */
function auditAccount(em: EntityManager, actor: string | null, userId: string, meta: RequestMeta, action: AuditAction, change: { before?: Record<string, unknown>; after?: Record<string, unknown> } = {}) {
  return recordAuditEvent(em, actor ? { id: actor, kind: 'user' } : { id: null, kind: 'anonymous' }, meta, { action, objectType: 'user', objectId: userId, publisherId: null, ...change });
}

/** 422 when `password` is not acceptable for `email`. */
function checkNewPassword(password: string, email: string, field = 'new_password'): void {
  const problems = passwordProblems(password, email);
  if (problems.length) throw problem.validation(problems.map((reason) => ({ field, reason })));
}

/** A user who is a person (has an email; API clients have none). */
type Person = User & { email: string };
const isPerson = (u: User | null): u is Person => !!u && u.kind === 'person' && typeof u.email === 'string';

/** A live person of the sign-in service's view, or 401 (the assertion named a user that is gone, disabled, or an API client). */
async function activeUser(em: EntityManager, userId: string): Promise<Person> {
  const user = await em.findOne(User, userId);
  if (!isPerson(user) || user.status !== 'active') throw problem.unauthenticated('Your account is unknown or disabled.');
  return user;
}

/** Issue a single-use token for `purpose`, voiding the user's older unused ones. @returns the token */
async function issueUserToken(em: EntityManager, userId: string, purpose: UserTokenPurpose, ttlMs: number): Promise<string> {
  const now = new Date();
  await em.nativeUpdate(UserToken, { userId, purpose, usedAt: null }, { usedAt: now });
  const token = newOpaqueToken();
  em.create(UserToken, { userId, purpose, tokenHash: digest(token), data: {}, attempts: 0, createdAt: now, expiresAt: new Date(now.getTime() + ttlMs) });
  return token;
}

/** Use up a single-use token. @returns its user id, or null when unknown, used or expired */
async function consumeUserToken(em: EntityManager, token: string, purpose: UserTokenPurpose): Promise<string | null> {
  const row = await em.findOne(UserToken, { tokenHash: digest(token), purpose }, { lockMode: LockMode.PESSIMISTIC_WRITE });
  const now = new Date();
  if (!row || row.usedAt || row.expiresAt <= now) return null;
  row.usedAt = now;
  return row.userId;
}

/** The account service. */
export type AccountService = ReturnType<typeof createAccountService>;

/** Build the account service. */
export function createAccountService(deps: AuthDeps) {
  const tx = <T>(fn: (em: EntityManager) => Promise<T>) => deps.orm.em.fork().transactional(fn);
  // Work done after the answer (forgot password); idle() waits for it before the pool closes.
  const background = new Set<Promise<void>>();

  return {
    /** Resolves when the background work started so far has finished. */
    async idle(): Promise<void> {
      while (background.size) await Promise.allSettled([...background]);
    },

    /**
     * Start a password reset for `email`; returns at once, the work happens in the background
     * (failures are logged, never reported to the caller).
     */
    forgotPassword(email: string, meta: RequestMeta = NO_REQUEST_META): void {
      const work = (async () => {
        const mail = await tx(async (em) => {
          const user = await findUserByEmail(em, email);
          if (!isPerson(user) || user.status !== 'active') return null;
          if (user.authSource !== 'internal') return directoryPasswordMail(user.email);
          const token = await issueUserToken(em, user.id, 'password_reset', deps.ttl.passwordResetMs);
          await auditAccount(em, null, user.id, meta, 'user.password_reset_requested');
          return passwordResetMail(user.email, deps.appBaseUrl, token, deps.ttl.passwordResetMs);
        });
        if (mail) deps.mailer.send(mail);
      })()
        .catch((err: unknown) => deps.log.error({ err: { message: (err as Error).message } }, 'password reset request failed'))
        .finally(() => background.delete(work));
      background.add(work);
    },

    /**
     * Set a new password with a reset token; revokes every session of the user.
     * @throws ProblemError 400 `invalid-grant` (token unknown, used or expired), 422 (weak password)
     */
    async resetPassword(token: string, newPassword: string, meta: RequestMeta = NO_REQUEST_META): Promise<void> {
      const ok = await tx(async (em) => {
        const userId = await consumeUserToken(em, token, 'password_reset');
        if (!userId) return false;
        const user = await em.findOne(User, userId);
        if (!isPerson(user) || user.status !== 'active' || user.authSource !== 'internal') return false;
        checkNewPassword(newPassword, user.email);
        const cred = await credentialFor(em, userId);
        cred.passwordHash = await hashPassword(newPassword);
        cred.passwordChangedAt = new Date();
        cred.passwordExpiresAt = null;
        Object.assign(cred, CLEAR);
        const revoked = await revokeSessions(em, { userId }, 'password_reset');
        await auditAccount(em, userId, userId, meta, 'user.password_reset', { after: { sessions_revoked: revoked } });
        return true;
      });
      if (!ok) throw problem.invalidGrant(400, 'The reset link is invalid, expired or already used; ask for a new one.');
      await deps.revocations.publish();
    },

    /**
     * Change the caller's password; every other session of theirs is revoked.
     * @throws ProblemError 401 (wrong current password), 409 (a directory account), 422 (weak password)
     */
    async changePassword(userId: string, currentSid: string | null, current: string, next: string, meta: RequestMeta = NO_REQUEST_META): Promise<void> {
      await tx(async (em) => {
        const user = await activeUser(em, userId);
        if (user.authSource !== 'internal') throw problem.conflict("Your password is your directory's: change it there.");
        const cred = await em.findOne(Credential, userId, { lockMode: LockMode.PESSIMISTIC_WRITE });
        if (!(await verifyPassword(cred?.passwordHash, current))) throw new ProblemError(401, 'unauthenticated', 'The current password is incorrect.');
        checkNewPassword(next, user.email);
        cred!.passwordHash = await hashPassword(next);
        cred!.passwordChangedAt = new Date();
        cred!.passwordExpiresAt = null;
        const revoked = await revokeSessions(em, { userId, ...(currentSid ? { exceptSessionId: currentSid } : {}) }, 'password_changed');
        await auditAccount(em, userId, userId, meta, 'user.password_changed', { after: { sessions_revoked: revoked } });
      });
      await deps.revocations.publish();
    },

    /** Mail the caller a verification link (also when already verified: the address may have changed). */
    async sendEmailVerification(userId: string, meta: RequestMeta = NO_REQUEST_META): Promise<void> {
      const mail = await tx(async (em) => {
        const user = await activeUser(em, userId);
        const token = await issueUserToken(em, userId, 'email_verification', deps.ttl.emailVerificationMs);
        await auditAccount(em, userId, userId, meta, 'user.email_verification_requested');
        return emailVerificationMail(user.email, deps.appBaseUrl, token, deps.ttl.emailVerificationMs);
      });
      deps.mailer.send(mail);
    },

    /** Confirm an email with a verification token. @throws ProblemError 400 `invalid-grant` */
    async verifyEmail(token: string, meta: RequestMeta = NO_REQUEST_META): Promise<void> {
      const ok = await tx(async (em) => {
        const userId = await consumeUserToken(em, token, 'email_verification');
        if (!userId) return false;
        const user = await em.findOne(User, userId);
        if (!user) return false;
        const before = { email_verified: !!user.emailVerifiedAt };
        user.emailVerifiedAt = new Date();
        await auditAccount(em, userId, userId, meta, 'user.email_verified', { before, after: { email_verified: true } });
        return true;
      });
      if (!ok) throw problem.invalidGrant(400, 'The verification link is invalid, expired or already used; ask for a new one.');
    },

    /**
     * Start TOTP enrolment: a new secret, kept pending until confirmed.
     * @returns the base32 secret and its otpauth:// URI
     * @throws ProblemError 409 when TOTP is already enabled
     */
    async enrolTotp(userId: string, meta: RequestMeta = NO_REQUEST_META): Promise<{ secret: string; otpauth_uri: string }> {
      return tx(async (em) => {
        const user = await activeUser(em, userId);
        const cred = await credentialFor(em, userId);
        if (cred.totpEnabledAt) throw problem.conflict('TOTP is already enabled; disable it first to enrol a new authenticator.');
        const secret = newTotpSecret();
        cred.totpPendingSecret = await seal(deps.kek, secret);
        await auditAccount(em, userId, userId, meta, 'user.mfa_enrolment_started');
        return { secret, otpauth_uri: otpauthUri(secret, user.email) };
      });
    },

    /**
     * Confirm enrolment with a code from the new authenticator.
     * @returns the recovery codes (shown once)
     * @throws ProblemError 409 (nothing pending), 422 (wrong code)
     */
    async confirmTotp(userId: string, code: string, meta: RequestMeta = NO_REQUEST_META): Promise<string[]> {
      return tx(async (em) => {
        await activeUser(em, userId);
        const cred = await em.findOne(Credential, userId, { lockMode: LockMode.PESSIMISTIC_WRITE });
        if (!cred?.totpPendingSecret) throw problem.conflict('There is no TOTP enrolment to confirm; start one with POST /api/v1/users/me/mfa/totp.');
        const secret = await unseal(deps.kek, cred.totpPendingSecret);
        const step = acceptTotp(secret, code.trim(), null);
        if (step === null) throw problem.validation([{ field: 'code', reason: 'is not the current code of the new authenticator' }]);
        cred.totpSecret = cred.totpPendingSecret;
        cred.totpPendingSecret = null;
        cred.totpEnabledAt = new Date();
        cred.totpLastStep = step;
        await em.nativeDelete(RecoveryCode, { userId });
        const codes = newRecoveryCodes();
        for (const c of codes) em.create(RecoveryCode, { userId, codeHash: digest(c), createdAt: new Date() });
        await auditAccount(em, userId, userId, meta, 'user.mfa_enabled', { before: { mfa_enabled: false }, after: { mfa_enabled: true } });
        return codes;
      });
    },

    /** Disable TOTP with a current code. @throws ProblemError 409 (not enabled), 422 (wrong code) */
    async disableTotp(userId: string, code: string, meta: RequestMeta = NO_REQUEST_META): Promise<void> {
      await tx(async (em) => {
        await activeUser(em, userId);
        const cred = await em.findOne(Credential, userId, { lockMode: LockMode.PESSIMISTIC_WRITE });
        if (!cred?.totpSecret) throw problem.conflict('TOTP is not enabled.');
        const step = acceptTotp(await unseal(deps.kek, cred.totpSecret), code.trim(), cred.totpLastStep ?? null);
        if (step === null) throw problem.validation([{ field: 'code', reason: 'is not a current code of your authenticator' }]);
        cred.totpSecret = null;
        cred.totpPendingSecret = null;
        cred.totpEnabledAt = null;
        cred.totpLastStep = step;
        await em.nativeDelete(RecoveryCode, { userId });
        await auditAccount(em, userId, userId, meta, 'user.mfa_disabled', { before: { mfa_enabled: true }, after: { mfa_enabled: false } });
      });
    },
  };
}
