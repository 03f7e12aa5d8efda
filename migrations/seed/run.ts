/**
 * Demo seed: publishers, users, memberships (migrations/seed/demo.ts) and a deterministic generated
 * catalog of ≥ 1,000 works with songwriters, shares and recordings.
 *
 * CLI: `node migrations/seed/run.ts` (env `DATABASE_OWNER_URL`, default in docs/CONTRACTS.md).
 *
 * - Runs as the schema owner in one transaction (all or nothing) under an advisory lock; skips when
 *   the first demo publisher already exists (idempotent).
 * - FORCE RLS applies to the owner too, so the seed sets the RLS context itself per publisher
 *   (`set_config('app.publisher_id', p, true)`, `app.access_scope = publisher`) — no exemption,
 *   with one bootstrap step: creating users and memberships needs a system-admin context (0003),
 *   which the very first system admin cannot have, so FORCE RLS is lifted on `users` for inserting
 *   that one row and restored in the same transaction (the owner may do so anyway); every other
 *   user and membership is inserted under that system admin's context, through the policies.
 * - The outbox triggers (migration 0004) record every relationship in `authz_outbox`; the seed
 *   does not talk to OpenFGA (the catalog API's relay delivers the tuples).
 * - Deterministic: a private Faker instance seeded with `SEED`; ids, titles, identifiers, shares
 *   and timestamps are the same on every run.
 * - Identity (migration 0005): every seeded user gets the password DEMO_PASSWORD (one argon2id hash
 *   shared by all — demo data, and it keeps the seed fast), creator1 a TOTP secret sealed under
 *   ISSUER_KEK_FILE, each publisher its auth policy, DMP and Sheer their directory configuration
 *   (DIRECTORY_URL [ldaps://127.0.0.1:636], DIRECTORY_CA_FILE [.data/samba/tls/ca.pem], bind secret
 *   `env:DIRECTORY_BIND_PASSWORD`). The sign-in tables are FORCE-RLS'd for `catalog_auth` only, so
 *   the seed lifts FORCE on them for its inserts, within its transaction.
 */
import pg from 'pg';
import { Faker, en } from '@faker-js/faker';
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';
import {
  AUTH_POLICIES,
  DEMO_ACCOUNTS,
  DEMO_DIRECTORY,
  DEMO_PASSWORD,
  DEMO_TOTP_SECRETS,
  MEMBERSHIPS,
  PUBLISHERS,
  SEED,
  USERS,
  WORKS_PER_PUBLISHER,
  demoGroupDn,
  userId,
  type DemoPublisher,
  type DemoUser,
} from './demo.ts';
import { makeIpiNameNumber, makeIsrc, makeIswc } from './identifiers.ts';
import { hashPassword } from '../../catalog-api/src/modules/auth/passwords.ts';
import { loadKek, seal } from '../../catalog-api/src/modules/auth/secrets.ts';

/** Default owner URL (docs/CONTRACTS.md). */
const DEFAULT_OWNER_URL = 'postgres://catalog_owner:catalog_owner@127.0.0.1:5432/publishing';

/** What a seed run did. Counts are rows inserted by this run (0 when skipped). */
export type SeedResult = {
  skipped: boolean;
  publishers: number;
  users: number;
  memberships: number;
  works: number;
  songwriters: number;
  workSongwriters: number;
  recordings: number;
};

type WorkRow = { id: string; publisher_id: string; owner_user_id: string | null; title: string; iswc: string | null; language: string | null; created_by: string | null; created_at: string };
type SongwriterRow = { id: string; publisher_id: string; owner_user_id: string | null; first_name: string | null; last_name: string; ipi_name_number: string | null; pro: string | null; created_by: string | null; created_at: string };
type WorkSongwriterRow = { work_id: string; songwriter_id: string; publisher_id: string; role: string; performance_share: string; mechanical_share: string; sync_share: string };
type RecordingRow = { id: string; publisher_id: string; owner_user_id: string | null; work_id: string; title: string; isrc: string; duration_ms: number; release_date: string; created_by: string | null; created_at: string };

