/**
 * Publishers (docs/CONTRACTS.md, "Administration"): create (system admins), list (system admins
 * all, with filters; anyone else the publishers they belong to), read, change, archive, the status
 * a system admin sets (active, trial, suspended, archived), settings and branding.
 *
 * Routes under /api/v1/publishers/{publisherId} run in that publisher's context (the sidecar checked
 * the route rule's permission on `publisher:{publisherId}`); each handler checks the permission
 * again, and RLS plus the publishers guard (migration 0006) check it a third time.
 */
import { raw } from '@mikro-orm/core';
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { problem } from '../../errors.ts';
import { isoTimestamp } from '../../db/base.entity.ts';
import { inRequestTx, location, type RouteDeps } from '../common/http.ts';
import { inPublisher } from './in-publisher.ts';
import { KEYSET_ORDER, afterCursor, listQuerySchema, pageSchema } from '../common/pagination.ts';
import { commonErrors, problemSchema, timestamp } from '../common/schemas.ts';
import { BUSINESS_MODELS, PUBLISHER_STATUSES, PUBLISHER_TYPES, Publisher } from './publisher.entity.ts';
import { brandingSchema, currentSettings, parseDocument, settingsSchema, type Settings } from './settings.ts';
import { recordAudit } from '../audit/audit.service.ts';

const tags = ['publishers'];
const params = z.object({ publisherId: z.string() });
const slug = z.string().regex(/^[a-z0-9-]{2,63}$/, 'lower-case letters, digits and dashes, 2–63 characters');

export const publisherSchema = z.object({
  id: z.uuid(),
  name: z.string(),
  slug: z.string(),
  type: z.enum(PUBLISHER_TYPES),
  business_model: z.enum(BUSINESS_MODELS),
  status: z.enum(PUBLISHER_STATUSES),
  created_at: timestamp,
  updated_at: timestamp,
}).meta({ id: 'Publisher' });

/** A publisher → its API form. */
export function presentPublisher(p: Publisher): z.infer<typeof publisherSchema> {
  return {
    id: p.id,
    name: p.name,
    slug: p.slug,
    type: p.type,
    business_model: p.businessModel,
    status: p.deletedAt ? 'archived' : p.status,
    created_at: isoTimestamp(p.createdAt),
    updated_at: isoTimestamp(p.updatedAt),
  };
}

