/**
 * /api/v1/songwriters — songwriters (interested parties) of a publisher. IPI name numbers are
 * validated (11 digits, mod-101 check, see domain/identifiers.ts). RLS isolates reads.
 */
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { problem, type FieldError } from '../errors.ts';
import { IDENTIFIER_REASONS, parseIpiNameNumber } from '../domain/identifiers.ts';
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

const name = z.string().trim().min(1).max(200);

const createSchema = z.strictObject({
  first_name: name.nullish(),
  last_name: name,
  ipi_name_number: z.string().max(32).nullish(),
  pro: z.string().trim().min(1).max(64).nullish().describe('performing rights organisation, e.g. ASCAP'),
  owner_user_id: z.uuid().nullish(),
});
const updateSchema = createSchema.partial().refine((b) => Object.keys(b).length > 0, 'send at least one field');

const songwriterSchema = z.object({
  id: z.uuid(),
  publisher_id: z.uuid(),
  owner_user_id: z.uuid().nullable(),
  first_name: z.string().nullable(),
  last_name: z.string(),
  ipi_name_number: z.string().nullable(),
  pro: z.string().nullable(),
  created_at: timestamp,
  updated_at: timestamp,
  created_by: z.uuid().nullable(),
  updated_by: z.uuid().nullable(),
});
type Songwriter = z.infer<typeof songwriterSchema>;
type Row = Songwriter & { cursor_ts: string };

const COLUMNS = `id, publisher_id, owner_user_id, first_name, last_name, ipi_name_number, pro,
  ${isoSql('created_at')} as created_at, ${isoSql('updated_at')} as updated_at, created_by, updated_by,
  ${isoSql('created_at')} as cursor_ts`;

function strip({ cursor_ts: _c, ...r }: Row): Songwriter {
  return r;
}

async function load(tx: RequestTx, id: string): Promise<Songwriter> {
  const [row] = await tx.sql<Row>(`select ${COLUMNS} from songwriters where id = $1 and deleted_at is null`, [id]);
  if (!row) throw problem.notFound('No such songwriter.');
  return strip(row);
}

function ipiValue(raw: string | null | undefined, errors: FieldError[]): string | null | undefined {
  if (raw === undefined || raw === null) return raw;
  const r = parseIpiNameNumber(raw);
  if (!r.ok) {
    errors.push({ field: 'ipi_name_number', reason: IDENTIFIER_REASONS.ipi[r.reason] });
    return undefined;
  }
  return r.value;
}

/** Fastify plugin: the songwriter routes. */
export const songwritersRoutes: FastifyPluginAsyncZod<RouteDeps> = async (app, deps) => {
  const params = z.object({ id: z.string() });

  app.get(
    '/api/v1/songwriters',
    { schema: { tags: ['songwriters'], summary: 'List songwriters (keyset pagination)', querystring: listQuerySchema, response: { 200: pageSchema(songwriterSchema), ...commonErrors } } },
    async (request) =>
      inRequestTx(deps, request, async (tx) => {
        const { limit, cursor } = request.query;
        const after = cursor ? decodeCursor(cursor) : null;
        const rows = await tx.sql<Row>(
          `select ${COLUMNS} from songwriters
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
    '/api/v1/songwriters/:id',
    { schema: { tags: ['songwriters'], summary: 'Get a songwriter', params, response: { 200: songwriterSchema, ...commonErrors } } },
    async (request) => inRequestTx(deps, request, (tx) => load(tx, pathId(request.params.id))),
  );

  app.post(
    '/api/v1/songwriters',
    { schema: { tags: ['songwriters'], summary: 'Create a songwriter', body: createSchema, response: { 201: songwriterSchema, ...commonErrors, 409: problemSchema, 422: problemSchema } } },
    async (request, reply) => {
      const created = await inRequestTx(
        deps,
        request,
        async (tx) => {
          requireRole(tx, 'write');
          const b = request.body;
          const errors: FieldError[] = [];
          const ipi = ipiValue(b.ipi_name_number, errors);
          if (errors.length) throw problem.validation(errors);
          const [row] = await tx.sql<{ id: string }>(
            `insert into songwriters (publisher_id, owner_user_id, first_name, last_name, ipi_name_number, pro, created_by, updated_by)
             values ($1, $2, $3, $4, $5, $6, $7, $7) returning id`,
            [tx.ctx.publisherId, ownerFor(tx, b.owner_user_id, true) ?? null, b.first_name ?? null, b.last_name, ipi ?? null, b.pro ?? null, tx.ctx.userId],
          );
          return load(tx, row!.id);
        },
        { mutating: true },
      );
      return reply.status(201).header('location', location('songwriters', created.id)).send(created);
    },
  );

  app.patch(
    '/api/v1/songwriters/:id',
    { schema: { tags: ['songwriters'], summary: 'Update a songwriter (partial)', params, body: updateSchema, response: { 200: songwriterSchema, ...commonErrors, 409: problemSchema, 422: problemSchema } } },
    async (request) =>
      inRequestTx(
        deps,
        request,
        async (tx) => {
          requireRole(tx, 'write');
          const id = pathId(request.params.id);
          const b = request.body;
          const errors: FieldError[] = [];
          const ipi = ipiValue(b.ipi_name_number, errors);
          if (errors.length) throw problem.validation(errors);
          const set = setList(
            { first_name: b.first_name, last_name: b.last_name, ipi_name_number: ipi, pro: b.pro, owner_user_id: ownerFor(tx, b.owner_user_id, false) },
            3,
          );
          const rows = await tx.sql(
            `update songwriters set ${set.sql ? set.sql + ', ' : ''}updated_at = now(), updated_by = $2
              where id = $1 and deleted_at is null returning id`,
            [id, tx.ctx.userId, ...set.params],
          );
          if (rows.length === 0) throw problem.notFound('No such songwriter.');
          return load(tx, id);
        },
        { mutating: true },
      ),
  );

  app.delete(
    '/api/v1/songwriters/:id',
    { schema: { tags: ['songwriters'], summary: 'Soft-delete a songwriter', params, response: { 204: z.null(), ...commonErrors } } },
    async (request, reply) => {
      await inRequestTx(
        deps,
        request,
        async (tx) => {
          requireRole(tx, 'delete');
          const rows = await tx.sql(
            `update songwriters set deleted_at = now(), updated_at = now(), updated_by = $2 where id = $1 and deleted_at is null returning id`,
            [pathId(request.params.id), tx.ctx.userId],
          );
          if (rows.length === 0) throw problem.notFound('No such songwriter.');
        },
        { mutating: true },
      );
      return reply.status(204).send(null);
    },
  );
};