/** The generated catalog of one publisher. */
export type GeneratedCatalog = { works: WorkRow[]; songwriters: SongwriterRow[]; workSongwriters: WorkSongwriterRow[]; recordings: RecordingRow[] };

const LANGUAGES = ['en', 'en', 'en', 'es', 'fr', 'de', 'pt', 'it', 'sv', 'ja', null] as const;
const PROS = ['ASCAP', 'BMI', 'SESAC', 'PRS', 'GEMA', 'SACEM', 'SOCAN', 'APRA', null] as const;
const COUNTRIES = ['US', 'GB', 'DE', 'FR', 'SE', 'CA'] as const;
const EPOCH = Date.UTC(2023, 0, 1);

/** Split `total` cents into `k` positive integer parts with `f` (deterministic given f's state). */
function split(f: Faker, total: number, k: number): number[] {
  const cuts = new Set<number>();
  while (cuts.size < k - 1) cuts.add(f.number.int({ min: 1, max: total - 1 }));
  const points = [0, ...[...cuts].sort((a, b) => a - b), total];
  return points.slice(1).map((p, i) => p - points[i]!);
}
const pct = (cents: number) => (cents / 100).toFixed(2);

/**
 * Generate the catalog of every demo publisher deterministically (same output for the same `seed`).
 * Songtrust works, songwriters and recordings are owned by creator1/creator2 (both own some);
 * other publishers' rows have no owner. Per work: 1–3 songwriters with CWR roles (CA, C, A, AR,
 * AD) and shares summing per right to 100 % or 50 % (≤ 100), 0–2 recordings.
 * ISWCs/IPI name numbers carry valid check digits (identifiers.ts); ISRCs are unique.
 * @returns the rows per publisher id.
 */
