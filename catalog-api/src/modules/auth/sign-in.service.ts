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
import { ProblemError, problem } from '../../errors.ts';
import { User } from '../users/user.entity.ts';
import { Credential, RecoveryCode } from './credential.entity.ts';
import type { AuthDeps } from './deps.ts';
import { CLEAR, afterFailure, lockedForMs, type LockoutState } from './lockout.ts';
import { ldapProvider } from './providers/ldap.ts';
import { internalProvider } from './providers/internal.ts';
import { CredentialsRejected, type SignInProvider } from './providers/provider.ts';
import { digest, newOpaqueToken, unseal } from './secrets.ts';
import { openSession, publishersOf, type ClientInfo, type TokenResponse } from './sessions.service.ts';
import { acceptTotp, normaliseRecoveryCode } from './totp.ts';
import { createUnknownEmailLockout } from './unknown-lockout.ts';
import { UserToken } from './user-token.entity.ts';

/** Codes one MFA challenge accepts before it is used up. */
export const MFA_MAX_ATTEMPTS = 5;

/** What `login` and `verifyMfa` answer. */
export type SignInResult =
  | { kind: 'tokens'; tokens: TokenResponse; mfaEnrollmentRequired: boolean }
  | { kind: 'mfa'; mfaToken: string; expiresIn: number };

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

  /** Count a failed first or second factor (in its own transaction: the attempt's was rolled back). */
  const recordFailure = async (userId: string | null, email: string, now: Date) => {
    if (!userId) return void (await unknownEmails.fail(email, now));
    await deps.orm.em.fork().transactional(async (em: EntityManager) => {
      const c = await credentialFor(em, userId);
      const was = lockoutOf(c);
      const next = afterFailure(was, now);
      setLockout(c, next);
      if (next.lockedUntil && next.lockedUntil !== was.lockedUntil) {
        deps.log.warn({ userId, lockedUntil: next.lockedUntil.toISOString(), level: next.lockoutLevel }, 'account locked after failed sign-ins');
      }
    });
  };

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
            if (r.kind === 'ok') return afterFirstFactor(em, r.userId, r.amr, client, now);
          }
          throw new CredentialsRejected('no provider accepted the sign-in');
        });
      } catch (err) {
        if (!(err instanceof CredentialsRejected)) throw err;
        await recordFailure(attemptUserId, email, now);
        throw problem.signInFailed();
      }
      await deps.flushOutbox(); // memberships a directory sign-in created or changed
      return result;
    },

    async verifyMfa(mfaToken, code, client) {
      const now = new Date();
      type Outcome = { kind: 'done'; result: SignInResult } | { kind: 'invalid' } | { kind: 'wrong' } | { kind: 'locked'; waitMs: number };
      const outcome: Outcome = await deps.orm.em.fork().transactional(async (em: EntityManager): Promise<Outcome> => {
        const challenge = await em.findOne(UserToken, { tokenHash: digest(mfaToken), purpose: 'mfa_challenge' }, { lockMode: LockMode.PESSIMISTIC_WRITE });
        if (!challenge || challenge.usedAt || challenge.expiresAt <= now) return { kind: 'invalid' };
        const user = await em.findOne(User, challenge.userId);
        const cred = await credentialFor(em, challenge.userId);
        if (!user || user.status !== 'active' || !cred.totpSecret) {
          challenge.usedAt = now;
          return { kind: 'invalid' };
        }
        const wait = lockedForMs(lockoutOf(cred), now);
        if (wait > 0) return { kind: 'locked', waitMs: wait };
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
          setLockout(cred, afterFailure(lockoutOf(cred), now));
          return { kind: 'wrong' };
        }
        challenge.usedAt = now;
        setLockout(cred, CLEAR);
        const authTime = typeof challenge.data.auth_time === 'string' ? new Date(challenge.data.auth_time) : now;
        const tokens = await openSession(deps, em, { userId: user.id, amr, authTime }, client);
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
