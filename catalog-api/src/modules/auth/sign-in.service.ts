/**
 * Sign-in (docs/CONTRACTS.md, "Identity"): the first factor through the providers (Active
 * Directory, then internal passwords), lockout, the publisher's auth policy, then either the MFA
 * challenge or a new session.
 *
 * Order of checks for `login(email, password)`:
 * 1. the account's lockout (lockout.ts; unknown emails have one too) → 429 `account-locked` with
 *    Retry-After, without looking at the password;
 * 2. the first factor (providers/*): wrong password, unknown email, disabled account → one generic
 *    401 after the same argon2 work, and one more failure towards the lockout;
 * 3. an internal user must belong to no publisher, be a system admin, or belong to a publisher whose
 *    auth policy allows internal passwords → else 403 `auth-method-not-allowed`;
 * 4. TOTP enrolled → `{mfa_required, mfa_token}` (a single-use challenge valid 5 min, ≤ 5 codes);
 *    otherwise a session and tokens, with `mfa_enrollment_required` when a publisher of the user
 *    requires MFA and none is enrolled (requests in that publisher's context are then refused with
 *    403 `mfa-required` until the user signs in with a second factor).
 */
import { LockMode, raw } from '@mikro-orm/core';
import type { EntityManager } from '@mikro-orm/postgresql';
import { decodeJwt } from 'jose';
import { ProblemError, problem } from '../../errors.ts';
import { User } from '../users/user.entity.ts';
import { Credential, RecoveryCode } from './credential.entity.ts';
import type { AuthDeps } from './deps.ts';
import { CLEAR, afterFailure, lockedForMs, type LockoutState } from './lockout.ts';
import { ldapProvider } from './providers/ldap.ts';
import { internalProvider } from './providers/internal.ts';
import { CredentialsRejected, type SignInProvider } from './providers/provider.ts';
import { digest, newOpaqueToken, unseal } from './secrets.ts';
import { clientMeta, openSession, publishersOf, type ClientInfo, type TokenResponse } from './sessions.service.ts';
import { recordAuditEvent, type AuditAction } from '../audit/audit.service.ts';
import { acceptTotp, normaliseRecoveryCode } from './totp.ts';
import { createUnknownEmailLockout } from './unknown-lockout.ts';
import { UserToken } from './user-token.entity.ts';

/** Codes one MFA challenge accepts before it is used up. */
export const MFA_MAX_ATTEMPTS = 5;

/** What `login` and `verifyMfa` answer. */
export type SignInResult =
  | { kind: 'tokens'; tokens: TokenResponse; mfaEnrollmentRequired: boolean }
  | { kind: 'mfa'; mfaToken: string; expiresIn: number };

/**
 * Append a sign-in event to the platform chain (docs/CONTRACTS.md, "Audit log"): the actor is the
 * account the attempt was for (null = an email that belongs to no account: `anonymous`).
 */
async function auditSignIn(em: EntityManager, userId: string | null, client: ClientInfo, action: AuditAction, after: Record<string, unknown>): Promise<void> {
  await recordAuditEvent(em, userId ? { id: userId, kind: 'user' } : { id: null, kind: 'anonymous' }, clientMeta(client), {
    action,
    objectType: 'user',
    objectId: userId,
    publisherId: null,
    after,
  });
}

/** Did the failure that produced `next` start a lock? (afterFailure restarts the count only then.) */
const justLocked = (next: LockoutState) => next.lockedUntil !== null && next.failedLoginCount === 0;

/** The session id (`sid`) of tokens this service just issued. */
const sessionIdOf = (tokens: TokenResponse) => decodeJwt(tokens.access_token).sid ?? null;

/** The user with this email (case-insensitive), not deleted. */
export async function findUserByEmail(em: EntityManager, email: string): Promise<User | null> {
  return em.findOne(User, { [raw('lower(email)')]: email.toLowerCase() });
}

function lockoutOf(c: Credential | null): LockoutState {
  return c ? { failedLoginCount: c.failedLoginCount, firstFailedAt: c.firstFailedAt ?? null, lockedUntil: c.lockedUntil ?? null, lockoutLevel: c.lockoutLevel } : CLEAR;
}
function setLockout(c: Credential, s: LockoutState): void {
  c.failedLoginCount = s.failedLoginCount;
  c.firstFailedAt = s.firstFailedAt;
  c.lockedUntil = s.lockedUntil;
  c.lockoutLevel = s.lockoutLevel;
}

/** The user's credential row, created (without a password) when missing; locked FOR UPDATE. */
export async function credentialFor(em: EntityManager, userId: string): Promise<Credential> {
  const c = await em.findOne(Credential, userId, { lockMode: LockMode.PESSIMISTIC_WRITE });
  if (c) return c;
  const created = em.create(Credential, { userId, failedLoginCount: 0, lockoutLevel: 0, updatedAt: new Date() });
  await em.flush();
  return created;
}