export function generateCatalog(seed = SEED): Map<string, GeneratedCatalog> {
  const f = new Faker({ locale: [en] });
  f.seed(seed);
  const out = new Map<string, GeneratedCatalog>();
  const iswcs = new Set<number>();
  const ipis = new Set<number>();
  let isrcCounter = 0;
  let clock = 0;
  const at = () => new Date(EPOCH + (clock += 1) * 60_000).toISOString();
  const creators = [userId('creator1@songtrust.example'), userId('creator2@songtrust.example')];

  for (const p of PUBLISHERS) {
    const admin = MEMBERSHIPS.find((m) => m.publisherId === p.id && m.role === 'admin')?.userId ?? null;
    const owners: (string | null)[] = p.slug === 'songtrust' ? creators : [null];
    const cat: GeneratedCatalog = { works: [], songwriters: [], workSongwriters: [], recordings: [] };
    const nWorks = WORKS_PER_PUBLISHER[p.slug] ?? 0;
    const poolSize = Math.max(8, Math.ceil(nWorks / (3 * owners.length)));
    const pools = new Map<string | null, SongwriterRow[]>();
    for (const owner of owners) {
      const pool: SongwriterRow[] = [];
      for (let i = 0; i < poolSize; i++) {
        let ipi: number | null = null;
        if (f.number.float() < 0.85) {
          do ipi = f.number.int({ min: 10_000_000, max: 999_999_999 });
          while (ipis.has(ipi));
          ipis.add(ipi);
        }
        pool.push({
          id: f.string.uuid(),
          publisher_id: p.id,
          owner_user_id: owner,
          first_name: f.person.firstName(),
          last_name: f.person.lastName(),
          ipi_name_number: ipi === null ? null : makeIpiNameNumber(ipi),
          pro: f.helpers.arrayElement(PROS),
          created_by: owner ?? admin,
          created_at: at(),
        });
      }
      pools.set(owner, pool);
      cat.songwriters.push(...pool);
    }

    for (let i = 0; i < nWorks; i++) {
      // the first works of songtrust alternate creators, so both own some
      const owner = owners.length > 1 ? (i < owners.length ? owners[i]! : f.helpers.arrayElement(owners)) : owners[0]!;
      let iswc: string | null = null;
      if (f.number.float() < 0.9) {
        let n: number;
        do n = f.number.int({ min: 1, max: 999_999_999 });
        while (iswcs.has(n));
        iswcs.add(n);
        iswc = makeIswc(n);
      }
      const title = f.music.songName();
      const work: WorkRow = {
        id: f.string.uuid(),
        publisher_id: p.id,
        owner_user_id: owner,
        title,
        iswc,
        language: f.helpers.arrayElement(LANGUAGES),
        created_by: owner ?? admin,
        created_at: at(),
      };
      cat.works.push(work);

      const k = f.number.int({ min: 1, max: 3 });
      const writers = f.helpers.arrayElements(pools.get(owner)!, k);
      const total = f.helpers.arrayElement([10_000, 10_000, 5_000]);
      const perf = split(f, total, k);
      const mech = split(f, total, k);
      const sync = split(f, total, k);
      writers.forEach((w, j) => {
        const role = k === 1 ? 'CA' : j === 0 ? f.helpers.arrayElement(['CA', 'C']) : f.helpers.arrayElement(['C', 'A', 'CA', 'AR', 'AD']);
        cat.workSongwriters.push({
          work_id: work.id,
          songwriter_id: w.id,
          publisher_id: p.id,
          role,
          performance_share: pct(perf[j]!),
          mechanical_share: pct(mech[j]!),
          sync_share: pct(sync[j]!),
        });
      });

      const nRec = f.number.int({ min: 0, max: 2 });
      for (let r = 0; r < nRec; r++) {
        cat.recordings.push({
          id: f.string.uuid(),
          publisher_id: p.id,
          owner_user_id: owner,
          work_id: work.id,
          title: r === 0 ? title : `${title} (${f.helpers.arrayElement(['Live', 'Acoustic', 'Remix', 'Radio Edit'])})`,
          isrc: makeIsrc(f.helpers.arrayElement(COUNTRIES), f.string.alphanumeric({ length: 3, casing: 'upper' }), f.number.int({ min: 0, max: 25 }), ++isrcCounter),
          duration_ms: f.number.int({ min: 90_000, max: 420_000 }),
          release_date: new Date(Date.UTC(1995, 0, 1) + f.number.int({ min: 0, max: 30 * 365 }) * 86_400_000).toISOString().slice(0, 10),
          created_by: owner ?? admin,
          created_at: at(),
        });
      }
    }
    out.set(p.id, cat);
  }
  return out;
}

/** RLS context of the following statements: `publisherId` under scope publisher, as `userId` (none by default). */
async function setContext(c: pg.ClientBase, publisherId: string, userId = ''): Promise<void> {
  await c.query(
    `select set_config('app.publisher_id', $1, true), set_config('app.access_scope', 'publisher', true), set_config('app.user_id', $2, true)`,
    [publisherId, userId],
  );
}

async function insertPublisher(c: pg.ClientBase, p: DemoPublisher): Promise<void> {
  await c.query(`insert into publishers (id, name, slug, type, business_model, status, settings) values ($1, $2, $3, $4, $5, 'active', $6)`, [
    p.id,
    p.name,
    p.slug,
    p.type,
    p.businessModel,
    JSON.stringify({ auth_policy: AUTH_POLICIES[p.slug] ?? 'internal' }),
  ]);
  const account = DEMO_ACCOUNTS[p.slug];
  if (account) {
    await c.query(
      `update accounts set plan_type = $2, billing_cycle = $3, seats = (select seats from plans where id = $2), status = 'active', trial_ends_at = null, billing_email = $4 where publisher_id = $1`,
      [p.id, account.plan, account.billingCycle, `billing@${p.slug}.example`],
    );
  }
}

/** Where the seeded directory configurations point (environment, with the local defaults). */
export function demoDirectorySettings(env: NodeJS.ProcessEnv = process.env): { url: string; caFile: string } {
  const dataDir = env.DATA_DIR || '.data';
  return {
    url: env.DIRECTORY_URL || 'ldaps://127.0.0.1:636',
    caFile: resolve(env.DIRECTORY_CA_FILE || `${dataDir}/samba/tls/ca.pem`),
  };
}

