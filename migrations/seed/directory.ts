/**
 * Demo directory seed: the Active Directory side of the demo data (migrations/seed/demo.ts,
 * `DEMO_DIRECTORY`) written into a domain controller with ldapts as its administrator — the OU,
 * the groups (DMP-Catalog-Team nested in DMP-Editors), the users with the demo password, the
 * disabled one, and the service account the sign-in service binds as.
 *
 * CLI: `node migrations/seed/directory.ts` with DIRECTORY_URL [ldaps://127.0.0.1:636],
 * DIRECTORY_CA_FILE [.data/samba/tls/ca.pem], DIRECTORY_ADMIN_DN
 * [CN=Administrator,CN=Users,<base DN>], DIRECTORY_ADMIN_PASSWORD and DIRECTORY_BIND_PASSWORD
 * (scripts/services.sh exports them). Idempotent: existing entries are brought back to the demo
 * state (password, enabled/disabled, group membership), so tests that change the directory can
 * call {@link seedDirectory} to reset it.
 */
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { AlreadyExistsError, Attribute, Change, Client, NoSuchAttributeError, TypeOrValueExistsError } from 'ldapts';
import { DEMO_DIRECTORY, DEMO_PASSWORD, demoGroupDn } from './demo.ts';
import { demoDirectorySettings } from './run.ts';

/** userAccountControl values ([MS-ADTS] 2.2.16): NORMAL_ACCOUNT, + ACCOUNTDISABLE, + DONT_EXPIRE_PASSWORD. */
export const UAC = { enabled: 0x200 | 0x10000, disabled: 0x200 | 0x2 | 0x10000 };

/** AD's unicodePwd: the password in double quotes, UTF-16LE ([MS-ADTS] 3.1.1.3.1.5). */
export function unicodePwd(password: string): Buffer {
  return Buffer.from(`"${password}"`, 'utf16le');
}

/** Connection settings of the administrator. */
export type DirectoryAdmin = { url: string; caFile: string; adminDn: string; adminPassword: string };

/** The administrator connection from the environment. @throws when DIRECTORY_ADMIN_PASSWORD is unset */
export function directoryAdminFromEnv(env: NodeJS.ProcessEnv = process.env): DirectoryAdmin {
  const { url, caFile } = demoDirectorySettings(env);
  const adminPassword = env.DIRECTORY_ADMIN_PASSWORD;
  if (!adminPassword) throw new Error('DIRECTORY_ADMIN_PASSWORD is not set (scripts/services.sh exports it)');
  return { url, caFile, adminDn: env.DIRECTORY_ADMIN_DN || `CN=Administrator,CN=Users,${DEMO_DIRECTORY.baseDn}`, adminPassword };
}

/** Run `fn` bound as the administrator (LDAPS, the demo CA, 5 s timeouts). */
export async function asDirectoryAdmin<T>(admin: DirectoryAdmin, fn: (c: Client) => Promise<T>): Promise<T> {
  const client = new Client({ url: admin.url, timeout: 5000, connectTimeout: 5000, tlsOptions: { ca: readFileSync(admin.caFile), minVersion: 'TLSv1.2' } });
  try {
    await client.bind(admin.adminDn, admin.adminPassword);
    return await fn(client);
  } finally {
    await client.unbind().catch(() => undefined);
  }
}

async function ensureEntry(c: Client, dn: string, attributes: Record<string, string | string[] | Buffer>): Promise<boolean> {
  const list = Object.entries(attributes).map(
    ([type, v]) => new Attribute({ type, values: Buffer.isBuffer(v) ? [v] : Array.isArray(v) ? v : [v] }),
  );
  try {
    await c.add(dn, list);
    return true;
  } catch (err) {
    if (err instanceof AlreadyExistsError) return false;
    throw err;
  }
}

const replace = (type: string, values: string[] | Buffer[]) => new Change({ operation: 'replace', modification: new Attribute({ type, values }) });

/** Add `memberDn` to `groupDn` (no-op when already there). */
export async function addMember(c: Client, groupDn: string, memberDn: string): Promise<void> {
  try {
    await c.modify(groupDn, new Change({ operation: 'add', modification: new Attribute({ type: 'member', values: [memberDn] }) }));
  } catch (err) {
    if (!(err instanceof TypeOrValueExistsError || err instanceof AlreadyExistsError)) throw err;
  }
}

