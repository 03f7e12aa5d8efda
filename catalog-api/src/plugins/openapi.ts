/**
 * The OpenAPI 3.1 document (@fastify/swagger from the routes' zod schemas), its UI at /docs
 * (@fastify/swagger-ui) and `GET /api/v1/openapi.json`. Register before the routes.
 */
import fp from 'fastify-plugin';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import { jsonSchemaTransform, jsonSchemaTransformObject } from 'fastify-type-provider-zod';
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
  { name: 'accounts', description: "A publisher's account: plan, seats, billing, usage" },
  { name: 'works', description: 'Musical works and their songwriter splits' },
  { name: 'songwriters', description: 'Songwriters' },
  { name: 'recordings', description: 'Recordings of works' },
  { name: 'audit', description: 'The append-only audit log: every write, who made it, what changed' },
  { name: 'authz', description: "The security admin's toolkit: explain decisions, who can / what can, a user's access, the decision log, the authorization model's versions, shadow runs, deploy and rollback" },
];

type OpenApiDocument = { components?: { schemas?: Record<string, unknown> } } & Record<string, unknown>;

/**
 * Drop component schemas nothing refers to. The zod transform emits an input and an output
 * component for every registered schema, whether a route uses both or not.
 */
export function withoutUnusedSchemas(doc: OpenApiDocument): OpenApiDocument {
  const schemas = doc.components?.schemas ?? {};
  const refsIn = (v: unknown) => [...JSON.stringify(v).matchAll(/"#\/components\/schemas\/([^"]+)"/g)].map((m) => m[1]!);
  const used = new Set(refsIn({ ...doc, components: { ...doc.components, schemas: {} } }));
  for (let queue = [...used]; queue.length; ) {
    for (const ref of refsIn(schemas[queue.pop()!])) if (!used.has(ref)) used.add(ref) && queue.push(ref);
  }
  return { ...doc, components: { ...doc.components, schemas: Object.fromEntries(Object.entries(schemas).filter(([name]) => used.has(name))) } };
}

/** Options of {@link openApiPlugin}. */
export type OpenApiOptions = {
  /** the public URL clients call: the sidecar in front of the API */
  serverUrl: string;
};

/** Fastify plugin: the document, the UI and the JSON route. */
export const openApiPlugin = fp(
  async (app: FastifyInstance, opts: OpenApiOptions) => {
    await app.register(swagger, {
      openapi: {
        openapi: '3.1.0',
        info: {
          title: 'Catalog API',
          version: '1.0.0',
          description:
            'Works, songwriters and recordings of a publisher, and the administration of publishers, users, roles and API clients. ' +
            'Reached through the authorization sidecar, which authenticates the caller (Bearer access token), decides with OpenFGA and ' +
            'forwards a signed identity assertion; catalog routes need the publisher context in X-Publisher-Id. Errors are application/problem+json (RFC 9457).',
          contact: { name: 'Music Publishing platform team', url: 'https://music-publishing.example/support' },
          license: { name: 'Proprietary', url: 'https://music-publishing.example/terms' },
        },
        servers: [{ url: opts.serverUrl, description: 'the authorization sidecar' }],
        components: { securitySchemes: { identityAssertion: { type: 'apiKey', in: 'header', name: 'X-Identity-Assertion' } } },
        tags: OPENAPI_TAGS,
        security: [{ identityAssertion: [] }],
      },
      transform: jsonSchemaTransform,
      // schemas registered with an id (zod `.meta({ id })`) become components, referenced by $ref
      transformObject: (doc) => withoutUnusedSchemas(jsonSchemaTransformObject(doc) as OpenApiDocument) as ReturnType<typeof jsonSchemaTransformObject>,
    });
    await app.register(swaggerUi, { routePrefix: '/docs' });
    app.get('/api/v1/openapi.json', { config: { public: true }, schema: { hide: true, response: { 200: z.any() } } }, async () => app.swagger());
  },
  { name: 'catalog-openapi' },
);