/** Passwords, TOTP and directory configurations of the demo data (see the module comment). */
async function seedIdentity(c: pg.ClientBase): Promise<void> {
  await c.query('alter table user_credentials no force row level security; alter table directory_configs no force row level security');
  const hash = await hashPassword(DEMO_PASSWORD);
  const kek = loadKek(process.env.ISSUER_KEK_FILE || resolve(process.env.DATA_DIR || '.data', 'issuer-kek.key'));
  const rows = await Promise.all(
    USERS.map(async (u) => {
      const totp = DEMO_TOTP_SECRETS[u.email];
      return { user_id: u.id, password_hash: hash, totp_secret: totp ? await seal(kek, totp) : null, totp_enabled: totp ? true : null };
    }),
  );
  await c.query(
    `insert into user_credentials (user_id, password_hash, password_changed_at, totp_secret, totp_enabled_at)
     select user_id, password_hash, now(), totp_secret, case when totp_enabled then now() end
       from jsonb_to_recordset($1::jsonb) as x(user_id uuid, password_hash text, totp_secret text, totp_enabled boolean)`,
    [JSON.stringify(rows)],
  );
  const { url, caFile } = demoDirectorySettings();
  for (const [slug, d] of Object.entries(DEMO_DIRECTORY.publishers)) {
    const p = PUBLISHERS.find((x) => x.slug === slug)!;
    await c.query(
      // generous timeouts: a development machine (and CI) may be busy; production sets its own
      `insert into directory_configs (publisher_id, url, ca_file, base_dn, bind_dn, bind_secret_ref, login_attribute, email_domains, group_role_map,
                                      connect_timeout_ms, operation_timeout_ms)
       values ($1, $2, $3, $4, $5, 'env:DIRECTORY_BIND_PASSWORD', 'userPrincipalName', $6, $7, 5000, 5000)`,
      [
        p.id,
        url,
        caFile,
        DEMO_DIRECTORY.ou,
        `CN=${DEMO_DIRECTORY.serviceAccount.cn},${DEMO_DIRECTORY.ou}`,
        d.emailDomains,
        JSON.stringify(d.roles.map((r) => ({ group_dn: demoGroupDn(r.group), role: r.role }))),
      ],
    );
  }
  await c.query('alter table user_credentials force row level security; alter table directory_configs force row level security');
}

/** Insert `rows` into `table` with one statement (jsonb_to_recordset), in chunks of 2,000. */
async function insertRows(c: pg.ClientBase, table: string, columns: Record<string, string>, rows: object[]): Promise<void> {
  const names = Object.keys(columns).join(', ');
  const defs = Object.entries(columns).map(([n, t]) => `${n} ${t}`).join(', ');
  for (let i = 0; i < rows.length; i += 2000) {
    await c.query(`insert into ${table} (${names}) select ${names} from jsonb_to_recordset($1::jsonb) as x(${defs})`, [
      JSON.stringify(rows.slice(i, i + 2000)),
    ]);
  }
}

/**
 * Seed the demo data into the database at `url` (the owner role; the schema must be migrated).
 * @returns what was inserted; `skipped: true` (all counts 0) when the demo data is already there.
 * @throws on connection or SQL errors; the transaction is rolled back, nothing is half-seeded.
 */
