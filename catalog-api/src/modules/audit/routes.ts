/**
 * Reading the audit log (docs/CONTRACTS.md, "Audit log"):
 * - GET /api/v1/audit and GET /api/v1/audit/export.csv — the rows of the request's publisher
 *   (X-Publisher-Id), for holders of `audit:read` there (publisher admins; system admins in any
 *   publisher's context). The sidecar decides `audit_read` on `publisher:{publisher}`;
 * - GET /api/v1/platform/audit and GET /api/v1/platform/audit/export.csv — every row of every chain
 *   (the platform chain of sign-in events and user administration too), for system admins (the
 *   sidecar decides `can_administer` on `system:platform`; the request runs with scope `platform`).
 *
 * Filters: actor, object type and id, action, time from (inclusive) / to (exclusive); the platform
 * routes also by publisher (`platform` = the platform chain). Newest first, keyset pages over
 * (occurred_at, id) like the catalog lists. The handlers check the permission again, and RLS on
 * `audit_events` is the wall behind both: a publisher context shows only its publisher's rows.
 *
 * The CSV export streams the same filter (RFC 4180, csv-stringify), one page per request
 * transaction, so a slow reader never holds a transaction open.
 */
import { once } from 'node:events';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { stringify } from 'csv-stringify';
import { z } from 'zod';
import { problem } from '../../errors.ts';
import { isoTimestamp } from '../../db/base.entity.ts';
import { requirePermission, type RequestTx } from '../../db/context.ts';
import { inRequestTx, type RouteDeps } from '../common/http.ts';
import { afterCursor, listQuerySchema, pageSchema } from '../common/pagination.ts';
import { commonErrors, timestamp } from '../common/schemas.ts';
import { ACTOR_KINDS, AuditEvent } from './audit-event.entity.ts';
import { AUDIT_ACTIONS, AUDITED_FIELDS } from './audit.service.ts';

const tags = ['audit'];

/** The keyset order of the log: newest first (`id` breaks ties), as MikroORM's findByCursor takes it. */
export const AUDIT_ORDER = { occurredAt: 'desc', id: 'desc' } as const;

/** Rows per page of the CSV export (one request transaction each). */
export const EXPORT_PAGE_SIZE = 500;

const instant = z.iso.datetime({ offset: true, local: false });
const filterSchema = z.object({
  actor_id: z.uuid().optional().describe('rows of this actor (a user or an API client)'),
  object_type: z.enum(Object.keys(AUDITED_FIELDS) as [keyof typeof AUDITED_FIELDS, ...(keyof typeof AUDITED_FIELDS)[]]).optional(),
  object_id: z.uuid().optional().describe('with object_type'),
  action: z.enum(AUDIT_ACTIONS).optional(),
  from: instant.optional().describe('rows at or after this time (ISO 8601 with offset)'),
  to: instant.optional().describe('rows before this time (ISO 8601 with offset)'),
});
const platformFilterSchema = filterSchema.extend({
  publisher_id: z.union([z.uuid(), z.literal('platform')]).optional().describe('one chain: a publisher, or `platform` for rows without one'),
});
type Filter = z.infer<typeof platformFilterSchema>;

const eventSchema = z
  .object({
    id: z.uuid(),
    occurred_at: timestamp,
    publisher_id: z.uuid().nullable().describe('the chain; null = the platform chain'),
    chain_seq: z.number().int().describe('1, 2, 3 … within the chain'),
    actor_id: z.uuid().nullable(),
    actor_kind: z.enum(ACTOR_KINDS),
    action: z.string().describe('<object>.<verb>, e.g. work.updated'),
    object_type: z.string(),
    object_id: z.uuid().nullable(),
    before: z.record(z.string(), z.unknown()).nullable().describe('the changed fields before (null for a create)'),
    after: z.record(z.string(), z.unknown()).nullable().describe('the changed fields after (null for a delete)'),
    request_id: z.string().nullable(),
    client_ip: z.string().nullable(),
    user_agent: z.string().nullable(),
    prev_hash: z.string().nullable(),
    hash: z.string().describe('SHA-256 (hex) over the canonical text, which includes prev_hash'),
  })
  .meta({ id: 'AuditEvent' });
