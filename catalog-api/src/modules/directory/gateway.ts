/**
 * The gateway to publishers' Active Directory servers, with ldapts.
 *
 * Per operation a fresh connection: `ldaps://` (or `ldap://` + StartTLS) with the configured CA and
 * server name, TLS ≥ 1.2, `connectTimeout` and `timeout` from the configuration (ldapts defaults to
 * waiting forever). The service account binds with the secret its reference points at
 * (`env:NAME` or `file:/path`, read at use). Filter values are escaped per RFC 4515 with ldapts'
 * `escapeFilter`; the user's own DN comes from the directory, never from input.
 *
 * Errors become {@link DirectoryError}s with a stable `reason`: AD's bind sub-codes (the `data xxx`
 * of an LDAP 49 result, [MS-ADTS] / "Active Directory LDAP error codes": 52e bad credentials, 525
 * no such user, 530 logon hours, 531 workstation, 532 password expired, 533 disabled, 701 account
 * expired, 773 must change password, 775 locked), `unavailable` (connect/TLS/timeout/server busy)
 * and `misconfigured` (secret missing, bad CA file, service bind refused).
 */
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import { AndFilter, Client, EqualityFilter, InvalidCredentialsError, escapeFilter, type Entry } from 'ldapts';
import type { DirectoryConfig, GroupRoleMapping, LoginAttribute } from './directory-config.entity.ts';
import { highestStaffRole, type StaffRole } from '../users/membership.entity.ts';
import { guidFromBytes, guidToBytes } from './guid.ts';

/** Why a directory operation failed. */
export type DirectoryFailure =
  | 'invalid-credentials'
  | 'password-expired'
  | 'account-disabled'
  | 'account-expired'
  | 'password-must-change'
  | 'account-locked'
  | 'logon-restricted'
  | 'unavailable'
  | 'misconfigured';

/** A directory operation failed for `reason`. */
export class DirectoryError extends Error {
  readonly reason: DirectoryFailure;
  constructor(reason: DirectoryFailure, message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'DirectoryError';
    this.reason = reason;
  }
}

/** AD's bind sub-codes (hex, lower case) → reason. */
const AD_BIND_CODES: Record<string, DirectoryFailure> = {
  '52e': 'invalid-credentials',
  '525': 'invalid-credentials',
  '530': 'logon-restricted',
  '531': 'logon-restricted',
  '532': 'password-expired',
  '533': 'account-disabled',
  '701': 'account-expired',
  '773': 'password-must-change',
  '775': 'account-locked',
};

/** The AD sub-code (`data 52e`) of a bind error message, lower case, or undefined. */
export function adBindCode(message: string): string | undefined {
  return /\bdata ([0-9a-f]{3,4})\b/i.exec(message)?.[1]?.toLowerCase();
}

/** A user entry as the sign-in service needs it. */
export type DirectoryUser = {
  dn: string;
  /** objectGUID in RFC 4122 text form (lower case) */
  guid: string;
  displayName: string | null;
  /** userAccountControl flags (0x2 = disabled) */
  userAccountControl: number;
};

/** userAccountControl ACCOUNTDISABLE ([MS-ADTS] 2.2.16). */
export const UAC_ACCOUNTDISABLE = 0x2;

/** Where a service-bind secret is: `env:NAME` or `file:/absolute/path`. */
export function resolveSecret(ref: string, env: NodeJS.ProcessEnv = process.env): string {
  const [kind, rest] = [ref.slice(0, ref.indexOf(':')), ref.slice(ref.indexOf(':') + 1)];
  let value: string | undefined;
  if (kind === 'env') value = env[rest];
  else if (kind === 'file') {
    try {
      value = readFileSync(rest, 'utf8').replace(/\r?\n$/, '');
    } catch (err) {
      throw new DirectoryError('misconfigured', `the bind secret file ${rest} cannot be read`, err);
    }
  }
  if (!value) throw new DirectoryError('misconfigured', `the bind secret ${ref} is not set`);
  return value;
}

type Connection = Pick<DirectoryConfig, 'url' | 'startTls' | 'caFile' | 'tlsServerName' | 'connectTimeoutMs' | 'operationTimeoutMs'>;

