/**
 * Verifying the audit log's hash chains (`npm run audit -- verify`, cli.ts): read every chain in
 * `chain_seq` order, rebuild each row's canonical text in TypeScript from the stored values (the
 * form migration 0008 defines; the database's own `audit_event_canonical()` is not trusted here),
 * hash it, and compare.
 *
 * What is found:
 * - `edited`: a row's stored hash is not the hash of its content (a field changed after appending);
 * - `gap`: `chain_seq` skips numbers, or does not start at 1 (rows deleted);
 * - `reordered`: a row's `prev_hash` is not the hash of the row before it, its `chain_seq` does not
 *   rise, or its time goes backwards along the chain (rows moved, swapped or replaced).
 * Rows deleted from the END of a chain leave no trace inside it: compare the chain heads (last
 * sequence number and hash, printed by every run) with those of an earlier run.
 */
import { createHash } from 'node:crypto';
import type { EntityManager } from '@mikro-orm/postgresql';
import { query } from '../../db/orm.ts';

/** The stored values of one row as the canonical text takes them (PostgreSQL's text forms). */
export type CanonicalRow = {
  id: string;
  publisher_id: string | null;
  chain_seq: string;
  prev_hash: string | null;
  /** UTC, `YYYY-MM-DDThh:mm:ss.ffffffZ` */
  occurred_at: string;
  actor_id: string | null;
  actor_kind: string;
  action: string;
  object_type: string;
  object_id: string | null;
  /** `jsonb::text` */
  before: string | null;
  /** `jsonb::text` */
  after: string | null;
  request_id: string | null;
  /** `inet::text` */
  client_ip: string | null;
  user_agent: string | null;
};

/** The fields of the canonical text after its first line, in order (migration 0008). */
export const CANONICAL_FIELDS = [
  'publisher_id', 'chain_seq', 'prev_hash', 'id', 'occurred_at', 'actor_id', 'actor_kind', 'action',
  'object_type', 'object_id', 'before', 'after', 'request_id', 'client_ip', 'user_agent',
] as const satisfies readonly (keyof CanonicalRow)[];

/** One field: `<UTF-8 byte length>:<text>`, or `-` for NULL. */
const field = (v: string | null) => (v === null ? '-' : `${Buffer.byteLength(v, 'utf8')}:${v}`);

/** The canonical text of a row (version `audit-v1`; see migration 0008). */
export function canonicalText(row: CanonicalRow): string {
  return ['audit-v1', ...CANONICAL_FIELDS.map((k) => field(row[k]))].join('\n');
}

/** SHA-256 (lower-case hex) of the canonical text's UTF-8 bytes. */
export function eventHash(row: CanonicalRow): string {
  return createHash('sha256').update(canonicalText(row), 'utf8').digest('hex');
}

/** The platform chain's name in reports (rows without a publisher). */
export const PLATFORM = 'platform';
const PLATFORM_KEY = '00000000-0000-0000-0000-000000000000';

/** One finding. */
export type VerifyProblem = { chain: string; seq: number; id: string; kind: 'edited' | 'gap' | 'reordered'; detail: string };
/** One chain: how many rows, and its head (last row). */
export type ChainSummary = { chain: string; rows: number; headSeq: number; headHash: string };
/** The outcome of a run. */
export type VerifyReport = { rows: number; chains: ChainSummary[]; problems: VerifyProblem[] };

type StoredRow = CanonicalRow & { hash: string; chain: string };

const PAGE_SQL = `
  select id::text as id, publisher_id::text as publisher_id, chain_seq::text as chain_seq, prev_hash, hash,
         to_char(occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as occurred_at,
         actor_id::text as actor_id, actor_kind, action, object_type, object_id::text as object_id,
         before::text as before, after::text as after, request_id, client_ip::text as client_ip, user_agent,
         coalesce(publisher_id, '${PLATFORM_KEY}'::uuid)::text as chain
    from audit_events e
   where (coalesce(e.publisher_id, '${PLATFORM_KEY}'::uuid), e.chain_seq) > ($1::uuid, $2::bigint)
     and ($3::uuid is null or coalesce(e.publisher_id, '${PLATFORM_KEY}'::uuid) = $3::uuid)
   order by coalesce(e.publisher_id, '${PLATFORM_KEY}'::uuid), e.chain_seq -- the column, not the text alias
   limit $4`;

/**
 * Check every chain (or one) of the log `em` can read.
 * @param em an EntityManager connected as a role that sees every row (the owner; RLS shows the app
 *   roles only part of the log)
 * @param options.chain a publisher id, or `platform`, to check one chain only
 * @param options.batchSize rows read per statement (default 1000)
 * @returns the chains and the problems, in chain order
 * @throws the driver's error when the log cannot be read
 */
export async function verifyAuditLog(em: EntityManager, options: { chain?: string; batchSize?: number } = {}): Promise<VerifyReport> {
  const only = options.chain === undefined ? null : options.chain === PLATFORM ? PLATFORM_KEY : options.chain.toLowerCase();
  const batch = options.batchSize ?? 1000;
  const chains: ChainSummary[] = [];
  const problems: VerifyProblem[] = [];
  let rows = 0;
  let prev: StoredRow | null = null;
  // the platform chain sorts first (its key is the nil uuid) and sequences start at 1: (nil, 0) is below every row
  let after: [string, string] = [PLATFORM_KEY, '0'];
  for (;;) {
    // raw SQL: the stored text forms are what the hash covers, which MikroORM would parse away
    const page: StoredRow[] = await query<StoredRow>(em, PAGE_SQL, [...after, only, batch]);
    for (const row of page) {
      rows += 1;
      const name = row.chain === PLATFORM_KEY ? PLATFORM : row.chain;
      const seq = Number(row.chain_seq);
      const report = (kind: VerifyProblem['kind'], detail: string) => problems.push({ chain: name, seq, id: row.id, kind, detail });
      const sameChain = prev !== null && prev.chain === row.chain;
      if (!sameChain) chains.push({ chain: name, rows: 0, headSeq: 0, headHash: '' });
      const summary = chains[chains.length - 1]!;
      const expected = sameChain ? Number(prev!.chain_seq) + 1 : 1;
      if (seq > expected) report('gap', `rows ${expected}..${seq - 1} are missing (deleted)`);
      else if (seq < expected) report('reordered', `chain_seq ${seq} does not follow ${expected - 1}`);
      else if ((row.prev_hash ?? null) !== (sameChain ? prev!.hash : null)) {
        report('reordered', `prev_hash does not match the hash of row ${seq - 1}: rows moved, swapped or replaced`);
      }
      if (sameChain && row.occurred_at < prev!.occurred_at) report('reordered', `occurred_at ${row.occurred_at} is before that of row ${seq - 1} (${prev!.occurred_at})`);
      if (eventHash(row) !== row.hash) report('edited', 'the stored hash is not the hash of the row: its content changed after it was appended');
      summary.rows += 1;
      summary.headSeq = seq;
      summary.headHash = row.hash;
      prev = row;
    }
    if (page.length < batch) break;
    after = [prev!.chain, prev!.chain_seq];
  }
  return { rows, chains, problems };
}
