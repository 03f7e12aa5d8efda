/**
 * /api/v1/works — musical works with their songwriter splits (work_songwriters).
 *
 * Reads never filter by publisher: RLS decides what the request context sees. Inserts take
 * `publisher_id` from the context. ISWCs are accepted dotted or compact, stored compact and returned
 * dotted; the shares of each right (performance, mechanical, sync) must sum to at most 100.
 */
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { problem, type FieldError } from '../errors.ts';
import { formatIswc, parseIswc, IDENTIFIER_REASONS } from '../domain/identifiers.ts';
import { checkShareTotals, SONGWRITER_ROLES } from '../domain/shares.ts';
import type { RequestTx } from '../db/context.ts';
import {
  commonErrors,
  decodeCursor,
  encodeCursor,
  inRequestTx,
  isoSql,
  listQuerySchema,
  location,
  ownerFor,
  requireRole,
  pageSchema,
  pathId,
  problemSchema,
  timestamp,
  type RouteDeps,
} from './common.ts';
import { setList } from './sql.ts';

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

const updateSchema = createSchema.partial().refine((b) => Object.keys(b).length > 0, 'send at least one field');

const workSchema = z.object({
  id: z.uuid(),
  publisher_id: z.uuid(),
  owner_user_id: z.uuid().nullable(),
  title: z.string(),
  iswc: z.string().nullable().describe('dotted form T-ddd.ddd.ddd-c'),
  language: z.string().nullable(),
  songwriters: z.array(splitSchema),
  created_at: timestamp,
  updated_at: timestamp,
  created_by: z.uuid().nullable(),
  updated_by: z.uuid().nullable(),
});
type Work = z.infer<typeof workSchema>;

type WorkRow = Omit<Work, 'songwriters'> & { cursor_ts: string };
type SplitRow = { work_id: string; songwriter_id: string; role: string; performance_share: string; mechanical_share: string; sync_share: string };

const COLUMNS = `id, publisher_id, owner_user_id, title, iswc, language,
  ${isoSql('created_at')} as created_at, ${isoSql('updated_at')} as updated_at, created_by, updated_by,
  ${isoSql('created_at')} as cursor_ts`;

