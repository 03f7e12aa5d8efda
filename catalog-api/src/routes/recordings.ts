/**
 * /api/v1/recordings — sound recordings of works. ISRCs are syntax-checked and stored compact
 * (12 characters); `work_id` must name a work the caller can see (RLS), else 422.
 */
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { problem, type FieldError } from '../errors.ts';
import { IDENTIFIER_REASONS, parseIsrc } from '../domain/identifiers.ts';
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

const createSchema = z.strictObject({
  title: z.string().trim().min(1).max(500),
  isrc: z.string().max(32).nullish(),
  work_id: z.uuid().nullish(),
  duration_ms: z.number().int().min(1).max(86_400_000).nullish().describe('milliseconds'),
  release_date: z.iso.date().nullish().describe('YYYY-MM-DD'),
  owner_user_id: z.uuid().nullish(),
});
const updateSchema = createSchema.partial().refine((b) => Object.keys(b).length > 0, 'send at least one field');

const recordingSchema = z.object({
  id: z.uuid(),
  publisher_id: z.uuid(),
  owner_user_id: z.uuid().nullable(),
  work_id: z.uuid().nullable(),
  title: z.string(),
  isrc: z.string().nullable().describe('compact form CCXXXYYNNNNN'),
  duration_ms: z.number().int().nullable(),
  release_date: z.string().nullable(),
  created_at: timestamp,
  updated_at: timestamp,
  created_by: z.uuid().nullable(),
  updated_by: z.uuid().nullable(),
});
type Recording = z.infer<typeof recordingSchema>;
type Row = Recording & { cursor_ts: string };

const COLUMNS = `id, publisher_id, owner_user_id, work_id, title, isrc, duration_ms, release_date::text as release_date,
  ${isoSql('created_at')} as created_at, ${isoSql('updated_at')} as updated_at, created_by, updated_by,
  ${isoSql('created_at')} as cursor_ts`;

function strip({ cursor_ts: _c, ...r }: Row): Recording {
  return r;
}

async function load(tx: RequestTx, id: string): Promise<Recording> {
  const [row] = await tx.sql<Row>(`select ${COLUMNS} from recordings where id = $1 and deleted_at is null`, [id]);
  if (!row) throw problem.notFound('No such recording.');
  return strip(row);
}

async function checkInput(tx: RequestTx, b: { isrc?: string | null; work_id?: string | null }): Promise<{ isrc: string | null | undefined; workId: string | null | undefined }> {
  const errors: FieldError[] = [];
  let isrc: string | null | undefined = b.isrc;
  if (typeof b.isrc === 'string') {
    const r = parseIsrc(b.isrc);
    if (r.ok) isrc = r.value;
    else errors.push({ field: 'isrc', reason: IDENTIFIER_REASONS.isrc[r.reason] });
  }
  const workId = typeof b.work_id === 'string' ? b.work_id.toLowerCase() : b.work_id;
  if (workId) {
    const visible = await tx.sql(`select 1 from works where id = $1 and deleted_at is null`, [workId]);
    if (visible.length === 0) errors.push({ field: 'work_id', reason: 'no such work' });
  }
  if (errors.length) throw problem.validation(errors);
  return { isrc, workId };
}

/** Fastify plugin: the recording routes. */
export const recordingsRoutes: FastifyPluginAsyncZod<RouteDeps> = async (app, deps) => {
  const params = z.object({ id: z.string() });

  app.get(
    '/api/v1/recordings',
    { schema: { tags: ['recordings'], summary: 'List recordings (keyset pagination)', querystring: listQuerySchema, response: { 200: pageSchema(recordingSchema), ...commonErrors } } },
    async (request) =>
      inRequestTx(deps, request, async (tx) => {
        const { limit, cursor } = request.query;
        const after = cursor ? decodeCursor(cursor) : null;
        const rows = await tx.sql<Row>(
          `select ${COLUMNS} from recordings
            where deleted_at is null and ($1::timestamptz is null or (created_at, id) > ($1::timestamptz, $2::uuid))
            order by created_at, id limit $3`,
          [after?.createdAt ?? null, after?.id ?? null, limit + 1],
        );
        const page = rows.slice(0, limit);
        const last = page[page.length - 1];
        return {
          items: page.map(strip),
          next_cursor: rows.length > limit && last ? encodeCursor({ createdAt: last.cursor_ts, id: last.id }) : null,
        };
      }),
  );

  app.get(
    '/api/v1/recordings/:id',
    { schema: { tags: ['recordings'], summary: 'Get a recording', params, response: { 200: recordingSchema, ...commonErrors } } },
    async (request) => inRequestTx(deps, request, (tx) => load(tx, pathId(request.params.id))),
  );

  app.post(
    '/api/v1/recordings',
    { schema: { tags: ['recordings'], summary: 'Create a recording', body: createSchema, response: { 201: recordingSchema, ...commonErrors, 409: problemSchema, 422: problemSchema } } },
    async (request, reply) => {
      const created = await inRequestTx(
        deps,
        request,
        async (tx) => {
          requireRole(tx, 'write');
          const b = request.body;
          const { isrc, workId } = await checkInput(tx, b);
          const [row] = await tx.sql<{ id: string }>(
            `insert into recordings (publisher_id, owner_user_id, work_id, title, isrc, duration_ms, release_date, created_by, updated_by)
             values ($1, $2, $3, $4, $5, $6, $7::date, $8, $8) returning id`,
            [tx.ctx.publisherId, ownerFor(tx, b.owner_user_id, true) ?? null, workId ?? null, b.title, isrc ?? null, b.duration_ms ?? null, b.release_date ?? null, tx.ctx.userId],
          );
          return load(tx, row!.id);
        },
        { mutating: true },
      );
      return reply.status(201).header('location', location('recordings', created.id)).send(created);
    },
  );

  app.patch(
    '/api/v1/recordings/:id',
    { schema: { tags: ['recordings'], summary: 'Update a recording (partial)', params, body: updateSchema, response: { 200: recordingSchema, ...commonErrors, 409: problemSchema, 422: problemSchema } } },
    async (request) =>
      inRequestTx(
        deps,
        request,
        async (tx) => {
          requireRole(tx, 'write');
          const id = pathId(request.params.id);
          const b = request.body;
          const { isrc, workId } = await checkInput(tx, b);
          const set = setList(
            { title: b.title, isrc, work_id: workId, duration_ms: b.duration_ms, release_date: b.release_date, owner_user_id: ownerFor(tx, b.owner_user_id, false) },
            3,
          );
          const rows = await tx.sql(
            `update recordings set ${set.sql ? set.sql + ', ' : ''}updated_at = now(), updated_by = $2
              where id = $1 and deleted_at is null returning id`,
            [id, tx.ctx.userId, ...set.params],
          );
          if (rows.length === 0) throw problem.notFound('No such recording.');
          return load(tx, id);
        },
        { mutating: true },
      ),
  );

  app.delete(
    '/api/v1/recordings/:id',
    { schema: { tags: ['recordings'], summary: 'Soft-delete a recording', params, response: { 204: z.null(), ...commonErrors } } },
    async (request, reply) => {
      await inRequestTx(
        deps,
        request,
        async (tx) => {
          requireRole(tx, 'delete');
          const rows = await tx.sql(
            `update recordings set deleted_at = now(), updated_at = now(), updated_by = $2 where id = $1 and deleted_at is null returning id`,
            [pathId(request.params.id), tx.ctx.userId],
          );
          if (rows.length === 0) throw problem.notFound('No such recording.');
        },
        { mutating: true },
      );
      return reply.status(204).send(null);
    },
  );
};
