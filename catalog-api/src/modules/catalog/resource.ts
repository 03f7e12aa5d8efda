/**
 * The route shape the catalog resources (works, songwriters, recordings) share: under
 * `/api/v1/<collection>` a keyset-paginated list (`em.findByCursor`), get, create (`em.create`),
 * partial update (`em.assign`) and soft delete (`nativeUpdate` of `deleted_at`), each in the request
 * transaction, with the role checks, the `owner_user_id` rule, the audit columns and the 404s in one
 * place. A resource file supplies its entity, schemas, field rules and presenter.
 *
 * Reads never filter by publisher: RLS decides what the request context sees, and the entities'
 * `notDeleted` filter hides soft-deleted rows. Lists add the caller's owner or department as a
 * planner hint only (`scopeHint`; migration 0013).
 */
import { raw, type EntityClass } from '@mikro-orm/core';
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { problem, type FieldError } from '../../errors.ts';
import { requirePermission, type RequestTx } from '../../db/context.ts';
import { isoTimestamp } from '../../db/base.entity.ts';
import { Department } from '../publishers/department.entity.ts';
import { Membership } from '../users/membership.entity.ts';
import { inRequestTx, location, pathId, type RouteDeps } from '../common/http.ts';
import { KEYSET_ORDER, afterCursor, listQuerySchema, pageSchema } from '../common/pagination.ts';
import { commonErrors, problemSchema, timestamp } from '../common/schemas.ts';
import type { IdentifierResult } from './identifiers.ts';
import { recordAudit } from '../audit/audit.service.ts';

/** The audit log's object type of each collection. */
const AUDIT_OBJECT = { works: 'work', songwriters: 'songwriter', recordings: 'recording' } as const;

/** The columns every catalog entity has (db/base.entity.ts `catalogColumns`). */
export type CatalogRow = {
  id: string;
  publisherId: string;
  ownerUserId?: string | null;
  departmentId?: string | null;
  createdAt: string;
  updatedAt: string;
  createdBy?: string | null;
  updatedBy?: string | null;
  deletedAt?: Date | null;
};

/** Response schema of a catalog row: key, publisher and owner, then the resource's `own` fields, then the audit columns. */
export function catalogItemSchema<S extends z.ZodRawShape>(own: S) {
  return z
    .object({ id: z.uuid(), publisher_id: z.uuid(), owner_user_id: z.uuid().nullable(), department_id: z.uuid().nullable() })
    .extend(own)
    .extend({ created_at: timestamp, updated_at: timestamp, created_by: z.uuid().nullable(), updated_by: z.uuid().nullable() });
}

/** The key, owner and audit fields of a response item, from an entity. */
export function catalogItemBase(row: CatalogRow) {
  return {
    id: row.id,
    publisher_id: row.publisherId,
    owner_user_id: row.ownerUserId ?? null,
    department_id: row.departmentId ?? null,
    created_at: isoTimestamp(row.createdAt),
    updated_at: isoTimestamp(row.updatedAt),
    created_by: row.createdBy ?? null,
    updated_by: row.updatedBy ?? null,
  };
}

/** What every catalog create/update body carries besides the resource's own fields. */
type OwnedBody = { owner_user_id?: string | null; department_id?: string | null };

/** The fields every catalog body accepts besides the resource's own (`owner_user_id`, `department_id`). */
export const placementFields = {
  owner_user_id: z.uuid().nullish().describe('a member of the publisher who owns the row (creators always own what they create)'),
  department_id: z.uuid().nullish().describe("the row's department (members scoped to a department create in theirs)"),
};

