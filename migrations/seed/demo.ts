/**
 * The demo data's fixed part: publishers, users and memberships with fixed UUIDs. Imported by the
 * dev token script (`USERS`), tests (`PUBLISHERS`, `MEMBERSHIPS`) and `migrations/seed/run.ts`.
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