type EventView = z.infer<typeof eventSchema>;

/** A row → its API form. */
function present(e: AuditEvent): EventView {
  return {
    id: e.id,
    occurred_at: isoTimestamp(e.occurredAt!),
    publisher_id: e.publisherId ?? null,
    chain_seq: Number(e.chainSeq),
    actor_id: e.actorId ?? null,
    actor_kind: e.actorKind,
    action: e.action,
    object_type: e.objectType,
    object_id: e.objectId ?? null,
    before: e.before ?? null,
    after: e.after ?? null,
    request_id: e.requestId ?? null,
    client_ip: e.clientIp ?? null,
    user_agent: e.userAgent ?? null,
    prev_hash: e.prevHash ?? null,
    hash: e.hash!,
  };
}

/** The query's filter as a MikroORM condition. @throws ProblemError 400 for an object id without its type */
function whereOf(f: Filter): Record<string, unknown> {
  if (f.object_id && !f.object_type) throw problem.badRequest('object_id needs object_type.', [{ field: 'query.object_id', reason: 'give object_type too' }]);
  const where: Record<string, unknown> = {};
  if (f.actor_id) where.actorId = f.actor_id.toLowerCase();
  if (f.object_type) where.objectType = f.object_type;
  if (f.object_id) where.objectId = f.object_id.toLowerCase();
  if (f.action) where.action = f.action;
  if (f.from || f.to) where.occurredAt = { ...(f.from ? { $gte: f.from } : {}), ...(f.to ? { $lt: f.to } : {}) };
  if (f.publisher_id) where.publisherId = f.publisher_id === 'platform' ? null : f.publisher_id.toLowerCase();
  return where;
}

/** One keyset page of the log as the request context shows it. */
async function page(tx: RequestTx, where: Record<string, unknown>, first: number, after: string | undefined) {
  const p = await tx.em.findByCursor(AuditEvent, { where, first, after, includeCount: false, orderBy: AUDIT_ORDER });
  return { items: p.items.map(present), next_cursor: p.hasNextPage ? p.endCursor : null };
}

/** The CSV columns, in order (before/after as JSON text). */
export const CSV_COLUMNS = [
  'id', 'occurred_at', 'publisher_id', 'chain_seq', 'actor_id', 'actor_kind', 'action', 'object_type', 'object_id',
  'before', 'after', 'request_id', 'client_ip', 'user_agent', 'prev_hash', 'hash',
] as const;

const csvRecord = (e: EventView) => ({ ...e, before: e.before === null ? null : JSON.stringify(e.before), after: e.after === null ? null : JSON.stringify(e.after) });

/**
 * Stream the whole filter as CSV: the first page is read before anything is sent, so a refusal
 * (403, 400) is still a problem response; a failure after that ends the stream early, and so does
 * a client that goes away (the stream closes; no page is read for it any more). Cells that a
 * spreadsheet would run as a formula (=, +, -, @, tab, CR first) are prefixed with a quote
 * (csv-stringify `escape_formulas`, OWASP "CSV injection"); the chain hashes cover the stored values.
 */
async function sendCsv(reply: FastifyReply, readPage: (after: string | undefined) => Promise<{ items: EventView[]; next_cursor: string | null }>): Promise<FastifyReply> {
  let current = await readPage(undefined);
  const csv = stringify({ header: true, columns: [...CSV_COLUMNS], record_delimiter: '\r\n', escape_formulas: true });
  const closed = new AbortController();
  csv.once('close', () => closed.abort());
  reply.header('content-type', 'text/csv; charset=utf-8').header('content-disposition', 'attachment; filename="audit.csv"').header('cache-control', 'no-store');
  void reply.send(csv);
  try {
    for (;;) {
      for (const e of current.items) if (!csv.write(csvRecord(e))) await once(csv, 'drain', { signal: closed.signal });
      if (!current.next_cursor || closed.signal.aborted) break;
      current = await readPage(current.next_cursor);
    }
    csv.end();
  } catch (err) {
    if (closed.signal.aborted) return reply; // the client went away
    reply.log.warn({ err: { message: (err as Error).message } }, 'audit export ended early');
    csv.destroy(err as Error);
  }
  return reply;
}

