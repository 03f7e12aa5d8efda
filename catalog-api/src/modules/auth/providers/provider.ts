/**
 * The shape of a sign-in provider (the Ory Oathkeeper authenticator pattern the sidecar uses too):
 * given a sign-in attempt, a provider either is not responsible (`skip`), verifies the first
 * factor (`ok`), or rejects it. Rejections the caller must not tell apart (unknown user, wrong
 * password, disabled account) throw {@link CredentialsRejected}, which counts towards the lockout
 * and becomes the one generic 401; every other outcome is a ProblemError of its own.
 */
import type { EntityManager } from '@mikro-orm/postgresql';
import type { User } from '../../users/user.entity.ts';
import type { Credential } from '../credential.entity.ts';

/** One sign-in attempt. `user`/`credential` are what the email resolved to (null: no account). */
export type SignInAttempt = {
  email: string;
  password: string;
  user: User | null;
  credential: Credential | null;
  now: Date;
};

/** A provider's verdict. `amr`: RFC 8176 method references of the first factor. */
export type FirstFactor = { kind: 'skip' } | { kind: 'ok'; userId: string; amr: string[] };

/** A way to verify the first factor (internal password, Active Directory). */
export type SignInProvider = {
  name: string;
  /**
   * @param em the sign-in transaction (providers may provision users and memberships in it)
   * @throws CredentialsRejected, or ProblemError for outcomes with their own answer
   */
  authenticate(em: EntityManager, attempt: SignInAttempt): Promise<FirstFactor>;
};

/** Wrong credentials, unknown or disabled account: answered with the generic 401. */
export class CredentialsRejected extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'CredentialsRejected';
  }
}
