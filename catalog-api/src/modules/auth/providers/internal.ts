/**
 * Internal accounts: the argon2id password in `user_credentials`. Responsible for internal users and
 * for emails without an account (which it rejects after the same amount of work, passwords.ts).
 * A disabled or deleted user is rejected like a wrong password; an expired password (after a correct
 * one) is answered 403 `password-expired`.
 */
import { ProblemError } from '../../../errors.ts';
import { hashPassword, needsRehash, verifyPassword } from '../passwords.ts';
import { CredentialsRejected, type SignInProvider } from './provider.ts';

/** The internal-password provider. */
export function internalProvider(): SignInProvider {
  return {
    name: 'internal',
    async authenticate(_em, a) {
      if (a.user && a.user.authSource !== 'internal') return { kind: 'skip' };
      const hash = a.user ? a.credential?.passwordHash : null;
      const ok = await verifyPassword(hash, a.password);
      if (!ok || !a.user || a.user.status !== 'active') throw new CredentialsRejected(a.user ? 'wrong password or disabled' : 'unknown email');
      const cred = a.credential!;
      if (cred.passwordExpiresAt && cred.passwordExpiresAt <= a.now) {
        throw new ProblemError(403, 'password-expired', 'Your password has expired: set a new one with POST /api/v1/auth/password/forgot.');
      }
      if (needsRehash(cred.passwordHash!)) cred.passwordHash = await hashPassword(a.password);
      return { kind: 'ok', userId: a.user.id, amr: ['pwd'] };
    },
  };
}
