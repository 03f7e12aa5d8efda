/**
 * The security admin's endpoints under /api/v1/authz (docs/CONTRACTS.md, "Authorization
 * administration"; issue 10): explain a decision, who-can / what-can, find users and show a user's
 * access, the recent decisions (the decision log, contract A), and the authorization model's
 * history, diff, shadow run, deploy and rollback.
 *
 * Who may call (the sidecar decides the route rules of policies/routes.yaml first, the handlers
 * check again): explain, who-can, what-can, users, access and decisions — system admins about
 * anything, a publisher's admins (`audit_read` on the X-Publisher-Id publisher) about their
 * publisher only (scope.ts); the model endpoints — system admins only (`can_administer` on
 * `system:platform`). Deploy and rollback are written to the platform chain of the audit log.
 */
import type { FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { isIP } from 'node:net';
import { z } from 'zod';
import type { AuthorizationModel } from '@openfga/sdk';
import type { Orm } from '../../db/orm.ts';
import { problem } from '../../errors.ts';
import type { RequestTx } from '../../db/context.ts';
import { recordAudit } from '../audit/audit.service.ts';
import type { RouteDeps } from '../common/http.ts';
import { commonErrors, problemSchema, timestamp } from '../common/schemas.ts';
import { memberships, permissionsOn, searchUsers } from './access.service.ts';
import type { AuthzFga } from './fga.ts';
import { contextOf, explainDecision, objectsInReach, usersetInReach, whatCanOf, whoCanOn } from './inspect.service.ts';
import { MAX_DSL_LENGTH, ULID_PATTERN, deployCandidate, diffModels, getModel, listModels, readDecisions, rollbackTo, shadowCandidate } from './models.service.ts';
import { checkObjectInReach, checkRelation, checkType, checkUserInReach, inAuthzTx, inSystemAdminTx, parseObject, type Reach } from './scope.ts';

/** What the routes need: the app pool, the sign-in pool (reads across publishers), OpenFGA and the store name. */
export type AuthzRouteDeps = RouteDeps & { authOrm: Orm; fga: AuthzFga; storeName: string };

const tags = ['authz'];

// ---------------------------------------------------------------- schemas
const relationName = z.string().regex(/^[a-z][a-z0-9_]{0,49}$/, 'a relation of the model, e.g. can_update');
const objectRef = z.string().min(3).max(200).describe('an OpenFGA object <type>:<id>, e.g. work:<uuid>, publisher:<uuid>');
const ulid = z.string().regex(new RegExp(ULID_PATTERN), 'an OpenFGA model id (ULID)');
const contextQuery = {
  at: z.iso.datetime({ offset: true }).optional().describe('decide as of this time (the conditions\' current_time; default now)'),
  client_ip: z.string().max(45).refine((s) => isIP(s) !== 0, 'an IPv4 or IPv6 address').optional()
    .describe('the client address the office-network condition sees (default 0.0.0.0: outside every office network)'),
};

const userSummary = z.object({ id: z.uuid(), email: z.string().nullable(), display_name: z.string() }).meta({ id: 'AuthzUser' });
const explainStep = z.object({ object: z.string(), relation: z.string(), via: z.string(), text: z.string() });
const explanationSchema = z
  .object({
    allowed: z.boolean(),
    user: z.string(),
    relation: z.string(),
    object: z.string(),
    model_id: z.string().describe('the authorization model that decided'),
    path: z.array(explainStep).describe('allowed: the chain from the user\'s tuple to the decision'),
    denied_because: z.array(z.string()).optional().describe('denied: the reasons'),
    truncated: z.string().optional().describe('what a bound (depth, OpenFGA calls) left unexplained'),
    text: z.string().describe('the explanation as lines a person reads'),
  })
  .meta({ id: 'Explanation' });
const decisionSchema = z
  .object({
    id: z.string(),
    time: z.string(),
    request_id: z.string(),
    subject: z.string(),
    relation: z.string(),
    object: z.string(),
    publisher: z.string().optional(),
    rule: z.string(),
    allowed: z.boolean(),
    source: z.enum(['lru', 'redis', 'pdp']),
    model_id: z.string(),
    latency_ms: z.number(),
    context: z.record(z.string(), z.unknown()).optional(),
  })
  .meta({ id: 'DecisionRecord' });
const shadowReportSchema = z
  .object({
    candidate_model_id: z.string(),
    base_model_id: z.string(),
    replayed: z.number().int(),
    changed: z.array(z.object({ decision: decisionSchema, before: z.boolean(), after: z.boolean(), role: z.string().optional() })),
    groups: z.array(z.object({ rule: z.string(), role: z.string(), allowed_to_denied: z.number().int(), denied_to_allowed: z.number().int() })),
    checks: z.number().int().optional(),
    skipped: z.number().int().optional(),
    truncated: z.boolean().optional(),
  })
  .meta({ id: 'ShadowReport' });
const modelSummary = z.object({ id: z.string(), created_at: timestamp });
const dslBody = z.string().min(1).max(MAX_DSL_LENGTH).describe('the candidate model (OpenFGA DSL, schema 1.1)');

const reachErrors = { ...commonErrors };
const adminErrors = { ...commonErrors };

/** Fastify plugin: the /api/v1/authz routes. */
export const authzRoutes: FastifyPluginAsyncZod<AuthzRouteDeps> = async (app, deps) => {
  const { fga } = deps;
  /** The active model's content (validation of types and relations); fetched before any transaction. */
  const activeModel = async (): Promise<AuthorizationModel> => fga.model(await fga.activeModelId());

  /** A second transaction in the caller's reach (after an OpenFGA call, so none is held open during it). */
  const again = <T>(request: FastifyRequest, fn: (tx: RequestTx, reach: Reach) => Promise<T>) => inAuthzTx(deps, request, fn);

  app.get(
    '/api/v1/authz/explain',
    {
      schema: {
        tags,
        operationId: 'explainDecision',
        summary: 'Explain whether a user holds a permission on an object, and why',
        description:
          'Allowed: the path from the user\'s tuple to the decision (e.g. editor of publisher:… → works_update_all → can_update on work:…); denied: the reasons. ' +
          'Decided with the active model and the condition context (`at`, `client_ip`). System admins: anything; a publisher\'s admins (audit:read): their members and their publisher\'s objects.',
        querystring: z.object({ user: z.uuid(), permission: relationName, object: objectRef, ...contextQuery }),
        response: { 200: explanationSchema, ...reachErrors },
      },
    },
    async (request) => {
      const q = request.query;
      const model = await activeModel();
      const ref = parseObject(model, q.object);
      checkRelation(model, ref.type, q.permission);
      await inAuthzTx(deps, request, async (tx, reach) => {
        await checkObjectInReach(tx, reach, ref);
        await checkUserInReach(tx, deps.authOrm, reach, q.user.toLowerCase());
      });
      return explainDecision(fga, { userId: q.user.toLowerCase(), relation: q.permission, object: ref.object, context: contextOf(q) });
    },
  );

  app.get(
    '/api/v1/authz/who-can',
    {
      schema: {
        tags,
        operationId: 'whoCan',
        summary: 'Who holds a permission on an object',
        description:
          'OpenFGA ListUsers with the active model: the users (with email and name) and the usersets and wildcards that hold it; `truncated` when OpenFGA\'s result limit or deadline cut the answer. ' +
          'A publisher\'s admins see their members only.',
        querystring: z.object({ permission: relationName, object: objectRef, ...contextQuery }),
        response: { 200: z.object({ users: z.array(userSummary), usersets: z.array(z.string()), truncated: z.boolean() }), ...reachErrors },
      },
    },
    async (request) => {
      const q = request.query;
      const model = await activeModel();
      const ref = parseObject(model, q.object);
      checkRelation(model, ref.type, q.permission);
      const reach = await inAuthzTx(deps, request, async (tx, reach) => {
        await checkObjectInReach(tx, reach, ref);
        return reach;
      });
      const answer = await whoCanOn(fga, deps.authOrm, reach, { relation: q.permission, object: ref.object, context: contextOf(q) });
      if (reach.all || answer.usersets.every((u) => u.endsWith(':*'))) return answer;
      const usersets = await again(request, async (tx, r) => {
        const inReach = usersetInReach(tx, r);
        const kept: string[] = [];
        for (const u of answer.usersets) if (await inReach(u)) kept.push(u);
        return kept;
      });
      return { ...answer, usersets };
    },
  );

  app.get(
    '/api/v1/authz/what-can',
    {
      schema: {
        tags,
        operationId: 'whatCan',
        summary: 'Which objects of a type a user holds a permission on',
        description:
          'OpenFGA StreamedListObjects with the active model, at most 1000 objects (`truncated` when more were available or the deadline cut the stream). ' +
          'A publisher\'s admins: about their members, and only their publisher\'s objects are listed.',
        querystring: z.object({ user: z.uuid(), permission: relationName, type: z.string().min(1).max(50), ...contextQuery }),
        response: { 200: z.object({ objects: z.array(z.string()), truncated: z.boolean() }), ...reachErrors },
      },
    },
    async (request) => {
      const q = request.query;
      const userId = q.user.toLowerCase();
      const model = await activeModel();
      checkType(model, q.type, 'query.type');
      checkRelation(model, q.type, q.permission);
      const reach = await inAuthzTx(deps, request, async (tx, reach) => {
        await checkUserInReach(tx, deps.authOrm, reach, userId);
        return reach;
      });
      const answer = await whatCanOf(fga, { userId, relation: q.permission, type: q.type, context: contextOf(q) });
      if (reach.all) return answer;
      const objects = await again(request, (tx, r) => objectsInReach(tx, r, q.type, answer.objects));
      return { objects, truncated: answer.truncated };
    },
  );

  app.get(
    '/api/v1/authz/users',
    {
      schema: {
        tags,
        operationId: 'searchAuthzUsers',
        summary: 'Find users by email prefix',
        description: 'Case-insensitive email prefix, at most 20 users by email. A publisher\'s admins find their members only.',
        querystring: z.object({ q: z.string().min(1).max(254).describe('the start of an email address') }),
        response: { 200: z.object({ users: z.array(userSummary) }), ...reachErrors },
      },
    },
    async (request) => {
      const reach = await inAuthzTx(deps, request, async (_tx, reach) => reach);
      return { users: await searchUsers(deps.authOrm, reach, request.query.q) };
    },
  );

  const accessSchema = z.object({
    user: userSummary,
    memberships: z.array(z.object({
      publisher: z.object({ id: z.uuid(), name: z.string(), slug: z.string() }),
      role: z.string(),
      custom_role: z.object({ id: z.uuid(), name: z.string() }).optional(),
      department: z.object({ id: z.uuid(), name: z.string() }).optional(),
      status: z.string().describe("the publisher's status: suspended and archived shut its members out"),
    })),
    permissions: z.record(z.string(), z.array(z.string())).describe('publisher id → the permission relations the user holds there now (works_read …)'),
  });
  app.get(
    '/api/v1/authz/users/:userId/access',
    {
      schema: {
        tags,
        operationId: 'getUserAccess',
        summary: "A user's publishers, roles and effective permissions",
        description:
          'The memberships (role, custom role, department, the publisher\'s status) and, per publisher, the permission relations the user holds now (OpenFGA BatchCheck of every permission with the active model). ' +
          'A publisher\'s admins: their members, and only the membership at their publisher.',
        params: z.object({ userId: z.uuid() }),
        querystring: z.object(contextQuery),
        response: { 200: accessSchema, ...reachErrors },
      },
    },
    async (request) => {
      const userId = request.params.userId.toLowerCase();
      const reach = await inAuthzTx(deps, request, async (tx, reach) => {
        await checkUserInReach(tx, deps.authOrm, reach, userId);
        return reach;
      });
      const view = await memberships(deps.authOrm, reach, userId);
      const modelId = await fga.activeModelId();
      const client = await fga.client();
      const permissions = await permissionsOn(client, modelId, userId, [...new Set(view.memberships.map((m) => m.publisher.id))], contextOf(request.query));
      return { ...view, permissions };
    },
  );

  app.get(
    '/api/v1/authz/decisions',
    {
      schema: {
        tags,
        operationId: 'listDecisions',
        summary: 'Recent authorization decisions (the decision log)',
        description:
          'Every sidecar\'s recent decisions from the decision log, newest first; `since` = a decision id: only decisions logged after it (a live tail). ' +
          'A publisher\'s admins see their publisher\'s decisions only.',
        querystring: z.object({
          allowed: z.enum(['true', 'false']).optional().describe('only allowed (true) or denied (false) decisions'),
          limit: z.coerce.number().int().min(1).max(500).default(50),
          since: z.uuid().optional().describe('the id of the newest decision already seen'),
          publisher: z.uuid().optional().describe('only decisions about this publisher (system admins; a publisher\'s admins always get their own)'),
        }),
        response: { 200: z.object({ decisions: z.array(decisionSchema) }), ...reachErrors },
      },
    },
    async (request) => {
      const q = request.query;
      const reach = await inAuthzTx(deps, request, async (_tx, reach) => reach);
      const publisher = reach.all ? q.publisher?.toLowerCase() : reach.publisherId;
      if (!reach.all && q.publisher && q.publisher.toLowerCase() !== reach.publisherId) {
        throw problem.forbidden('You may read your own publisher\'s decisions only.');
      }
      const storeId = await fga.storeId();
      const decisions = await readDecisions(fga.redis, storeId, q.limit, {
        ...(q.allowed ? { allowed: q.allowed === 'true' } : {}),
        ...(publisher ? { publisher } : {}),
        ...(q.since ? { sinceId: q.since.toLowerCase() } : {}),
      });
      return { decisions };
    },
  );

  // ---------------------------------------------------------------- the model (system admins)
  app.get(
    '/api/v1/authz/models',
    {
      schema: {
        tags,
        operationId: 'listAuthzModels',
        summary: "The store's authorization models, newest first",
        description: 'Every model of the OpenFGA store (its version history) and the active one (system admins).',
        response: { 200: z.object({ active: z.string(), models: z.array(modelSummary) }), ...adminErrors },
      },
    },
    async (request) => {
      await inSystemAdminTx(deps, request, async () => undefined);
      return listModels(fga);
    },
  );

  app.get(
    '/api/v1/authz/models/diff',
    {
      schema: {
        tags,
        operationId: 'diffAuthzModels',
        summary: 'The line diff of two models',
        description: 'Both as DSL (relations in name order), `-` only in `from`, `+` only in `to` (system admins).',
        querystring: z.object({ from: ulid, to: ulid }),
        response: { 200: z.object({ from: z.string(), to: z.string(), diff: z.string() }), ...adminErrors },
      },
    },
    async (request) => {
      await inSystemAdminTx(deps, request, async () => undefined);
      return diffModels(fga, request.query.from.toUpperCase(), request.query.to.toUpperCase());
    },
  );

  app.get(
    '/api/v1/authz/models/:modelId',
    {
      schema: {
        tags,
        operationId: 'getAuthzModel',
        summary: 'One authorization model as DSL',
        description: 'The model with this id (a ULID) as OpenFGA DSL (system admins).',
        params: z.object({ modelId: ulid }),
        response: { 200: z.object({ id: z.string(), created_at: timestamp, dsl: z.string() }), ...adminErrors },
      },
    },
    async (request) => {
      await inSystemAdminTx(deps, request, async () => undefined);
      return getModel(fga, request.params.modelId.toUpperCase());
    },
  );

  app.post(
    '/api/v1/authz/models/shadow',
    {
      schema: {
        tags,
        operationId: 'shadowAuthzModel',
        summary: 'Replay recent decisions against a candidate model',
        description:
          'A shadow run: the recent decisions of the decision log are checked against the active model and the candidate in a scratch store with the live tuples; the report lists every decision that would change, grouped by route rule and role. Nothing live changes (system admins).',
        body: z.strictObject({ dsl: dslBody }),
        response: { 200: shadowReportSchema, ...adminErrors },
      },
    },
    async (request) => {
      await inSystemAdminTx(deps, request, async () => undefined);
      return shadowCandidate(fga, deps.storeName, request.body.dsl);
    },
  );

  const deployedSchema = z.object({ model_id: z.string(), written: z.boolean().describe('false: the newest model already had this content'), shadow: shadowReportSchema });
  app.post(
    '/api/v1/authz/models/deploy',
    {
      schema: {
        tags,
        operationId: 'deployAuthzModel',
        summary: 'Deploy a model behind a shadow run',
        description:
          'Shadow run first: when recent decisions would change and `accept_changes` is not true, nothing is deployed and the answer is 409 `shadow-changes` with the report in `shadow`. ' +
          'Otherwise the model is written as the newest, its model migration applied, and it becomes the active model of every sidecar within a second (system admins; audited as authz.model_deployed).',
        body: z.strictObject({ dsl: dslBody, accept_changes: z.boolean().default(false) }),
        response: { 200: deployedSchema, ...adminErrors, 409: problemSchema.extend({ shadow: shadowReportSchema.optional() }) },
      },
    },
    async (request) => {
      await inSystemAdminTx(deps, request, async () => undefined);
      const r = await deployCandidate(fga, deps.storeName, request.body.dsl, request.body.accept_changes);
      if (r.written || r.model_id !== r.previous_model_id) {
        await inSystemAdminTx(deps, request, (tx) =>
          recordAudit(tx, {
            action: 'authz.model_deployed',
            objectType: 'authz_model',
            objectId: null,
            publisherId: null,
            // a new version of the model (OpenFGA models are immutable): recorded as created
            before: null,
            after: { model_id: r.model_id, previous_model_id: r.previous_model_id, written: r.written, changed_decisions: r.shadow.changed.length, accepted_changes: request.body.accept_changes },
          }),
        );
      }
      return { model_id: r.model_id, written: r.written, shadow: r.shadow };
    },
  );

  app.post(
    '/api/v1/authz/models/:modelId/rollback',
    {
      schema: {
        tags,
        operationId: 'rollbackAuthzModel',
        summary: 'Make an older model the active one again',
        description: "The old model's content is written again as the newest model (OpenFGA has no activate API) and becomes the active model of every sidecar within a second (system admins; audited as authz.model_rolled_back).",
        params: z.object({ modelId: ulid }),
        response: { 200: z.object({ model_id: z.string() }), ...adminErrors },
      },
    },
    async (request) => {
      await inSystemAdminTx(deps, request, async () => undefined);
      const id = request.params.modelId.toUpperCase();
      const r = await rollbackTo(fga, id);
      await inSystemAdminTx(deps, request, (tx) =>
        recordAudit(tx, {
          action: 'authz.model_rolled_back',
          objectType: 'authz_model',
          objectId: null,
          publisherId: null,
          before: null,
          after: { model_id: r.model_id, previous_model_id: r.previous_model_id, written: r.written, restored_from: id },
        }),
      );
      return { model_id: r.model_id };
    },
  );

};