function tlsOptions(c: Connection): ConnectionOptions {
  const opts: ConnectionOptions = { minVersion: 'TLSv1.2' };
  if (c.caFile) {
    try {
      opts.ca = readFileSync(c.caFile);
    } catch (err) {
      throw new DirectoryError('misconfigured', `the directory CA file ${c.caFile} cannot be read`, err);
    }
  }
  if (c.tlsServerName) opts.servername = c.tlsServerName;
  return opts;
}

function toDirectoryError(err: unknown, during: string): DirectoryError {
  if (err instanceof DirectoryError) return err;
  if (err instanceof InvalidCredentialsError) {
    const code = adBindCode(err.message);
    return new DirectoryError(AD_BIND_CODES[code ?? '52e'] ?? 'invalid-credentials', `${during}: invalid credentials (AD code ${code ?? 'none'})`, err);
  }
  return new DirectoryError('unavailable', `${during}: ${(err as Error).message ?? String(err)}`, err);
}

/** Open a connection (TLS from the start or by StartTLS); the caller unbinds. */
async function connect(c: Connection): Promise<Client> {
  const tls = tlsOptions(c);
  const client = new Client({ url: c.url, timeout: c.operationTimeoutMs, connectTimeout: c.connectTimeoutMs, tlsOptions: tls, strictDN: true });
  if (c.url.startsWith('ldap://')) {
    if (!c.startTls) throw new DirectoryError('misconfigured', 'a plain ldap:// directory needs StartTLS');
    try {
      await client.startTLS(tls);
    } catch (err) {
      await client.unbind().catch(() => undefined);
      throw toDirectoryError(err, 'StartTLS');
    }
  }
  return client;
}

/** Run `fn` with a connection bound as the service account; always unbinds. */
async function asService<T>(c: DirectoryConfig, fn: (client: Client) => Promise<T>): Promise<T> {
  const client = await connect(c);
  try {
    try {
      await client.bind(c.bindDn, resolveSecret(c.bindSecretRef));
    } catch (err) {
      const e = toDirectoryError(err, 'service bind');
      throw e.reason === 'unavailable' ? e : new DirectoryError('misconfigured', `the service account cannot bind (${e.reason})`, err);
    }
    return await fn(client);
  } catch (err) {
    throw toDirectoryError(err, 'directory');
  } finally {
    await client.unbind().catch(() => undefined);
  }
}

const first = (v: Entry[string] | undefined): string | null => {
  const x = Array.isArray(v) ? v[0] : v;
  return x === undefined ? null : Buffer.isBuffer(x) ? x.toString('utf8') : String(x);
};

function toUser(e: Entry): DirectoryUser {
  const raw = Array.isArray(e.objectGUID) ? e.objectGUID[0] : e.objectGUID;
  if (!Buffer.isBuffer(raw) || raw.length !== 16) throw new DirectoryError('misconfigured', `entry ${e.dn} has no objectGUID`);
  return {
    dn: e.dn,
    guid: guidFromBytes(raw),
    displayName: first(e.displayName),
    userAccountControl: Number(first(e.userAccountControl) ?? 0),
  };
}

const USER_ATTRIBUTES = ['objectGUID', 'displayName', 'userAccountControl'];

/** The value searched for `login` under `attribute`: the whole email, or the part before its last `@`. */
export function loginValue(attribute: LoginAttribute, login: string): string {
  return attribute === 'userPrincipalName' ? login : login.slice(0, login.lastIndexOf('@'));
}

/** `(&(objectCategory=person)(objectClass=user)(<attribute>=<escaped login>))`. */
export function userFilter(attribute: LoginAttribute, login: string): string {
  const value = loginValue(attribute, login);
  return attribute === 'userPrincipalName'
    ? escapeFilter`(&(objectCategory=person)(objectClass=user)(userPrincipalName=${value}))`
    : escapeFilter`(&(objectCategory=person)(objectClass=user)(sAMAccountName=${value}))`;
}

/** Group DNs compared the way AD compares them (case-insensitive, no spaces around separators). */
export function normaliseDn(dn: string): string {
  return dn.replace(/\s*([,=+])\s*/g, '$1').toLowerCase();
}