export async function seed(url: string): Promise<SeedResult> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const none: SeedResult = { skipped: true, publishers: 0, users: 0, memberships: 0, works: 0, songwriters: 0, workSongwriters: 0, recordings: 0 };
  try {
    await client.query('begin');
    await client.query(`select pg_advisory_xact_lock(hashtextextended('migrations/seed/demo', 0))`);
    const first = PUBLISHERS[0]!;
    await setContext(client, first.id);
    const { rowCount } = await client.query('select 1 from publishers where id = $1', [first.id]);
    if (rowCount) {
      await client.query('commit');
      return none;
    }
    const userColumns = { id: 'uuid', email: 'text', display_name: 'text', is_system_admin: 'boolean', email_verified_at: 'timestamptz' };
    const verifiedAt = new Date(EPOCH).toISOString();
    const userRow = (u: DemoUser) => ({ id: u.id, email: u.email, display_name: u.displayName, is_system_admin: u.isSystemAdmin, email_verified_at: verifiedAt });
    const sysAdmin = USERS.find((u) => u.isSystemAdmin);
    if (!sysAdmin) throw new Error('the demo data needs a system admin');
    // Bootstrap: only a system-admin context may create users, and the first one has none yet.
    // DDL is transactional: FORCE is back before anything else runs, also on rollback.
    await client.query('alter table users no force row level security');
    await insertRows(client, 'users', userColumns, [userRow(sysAdmin)]);
    await client.query('alter table users force row level security');
    await setContext(client, first.id, sysAdmin.id);
    await insertRows(client, 'users', userColumns, USERS.filter((u) => u !== sysAdmin).map(userRow));
    const catalog = generateCatalog();
    const result: SeedResult = { ...none, skipped: false, users: USERS.length };
    for (const p of PUBLISHERS) {
      // Creating publishers, enrolling members and writing the catalog need a context whose user
      // holds those permissions (0003, 0006): the system admin's.
      await setContext(client, p.id, sysAdmin.id);
      await insertPublisher(client, p);
      const members = MEMBERSHIPS.filter((m) => m.publisherId === p.id);
      await insertRows(
        client,
        'user_publishers',
        { publisher_id: 'uuid', user_id: 'uuid', role: 'text' },
        members.map((m) => ({ publisher_id: m.publisherId, user_id: m.userId, role: m.role })),
      );
      const cat = catalog.get(p.id)!;
      const audit = { created_by: 'uuid', updated_by: 'uuid', created_at: 'timestamptz', updated_at: 'timestamptz' };
      const withAudit = <T extends { created_by: string | null; created_at: string }>(rows: T[]) =>
        rows.map((r) => ({ ...r, updated_by: r.created_by, updated_at: r.created_at }));
      await insertRows(client, 'works', { id: 'uuid', publisher_id: 'uuid', owner_user_id: 'uuid', title: 'text', iswc: 'text', language: 'text', ...audit }, withAudit(cat.works));
      await insertRows(
        client,
        'songwriters',
        { id: 'uuid', publisher_id: 'uuid', owner_user_id: 'uuid', first_name: 'text', last_name: 'text', ipi_name_number: 'text', pro: 'text', ...audit },
        withAudit(cat.songwriters),
      );
      await insertRows(
        client,
        'work_songwriters',
        { work_id: 'uuid', songwriter_id: 'uuid', publisher_id: 'uuid', role: 'text', performance_share: 'numeric', mechanical_share: 'numeric', sync_share: 'numeric' },
        cat.workSongwriters,
      );
      await insertRows(
        client,
        'recordings',
        { id: 'uuid', publisher_id: 'uuid', owner_user_id: 'uuid', work_id: 'uuid', title: 'text', isrc: 'text', duration_ms: 'integer', release_date: 'date', ...audit },
        withAudit(cat.recordings),
      );
      result.publishers += 1;
      result.memberships += members.length;
      result.works += cat.works.length;
      result.songwriters += cat.songwriters.length;
      result.workSongwriters += cat.workSongwriters.length;
      result.recordings += cat.recordings.length;
    }
    await seedIdentity(client);
    await client.query('commit');
    return result;
  } catch (err) {
    await client.query('rollback').catch(() => undefined);
    throw err;
  } finally {
    await client.end();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const started = Date.now();
  seed(process.env.DATABASE_OWNER_URL || DEFAULT_OWNER_URL).then(
    (r) => {
      process.stdout.write(
        r.skipped
          ? 'demo data already present; nothing to do\n'
          : `seeded ${r.publishers} publishers, ${r.users} users, ${r.memberships} memberships, ${r.works} works, ` +
              `${r.songwriters} songwriters, ${r.workSongwriters} work songwriters, ${r.recordings} recordings in ${Date.now() - started} ms\n`,
      );
    },
    (err: unknown) => {
      process.stderr.write(`seed failed: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exit(1);
    },
  );
}
