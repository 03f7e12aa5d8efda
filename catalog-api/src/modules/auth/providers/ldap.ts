/**
 * Active Directory accounts (docs/CONTRACTS.md, "Identity"): responsible for users whose
 * `auth_source` is `ad`, and for emails without an account whose domain a publisher's directory
 * serves (just-in-time provisioning). An internal user never reaches a directory.
 *
 * Per matching directory (enabled, serving the email's domain, its publisher's auth policy `ad` or
 * `both`): search the login with the service account, bind as the entry found, read its groups
 * with nested ones, and map them to the publisher's role. The first sign-in creates the user
 * (`auth_source` ad, `external_id` = objectGUID) and its memberships; every sign-in brings the
 * memberships of those publishers in line with the directory (role changed, or removed when no
 * mapped group is left). The outbox triggers turn membership changes into OpenFGA tuples.
 *
 * Answers: wrong password (52e), no such entry, empty password (refused before any bind), a
 * locally disabled user → the generic 401; AD's 533/532/773/701/775 → their own 403 problem types;
 * no mapped group → 403 `no-directory-role` (nothing is created); directory down, slow or
 * misconfigured → 503 `directory-unavailable` within the configured timeouts.
 */
import type { EntityManager } from '@mikro-orm/postgresql';
import { ProblemError, problem } from '../../../errors.ts';
import type { Log } from '../deps.ts';
import { DirectoryConfig } from '../../directory/directory-config.entity.ts';
import { DirectoryError, roleForGroups, type DirectoryGateway, type DirectorySignIn } from '../../directory/gateway.ts';
import { Membership } from '../../users/membership.entity.ts';
import { Publisher } from '../../publishers/publisher.entity.ts';
import { User } from '../../users/user.entity.ts';
import { verifyPassword } from '../passwords.ts';
import { CredentialsRejected, type SignInProvider } from './provider.ts';

/** The enabled directories serving `email`'s domain whose publisher allows directory sign-in. */
export async function directoriesFor(em: EntityManager, email: string): Promise<DirectoryConfig[]> {
  const domain = email.slice(email.lastIndexOf('@') + 1).toLowerCase();
  if (!domain) return [];
  const configs = await em.find(DirectoryConfig, { enabled: true, emailDomains: { $contains: [domain] } }, { orderBy: { publisherId: 'asc' } });
  if (configs.length === 0) return [];
  const publishers = await em.find(Publisher, { id: { $in: configs.map((c) => c.publisherId) } });
  const allowing = new Set(publishers.filter((p) => p.signIn().auth_policy !== 'internal').map((p) => p.id));
  return configs.filter((c) => allowing.has(c.publisherId));
}

/** The 403 answers of AD's account states. */
function accountProblem(e: DirectoryError): ProblemError | undefined {
  switch (e.reason) {
    case 'account-disabled':
      return new ProblemError(403, 'account-disabled', 'Your directory account is disabled.');
    case 'account-expired':
      return new ProblemError(403, 'account-expired', 'Your directory account has expired.');
    case 'password-expired':
      return new ProblemError(403, 'password-expired', 'Your directory password has expired: change it with your organisation, then sign in again.');
    case 'password-must-change':
      return new ProblemError(403, 'password-must-change', 'Your directory password must be changed before you can sign in.');
    case 'account-locked':
      return new ProblemError(403, 'directory-account-locked', 'Your directory account is locked.');
    case 'logon-restricted':
      return new ProblemError(403, 'account-disabled', 'Your directory account may not sign in now or from here.');
    default:
      return undefined;
  }
}

/** The Active Directory provider. */
export function ldapProvider(deps: { directory: DirectoryGateway; log: Log }): SignInProvider {
  return {
    name: 'ldap',
    async authenticate(em, a) {
      if (a.user && a.user.authSource !== 'ad') return { kind: 'skip' };
      const configs = await directoriesFor(em, a.email);
      if (!a.user && configs.length === 0) return { kind: 'skip' }; // not a directory domain: internal rejects
      if (a.user && (a.user.status !== 'active' || configs.length === 0)) {
        await verifyPassword(null, a.password); // the same work as elsewhere, and no directory contact
        throw new CredentialsRejected(a.user.status !== 'active' ? 'directory user disabled here' : 'no directory serves this user');
      }
      if (a.password.length === 0) throw new CredentialsRejected('empty password');

      const found: { config: DirectoryConfig; result: DirectorySignIn }[] = [];
      for (const config of configs) {
        let result: DirectorySignIn | null;
        try {
          result = await deps.directory.signIn(config, a.email, a.password);
        } catch (err) {
          if (!(err instanceof DirectoryError)) throw err;
          if (err.reason === 'invalid-credentials') throw new CredentialsRejected('directory refused the password');
          const p = accountProblem(err);
          if (p) throw p;
          const log = err.reason === 'misconfigured' ? deps.log.error.bind(deps.log) : deps.log.warn.bind(deps.log);
          log({ publisherId: config.publisherId, reason: err.reason, error: err.message }, 'directory sign-in failed');
          throw problem.directoryUnavailable();
        }
        if (result) found.push({ config, result });
      }
      if (found.length === 0) throw new CredentialsRejected('no directory entry');
      const guid = found[0]!.result.user.guid;
      if (found.some((f) => f.result.user.guid !== guid)) {
        deps.log.error({ email: a.email }, 'directory sign-in: the login names different accounts in different directories');
        throw problem.directoryUnavailable('The directories disagree about this account; ask an administrator.');
      }
      const roles = found.map((f) => ({ publisherId: f.config.publisherId, role: roleForGroups(f.config.groupRoleMap, f.result.groups) }));
      if (!roles.some((r) => r.role)) {
        throw new ProblemError(403, 'no-directory-role', 'Your directory account is in no group that grants a role here; ask your administrator.');
      }

      const entry = found[0]!.result.user;
      const user = a.user ?? em.create(User, {
        email: a.email.toLowerCase(),
        displayName: entry.displayName ?? '',
        authSource: 'ad',
        externalId: guid,
        emailVerifiedAt: a.now,
      });
      if (a.user) {
        if (user.externalId !== guid) {
          deps.log.warn({ userId: user.id }, 'directory sign-in: the account was re-created in the directory; following the new objectGUID');
          user.externalId = guid;
        }
        if (entry.displayName && user.displayName !== entry.displayName) user.displayName = entry.displayName;
      }
      await em.flush();
      for (const { publisherId, role } of roles) {
        const current = await em.findOne(Membership, { publisherId, userId: user.id });
        if (role && !current) em.create(Membership, { publisherId, userId: user.id, role });
        else if (role && current && current.role !== role) current.role = role;
        else if (!role && current) em.remove(current);
      }
      return { kind: 'ok', userId: user.id, amr: ['ldap'] };
    },
  };
}