/** The highest role `groups` (DNs) earn under `mapping`, or undefined when none is mapped. */
export function roleForGroups(mapping: readonly GroupRoleMapping[], groups: readonly string[]): StaffRole | undefined {
  const member = new Set(groups.map(normaliseDn));
  return highestStaffRole(mapping.filter((m) => member.has(normaliseDn(m.group_dn))).map((m) => m.role));
}

/** What a successful directory sign-in yields. */
export type DirectorySignIn = { user: DirectoryUser; groups: string[] };

/** The directory operations the sign-in service and the sync use. */
export type DirectoryGateway = {
  /**
   * Find `login` (at most 2 entries are asked for; more than one match is refused), bind as it
   * with `password`, and read its groups, nested ones included (LDAP_MATCHING_RULE_IN_CHAIN,
   * 1.2.840.113556.1.4.1941).
   * @returns null when the directory has no such user
   * @throws DirectoryError (the bind's AD reason, `unavailable`, `misconfigured`)
   */
  signIn(config: DirectoryConfig, login: string, password: string): Promise<DirectorySignIn | null>;
  /**
   * Look users up by objectGUID with the service account and read their groups.
   * @returns per GUID the entry and groups, or null when the directory no longer has it
   * @throws DirectoryError (`unavailable`, `misconfigured`)
   */
  lookup(config: DirectoryConfig, guids: readonly string[]): Promise<Map<string, DirectorySignIn | null>>;
  /** Connect and bind as the service account (configuration check). @throws DirectoryError */
  check(config: DirectoryConfig): Promise<void>;
};

async function groupsOf(client: Client, baseDn: string, dn: string): Promise<string[]> {
  const { searchEntries } = await client.search(baseDn, {
    scope: 'sub',
    filter: escapeFilter`(&(objectClass=group)(member:1.2.840.113556.1.4.1941:=${dn}))`,
    attributes: ['1.1'],
    paged: { pageSize: 500 },
  });
  return searchEntries.map((e) => e.dn);
}

/** The ldapts-backed gateway. */
export function createDirectoryGateway(): DirectoryGateway {
  return {
    async signIn(config, login, password) {
      // AD treats an empty password as an unauthenticated bind, which "succeeds" (RFC 4513 §5.1.2).
      if (password.length === 0) throw new DirectoryError('invalid-credentials', 'empty password refused before binding');
      const found = await asService(config, async (client) => {
        const { searchEntries } = await client.search(config.baseDn, {
          scope: 'sub',
          filter: userFilter(config.loginAttribute, login),
          attributes: USER_ATTRIBUTES,
          explicitBufferAttributes: ['objectGUID'],
          sizeLimit: 2,
        });
        if (searchEntries.length > 1) throw new DirectoryError('misconfigured', `the login matches ${searchEntries.length} directory entries`);
        return searchEntries[0] ? toUser(searchEntries[0]) : null;
      });
      if (!found) return null;
      const client = await connect(config);
      try {
        await client.bind(found.dn, password);
        return { user: found, groups: await groupsOf(client, config.baseDn, found.dn) };
      } catch (err) {
        throw toDirectoryError(err, 'user bind');
      } finally {
        await client.unbind().catch(() => undefined);
      }
    },

    async lookup(config, guids) {
      return asService(config, async (client) => {
        const out = new Map<string, DirectorySignIn | null>();
        for (const guid of guids) {
          const { searchEntries } = await client.search(config.baseDn, {
            scope: 'sub',
            // A filter object, not a string: ldapts parses escaped filter text into UTF-8, which
            // mangles the binary GUID's bytes above 0x7f (no entry would ever match).
            filter: new AndFilter({
              filters: [new EqualityFilter({ attribute: 'objectClass', value: 'user' }), new EqualityFilter({ attribute: 'objectGUID', value: guidToBytes(guid) })],
            }),
            attributes: USER_ATTRIBUTES,
            explicitBufferAttributes: ['objectGUID'],
            sizeLimit: 1,
          });
          const e = searchEntries[0];
          out.set(guid, e ? { user: toUser(e), groups: await groupsOf(client, config.baseDn, e.dn) } : null);
        }
        return out;
      });
    },

    async check(config) {
      await asService(config, async () => undefined);
    },
  };
}