/** Fastify plugin: the publisher routes. */
export const publishersRoutes: FastifyPluginAsyncZod<RouteDeps> = async (app, deps) => {
  app.post(
    '/api/v1/publishers',
    {
      schema: {
        tags,
        operationId: 'createPublisher',
        summary: 'Create a publisher (system admins)',
        description: 'A new publisher has no members: invite its first admin with POST /api/v1/publishers/{id}/users/invite.',
        body: z.strictObject({
          name: z.string().trim().min(1).max(200),
          slug,
          type: z.enum(PUBLISHER_TYPES),
          business_model: z.enum(BUSINESS_MODELS).default('traditional'),
          status: z.enum(['active', 'trial']).default('active'),
          settings: z.record(z.string(), z.unknown()).optional().describe('see GET /api/v1/publishers/{id}/settings'),
        }),
        response: { 201: publisherSchema, ...commonErrors, 409: problemSchema, 422: problemSchema },
      },
    },
    async (request, reply) => {
      const b = request.body;
      const settings = parseDocument(settingsSchema, b.settings ?? {});
      const created = await inRequestTx(
        deps,
        request,
        async (tx) => {
          if (!tx.ctx.isSystemAdmin) throw problem.forbidden('Only a system admin creates publishers.');
          const p = tx.em.create(Publisher, { name: b.name, slug: b.slug, type: b.type, businessModel: b.business_model, status: b.status, settings });
          await tx.em.flush();
          await tx.em.refresh(p);
          const created = presentPublisher(p);
          // the first row of the new publisher's own chain
          await recordAudit(tx, { action: 'publisher.created', objectType: 'publisher', objectId: p.id, after: created, publisherId: p.id });
          return created;
        },
        { publisher: 'none', mutating: true },
      );
      return reply.status(201).header('location', location('publishers', created.id)).send(created);
    },
  );

  app.get(
    '/api/v1/publishers',
    {
      schema: {
        tags,
        operationId: 'listPublishers',
        summary: 'List publishers',
        description: 'A system admin sees every publisher (archived ones with `status=archived`); anyone else the publishers they belong to. Keyset pagination.',
        querystring: listQuerySchema.extend({ type: z.enum(PUBLISHER_TYPES).optional(), status: z.enum(PUBLISHER_STATUSES).optional() }),
        response: { 200: pageSchema(publisherSchema), ...commonErrors },
      },
    },
    async (request) =>
      inRequestTx(
        deps,
        request,
        async (tx) => {
          const { limit, cursor, type, status } = request.query;
          const where: Record<string, unknown> = {};
          if (type) where.type = type;
          if (status === 'archived') where.deletedAt = { $ne: null };
          else if (status) where.status = status;
          const page = await tx.em.findByCursor(Publisher, {
            where,
            first: limit,
            after: afterCursor(cursor),
            includeCount: false,
            orderBy: KEYSET_ORDER,
            ...(status === 'archived' ? { filters: { notDeleted: false } } : {}),
          });
          return { items: page.items.map(presentPublisher), next_cursor: page.hasNextPage ? page.endCursor : null };
        },
        { publisher: 'none' },
      ),
  );

  app.get(
    '/api/v1/publishers/:publisherId',
    { schema: { description: 'Any member (publishers:read); a system admin also sees archived publishers.', tags, operationId: 'getPublisher', summary: 'Get a publisher', params, response: { 200: publisherSchema, ...commonErrors } } },
    async (request) => inPublisher(deps, request, request.params.publisherId, 'publishers:read', async (_tx, p) => presentPublisher(p), { includeArchived: true }),
  );

  app.put(
    '/api/v1/publishers/:publisherId',
    {
      schema: {
        tags,
        operationId: 'updatePublisher',
        summary: "Change a publisher's profile",
        description: 'The name needs `publishers:update`; slug, type and business model are a system admin\'s to change.',
        params,
        body: z.strictObject({
          name: z.string().trim().min(1).max(200),
          slug: slug.optional(),
          type: z.enum(PUBLISHER_TYPES).optional(),
          business_model: z.enum(BUSINESS_MODELS).optional(),
        }),
        response: { 200: publisherSchema, ...commonErrors, 409: problemSchema },
      },
    },
    async (request) =>
      inPublisher(
        deps,
        request,
        request.params.publisherId,
        'publishers:update',
        async (tx, p) => {
          const b = request.body;
          const structural = (b.slug && b.slug !== p.slug) || (b.type && b.type !== p.type) || (b.business_model && b.business_model !== p.businessModel);
          if (structural && !tx.ctx.isSystemAdmin) throw problem.forbidden("Slug, type and business model are a system admin's to change.");
          const before = presentPublisher(p);
          tx.em.assign(p, { name: b.name, ...(b.slug ? { slug: b.slug } : {}), ...(b.type ? { type: b.type } : {}), ...(b.business_model ? { businessModel: b.business_model } : {}) });
          await tx.em.flush();
          await tx.em.refresh(p);
          const after = presentPublisher(p);
          await recordAudit(tx, { action: 'publisher.updated', objectType: 'publisher', objectId: p.id, before, after });
          return after;
        },
        { mutating: true },
      ),
  );

  app.delete(
    '/api/v1/publishers/:publisherId',
    {
      schema: {
        tags,
        operationId: 'archivePublisher',
        summary: 'Archive a publisher',
        description: 'Status `archived` and soft-deleted: its members are refused everything at once, on every sidecar. A system admin restores it with PUT …/status.',
        params,
        response: { 204: z.null(), ...commonErrors },
      },
    },
    async (request, reply) => {
      await inPublisher(
        deps,
        request,
        request.params.publisherId,
        'publishers:archive',
        async (tx, p) => {
          const before = presentPublisher(p);
          tx.em.assign(p, { status: 'archived', deletedAt: raw('now()') } as never);
          await tx.em.flush();
          await recordAudit(tx, { action: 'publisher.archived', objectType: 'publisher', objectId: p.id, before: { status: before.status }, after: { status: 'archived' } });
        },
        { mutating: true },
      );
      return reply.status(204).send(null);
    },
  );

  app.put(
    '/api/v1/publishers/:publisherId/status',
    {
      schema: {
        tags,
        operationId: 'setPublisherStatus',
        summary: "Set a publisher's status (system admins)",
        description:
          '`suspended` and `archived` shut every member out (system admins excepted) — in OpenFGA, so every sidecar and /ext-authz refuse them within a second; `active` and `trial` let them back in (and restore an archived publisher).',
        params,
        body: z.strictObject({ status: z.enum(PUBLISHER_STATUSES) }),
        response: { 200: publisherSchema, ...commonErrors },
      },
    },
    async (request) =>
      inPublisher(
        deps,
        request,
        request.params.publisherId,
        null,
        async (tx, p) => {
          if (!tx.ctx.isSystemAdmin) throw problem.forbidden("Only a system admin sets a publisher's status.");
          const status = request.body.status;
          const before = presentPublisher(p);
          tx.em.assign(p, { status, deletedAt: status === 'archived' ? (p.deletedAt ?? raw('now()')) : null } as never);
          await tx.em.flush();
          await tx.em.refresh(p, { filters: { notDeleted: false } });
          const after = presentPublisher(p);
          await recordAudit(tx, { action: 'publisher.status_changed', objectType: 'publisher', objectId: p.id, before, after });
          return after;
        },
        { mutating: true, includeArchived: true },
      ),
  );

  const settingsResponse = settingsSchema.extend({ session_max_age_s: z.number().int().nullable() });
  // an unset session limit is answered as null (the platform's)
  const presentSettings = (s: Settings) => ({ ...s, session_max_age_s: s.session_max_age_s ?? null });
  app.get(
    '/api/v1/publishers/:publisherId/settings',
    { schema: { description: 'Every documented key with its value or default (publisher_settings:read).', tags, operationId: 'getPublisherSettings', summary: "A publisher's settings (defaults filled in)", params, response: { 200: settingsResponse, ...commonErrors } } },
    async (request) =>
      inPublisher(deps, request, request.params.publisherId, 'publisher_settings:read', async (_tx, p) => {
        return presentSettings(currentSettings(p.settings));
      }),
  );

  app.put(
    '/api/v1/publishers/:publisherId/settings',
    {
      schema: {
        tags,
        operationId: 'putPublisherSettings',
        summary: "Replace a publisher's settings",
        description: 'Keys left out take their defaults; an unknown key is a 422 naming it.',
        params,
        body: settingsSchema,
        response: { 200: settingsResponse, ...commonErrors, 422: problemSchema },
      },
      // the body is checked in the handler, so that every problem (unknown keys too) is one 422
      attachValidation: true,
    },
    async (request) => {
      const settings = parseDocument(settingsSchema, request.body);
      return inPublisher(
        deps,
        request,
        request.params.publisherId,
        'publisher_settings:update',
        async (tx, p) => {
          const before = currentSettings(p.settings);
          p.settings = settings;
          await tx.em.flush();
          await recordAudit(tx, { action: 'publisher_settings.updated', objectType: 'publisher_settings', objectId: p.id, before, after: settings });
          return presentSettings(settings);
        },
        { mutating: true },
      );
    },
  );

  app.get(
    '/api/v1/publishers/:publisherId/branding',
    { schema: { description: 'What members see of the publisher: name shown, logo, colours (branding:read).', tags, operationId: 'getPublisherBranding', summary: "A publisher's branding", params, response: { 200: brandingSchema, ...commonErrors } } },
    async (request) => inPublisher(deps, request, request.params.publisherId, 'branding:read', async (_tx, p) => brandingSchema.catch({}).parse(p.branding ?? {})),
  );

  app.put(
    '/api/v1/publishers/:publisherId/branding',
    {
      schema: {
        tags,
        operationId: 'putPublisherBranding',
        summary: "Replace a publisher's branding",
        description: 'Logo URLs must be https://; colours are hex (#rrggbb). An unknown key is a 422 naming it.',
        params,
        body: brandingSchema,
        response: { 200: brandingSchema, ...commonErrors, 422: problemSchema },
      },
      attachValidation: true,
    },
    async (request) => {
      const branding = parseDocument(brandingSchema, request.body);
      return inPublisher(
        deps,
        request,
        request.params.publisherId,
        'branding:update',
        async (tx, p) => {
          const before = brandingSchema.catch({}).parse(p.branding ?? {});
          p.branding = branding;
          await tx.em.flush();
          await recordAudit(tx, { action: 'publisher_branding.updated', objectType: 'publisher_branding', objectId: p.id, before, after: branding });
          return branding;
        },
        { mutating: true },
      );
    },
  );
};
