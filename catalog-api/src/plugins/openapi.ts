/**
 * The OpenAPI 3.1 document (@fastify/swagger from the routes' zod schemas), its UI at /docs
 * (@fastify/swagger-ui) and `GET /api/v1/openapi.json`. Register before the routes.
 */
import fp from 'fastify-plugin';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import { jsonSchemaTransform } from 'fastify-type-provider-zod';
import { z } from 'zod';

/** The tags of the document: every operation names one of these. */
export const OPENAPI_TAGS = [
  { name: 'auth', description: 'Sign-in, sessions, password and email flows, the issuer metadata and keys' },
  { name: 'users', description: 'Users: the caller, and user administration' },
  { name: 'publishers', description: 'Publishers: profile, status, settings, branding' },
  { name: 'members', description: "A publisher's members and invitations" },
  { name: 'departments', description: 'Departments of a publisher' },
  { name: 'roles', description: 'Permissions, system roles and custom roles' },
  { name: 'api-clients', description: "A publisher's API clients (OAuth 2.0 client credentials)" },
  { name: 'directory', description: "Publishers' Active Directory configuration (system admins)" },
  { name: 'works', description: 'Musical works and their songwriter splits' },
  { name: 'songwriters', description: 'Songwriters' },
  { name: 'recordings', description: 'Recordings of works' },
];

/** Fastify plugin: the document, the UI and the JSON route. */
export const openApiPlugin = fp(
  async (app: FastifyInstance) => {
    await app.register(swagger, {
      openapi: {
        openapi: '3.1.0',
        info: { title: 'Catalog API', version: '1.0.0', description: 'Works, songwriters and recordings of a publisher. Reached through the authorization sidecar.' },
        components: { securitySchemes: { identityAssertion: { type: 'apiKey', in: 'header', name: 'X-Identity-Assertion' } } },
        tags: OPENAPI_TAGS,
        security: [{ identityAssertion: [] }],
      },
      transform: jsonSchemaTransform,
    });
    await app.register(swaggerUi, { routePrefix: '/docs' });
    app.get('/api/v1/openapi.json', { config: { public: true }, schema: { hide: true, response: { 200: z.any() } } }, async () => app.swagger());
  },
  { name: 'catalog-openapi' },
);