/** Remove `memberDn` from `groupDn` (no-op when not there). */
export async function removeMember(c: Client, groupDn: string, memberDn: string): Promise<void> {
  try {
    await c.modify(groupDn, new Change({ operation: 'delete', modification: new Attribute({ type: 'member', values: [memberDn] }) }));
  } catch (err) {
    if (!(err instanceof NoSuchAttributeError) && !/WILL_NOT_PERFORM|Unwilling|no such attribute/i.test((err as Error).message)) throw err;
  }
}

/** The DN of a demo user. */
export function demoUserDn(sam: string): string {
  return `CN=${sam},${DEMO_DIRECTORY.ou}`;
}

/**
 * Write the demo directory (idempotent; resets passwords, account states and memberships).
 * @param bindPassword the service account's password (DIRECTORY_BIND_PASSWORD)
 * @returns how many entries it created
 */
export async function seedDirectory(admin: DirectoryAdmin, bindPassword: string): Promise<number> {
  return asDirectoryAdmin(admin, async (c) => {
    let created = 0;
    if (await ensureEntry(c, DEMO_DIRECTORY.ou, { objectClass: ['top', 'organizationalUnit'], ou: 'Music Publishing Demo' })) created++;
    for (const g of DEMO_DIRECTORY.groups) {
      if (await ensureEntry(c, demoGroupDn(g.cn), { objectClass: ['top', 'group'], sAMAccountName: g.cn })) created++;
    }
    const accounts = [
      ...DEMO_DIRECTORY.users,
      { sam: DEMO_DIRECTORY.serviceAccount.sam, upn: `${DEMO_DIRECTORY.serviceAccount.sam}@${DEMO_DIRECTORY.realm.toLowerCase()}`, displayName: 'Music Publishing sign-in service', groups: [], disabled: false },
    ];
    for (const u of accounts) {
      const dn = u.sam === DEMO_DIRECTORY.serviceAccount.sam ? `CN=${DEMO_DIRECTORY.serviceAccount.cn},${DEMO_DIRECTORY.ou}` : demoUserDn(u.sam);
      const password = u.sam === DEMO_DIRECTORY.serviceAccount.sam ? bindPassword : DEMO_PASSWORD;
      const isNew = await ensureEntry(c, dn, {
        objectClass: ['top', 'person', 'organizationalPerson', 'user'],
        sAMAccountName: u.sam,
        userPrincipalName: u.upn,
        mail: u.upn,
        displayName: u.displayName,
        unicodePwd: unicodePwd(password),
        userAccountControl: String(u.disabled ? UAC.disabled : UAC.enabled),
      });
      if (isNew) created++;
      else {
        await c.modify(dn, [
          replace('unicodePwd', [unicodePwd(password)]),
          replace('userAccountControl', [String(u.disabled ? UAC.disabled : UAC.enabled)]),
          replace('lockoutTime', ['0']),
          replace('accountExpires', ['0']),
          replace('pwdLastSet', ['-1']),
        ]);
      }
    }
    // memberships: exactly the demo ones
    const wanted = new Map<string, Set<string>>();
    for (const g of DEMO_DIRECTORY.groups) wanted.set(demoGroupDn(g.cn), new Set());
    for (const g of DEMO_DIRECTORY.groups) for (const parent of g.memberOf) wanted.get(demoGroupDn(parent))!.add(demoGroupDn(g.cn));
    for (const u of DEMO_DIRECTORY.users) for (const g of u.groups) wanted.get(demoGroupDn(g))!.add(demoUserDn(u.sam));
    for (const [group, members] of wanted) await c.modify(group, replace('member', [...members]));
    return created;
  });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const bind = process.env.DIRECTORY_BIND_PASSWORD;
  if (!bind) {
    process.stderr.write('DIRECTORY_BIND_PASSWORD is not set (scripts/services.sh exports it)\n');
    process.exit(2);
  }
  seedDirectory(directoryAdminFromEnv(), bind).then(
    (n) => process.stdout.write(`demo directory ready (${n} entries created)\n`),
    (err: unknown) => {
      process.stderr.write(`directory seed failed: ${(err as Error).message}\n`);
      process.exit(1);
    },
  );
}