/** The export's 200 response: a CSV document (errors stay problem+json). */
const csvResponse = { description: 'RFC 4180 CSV with a header row', content: { 'text/csv': { schema: z.string() } } };

const listDescription = (who: string) =>
  `${who} Newest first; \`next_cursor\` fetches the next page. \`before\`/\`after\` hold the changed fields only (never secrets).`;

/** Fastify plugin: the audit log routes. */
export const auditRoutes: FastifyPluginAsyncZod<RouteDeps> = async (app, deps) => {
  const headers = z.object({ 'x-publisher-id': z.uuid().optional().describe('the publisher whose log to read') });

  /** The publisher routes' transaction: audit:read in the request's publisher context. */
  const inPublisherLog = <T>(request: FastifyRequest, fn: (tx: RequestTx) => Promise<T>) =>
    inRequestTx(deps, request, async (tx) => {
      requirePermission(tx, 'audit:read');
      return fn(tx);
    });
  /** The platform routes' transaction: a system admin, no publisher context (scope platform). */
  const inPlatformLog = <T>(request: FastifyRequest, fn: (tx: RequestTx) => Promise<T>) =>
    inRequestTx(
      deps,
      request,
      async (tx) => {
        if (!tx.ctx.isSystemAdmin) throw problem.forbidden('Only a system admin reads the whole audit log.');
        return fn(tx);
      },
      { publisher: 'none' },
    );

  app.get(
    '/api/v1/audit',
    {
      schema: {
        tags,
        operationId: 'listAuditEvents',
        summary: "The publisher's audit log (keyset pagination)",
        description: listDescription("Every write in the publisher's context (audit:read: publisher admins, system admins)."),
        headers,
        querystring: listQuerySchema.extend(filterSchema.shape),
        response: { 200: pageSchema(eventSchema), ...commonErrors },
      },
    },
    async (request) => {
      const { limit, cursor, ...filter } = request.query;
      const where = whereOf(filter);
      return inPublisherLog(request, (tx) => page(tx, where, limit, afterCursor(cursor)));
    },
  );

  app.get(
    '/api/v1/audit/export.csv',
    {
      schema: {
        tags,
        operationId: 'exportAuditEvents',
        summary: "The publisher's audit log as CSV",
        description: 'The same filter as GET /api/v1/audit, every matching row, newest first, as text/csv (RFC 4180; before/after as JSON text), streamed.',
        headers,
        querystring: filterSchema,
        response: { 200: csvResponse, ...commonErrors },
      },
    },
    async (request, reply) => {
      const where = whereOf(request.query);
      return sendCsv(reply, (after) => inPublisherLog(request, (tx) => page(tx, where, EXPORT_PAGE_SIZE, after)));
    },
  );

  app.get(
    '/api/v1/platform/audit',
    {
      schema: {
        tags,
        operationId: 'listPlatformAuditEvents',
        summary: 'The whole audit log (system admins; keyset pagination)',
        description: listDescription('Every chain: each publisher\'s and the platform\'s (sign-in events, user administration, profiles).'),
        querystring: listQuerySchema.extend(platformFilterSchema.shape),
        response: { 200: pageSchema(eventSchema), ...commonErrors },
      },
    },
    async (request) => {
      const { limit, cursor, ...filter } = request.query;
      const where = whereOf(filter);
      return inPlatformLog(request, (tx) => page(tx, where, limit, afterCursor(cursor)));
    },
  );

  app.get(
    '/api/v1/platform/audit/export.csv',
    {
      schema: {
        tags,
        operationId: 'exportPlatformAuditEvents',
        summary: 'The whole audit log as CSV (system admins)',
        description: 'The same filter as GET /api/v1/platform/audit, every matching row, newest first, as text/csv (RFC 4180), streamed.',
        querystring: platformFilterSchema,
        response: { 200: csvResponse, ...commonErrors },
      },
    },
    async (request, reply) => {
      const where = whereOf(request.query);
      return sendCsv(reply, (after) => inPlatformLog(request, (tx) => page(tx, where, EXPORT_PAGE_SIZE, after)));
    },
  );
};
