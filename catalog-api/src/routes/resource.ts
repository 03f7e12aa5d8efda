/**
 * The route shape the catalog resources (works, songwriters, recordings) share: under
 * `/api/v1/<table>` a keyset-paginated list, get, create, partial update and soft delete, each in
 * the request transaction, with the role checks, the `owner_user_id` rule, the audit columns and the
 * 404s in one place. A resource file supplies its own columns, schemas and field rules.
 */
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { problem } from '../errors.ts';
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
  pageSchema,
  pathId,
  problemSchema,
  requireRole,
  timestamp,
  type RouteDeps,
} from './common.ts';
import { insertList, setList } from './sql.ts';

/** Response schema of a catalog row: key, publisher and owner, then the resource's `own` fields, then the audit columns. */
export function catalogItemSchema<S extends z.ZodRawShape>(own: S) {
  return z
    .object({ id: z.uuid(), publisher_id: z.uuid(), owner_user_id: z.uuid().nullable() })
    .extend(own)
    .extend({ created_at: timestamp, updated_at: timestamp, created_by: z.uuid().nullable(), updated_by: z.uuid().nullable() });
}

/** Select list around a resource's own columns; `cursor_ts` is the keyset position. */
function selectList(own: string): string {
  return `id, publisher_id, owner_user_id, ${own},
  ${isoSql('created_at')} as created_at, ${isoSql('updated_at')} as updated_at, created_by, updated_by,
  ${isoSql('created_at')} as cursor_ts`;
}

/** What every catalog create/update body carries besides the resource's own fields. */
type OwnedBody = { owner_user_id?: string | null };

/** What a resource file supplies to {@link catalogResource}. */
export type CatalogResource<Body extends OwnedBody, Row extends { id: string }, Item extends { id: string }> = {
  /** The table; also the path segment (`/api/v1/<table>`) and the OpenAPI tag. */
  table: 'works' | 'songwriters' | 'recordings';
  /** Singular, for summaries and 404 details ("No such work."). */
  noun: string;
  /** The resource's own columns in the select list (key, publisher, owner and audit columns are added). */
  columns: string;
  /** The POST body; PATCH accepts any non-empty subset of it. */
  body: z.ZodObject & z.ZodType<Body>;
  /** The response item. */
  item: z.ZodType<Item>;
  /** OpenAPI summary of PATCH, when "Update a <noun> (partial)" does not say enough. */
  updateSummary?: string;
  /**
   * Check a POST or PATCH body (ProblemError 422 listing every problem) and return the values of
   * the resource's own columns; `undefined` = not given (PATCH keeps the column, POST stores null).
   */
  values: (tx: RequestTx, body: Partial<Body>) => Promise<Record<string, unknown>>;
  /** Selected rows (without `cursor_ts`) → response items. */
  present: (tx: RequestTx, rows: Row[]) => Promise<Item[]>;
  /** Runs after a successful insert or update, in the same transaction (works: the split list). */
  afterWrite?: (tx: RequestTx, id: string, body: Partial<Body>) => Promise<void>;
};

