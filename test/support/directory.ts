/**
 * The demo directory in tests (the Samba AD DC that scripts/services.sh runs): administrator
 * operations through ldapts — change group memberships, disable or lock accounts, create throw-away
 * users — and a reset to the demo state (migrations/seed/directory.ts).
 */
import { Attribute, Change, type Client } from 'ldapts';
import { DEMO_DIRECTORY, DEMO_PASSWORD, demoGroupDn } from '../../migrations/seed/demo.ts';
import { UAC as UAC_FLAGS, addMember, asDirectoryAdmin, demoUserDn, directoryAdminFromEnv, removeMember, seedDirectory, unicodePwd } from '../../migrations/seed/directory.ts';

export { addMember, demoUserDn, removeMember, demoGroupDn };

/** Run `fn` as the directory administrator (DIRECTORY_* from scripts/test.sh). */
export function asAdmin<T>(fn: (c: Client) => Promise<T>): Promise<T> {
  return asDirectoryAdmin(directoryAdminFromEnv(), fn);
}

/** Put the demo directory back into its seeded state. */
export async function resetDirectory(): Promise<void> {
  const bind = process.env.DIRECTORY_BIND_PASSWORD;
  if (!bind) throw new Error('DIRECTORY_BIND_PASSWORD is not set: run the tests with `npm test`');
  await seedDirectory(directoryAdminFromEnv(), bind);
}

/** Replace one attribute of `dn`. */
export async function setAttribute(dn: string, type: string, values: string[] | Buffer[]): Promise<void> {
  await asAdmin((c) => c.modify(dn, new Change({ operation: 'replace', modification: new Attribute({ type, values }) })));
}

/** userAccountControl of an enabled / disabled demo account, as attribute values (the seed's flags). */
export const UAC = { enabled: String(UAC_FLAGS.enabled), disabled: String(UAC_FLAGS.disabled) } as const;

/**
 * Create a throw-away user in the demo OU (sAMAccountName `sam`, UPN/mail `upn`, the demo password,
 * member of `groups`); removed by the returned function.
 */
export async function createTestUser(sam: string, upn: string, groups: string[]): Promise<{ dn: string; remove: () => Promise<void> }> {
  const dn = `CN=${sam},${DEMO_DIRECTORY.ou}`;
  await asAdmin(async (c) => {
    await c.del(dn).catch(() => undefined);
    await c.add(dn, [
      new Attribute({ type: 'objectClass', values: ['top', 'person', 'organizationalPerson', 'user'] }),
      new Attribute({ type: 'sAMAccountName', values: [sam] }),
      new Attribute({ type: 'userPrincipalName', values: [upn] }),
      new Attribute({ type: 'mail', values: [upn] }),
      new Attribute({ type: 'displayName', values: [sam] }),
      new Attribute({ type: 'unicodePwd', values: [unicodePwd(DEMO_PASSWORD)] }),
      new Attribute({ type: 'userAccountControl', values: [UAC.enabled] }),
    ]);
    for (const g of groups) await addMember(c, demoGroupDn(g), dn);
  });
  return { dn, remove: () => asAdmin((c) => c.del(dn)).catch(() => undefined) };
}