/** The sign-in service. */
export type SignInService = {
  /**
   * Check an email and password.
   * @throws ProblemError 401 `unauthenticated` (generic), 429 `account-locked`, 403 for account
   *   states and policies (see the module comment), 503 `directory-unavailable`
   */
  login(email: string, password: string, client: ClientInfo): Promise<SignInResult>;
  /**
   * Finish a sign-in with a TOTP code or a recovery code.
   * @throws ProblemError 401 `invalid-grant` (challenge unknown, used, expired or out of attempts),
   *   401 `unauthenticated` (wrong code), 429 `account-locked`
   */
  verifyMfa(mfaToken: string, code: string, client: ClientInfo): Promise<SignInResult>;
};

/** Build the sign-in service. */
export function createSignInService(deps: AuthDeps): SignInService {
  const providers: SignInProvider[] = [ldapProvider(deps), internalProvider()];
  const unknownEmails = createUnknownEmailLockout(deps.redis);

  /**
   * Count a failed first factor (in its own transaction: the attempt's was rolled back) and append
   * `auth.login_failed`, or `auth.locked_out` when this failure locks the account.
   */
  const recordFailure = async (userId: string | null, email: string, now: Date, client: ClientInfo) => {
    const audit = (em: EntityManager, next: LockoutState) =>
      justLocked(next)
        ? auditSignIn(em, userId, client, 'auth.locked_out', { email, reason: 'failed-logins', locked_until: next.lockedUntil, lockout_level: next.lockoutLevel })
        : auditSignIn(em, userId, client, 'auth.login_failed', { email, reason: 'invalid-credentials' });
    if (!userId) {
      const next = await unknownEmails.fail(email, now);
      await deps.orm.em.fork().transactional((em: EntityManager) => audit(em, next));
      return;
    }
    await deps.orm.em.fork().transactional(async (em: EntityManager) => {
      const c = await credentialFor(em, userId);
      const was = lockoutOf(c);
      const next = afterFailure(was, now);
      setLockout(c, next);
      if (next.lockedUntil && next.lockedUntil !== was.lockedUntil) {
        deps.log.warn({ userId, lockedUntil: next.lockedUntil.toISOString(), level: next.lockoutLevel }, 'account locked after failed sign-ins');
      }
      await audit(em, next);
    });
  };

  /** A sign-in refused for another reason (locked, disabled, policy): `auth.login_failed` with the problem's kind. */
  const recordRefusal = (userId: string | null, email: string | null, reason: string, client: ClientInfo) =>
    deps.orm.em.fork().transactional((em: EntityManager) => auditSignIn(em, userId, client, 'auth.login_failed', { email, reason }));

  /** The audit row of a sign-in that got through its factor: a session, or an MFA challenge. */
  const recordSignIn = (em: EntityManager, userId: string, amr: readonly string[], r: SignInResult, client: ClientInfo) =>
    r.kind === 'mfa'
      ? auditSignIn(em, userId, client, 'auth.mfa_challenged', { amr })
      : auditSignIn(em, userId, client, 'auth.login_succeeded', { amr, session_id: sessionIdOf(r.tokens) });

  /** After the first factor: policy, then MFA challenge or session. */
  const afterFirstFactor = async (em: EntityManager, userId: string, amr: string[], client: ClientInfo, now: Date): Promise<SignInResult> => {
    const user = await em.findOneOrFail(User, userId);
    const publishers = await publishersOf(em, userId);
    if (user.authSource === 'internal' && !user.isSystemAdmin && publishers.length > 0 && !publishers.some((p) => p.signIn().auth_policy !== 'ad')) {
      throw new ProblemError(403, 'auth-method-not-allowed', 'Your publisher requires signing in with its directory account.');
    }
    const cred = await em.findOne(Credential, userId);
    if (cred && (cred.failedLoginCount > 0 || cred.lockoutLevel > 0 || cred.lockedUntil)) setLockout(cred, CLEAR);
    if (cred?.totpEnabledAt) {
      const mfaToken = newOpaqueToken();
      em.create(UserToken, {
        userId,
        purpose: 'mfa_challenge',
        tokenHash: digest(mfaToken),
        data: { amr, auth_time: now.toISOString() },
        attempts: 0,
        createdAt: now,
        expiresAt: new Date(now.getTime() + deps.ttl.mfaChallengeMs),
      });
      return { kind: 'mfa', mfaToken, expiresIn: Math.round(deps.ttl.mfaChallengeMs / 1000) };
    }
    const tokens = await openSession(deps, em, { userId, amr, authTime: now, publishers }, client);
    const mfaEnrollmentRequired = publishers.some((p) => p.signIn().require_mfa);
    return { kind: 'tokens', tokens, mfaEnrollmentRequired };
  };

  return {
    async login(email, password, client) {
      const now = new Date();
      let attemptUserId: string | null = null;
      let result: SignInResult;
      try {
        result = await deps.orm.em.fork().transactional(async (em: EntityManager) => {
          const user = await findUserByEmail(em, email);
          attemptUserId = user?.id ?? null;
          const credential = user ? await em.findOne(Credential, user.id) : null;
          const wait = lockedForMs(user ? lockoutOf(credential) : await unknownEmails.state(email), now);
          if (wait > 0) throw problem.accountLocked(wait);
          for (const provider of providers) {
            const r = await provider.authenticate(em, { email, password, user, credential, now });
            if (r.kind === 'ok') {
              const signedIn = await afterFirstFactor(em, r.userId, r.amr, client, now);
              await recordSignIn(em, r.userId, r.amr, signedIn, client);
              return signedIn;
            }
          }
          throw new CredentialsRejected('no provider accepted the sign-in');
        });
      } catch (err) {
        if (err instanceof CredentialsRejected) {
          await recordFailure(attemptUserId, email, now, client);
          throw problem.signInFailed();
        }
        // refused by a rule (locked, disabled in the directory, auth policy …); platform failures (5xx) are not attempts' outcomes
        if (err instanceof ProblemError && err.status < 500) await recordRefusal(attemptUserId, email, err.kind, client);
        throw err;
      }
      await deps.flushOutbox(); // memberships a directory sign-in created or changed
      return result;
    },

    async verifyMfa(mfaToken, code, client) {
      const now = new Date();
      type Outcome = { kind: 'done'; result: SignInResult } | { kind: 'invalid' } | { kind: 'wrong' } | { kind: 'locked'; waitMs: number };
      const outcome: Outcome = await deps.orm.em.fork().transactional(async (em: EntityManager): Promise<Outcome> => {
        const challenge = await em.findOne(UserToken, { tokenHash: digest(mfaToken), purpose: 'mfa_challenge' }, { lockMode: LockMode.PESSIMISTIC_WRITE });
        const failed = (reason: string) => auditSignIn(em, challenge?.userId ?? null, client, 'auth.login_failed', { reason });
        if (!challenge || challenge.usedAt || challenge.expiresAt <= now) {
          await failed('invalid-grant');
          return { kind: 'invalid' };
        }
        const user = await em.findOne(User, challenge.userId);
        const cred = await credentialFor(em, challenge.userId);
        if (!user || user.status !== 'active' || !cred.totpSecret) {
          challenge.usedAt = now;
          await failed('invalid-grant');
          return { kind: 'invalid' };
        }
        const wait = lockedForMs(lockoutOf(cred), now);
        if (wait > 0) {
          await failed('account-locked');
          return { kind: 'locked', waitMs: wait };
        }
        const firstAmr = Array.isArray(challenge.data.amr) ? (challenge.data.amr as string[]) : ['pwd'];
        let amr: string[] | null = null;
        const step = acceptTotp(await unseal(deps.kek, cred.totpSecret), code.trim(), cred.totpLastStep ?? null, now.getTime());
        if (step !== null) {
          cred.totpLastStep = step;
          amr = [...firstAmr, 'otp', 'mfa'];
        } else {
          const recovery = await em.findOne(RecoveryCode, { userId: user.id, codeHash: digest(normaliseRecoveryCode(code)), usedAt: null });
          if (recovery) {
            recovery.usedAt = now;
            amr = [...firstAmr, 'mfa'];
          }
        }
        if (!amr) {
          challenge.attempts += 1;
          if (challenge.attempts >= MFA_MAX_ATTEMPTS) challenge.usedAt = now;
          const next = afterFailure(lockoutOf(cred), now);
          setLockout(cred, next);
          if (justLocked(next)) {
            await auditSignIn(em, user.id, client, 'auth.locked_out', { reason: 'failed-codes', locked_until: next.lockedUntil, lockout_level: next.lockoutLevel });
          } else await failed('wrong-code');
          return { kind: 'wrong' };
        }
        challenge.usedAt = now;
        setLockout(cred, CLEAR);
        const authTime = typeof challenge.data.auth_time === 'string' ? new Date(challenge.data.auth_time) : now;
        const tokens = await openSession(deps, em, { userId: user.id, amr, authTime }, client);
        await auditSignIn(em, user.id, client, 'auth.login_succeeded', { amr, session_id: sessionIdOf(tokens) });
        return { kind: 'done', result: { kind: 'tokens', tokens, mfaEnrollmentRequired: false } };
      });
      switch (outcome.kind) {
        case 'done':
          return outcome.result;
        case 'invalid':
          throw problem.invalidGrant(401, 'The MFA challenge is invalid, expired or used up; sign in again.');
        case 'locked':
          throw problem.accountLocked(outcome.waitMs);
        case 'wrong':
          throw new ProblemError(401, 'unauthenticated', 'The code is incorrect.');
      }
    },
  };
}
