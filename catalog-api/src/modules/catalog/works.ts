/**
 * /api/v1/works — musical works with their songwriter splits (work_songwriters).
 *
 * ISWCs are accepted dotted or compact, stored compact and returned dotted; the shares of each right
 * (performance, mechanical, sync) must sum to at most 100; every songwriter of a split must be one
 * the caller can see.
 */
import { z } from 'zod';
import { problem, type FieldError } from '../../errors.ts';
import type { RequestTx } from '../../db/context.ts';
import { formatIswc, parseIswc, IDENTIFIER_REASONS } from './identifiers.ts';
import { checkShareTotals, SONGWRITER_ROLES } from './shares.ts';
import { catalogItemBase, catalogItemSchema, catalogResource, identifierValue, placementFields } from './resource.ts';
import { Songwriter } from './songwriter.entity.ts';
import { Work } from './work.entity.ts';
import { WorkSongwriter } from './work-songwriter.entity.ts';

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
type Split = z.infer<typeof splitSchema>;

const language = z
  .string()
  .regex(/^[A-Za-z]{2}$/, 'must be an ISO 639-1 code (two letters)')
  .transform((s) => s.toLowerCase());

const createSchema = z.strictObject({
  title: z.string().trim().min(1).max(500),
  iswc: z.string().max(32).nullish(),
  language: language.nullish(),
  ...placementFields,
  songwriters: z.array(splitSchema).max(100).optional(),
});

const workSchema = catalogItemSchema({
  title: z.string(),
  iswc: z.string().nullable().describe('dotted form T-ddd.ddd.ddd-c'),
  language: z.string().nullable(),
  songwriters: z.array(splitSchema),
}).meta({ id: 'Work' });
type WorkItem = z.infer<typeof workSchema>;

/**
 * Works → items, with their splits (one query) and ISWCs rendered dotted. The splits are read with
 * the QueryBuilder as plain rows, not entities: a page of 50 works has ~100 of them, and hydrating,
 * tracking and (at commit) change-set checking them was about a sixth of a list request's CPU in
 * the API (README "The database at scale"). Nothing here writes them.
 */
async function present(tx: RequestTx, works: Work[]): Promise<WorkItem[]> {
  if (works.length === 0) return [];
  const splits = await tx.em
    .createQueryBuilder(WorkSongwriter)
    .select(['workId', 'songwriterId', 'role', 'performanceShare', 'mechanicalShare', 'syncShare'])
    .where({ workId: { $in: works.map((w) => w.id) } })
    .orderBy({ workId: 'asc', songwriterId: 'asc' })
    .execute('all');
  const byWork = Map.groupBy(splits, (s) => s.workId);
  return works.map((w) => ({
    ...catalogItemBase(w),
    title: w.title,
    iswc: w.iswc ? formatIswc(w.iswc) : null,
    language: w.language ?? null,
    // numeric(5,2) comes back from a plain read as its text ('33.33'); the entity type maps it to a number
    songwriters: (byWork.get(w.id) ?? []).map((s) => ({ songwriter_id: s.songwriterId!, role: s.role!, performance_share: Number(s.performanceShare), mechanical_share: Number(s.mechanicalShare), sync_share: Number(s.syncShare) })),
  }));
}

/** Check a split list: totals per right ≤ 100, no songwriter twice, every songwriter visible. */
async function validateSplits(tx: RequestTx, splits: Split[], errors: FieldError[]): Promise<void> {
  errors.push(...checkShareTotals(splits));
  const seen = new Set<string>();
  splits.forEach((s, i) => {
    const id = s.songwriter_id.toLowerCase();
    if (seen.has(id)) errors.push({ field: `songwriters[${i}].songwriter_id`, reason: 'listed more than once' });
    seen.add(id);
  });
  if (splits.length > 0) {
    const visible = await tx.em.find(Songwriter, { id: { $in: [...seen] } }, { fields: ['id'] });
    const found = new Set(visible.map((v) => v.id));
    splits.forEach((s, i) => {
      if (!found.has(s.songwriter_id.toLowerCase())) errors.push({ field: `songwriters[${i}].songwriter_id`, reason: 'no such songwriter' });
    });
  }
}

/** Replace the work's split list. */
async function writeSplits(tx: RequestTx, workId: string, splits: Split[]): Promise<void> {
  await tx.em.nativeDelete(WorkSongwriter, { workId });
  for (const s of splits) {
    tx.em.create(WorkSongwriter, {
      workId,
      songwriterId: s.songwriter_id.toLowerCase(),
      publisherId: tx.ctx.publisherId!,
      role: s.role,
      performanceShare: s.performance_share,
      mechanicalShare: s.mechanical_share,
      syncShare: s.sync_share,
    });
  }
  await tx.em.flush();
}

/** Fastify plugin: the works routes (register under no prefix; paths are absolute). */
export const worksRoutes = catalogResource({
  entity: Work,
  collection: 'works',
  noun: 'work',
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
  present,
  afterWrite: async (tx, id, body) => {
    if (body.songwriters) await writeSplits(tx, id, body.songwriters);
  },
});
