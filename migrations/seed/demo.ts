/**
 * The demo data's fixed part: publishers, users and memberships with fixed UUIDs. Imported by the
 * token script (`DEMO_PASSWORD`, `DEMO_TOTP_SECRETS`), tests (`PUBLISHERS`, `MEMBERSHIPS`, …) and
 * `migrations/seed/run.ts`.
 * The generated catalog (works, songwriters, recordings) is in run.ts, deterministic from `SEED`.
 */

export type PublisherType = 'enterprise' | 'professional' | 'platform' | 'boutique';
export type BusinessModel = 'traditional' | 'platform' | 'hybrid';
export type MemberRole = 'admin' | 'manager' | 'editor' | 'viewer' | 'creator';

/** A seeded publisher. */
export type DemoPublisher = { id: string; slug: string; name: string; type: PublisherType; businessModel: BusinessModel };
/** A seeded user; `isSystemAdmin` users are admin on `system:platform`. */
export type DemoUser = { id: string; email: string; displayName: string; isSystemAdmin: boolean };
/** A seeded membership (`user_publishers` row). */
export type DemoMembership = { userId: string; publisherId: string; role: MemberRole };

/** The PRNG seed of the generated catalog (faker.seed). */
export const SEED = 42;

/** Works generated per publisher slug (sum ≥ 1000). */
export const WORKS_PER_PUBLISHER: Readonly<Record<string, number>> = { dmp: 400, sheer: 250, songtrust: 250, spirit: 150 };

export const PUBLISHERS: readonly DemoPublisher[] = [
  { id: '10000000-0000-4000-8000-000000000001', slug: 'dmp', name: 'Downtown Music Publishing', type: 'enterprise', businessModel: 'traditional' },
  { id: '10000000-0000-4000-8000-000000000002', slug: 'sheer', name: 'Sheer', type: 'enterprise', businessModel: 'traditional' },
  { id: '10000000-0000-4000-8000-000000000003', slug: 'songtrust', name: 'Songtrust', type: 'platform', businessModel: 'platform' },
  { id: '10000000-0000-4000-8000-000000000004', slug: 'spirit', name: 'Spirit', type: 'boutique', businessModel: 'traditional' },
];

/** The demo publishers' accounts (every publisher gets a trial account from migration 0007; the demo ones are customers). */
export const DEMO_ACCOUNTS: Readonly<Record<string, { plan: 'starter' | 'professional' | 'enterprise' | 'custom'; billingCycle: 'monthly' | 'annual' | 'enterprise' }>> = {
  dmp: { plan: 'enterprise', billingCycle: 'annual' },
  sheer: { plan: 'enterprise', billingCycle: 'annual' },
  songtrust: { plan: 'professional', billingCycle: 'monthly' },
  spirit: { plan: 'professional', billingCycle: 'monthly' },
};

/** Publisher id by slug. @throws Error for an unknown slug. */
export function publisherId(slug: string): string {
  const p = PUBLISHERS.find((x) => x.slug === slug);
  if (!p) throw new Error(`no seeded publisher ${slug}`);
  return p.id;
}

const user = (n: number, email: string, displayName: string, isSystemAdmin = false): DemoUser => ({
  id: `20000000-0000-4000-8000-${String(n).padStart(12, '0')}`,
  email,
  displayName,
  isSystemAdmin,
});

export const USERS: readonly DemoUser[] = [
  user(1, 'admin@dmp.example', 'DMP Admin'),
  user(2, 'editor@dmp.example', 'DMP Editor'),
  user(3, 'viewer@dmp.example', 'DMP Viewer'),
  user(4, 'creator1@songtrust.example', 'Songtrust Creator One'),
  user(5, 'creator2@songtrust.example', 'Songtrust Creator Two'),
  user(6, 'owner@spirit.example', 'Spirit Owner'),
  user(7, 'multi@example.com', 'Multi Publisher'),
  user(8, 'sysadmin@example.com', 'System Admin', true),
  user(9, 'manager@dmp.example', 'DMP Manager'),
];

/** User id by email (case-insensitive). @throws Error for an unknown email. */
export function userId(email: string): string {
  const u = USERS.find((x) => x.email.toLowerCase() === email.toLowerCase());
  if (!u) throw new Error(`no seeded user ${email}`);
  return u.id;
}

const m = (email: string, slug: string, role: MemberRole): DemoMembership => ({ userId: userId(email), publisherId: publisherId(slug), role });

