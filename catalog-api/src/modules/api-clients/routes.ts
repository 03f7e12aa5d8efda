/**
 * A publisher's API clients (`api_clients:manage`): register (the secret is shown once), list,
 * rotate the secret, revoke. A client acts as a `users` row of kind `api_client` that is a member
 * of the publisher with role `api_user` (catalog read, create, update; no administration), so
 * OpenFGA checks it like any user; it gets access tokens from POST /api/v1/auth/token (OAuth 2.0
 * client credentials, client-credentials.ts).
 *
 * Rotating or revoking ends every session the client holds, so its tokens are refused by every
 * sidecar within a second; revoking also removes its membership (OpenFGA then holds nothing for it).
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { problem } from '../../errors.ts';
import { isoTimestamp } from '../../db/base.entity.ts';
import type { AuthDeps } from '../auth/deps.ts';
import { digest } from '../auth/secrets.ts';
import { revokeAndAnnounce } from '../auth/sessions.service.ts';
import { location, pathId, type RouteDeps } from '../common/http.ts';
import { commonErrors, problemSchema, timestamp } from '../common/schemas.ts';
import { inPublisher } from '../publishers/in-publisher.ts';
import { Membership } from '../users/membership.entity.ts';
import { User } from '../users/user.entity.ts';
import { ApiClient } from './api-client.entity.ts';
import { recordAudit } from '../audit/audit.service.ts';

/** What the routes need: the app pool, and the sign-in service (session revocation). */
export type ApiClientsRouteDeps = RouteDeps & { auth: AuthDeps };

const tags = ['api-clients'];
const params = z.object({ publisherId: z.string() });
const clientParams = params.extend({ clientId: z.string() });

const clientSchema = z.object({
  client_id: z.uuid(),
  publisher_id: z.uuid(),
  name: z.string(),
  created_at: timestamp,
  rotated_at: z.string().nullable(),
  revoked_at: z.string().nullable(),
  last_used_at: z.string().nullable(),
});
const withSecret = clientSchema.extend({ client_secret: z.string().describe('shown once: store it now') });

const present = (c: ApiClient) => ({
  client_id: c.id,
  publisher_id: c.publisherId,
  name: c.name,
  created_at: isoTimestamp(c.createdAt),
  rotated_at: c.rotatedAt?.toISOString() ?? null,
  revoked_at: c.revokedAt?.toISOString() ?? null,
  last_used_at: c.lastUsedAt?.toISOString() ?? null,
});

/** A new client secret: 256 random bits, base64url (43 characters). */
const newSecret = () => randomBytes(32).toString('base64url');

/** Fastify plugin: /api/v1/publishers/{publisherId}/api-clients. */
export const apiClientsRoutes: FastifyPluginAsyncZod<ApiClientsRouteDeps> = async (app, deps) => {
  app.get(
    '/api/v1/publishers/:publisherId/api-clients',
    { schema: { description: 'Without secrets (api_clients:manage).', tags, operationId: 'listApiClients', summary: "The publisher's API clients", params, response: { 200: z.object({ items: z.array(clientSchema) }), ...commonErrors } } },
    async (request) =>
      inPublisher(deps, request, request.params.publisherId, 'api_clients:manage', async (tx) => ({
        items: (await tx.em.find(ApiClient, {}, { orderBy: { createdAt: 'asc', id: 'asc' } })).map(present),
      })),
  );

  app.post(
    '/api/v1/publishers/:publisherId/api-clients',
    {
      schema: {
        tags,
        operationId: 'createApiClient',
        summary: 'Register an API client',
        description: 'Returns the client id and secret (shown once). The client gets tokens from POST /api/v1/auth/token with grant_type=client_credentials.',
        params,
        body: z.strictObject({ name: z.string().trim().min(1).max(100) }),
        response: { 201: withSecret, ...commonErrors },
      },
    },
    async (request, reply) => {
      const secret = newSecret();
      const created = await inPublisher(
        deps,
        request,
        request.params.publisherId,
        'api_clients:manage',
        async (tx, p) => {
          const subject = tx.em.create(User, { kind: 'api_client', email: null, displayName: request.body.name, createdBy: tx.ctx.userId });
          await tx.em.flush();
          const client = tx.em.create(ApiClient, { id: subject.id, publisherId: p.id, name: request.body.name, secretHash: digest(secret), createdBy: tx.ctx.userId });
          await tx.em.flush();
          tx.em.create(Membership, { publisherId: p.id, userId: subject.id, role: 'api_user' });
          await tx.em.flush();
          await tx.em.refresh(client);
          await recordAudit(tx, { action: 'api_client.created', objectType: 'api_client', objectId: client.id, after: { name: client.name } });
          return present(client);
        },
        { mutating: true },
      );
      return reply
        .status(201)
        .header('cache-control', 'no-store')
        .header('location', location(`publishers/${created.publisher_id}/api-clients`, created.client_id))
        .send({ ...created, client_secret: secret });
    },
  );

  app.post(
    '/api/v1/publishers/:publisherId/api-clients/:clientId/rotate',
    {
      schema: {
        tags,
        operationId: 'rotateApiClientSecret',
        summary: "Rotate an API client's secret",
        description: 'The old secret stops working at once and the tokens issued with it are refused within a second.',
        params: clientParams,
        response: { 200: withSecret, ...commonErrors, 409: problemSchema },
      },
    },
    async (request, reply) => {
      const secret = newSecret();
      const id = pathId(request.params.clientId);
      const rotated = await inPublisher(
        deps,
        request,
        request.params.publisherId,
        'api_clients:manage',
        async (tx) => {
          const client = await tx.em.findOne(ApiClient, { id });
          if (!client) throw problem.notFound('No such API client.');
          if (client.revokedAt) throw problem.conflict('The API client is revoked.');
          tx.em.assign(client, { secretHash: digest(secret), rotatedAt: new Date() });
          await tx.em.flush();
          await recordAudit(tx, { action: 'api_client.secret_rotated', objectType: 'api_client', objectId: id, after: { rotated: true } });
          return present(client);
        },
        { mutating: true },
      );
      await revokeAndAnnounce(deps.auth, { userId: id }, 'api_client_rotated');
      return reply.header('cache-control', 'no-store').send({ ...rotated, client_secret: secret });
    },
  );

  app.delete(
    '/api/v1/publishers/:publisherId/api-clients/:clientId',
    { schema: { tags, operationId: 'revokeApiClient', summary: 'Revoke an API client', description: 'Its tokens are refused within a second.', params: clientParams, response: { 204: z.null(), ...commonErrors } } },
    async (request, reply) => {
      const id = pathId(request.params.clientId);
      await inPublisher(
        deps,
        request,
        request.params.publisherId,
        'api_clients:manage',
        async (tx) => {
          const client = await tx.em.findOne(ApiClient, { id, revokedAt: null });
          if (!client) throw problem.notFound('No such API client.');
          client.revokedAt = new Date();
          await tx.em.nativeDelete(Membership, { publisherId: client.publisherId, userId: id });
          await tx.em.flush();
          await recordAudit(tx, { action: 'api_client.revoked', objectType: 'api_client', objectId: id, before: { revoked: false }, after: { revoked: true } });
        },
        { mutating: true },
      );
      await revokeAndAnnounce(deps.auth, { userId: id }, 'api_client_revoked');
      return reply.status(204).send(null);
    },
  );
};
