/**
 * /api/v1/works — musical works with their songwriter splits (work_songwriters).
 *
 * Reads never filter by publisher: RLS decides what the request context sees. Inserts take
 * `publisher_id` from the context. ISWCs are accepted dotted or compact, stored compact and returned
 * dotted; the shares of each right (performance, mechanical, sync) must sum to at most 100.
 */
import { z } from 'zod';
import { problem, type FieldError } from '../errors.ts';
import { formatIswc, parseIswc, IDENTIFIER_REASONS } from '../domain/identifiers.ts';
import { checkShareTotals, SONGWRITER_ROLES } from '../domain/shares.ts';
import type { RequestTx } from '../db/context.ts';
import { identifierValue } from './common.ts';
import { catalogItemSchema, catalogResource } from './resource.ts';

const share = z
  .number()
  .min(0)
  .max(100)
  .refine((n) => Math.abs(Math.round(n * 100) - n * 100) < 1e-9, 'at most two decimal places');

const splitSchema = z.strictObject({
  songwriter_id: z.uuid(),
  role: z.enum(SONGWRITER_ROLES),
  performance_share: share,
  mechanical_share: share,
  sync_share: share,
});

const language = z
  .string()
  .regex(/^[A-Za-z]{2}$/, 'must be an ISO 639-1 code (two letters)')
  .transform((s) => s.toLowerCase());

const createSchema = z.strictObject({
  title: z.string().trim().min(1).max(500),
  iswc: z.string().max(32).nullish(),
  language: language.nullish(),
  owner_user_id: z.uuid().nullish(),
  songwriters: z.array(splitSchema).max(100).optional(),
});

const workSchema = catalogItemSchema({
  title: z.string(),
  iswc: z.string().nullable().describe('dotted form T-ddd.ddd.ddd-c'),
  language: z.string().nullable(),
  songwriters: z.array(splitSchema),
});
type Work = z.infer<typeof workSchema>;

type WorkRow = Omit<Work, 'songwriters'>;
type SplitRow = { work_id: string; songwriter_id: string; role: string; performance_share: string; mechanical_share: string; sync_share: string };

/** Attach the splits of `rows` (one query) and render ISWCs dotted. */
async function hydrate(tx: RequestTx, rows: WorkRow[]): Promise<Work[]> {
  if (rows.length === 0) return [];
  const splits = await tx.sql<SplitRow>(
    `select work_id, songwriter_id, role, performance_share::text, mechanical_share::text, sync_share::text
       from work_songwriters where work_id = any($1::uuid[]) order by work_id, songwriter_id`,
    [rows.map((r) => r.id)],
  );
  return rows.map((r) => ({
    ...r,
    iswc: r.iswc ? formatIswc(r.iswc) : null,
    songwriters: splits
      .filter((s) => s.work_id === r.id)
      .map((s) => ({
        songwriter_id: s.songwriter_id,
        role: s.role as (typeof SONGWRITER_ROLES)[number],
        performance_share: Number(s.performance_share),
        mechanical_share: Number(s.mechanical_share),
        sync_share: Number(s.sync_share),
      })),
  }));
}

/**
 * Check a split list: totals per right ≤ 100, no songwriter twice, every songwriter visible.
 * @throws ProblemError 422 with one entry per problem
 */
async function validateSplits(tx: RequestTx, splits: z.infer<typeof splitSchema>[], errors: FieldError[]): Promise<void> {
  errors.push(...checkShareTotals(splits));
  const seen = new Set<string>();
  splits.forEach((s, i) => {
    const id = s.songwriter_id.toLowerCase();
    if (seen.has(id)) errors.push({ field: `songwriters[${i}].songwriter_id`, reason: 'listed more than once' });
    seen.add(id);
  });
  if (splits.length > 0) {
    const visible = await tx.sql<{ id: string }>(`select id from songwriters where id = any($1::uuid[]) and deleted_at is null`, [[...seen]]);
    const found = new Set(visible.map((v) => v.id));
    splits.forEach((s, i) => {
      if (!found.has(s.songwriter_id.toLowerCase())) errors.push({ field: `songwriters[${i}].songwriter_id`, reason: 'no such songwriter' });
    });
  }
}

async function writeSplits(tx: RequestTx, workId: string, splits: z.infer<typeof splitSchema>[]): Promise<void> {
  await tx.sql(`delete from work_songwriters where work_id = $1`, [workId]);
  if (splits.length === 0) return;
  await tx.sql(
    `insert into work_songwriters (work_id, songwriter_id, publisher_id, role, performance_share, mechanical_share, sync_share)
     select $1, s.songwriter_id, $2, s.role, s.performance_share, s.mechanical_share, s.sync_share
       from unnest($3::uuid[], $4::text[], $5::numeric[], $6::numeric[], $7::numeric[])
         as s(songwriter_id, role, performance_share, mechanical_share, sync_share)`,
    [
      workId,
      tx.ctx.publisherId,
      splits.map((s) => s.songwriter_id.toLowerCase()),
      splits.map((s) => s.role),
      splits.map((s) => s.performance_share),
      splits.map((s) => s.mechanical_share),
      splits.map((s) => s.sync_share),
    ],
  );
}

/** Fastify plugin: the works routes (register under no prefix; paths are absolute). */
export const worksRoutes = catalogResource({
  table: 'works',
  noun: 'work',
  columns: 'title, iswc, language',
  body: createSchema,
  item: workSchema,
  updateSummary: 'Update a work (partial; `songwriters` replaces the whole split list)',
  values: async (tx, body) => {
    const errors: FieldError[] = [];
    const iswc = identifierValue(body.iswc, 'iswc', parseIswc, IDENTIFIER_REASONS.iswc, errors);
    if (body.songwriters) await validateSplits(tx, body.songwriters, errors);
    if (errors.length) throw problem.validation(errors);
    return { title: body.title, iswc, language: body.language };
  },
  present: hydrate,
  afterWrite: async (tx, id, body) => {
    if (body.songwriters) await writeSplits(tx, id, body.songwriters);
  },
});
