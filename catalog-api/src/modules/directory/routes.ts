/**
 * A publisher's Active Directory configuration, for system admins (the sidecar checks `admin` on
 * `system:platform`; RLS on `directory_configs` checks it again):
 * GET / PUT / DELETE /api/v1/publishers/{publisherId}/directory and POST …/directory/test (connect
 * and bind as the service account, report the outcome). The bind password never passes through the
 * API: `bind_secret_ref` names where it is (`env:NAME` or `file:/absolute/path`).
 */
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { problem } from '../../errors.ts';
import { inRequestTx, pathId, type RouteDeps } from '../common/http.ts';
import { commonErrors, problemSchema } from '../common/schemas.ts';
import { STAFF_ROLES } from '../users/membership.entity.ts';
import { DirectoryConfig, LOGIN_ATTRIBUTES } from './directory-config.entity.ts';
import { DirectoryError, type DirectoryGateway } from './gateway.ts';
import { recordAudit } from '../audit/audit.service.ts';

/** What the routes need. */
export type DirectoryRouteDeps = RouteDeps & { directory: DirectoryGateway };

const dn = z.string().trim().min(3).max(1024);
const domain = z
  .string()
  .trim()
  .toLowerCase()
  .regex(/^(?=.{1,253}$)([a-z0-9](-?[a-z0-9])*\.)+[a-z]{2,63}$/, 'must be a domain name');

