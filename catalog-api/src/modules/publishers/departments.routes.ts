/**
 * Departments of a publisher (professional publishers): list (any member), create, rename and
 * delete (`departments:manage`). A department can be deleted only while no member and no live
 * catalog row belongs to it (409 otherwise: move them first).
 */
import { raw } from '@mikro-orm/core';
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { problem } from '../../errors.ts';
import { isoTimestamp } from '../../db/base.entity.ts';
import { Membership } from '../users/membership.entity.ts';
import { Work } from '../catalog/work.entity.ts';
import { Songwriter } from '../catalog/songwriter.entity.ts';
import { Recording } from '../catalog/recording.entity.ts';
import { location, pathId, type RouteDeps } from '../common/http.ts';
import { commonErrors, problemSchema, timestamp } from '../common/schemas.ts';
import { Department } from './department.entity.ts';
import { inPublisher } from './in-publisher.ts';
import { recordAudit } from '../audit/audit.service.ts';

const tags = ['departments'];
const params = z.object({ publisherId: z.string() });
const itemParams = params.extend({ departmentId: z.string() });
const body = z.strictObject({ name: z.string().trim().min(1).max(100), description: z.string().max(500).default('') });

const departmentSchema = z.object({ id: z.uuid(), publisher_id: z.uuid(), name: z.string(), description: z.string(), created_at: timestamp, updated_at: timestamp });
const present = (d: Department) => ({
  id: d.id,
  publisher_id: d.publisherId,
  name: d.name,
  description: d.description,
  created_at: isoTimestamp(d.createdAt),
  updated_at: isoTimestamp(d.updatedAt),
});

/** Fastify plugin: /api/v1/publishers/{publisherId}/departments. */
export const departmentsRoutes: FastifyPluginAsyncZod<RouteDeps> = async (app, deps) => {
  app.get(
    '/api/v1/publishers/:publisherId/departments',
    { schema: { description: 'Live departments, by name (publishers:read).', tags, operationId: 'listDepartments', summary: "A publisher's departments", params, response: { 200: z.object({ items: z.array(departmentSchema) }), ...commonErrors } } },
    async (request) =>
      inPublisher(deps, request, request.params.publisherId, 'publishers:read', async (tx) => ({
        items: (await tx.em.find(Department, {}, { orderBy: { name: 'asc', id: 'asc' } })).map(present),
      })),
  );

  app.post(
    '/api/v1/publishers/:publisherId/departments',
    { schema: { description: 'Names are unique within the publisher, case-insensitively (departments:manage).', tags, operationId: 'createDepartment', summary: 'Create a department', params, body, response: { 201: departmentSchema, ...commonErrors, 409: problemSchema } } },
    async (request, reply) => {
      const created = await inPublisher(
        deps,
        request,
        request.params.publisherId,
        'departments:manage',
        async (tx, p) => {
          const d = tx.em.create(Department, { publisherId: p.id, name: request.body.name, description: request.body.description });
          await tx.em.flush();
          await tx.em.refresh(d);
          const created = present(d);
          await recordAudit(tx, { action: 'department.created', objectType: 'department', objectId: d.id, after: created });
          return created;
        },
        { mutating: true },
      );
      return reply.status(201).header('location', location(`publishers/${created.publisher_id}/departments`, created.id)).send(created);
    },
  );

  app.put(
    '/api/v1/publishers/:publisherId/departments/:departmentId',
    { schema: { description: 'departments:manage.', tags, operationId: 'updateDepartment', summary: 'Rename or describe a department', params: itemParams, body, response: { 200: departmentSchema, ...commonErrors, 409: problemSchema } } },
    async (request) =>
      inPublisher(
        deps,
        request,
        request.params.publisherId,
        'departments:manage',
        async (tx) => {
          const d = await tx.em.findOne(Department, { id: pathId(request.params.departmentId) });
          if (!d) throw problem.notFound('No such department.');
          const before = present(d);
          tx.em.assign(d, { name: request.body.name, description: request.body.description });
          await tx.em.flush();
          await tx.em.refresh(d);
          const after = present(d);
          await recordAudit(tx, { action: 'department.updated', objectType: 'department', objectId: d.id, before, after });
          return after;
        },
        { mutating: true },
      ),
  );

  app.delete(
    '/api/v1/publishers/:publisherId/departments/:departmentId',
    {
      schema: {
        tags,
        operationId: 'deleteDepartment',
        summary: 'Delete an empty department',
        description: '409 while members or live catalog rows belong to it.',
        params: itemParams,
        response: { 204: z.null(), ...commonErrors, 409: problemSchema },
      },
    },
    async (request, reply) => {
      await inPublisher(
        deps,
        request,
        request.params.publisherId,
        'departments:manage',
        async (tx) => {
          const id = pathId(request.params.departmentId);
          const d = await tx.em.findOne(Department, { id });
          if (!d) throw problem.notFound('No such department.');
          const members = await tx.em.count(Membership, { departmentId: id });
          const rows = (await tx.em.count(Work, { departmentId: id })) + (await tx.em.count(Songwriter, { departmentId: id })) + (await tx.em.count(Recording, { departmentId: id }));
          if (members + rows > 0) throw problem.conflict(`The department still has ${members} member(s) and ${rows} catalog row(s); move them first.`);
          const before = present(d);
          tx.em.assign(d, { deletedAt: raw('now()') } as never);
          await tx.em.flush();
          await recordAudit(tx, { action: 'department.deleted', objectType: 'department', objectId: id, before });
        },
        { mutating: true },
      );
      return reply.status(204).send(null);
    },
  );
};