/** Attach the splits of `rows` (one query) and render ISWCs dotted. */
async function hydrate(tx: RequestTx, rows: WorkRow[]): Promise<Work[]> {
  if (rows.length === 0) return [];
  const splits = await tx.sql<SplitRow>(
    `select work_id, songwriter_id, role, performance_share::text, mechanical_share::text, sync_share::text
       from work_songwriters where work_id = any($1::uuid[]) order by work_id, songwriter_id`,
    [rows.map((r) => r.id)],
  );
  return rows.map(({ cursor_ts: _c, ...r }) => ({
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

async function loadWork(tx: RequestTx, id: string): Promise<Work> {
  const rows = await tx.sql<WorkRow>(`select ${COLUMNS} from works where id = $1 and deleted_at is null`, [id]);
  const [work] = await hydrate(tx, rows);
  if (!work) throw problem.notFound('No such work.');
  return work;
}

/** Normalise the ISWC of a body; collects a field error instead of throwing. */
function iswcValue(raw: string | null | undefined, errors: FieldError[]): string | null | undefined {
  if (raw === undefined || raw === null) return raw;
  const r = parseIswc(raw);
  if (!r.ok) {
    errors.push({ field: 'iswc', reason: IDENTIFIER_REASONS.iswc[r.reason] });
    return undefined;
  }
  return r.value;
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
export const worksRoutes: FastifyPluginAsyncZod<RouteDeps> = async (app, deps) => {
  app.get(
    '/api/v1/works',
    { schema: { tags: ['works'], summary: 'List works (keyset pagination)', querystring: listQuerySchema, response: { 200: pageSchema(workSchema), ...commonErrors } } },
    async (request) =>
      inRequestTx(deps, request, async (tx) => {
        const { limit, cursor } = request.query;
        const after = cursor ? decodeCursor(cursor) : null;
        const rows = await tx.sql<WorkRow>(
          `select ${COLUMNS} from works
            where deleted_at is null and ($1::timestamptz is null or (created_at, id) > ($1::timestamptz, $2::uuid))
            order by created_at, id limit $3`,
          [after?.createdAt ?? null, after?.id ?? null, limit + 1],
        );
        const page = rows.slice(0, limit);
        const last = page[page.length - 1];
        return {
          items: await hydrate(tx, page),
          next_cursor: rows.length > limit && last ? encodeCursor({ createdAt: last.cursor_ts, id: last.id }) : null,
        };
      }),
  );

  app.get(
    '/api/v1/works/:id',
    { schema: { tags: ['works'], summary: 'Get a work', params: z.object({ id: z.string() }), response: { 200: workSchema, ...commonErrors } } },
    async (request) => inRequestTx(deps, request, (tx) => loadWork(tx, pathId(request.params.id))),
  );

  app.post(
    '/api/v1/works',
    {
      schema: {
        tags: ['works'],
        summary: 'Create a work',
        body: createSchema,
        response: { 201: workSchema, ...commonErrors, 409: problemSchema, 422: problemSchema },
      },
    },
    async (request, reply) => {
      const work = await inRequestTx(
        deps,
        request,
        async (tx) => {
          requireRole(tx, 'write');
          const body = request.body;
          const errors: FieldError[] = [];
          const iswc = iswcValue(body.iswc, errors);
          await validateSplits(tx, body.songwriters ?? [], errors);
          if (errors.length) throw problem.validation(errors);
          const owner = ownerFor(tx, body.owner_user_id, true);
          const [row] = await tx.sql<{ id: string }>(
            `insert into works (publisher_id, owner_user_id, title, iswc, language, created_by, updated_by)
             values ($1, $2, $3, $4, $5, $6, $6) returning id`,
            [tx.ctx.publisherId, owner ?? null, body.title, iswc ?? null, body.language ?? null, tx.ctx.userId],
          );
          await writeSplits(tx, row!.id, body.songwriters ?? []);
          return loadWork(tx, row!.id);
        },
        { mutating: true },
      );
      return reply.status(201).header('location', location('works', work.id)).send(work);
    },
  );

  app.patch(
    '/api/v1/works/:id',
    {
      schema: {
        tags: ['works'],
        summary: 'Update a work (partial; `songwriters` replaces the whole split list)',
        params: z.object({ id: z.string() }),
        body: updateSchema,
        response: { 200: workSchema, ...commonErrors, 409: problemSchema, 422: problemSchema },
      },
    },
    async (request) =>
      inRequestTx(
        deps,
        request,
        async (tx) => {
          requireRole(tx, 'write');
          const id = pathId(request.params.id);
          const body = request.body;
          const errors: FieldError[] = [];
          const iswc = iswcValue(body.iswc, errors);
          if (body.songwriters) await validateSplits(tx, body.songwriters, errors);
          if (errors.length) throw problem.validation(errors);
          const set = setList(
            { title: body.title, iswc, language: body.language, owner_user_id: ownerFor(tx, body.owner_user_id, false) },
            3,
          );
          const rows = await tx.sql<{ id: string }>(
            `update works set ${set.sql ? set.sql + ', ' : ''}updated_at = now(), updated_by = $2
              where id = $1 and deleted_at is null returning id`,
            [id, tx.ctx.userId, ...set.params],
          );
          if (rows.length === 0) throw problem.notFound('No such work.');
          if (body.songwriters) await writeSplits(tx, id, body.songwriters);
          return loadWork(tx, id);
        },
        { mutating: true },
      ),
  );

  app.delete(
    '/api/v1/works/:id',
    { schema: { tags: ['works'], summary: 'Soft-delete a work', params: z.object({ id: z.string() }), response: { 204: z.null(), ...commonErrors } } },
    async (request, reply) => {
      await inRequestTx(
        deps,
        request,
        async (tx) => {
          requireRole(tx, 'delete');
          const rows = await tx.sql(
            `update works set deleted_at = now(), updated_at = now(), updated_by = $2 where id = $1 and deleted_at is null returning id`,
            [pathId(request.params.id), tx.ctx.userId],
          );
          if (rows.length === 0) throw problem.notFound('No such work.');
        },
        { mutating: true },
      );
      return reply.status(204).send(null);
    },
  );
};