const configBody = z
  .strictObject({
    url: z.string().regex(/^ldaps?:\/\/[^/?#\s]+\/?$/, 'must be ldaps://host[:port] or ldap://host[:port]'),
    start_tls: z.boolean().default(false),
    ca_file: z.string().startsWith('/', 'must be an absolute path').nullable().default(null),
    tls_server_name: z.string().min(1).max(253).nullable().default(null),
    base_dn: dn,
    bind_dn: dn,
    bind_secret_ref: z.string().regex(/^(env:[A-Za-z_][A-Za-z0-9_]*|file:\/.+)$/, 'must be env:NAME or file:/absolute/path'),
    login_attribute: z.enum(LOGIN_ATTRIBUTES).default('userPrincipalName'),
    email_domains: z.array(domain).min(1).max(50),
    group_role_map: z.array(z.strictObject({ group_dn: dn, role: z.enum(STAFF_ROLES) })).max(200),
    connect_timeout_ms: z.number().int().min(100).max(60_000).default(2000),
    operation_timeout_ms: z.number().int().min(100).max(60_000).default(3000),
    enabled: z.boolean().default(true),
  })
  .refine((c) => c.url.startsWith('ldaps://') || c.start_tls, { message: 'a plain ldap:// URL needs start_tls: true', path: ['start_tls'] });

const configSchema = z.object({
  publisher_id: z.uuid(),
  url: z.string(),
  start_tls: z.boolean(),
  ca_file: z.string().nullable(),
  tls_server_name: z.string().nullable(),
  base_dn: z.string(),
  bind_dn: z.string(),
  bind_secret_ref: z.string(),
  login_attribute: z.enum(LOGIN_ATTRIBUTES),
  email_domains: z.array(z.string()),
  group_role_map: z.array(z.object({ group_dn: z.string(), role: z.enum(STAFF_ROLES) })),
  connect_timeout_ms: z.number().int(),
  operation_timeout_ms: z.number().int(),
  enabled: z.boolean(),
});

function present(c: DirectoryConfig): z.infer<typeof configSchema> {
  return {
    publisher_id: c.publisherId,
    url: c.url,
    start_tls: c.startTls,
    ca_file: c.caFile ?? null,
    tls_server_name: c.tlsServerName ?? null,
    base_dn: c.baseDn,
    bind_dn: c.bindDn,
    bind_secret_ref: c.bindSecretRef,
    login_attribute: c.loginAttribute,
    email_domains: c.emailDomains,
    group_role_map: c.groupRoleMap,
    connect_timeout_ms: c.connectTimeoutMs,
    operation_timeout_ms: c.operationTimeoutMs,
    enabled: c.enabled,
  };
}

const params = z.object({ publisherId: z.string() });
const notConfigured = () => problem.notFound('This publisher has no directory configuration.');

/** Fastify plugin: the directory configuration routes. */
export const directoryRoutes: FastifyPluginAsyncZod<DirectoryRouteDeps> = async (app, deps) => {
  const tags = ['directory'];
  const asSystemAdmin = { publisher: 'none' as const };

  app.get(
    '/api/v1/publishers/:publisherId/directory',
    { schema: { description: 'The bind secret is a reference (env:NAME or file:/path), never the secret.', operationId: 'getDirectoryConfig', tags, summary: "A publisher's Active Directory configuration (system admins)", params, response: { 200: configSchema, ...commonErrors } } },
    async (request) =>
      inRequestTx(
        deps,
        request,
        async (tx) => {
          const c = await tx.em.findOne(DirectoryConfig, { publisherId: pathId(request.params.publisherId) });
          if (!c) throw notConfigured();
          return present(c);
        },
        asSystemAdmin,
      ),
  );

  app.put(
    '/api/v1/publishers/:publisherId/directory',
    {
      schema: { description: 'ldaps:// (or ldap:// with StartTLS), base DN, service account and a reference to its secret, login attribute, email domains, group → role mapping, timeouts.', operationId: 'putDirectoryConfig',
        tags,
        summary: "Create or replace a publisher's Active Directory configuration (system admins)",
        params,
        body: configBody,
        response: { 200: configSchema, 201: configSchema, ...commonErrors, 422: problemSchema },
      },
    },
    async (request, reply) => {
      const publisherId = pathId(request.params.publisherId);
      const b = request.body;
      const { config, created } = await inRequestTx(
        deps,
        request,
        async (tx) => {
          if (!tx.ctx.isSystemAdmin) throw problem.forbidden('Only a system admin manages directory configurations.');
          const values = {
            url: b.url,
            startTls: b.start_tls,
            caFile: b.ca_file,
            tlsServerName: b.tls_server_name,
            baseDn: b.base_dn,
            bindDn: b.bind_dn,
            bindSecretRef: b.bind_secret_ref,
            loginAttribute: b.login_attribute,
            emailDomains: [...new Set(b.email_domains)],
            groupRoleMap: b.group_role_map,
            connectTimeoutMs: b.connect_timeout_ms,
            operationTimeoutMs: b.operation_timeout_ms,
            enabled: b.enabled,
          };
          const existing = await tx.em.findOne(DirectoryConfig, { publisherId });
          // in the publisher's chain: its admins see who changed how their members sign in
          if (existing) {
            const before = present(existing);
            tx.em.assign(existing, values);
            await tx.em.flush();
            const after = present(existing);
            await recordAudit(tx, { action: 'directory_config.updated', objectType: 'directory_config', objectId: publisherId, before, after, publisherId });
            return { config: after, created: false };
          }
          const c = tx.em.create(DirectoryConfig, { publisherId, ...values, createdAt: new Date(), updatedAt: new Date() });
          await tx.em.flush();
          const config = present(c);
          await recordAudit(tx, { action: 'directory_config.created', objectType: 'directory_config', objectId: publisherId, after: config, publisherId });
          return { config, created: true };
        },
        asSystemAdmin,
      );
      if (created) reply.status(201);
      return config;
    },
  );

  app.delete(
    '/api/v1/publishers/:publisherId/directory',
    { schema: { description: 'Its members can no longer sign in with the directory; their memberships stay until the next sync or change.', operationId: 'deleteDirectoryConfig', tags, summary: "Remove a publisher's directory configuration (system admins)", params, response: { 204: z.null(), ...commonErrors } } },
    async (request, reply) => {
      await inRequestTx(
        deps,
        request,
        async (tx) => {
          const publisherId = pathId(request.params.publisherId);
          const existing = await tx.em.findOne(DirectoryConfig, { publisherId });
          if (!existing) throw notConfigured();
          const before = present(existing);
          const n = await tx.em.nativeDelete(DirectoryConfig, { publisherId });
          if (n === 0) throw notConfigured();
          await recordAudit(tx, { action: 'directory_config.deleted', objectType: 'directory_config', objectId: publisherId, before, publisherId });
        },
        asSystemAdmin,
      );
      return reply.status(204).send(null);
    },
  );

  app.post(
    '/api/v1/publishers/:publisherId/directory/test',
    {
      schema: { description: 'Reports ok, or the reason (unavailable, misconfigured) without throwing.', operationId: 'testDirectoryConfig',
        tags,
        summary: 'Connect to the directory and bind as the service account (system admins)',
        params,
        response: { 200: z.object({ ok: z.boolean(), reason: z.string().optional(), detail: z.string().optional() }), ...commonErrors },
      },
    },
    async (request) => {
      const config = await inRequestTx(
        deps,
        request,
        async (tx) => {
          const c = await tx.em.findOne(DirectoryConfig, { publisherId: pathId(request.params.publisherId) });
          if (!c) throw notConfigured();
          return c;
        },
        asSystemAdmin,
      );
      try {
        await deps.directory.check(config);
        return { ok: true };
      } catch (err) {
        if (!(err instanceof DirectoryError)) throw err;
        return { ok: false, reason: err.reason, detail: err.message };
      }
    },
  );
};