export const MEMBERSHIPS: readonly DemoMembership[] = [
  m('admin@dmp.example', 'dmp', 'admin'),
  m('editor@dmp.example', 'dmp', 'editor'),
  m('viewer@dmp.example', 'dmp', 'viewer'),
  m('creator1@songtrust.example', 'songtrust', 'creator'),
  m('creator2@songtrust.example', 'songtrust', 'creator'),
  m('owner@spirit.example', 'spirit', 'admin'),
  m('multi@example.com', 'dmp', 'viewer'),
  m('multi@example.com', 'spirit', 'editor'),
  m('manager@dmp.example', 'dmp', 'manager'),
];

// ---- identity (docs/CONTRACTS.md, "Identity") ------------------------------------------------------

/** The password of every seeded internal user and every demo directory user (development only). */
export const DEMO_PASSWORD = 'music-demo-2026';

/** How each demo publisher's members sign in. */
export const AUTH_POLICIES: Readonly<Record<string, 'internal' | 'ad' | 'both'>> = { dmp: 'both', sheer: 'ad', songtrust: 'internal', spirit: 'internal' };

/**
 * Seeded TOTP secrets (base32, RFC 4648) by email: creator1 has MFA enrolled so that the second
 * factor can be tried by hand (`npm start` prints the secret; any authenticator app takes it).
 */
export const DEMO_TOTP_SECRETS: Readonly<Record<string, string>> = { 'creator1@songtrust.example': 'KRSXG5CTMVRXEZLUKRXXI4CQMFZXG5ZR' };

/** A demo directory group: its CN under the demo OU, and the groups it is nested in. */
export type DemoGroup = { cn: string; memberOf: string[] };
/** A demo directory user: sAMAccountName, UPN/mail, groups, enabled or not. */
export type DemoDirectoryUser = { sam: string; upn: string; displayName: string; groups: string[]; disabled?: boolean };

/**
 * The demo Active Directory (a Samba AD DC on loopback, scripts/services.sh). DMP and Sheer use the
 * same domain controller with their own group → role mappings and email domains, so a DMP group
 * never grants a role at Sheer or the reverse.
 */
export const DEMO_DIRECTORY = {
  realm: 'CORP.EXAMPLE.TEST',
  baseDn: 'DC=corp,DC=example,DC=test',
  /** where the demo groups and users live */
  ou: 'OU=Music Publishing Demo,DC=corp,DC=example,DC=test',
  /** the service account the sign-in service binds as (password: DIRECTORY_BIND_PASSWORD) */
  serviceAccount: { sam: 'svc-music-pub', cn: 'svc-music-pub' },
  groups: [
    { cn: 'DMP-Admins', memberOf: [] },
    { cn: 'DMP-Managers', memberOf: [] },
    { cn: 'DMP-Editors', memberOf: [] },
    { cn: 'DMP-Viewers', memberOf: [] },
    { cn: 'DMP-Catalog-Team', memberOf: ['DMP-Editors'] },
    { cn: 'SHEER-Editors', memberOf: [] },
  ] as DemoGroup[],
  users: [
    { sam: 'ad.admin', upn: 'ad.admin@dmp.example', displayName: 'DMP AD Admin', groups: ['DMP-Admins'] },
    { sam: 'ad.editor', upn: 'ad.editor@dmp.example', displayName: 'DMP AD Editor', groups: ['DMP-Catalog-Team'] },
    { sam: 'ad.viewer', upn: 'ad.viewer@dmp.example', displayName: 'DMP AD Viewer', groups: ['DMP-Viewers'] },
    { sam: 'ad.nogroup', upn: 'ad.nogroup@dmp.example', displayName: 'DMP AD No Group', groups: [] },
    { sam: 'ad.disabled', upn: 'ad.disabled@dmp.example', displayName: 'DMP AD Disabled', groups: ['DMP-Editors'], disabled: true },
    { sam: 'ad.editor.sheer', upn: 'ad.editor@sheer.example', displayName: 'Sheer AD Editor', groups: ['SHEER-Editors'] },
  ] as DemoDirectoryUser[],
  /** per publisher slug: the email domains its directory serves and the group → role mapping */
  publishers: {
    dmp: {
      emailDomains: ['dmp.example'],
      roles: [
        { group: 'DMP-Admins', role: 'admin' },
        { group: 'DMP-Managers', role: 'manager' },
        { group: 'DMP-Editors', role: 'editor' },
        { group: 'DMP-Viewers', role: 'viewer' },
      ],
    },
    sheer: { emailDomains: ['sheer.example'], roles: [{ group: 'SHEER-Editors', role: 'editor' }] },
  } as Record<string, { emailDomains: string[]; roles: { group: string; role: 'admin' | 'manager' | 'editor' | 'viewer' }[] }>,
} as const;

/** The DN of a demo group. */
export function demoGroupDn(cn: string): string {
  return `CN=${cn},${DEMO_DIRECTORY.ou}`;
}