/** Fastify plugin with the five routes of the catalog resource `spec` (paths are absolute). */
export function catalogResource<Body extends OwnedBody, Row extends { id: string }, Item extends { id: string }>(
  spec: CatalogResource<Body, Row, Item>,
): FastifyPluginAsyncZod<RouteDeps> {
  const { table, noun } = spec;
  const collection = `/api/v1/${table}`;
  const tags = [table];
  const params = z.object({ id: z.string() });
  // Widened for Fastify's reply typing, which cannot resolve a generic schema; `present` is what ties items to `Item`.
  const itemSchema: z.ZodType = spec.item;
  const updateSchema = spec.body.partial().refine((b) => Object.keys(b).length > 0, 'send at least one field');
  const select = `select ${selectList(spec.columns)} from ${table}`;
  const notFound = () => problem.notFound(`No such ${noun}.`);

  type Selected = Row & { cursor_ts: string };
  const present = (tx: RequestTx, rows: Selected[]) => spec.present(tx, rows.map(({ cursor_ts: _c, ...row }) => row as unknown as Row));

  async function load(tx: RequestTx, id: string): Promise<Item> {
    const rows = await tx.sql<Selected>(`${select} where id = $1 and deleted_at is null`, [id]);
    const [item] = await present(tx, rows);
    if (!item) throw notFound();
    return item;
  }

  return async (app, deps) => {
    app.get(
      collection,
      { schema: { tags, summary: `List ${table} (keyset pagination)`, querystring: listQuerySchema, response: { 200: pageSchema(itemSchema), ...commonErrors } } },
      async (request) =>
        inRequestTx(deps, request, async (tx) => {
          const { limit, cursor } = request.query;
          const after = cursor ? decodeCursor(cursor) : null;
          const rows = await tx.sql<Selected>(
            `${select}
              where deleted_at is null and ($1::timestamptz is null or (created_at, id) > ($1::timestamptz, $2::uuid))
              order by created_at, id limit $3`,
            [after?.createdAt ?? null, after?.id ?? null, limit + 1],
          );
          const page = rows.slice(0, limit);
          const last = page[page.length - 1];
          return {
            items: await present(tx, page),
            next_cursor: rows.length > limit && last ? encodeCursor({ createdAt: last.cursor_ts, id: last.id }) : null,
          };
        }),
    );

    app.get(
      `${collection}/:id`,
      { schema: { tags, summary: `Get a ${noun}`, params, response: { 200: itemSchema, ...commonErrors } } },
      async (request) => inRequestTx(deps, request, (tx) => load(tx, pathId(request.params.id))),
    );

    app.post(
      collection,
      { schema: { tags, summary: `Create a ${noun}`, body: spec.body, response: { 201: itemSchema, ...commonErrors, 409: problemSchema, 422: problemSchema } } },
      async (request, reply) => {
        const created = await inRequestTx(
          deps,
          request,
          async (tx) => {
            requireRole(tx, 'write');
            const body = request.body as Body;
            const own = await spec.values(tx, body);
            const { userId, publisherId } = tx.ctx;
            const insert = insertList({ publisher_id: publisherId, owner_user_id: ownerFor(tx, body.owner_user_id, true), ...own, created_by: userId, updated_by: userId });
            const [row] = await tx.sql<{ id: string }>(`insert into ${table} (${insert.columns}) values (${insert.placeholders}) returning id`, insert.params);
            await spec.afterWrite?.(tx, row!.id, body);
            return load(tx, row!.id);
          },
          { mutating: true },
        );
        return reply.status(201).header('location', location(table, created.id)).send(created);
      },
    );

    app.patch(
      `${collection}/:id`,
      {
        schema: {
          tags,
          summary: spec.updateSummary ?? `Update a ${noun} (partial)`,
          params,
          body: updateSchema,
          response: { 200: itemSchema, ...commonErrors, 409: problemSchema, 422: problemSchema },
        },
      },
      async (request) =>
        inRequestTx(
          deps,
          request,
          async (tx) => {
            requireRole(tx, 'write');
            const id = pathId(request.params.id);
            const body = request.body as Partial<Body>;
            const own = await spec.values(tx, body);
            const set = setList({ ...own, owner_user_id: ownerFor(tx, body.owner_user_id, false) }, 3);
            const rows = await tx.sql(
              `update ${table} set ${set.sql ? set.sql + ', ' : ''}updated_at = now(), updated_by = $2
                where id = $1 and deleted_at is null returning id`,
              [id, tx.ctx.userId, ...set.params],
            );
            if (rows.length === 0) throw notFound();
            await spec.afterWrite?.(tx, id, body);
            return load(tx, id);
          },
          { mutating: true },
        ),
    );

    app.delete(
      `${collection}/:id`,
      { schema: { tags, summary: `Soft-delete a ${noun}`, params, response: { 204: z.null(), ...commonErrors } } },
      async (request, reply) => {
        await inRequestTx(
          deps,
          request,
          async (tx) => {
            requireRole(tx, 'delete');
            const rows = await tx.sql(
              `update ${table} set deleted_at = now(), updated_at = now(), updated_by = $2 where id = $1 and deleted_at is null returning id`,
              [pathId(request.params.id), tx.ctx.userId],
            );
            if (rows.length === 0) throw notFound();
          },
          { mutating: true },
        );
        return reply.status(204).send(null);
      },
    );
  };
}