/** What a resource file supplies to {@link catalogResource}. */
export type CatalogResource<Row extends CatalogRow, Body extends OwnedBody, Item extends { id: string }> = {
  /** The entity. */
  entity: EntityClass<Row>;
  /** The path segment (`/api/v1/<collection>`) and the OpenAPI tag. */
  collection: 'works' | 'songwriters' | 'recordings';
  /** Singular, for summaries and 404 details ("No such work."). */
  noun: string;
  /** The POST body; PATCH accepts any non-empty subset of it. */
  body: z.ZodObject & z.ZodType<Body>;
  /** The response item. */
  item: z.ZodType<Item>;
  /** OpenAPI summary of PATCH, when "Update a <noun> (partial)" does not say enough. */
  updateSummary?: string;
  /**
   * Check a POST or PATCH body (ProblemError 422 listing every problem) and return the entity's own
   * property values; `undefined` = not given (PATCH keeps the value, POST stores null).
   */
  values: (tx: RequestTx, body: Partial<Body>) => Promise<Partial<Row>>;
  /** Loaded entities → response items (in order). */
  present: (tx: RequestTx, rows: Row[]) => Promise<Item[]>;
  /** Runs after a successful insert or update, in the same transaction (works: the split list). */
  afterWrite?: (tx: RequestTx, id: string, body: Partial<Body>) => Promise<void>;
};

/**
 * Resolve the `department_id` for a new or updated row: a member scoped to a department creates in
 * theirs and cannot move rows out of it; publisher-wide members may name any live department of the
 * publisher (422 otherwise); creators' rows have none.
 * @returns the department to store (undefined: PATCH keeps the current one)
 * @throws ProblemError 403 (another department than one's own), 422 (no such department)
 */
export async function departmentFor(tx: RequestTx, requested: string | null | undefined, creating: boolean): Promise<string | null | undefined> {
  const own = tx.ctx.departmentId;
  if (tx.ctx.scope === 'department') {
    if (requested !== undefined && requested?.toLowerCase() !== own) throw problem.forbidden('You create and keep rows in your own department.');
    return creating ? own : undefined;
  }
  if (tx.ctx.scope === 'own') {
    if (requested) throw problem.forbidden('Creators do not assign departments.');
    return creating ? null : undefined;
  }
  if (requested === undefined) return creating ? null : undefined;
  if (requested === null) return null;
  const id = requested.toLowerCase();
  if (!(await tx.em.findOne(Department, { id }, { fields: ['id'] }))) throw problem.validation([{ field: 'department_id', reason: 'no such department' }]);
  return id;
}

/**
 * Resolve the `owner_user_id` for a new or updated row: creators (scope `own`) always own what they
 * create and may not hand it to someone else; anyone else may name a member of the row's publisher.
 * An unknown user and a user of another publisher get the same answer (422 `owner_user_id`: no such
 * member), so the field tells nothing about who exists elsewhere.
 * @returns the owner to store (undefined: PATCH keeps the current one)
 * @throws ProblemError 403 when a creator names another owner, 422 when the owner is no member here
 */
export async function ownerFor(tx: RequestTx, requested: string | null | undefined, creating: boolean): Promise<string | null | undefined> {
  if (tx.ctx.scope === 'own') {
    if (requested === null || (requested !== undefined && requested.toLowerCase() !== tx.ctx.userId)) {
      throw problem.forbidden('Creators can only own their own rows.');
    }
    return creating || requested !== undefined ? tx.ctx.userId : undefined;
  }
  if (requested === undefined) return creating ? null : undefined;
  if (requested === null) return null;
  const owner = requested.toLowerCase();
  // RLS shows the context publisher's memberships (scope publisher): a foreign user looks like nobody.
  const member = await tx.em.findOne(Membership, { publisherId: tx.ctx.publisherId!, userId: owner });
  if (!member) throw problem.validation([{ field: 'owner_user_id', reason: 'no such member of this publisher' }]);
  return owner;
}

/**
 * Normalise an optional identifier of a request body with `parse`; an invalid one adds
 * `{ field, reason }` to `errors` instead of throwing, so that one 422 lists every problem.
 * @param reasons the reason text per failure (`IDENTIFIER_REASONS.<kind>`)
 * @returns the normalised value; `raw` itself when null or undefined; undefined when invalid
 */
export function identifierValue(
  raw: string | null | undefined,
  field: string,
  parse: (input: string) => IdentifierResult,
  reasons: Record<'format' | 'check_digit', string>,
  errors: FieldError[],
): string | null | undefined {
  if (raw === undefined || raw === null) return raw;
  const r = parse(raw);
  if (!r.ok) {
    errors.push({ field, reason: reasons[r.reason] });
    return undefined;
  }
  return r.value;
}

/**
 * The list's planner hint: under scope `own` the caller's own rows (`owner_user_id`), under scope
 * `department` the department's (`department_id`), else nothing. RLS already limits the rows to
 * exactly these; the policy's test sits inside an OR the planner cannot use, so without the hint a
 * creator's page reads every row of the publisher. With it the page is an index range of
 * `(publisher_id, owner_user_id, created_at, id)` (migration 0013) or
 * `(publisher_id, department_id, created_at, id)` (0006). It never widens what RLS shows.
 */
function scopeHint(tx: RequestTx): Record<string, string> {
  if (tx.ctx.scope === 'own') return { ownerUserId: tx.ctx.userId };
  if (tx.ctx.scope === 'department' && tx.ctx.departmentId) return { departmentId: tx.ctx.departmentId };
  return {};
}

/** Drop `undefined` entries (PATCH: not given = keep). */
function defined<T extends object>(values: T): Partial<T> {
  return Object.fromEntries(Object.entries(values).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Fastify plugin with the five routes of the catalog resource `spec` (paths are absolute). */
export function catalogResource<Row extends CatalogRow, Body extends OwnedBody, Item extends { id: string }>(
  spec: CatalogResource<Row, Body, Item>,
): FastifyPluginAsyncZod<RouteDeps> {
  const { collection, noun, entity } = spec;
  const path = `/api/v1/${collection}`;
  const tags = [collection];
  const params = z.object({ id: z.string() });
  // The publisher context: the sidecar requires it on catalog routes and forwards it.
  const headers = z.object({ 'x-publisher-id': z.uuid().optional().describe('the publisher context (X-Tenant-Id is its deprecated alias)') });
  // Widened for Fastify's reply typing, which cannot resolve a generic schema; `present` is what ties items to `Item`.
  const itemSchema: z.ZodType = spec.item;
  const updateSchema = spec.body.partial().refine((b) => Object.keys(b).length > 0, 'send at least one field');
  const notFound = () => problem.notFound(`No such ${noun}.`);
  const Noun = noun[0]!.toUpperCase() + noun.slice(1);
  const Collection = collection[0]!.toUpperCase() + collection.slice(1);
  const objectType = AUDIT_OBJECT[collection];


  /** One row as the database has it now (after triggers), or 404. */
  async function load(tx: RequestTx, id: string): Promise<Item> {
    const row = await tx.em.findOne(entity, { id } as never, { refresh: true });
    if (!row) throw notFound();
    const [item] = await spec.present(tx, [row as Row]);
    return item!;
  }

  return async (app, deps) => {
    app.get(
      path,
      {
        schema: {
          tags,
          operationId: `list${Collection}`,
          summary: `List ${collection} (keyset pagination)`,
          description: `Oldest first; \`next_cursor\` fetches the next page. RLS decides which rows the publisher context shows: all of them, a creator's own, or a department's.`,
          headers,
          querystring: listQuerySchema,
          response: { 200: pageSchema(itemSchema), ...commonErrors },
        },
      },
      async (request) =>
        inRequestTx(deps, request, async (tx) => {
          const { limit, cursor } = request.query;
          // read-only: the page's entities stay out of the transaction's identity map, so the
          // commit has nothing to change-set check
          const page = await tx.em.findByCursor(entity, { where: scopeHint(tx) as never, first: limit, after: afterCursor(cursor), includeCount: false, orderBy: KEYSET_ORDER as never, disableIdentityMap: true });
          return { items: await spec.present(tx, page.items as Row[]), next_cursor: page.hasNextPage ? page.endCursor : null };
        }),
    );

    app.get(
      `${path}/:id`,
      { schema: { tags, operationId: `get${Noun}`, summary: `Get a ${noun}`, description: `404 for a ${noun} the publisher context does not show (another publisher's looks like none at all).`, headers, params, response: { 200: itemSchema, ...commonErrors } } },
      async (request) => inRequestTx(deps, request, (tx) => load(tx, pathId(request.params.id))),
    );

    app.post(
      path,
      {
        schema: {
          tags,
          operationId: `create${Noun}`,
          summary: `Create a ${noun}`,
          description: `Needs ${collection}:create. Creators own what they create; members scoped to a department create in theirs. 422 lists every invalid field.`,
          headers,
          body: spec.body,
          response: { 201: itemSchema, ...commonErrors, 409: problemSchema, 422: problemSchema },
        },
      },
      async (request, reply) => {
        const created = await inRequestTx(
          deps,
          request,
          async (tx) => {
            requirePermission(tx, `${collection}:create`);
            const body = request.body as Body;
            const own = await spec.values(tx, body);
            const { userId, publisherId } = tx.ctx;
            const row = tx.em.create(entity, {
              ...defined(own),
              publisherId: publisherId!,
              ownerUserId: await ownerFor(tx, body.owner_user_id, true),
              departmentId: await departmentFor(tx, body.department_id, true),
              createdBy: userId,
              updatedBy: userId,
            } as never);
            await tx.em.flush();
            await spec.afterWrite?.(tx, row.id, body);
            const item = await load(tx, row.id);
            await recordAudit(tx, { action: `${objectType}.created`, objectType, objectId: row.id, after: item });
            return item;
          },
          { mutating: true },
        );
        return reply.status(201).header('location', location(collection, created.id)).send(created);
      },
    );

    app.patch(
      `${path}/:id`,
      {
        schema: {
          tags,
          operationId: `update${Noun}`,
          summary: spec.updateSummary ?? `Update a ${noun} (partial)`,
          description: `Needs ${collection}:update on this row. Fields left out keep their values.`,
          headers,
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
            requirePermission(tx, `${collection}:update`);
            const id = pathId(request.params.id);
            const found = await tx.em.findOne(entity, { id } as never);
            if (!found) throw notFound();
            // the audit row's "before"; then start from an empty identity map, so that afterWrite
            // can replace rows with the same keys
            const [before] = await spec.present(tx, [found as Row]);
            tx.em.clear();
            const row = (await tx.em.findOne(entity, { id } as never))!;
            const body = request.body as Partial<Body>;
            const own = await spec.values(tx, body);
            // updated_at moves on every PATCH, also when only a work's splits change
            const placement = { ownerUserId: await ownerFor(tx, body.owner_user_id, false), departmentId: await departmentFor(tx, body.department_id, false) };
            tx.em.assign(row, { ...defined({ ...own, ...placement }), updatedBy: tx.ctx.userId, updatedAt: raw('now()') } as never);
            await tx.em.flush();
            await spec.afterWrite?.(tx, id, body);
            const item = await load(tx, id);
            await recordAudit(tx, { action: `${objectType}.updated`, objectType, objectId: id, before, after: item });
            return item;
          },
          { mutating: true },
        ),
    );

    app.delete(
      `${path}/:id`,
      { schema: { tags, operationId: `delete${Noun}`, summary: `Soft-delete a ${noun}`, description: `Needs ${collection}:delete (publisher-wide roles only). The row stays in the database with deleted_at set.`, headers, params, response: { 204: z.null(), ...commonErrors } } },
      async (request, reply) => {
        await inRequestTx(
          deps,
          request,
          async (tx) => {
            requirePermission(tx, `${collection}:delete`);
            const id = pathId(request.params.id);
            const row = await tx.em.findOne(entity, { id } as never);
            if (!row) throw notFound();
            const [before] = await spec.present(tx, [row as Row]);
            const n = await tx.em.nativeUpdate(entity, { id } as never, { deletedAt: raw('now()'), updatedBy: tx.ctx.userId } as never);
            if (n === 0) throw notFound();
            await recordAudit(tx, { action: `${objectType}.deleted`, objectType, objectId: id, before });
          },
          { mutating: true },
        );
        return reply.status(204).send(null);
      },
    );
  };
}
