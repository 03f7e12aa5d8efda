/**
 * The sign-in service's HTTP API (docs/CONTRACTS.md, "Identity"):
 *
 * - public (rate-limited per client IP): POST /api/v1/auth/login, /auth/mfa/verify, /auth/refresh,
 *   /auth/password/forgot, /auth/password/reset, /auth/email/verify;
 * - public: GET /.well-known/openid-configuration, GET /api/v1/auth/jwks.json;
 * - authenticated (any signed-in user, no publisher context): POST /auth/logout, GET and DELETE
 *   /auth/sessions[/{id}], POST /auth/email/verification, PUT /users/me/password, POST/DELETE
 *   /users/me/mfa/totp and POST /users/me/mfa/totp/confirm;
 * - DELETE /api/v1/publishers/{publisherId}/users/{userId}/sessions: a publisher admin signs a
 *   member out everywhere.
 * Token responses carry `Cache-Control: no-store` (RFC 6749 §5.1).
 */
import { z } from 'zod';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { problem } from '../../errors.ts';
import { requireIdentity } from '../../plugins/identity.ts';
import { requirePermission } from '../../db/context.ts';
import { Membership } from '../users/membership.entity.ts';
import { User } from '../users/user.entity.ts';
import type { EntityManager } from '@mikro-orm/postgresql';
import { inRequestTx, pathId, requestMeta, type RouteDeps } from '../common/http.ts';
import { commonErrors, emailAddress, problemSchema } from '../common/schemas.ts';
import type { AccountService } from './account.service.ts';
import { basicCredentials, clientCredentialsGrant } from './client-credentials.ts';
import type { AuthDeps } from './deps.ts';
import { KEY_ALG } from './keys/key-store.ts';
import { MAX_PASSWORD_LENGTH } from './passwords.ts';
import { listSessions, refreshSession, revokeAndAnnounce, type ClientInfo } from './sessions.service.ts';
import type { SignInResult, SignInService } from './sign-in.service.ts';
import { recordAuditEvent, type AuditActor } from '../audit/audit.service.ts';

/** What the routes need. */
export type AuthRouteDeps = RouteDeps & {
  auth: AuthDeps;
  signIn: SignInService;
  account: AccountService;
  /** per client IP per minute, for the public sign-in routes */
  signInRateLimit: number;
};

const password = z.string().max(MAX_PASSWORD_LENGTH);
const opaque = z.string().min(16).max(512);

const tokenResponse = z.object({
  access_token: z.string(),
  token_type: z.literal('Bearer'),
  expires_in: z.number().int().describe('seconds'),
  refresh_token: z.string(),
  mfa_enrollment_required: z.boolean().optional().describe('a publisher of yours requires MFA: enrol TOTP, then sign in again'),
});
const mfaChallenge = z.object({ mfa_required: z.literal(true), mfa_token: z.string(), expires_in: z.number().int().describe('seconds') });

const sessionSchema = z.object({
  id: z.uuid(),
  created_at: z.string(),
  last_used_at: z.string(),
  expires_at: z.string(),
  ip: z.string().nullable(),
  user_agent: z.string().nullable(),
  amr: z.array(z.string()),
  current: z.boolean(),
});

/** A signed-in caller as the audit log's actor: a person or an API client (both hold sessions). */
async function actorOf(em: EntityManager, userId: string): Promise<AuditActor> {
  const user = await em.findOne(User, userId, { filters: { notDeleted: false } });
  return { id: userId, kind: user?.kind === 'api_client' ? 'api_client' : 'user' };
}

/** The client of a request: its address and user agent (sessions), and its request id (the audit log). */
const clientOf = (request: FastifyRequest): ClientInfo => requestMeta(request);

function sendSignIn(reply: FastifyReply, r: SignInResult) {
  reply.header('cache-control', 'no-store');
  if (r.kind === 'mfa') return { mfa_required: true as const, mfa_token: r.mfaToken, expires_in: r.expiresIn };
  return r.mfaEnrollmentRequired ? { ...r.tokens, mfa_enrollment_required: true } : r.tokens;
}

const signInErrors = { 400: problemSchema, 401: problemSchema, 403: problemSchema, 429: problemSchema, 503: problemSchema };

/** Fastify plugin: the sign-in routes. */
export const authRoutes: FastifyPluginAsyncZod<AuthRouteDeps> = async (app, deps) => {
  const { auth, signIn, account } = deps;
  const publicLimited = { public: true, rateLimit: { max: deps.signInRateLimit, timeWindow: 60_000, groupId: 'sign-in' } };
  const tags = ['auth'];

  app.post(
    '/api/v1/auth/login',
    {
      config: publicLimited,
      schema: { operationId: 'login',
        tags,
        summary: 'Sign in with email and password',
        description:
          'Internal accounts check the password (argon2id); Active Directory accounts bind to their publisher\'s directory. ' +
          'Unknown email, wrong password and disabled account get the same 401. Five failures in 15 minutes lock the account (429 `account-locked`). ' +
          'With TOTP enrolled the answer is an MFA challenge for POST /api/v1/auth/mfa/verify.',
        security: [],
        body: z.strictObject({ email: emailAddress, password }),
        response: { 200: tokenResponse.or(mfaChallenge), ...signInErrors },
      },
    },
    async (request, reply) => sendSignIn(reply, await signIn.login(request.body.email, request.body.password, clientOf(request))),
  );

  app.post(
    '/api/v1/auth/mfa/verify',
    {
      config: publicLimited,
      schema: { operationId: 'verifyMfa', description: 'The mfa_token from the login answer and a current TOTP code (each code works once) or one of the recovery codes.',
        tags,
        summary: 'Finish a sign-in with a TOTP code or a recovery code',
        security: [],
        body: z.strictObject({ mfa_token: opaque, code: z.string().min(1).max(64) }),
        response: { 200: tokenResponse.or(mfaChallenge), ...signInErrors },
      },
    },
    async (request, reply) => sendSignIn(reply, await signIn.verifyMfa(request.body.mfa_token, request.body.code, clientOf(request))),
  );

  app.post(
    '/api/v1/auth/refresh',
    {
      config: publicLimited,
      schema: { operationId: 'refreshTokens',
        tags,
        summary: 'Exchange a refresh token for new tokens (the refresh token rotates)',
        description: 'A refresh token works once. Presenting a used one ends its whole session (401).',
        security: [],
        body: z.strictObject({ refresh_token: opaque }),
        response: { 200: tokenResponse, ...signInErrors },
      },
    },
    async (request, reply) => {
      reply.header('cache-control', 'no-store');
      return refreshSession(auth, request.body.refresh_token, clientOf(request));
    },
  );

  app.post(
    '/api/v1/auth/token',
    {
      config: publicLimited,
      schema: {
        tags,
        operationId: 'clientCredentialsToken',
        summary: 'Access token for an API client (OAuth 2.0 client credentials, RFC 6749 §4.4)',
        description:
          'Send `grant_type=client_credentials` (application/x-www-form-urlencoded, or JSON) with the client authenticated by HTTP Basic ' +
          '(client id and secret) or by `client_id` and `client_secret` in the body. No refresh token: ask again when the token expires.',
        security: [],
        body: z.object({
          grant_type: z.literal('client_credentials'),
          client_id: z.string().max(100).optional(),
          client_secret: z.string().max(200).optional(),
          scope: z.string().max(1000).optional().describe('ignored: an API client holds its role’s permissions'),
        }),
        response: { 200: z.object({ access_token: z.string(), token_type: z.literal('Bearer'), expires_in: z.number().int().describe('seconds') }), ...signInErrors },
      },
    },
    async (request, reply) => {
      const basic = basicCredentials(request.headers.authorization);
      const id = basic?.id ?? request.body.client_id;
      const secret = basic?.secret ?? request.body.client_secret;
      if (!id || !secret) throw problem.unauthenticated('Authenticate the client with HTTP Basic or client_id and client_secret.');
      reply.header('cache-control', 'no-store');
      return clientCredentialsGrant(auth, id, secret, clientOf(request));
    },
  );

  app.post(
    '/api/v1/auth/logout',
    { schema: { operationId: 'logout', description: 'Ends the session of the access token: every sidecar refuses its tokens within a second.', tags, summary: 'End the current session', response: { 204: z.null(), ...commonErrors } } },
    async (request, reply) => {
      const identity = requireIdentity(request);
      if (!identity.sid) throw problem.badRequest('This access token belongs to no session of this issuer.');
      const sid = identity.sid;
      await revokeAndAnnounce(auth, { sessionId: sid, userId: identity.userId }, 'logout', (em, n) =>
        n > 0 ? actorOf(em, identity.userId).then((actor) => recordAuditEvent(em, actor, requestMeta(request), { action: 'auth.logout', objectType: 'session', objectId: sid, publisherId: null })) : Promise.resolve(),
      );
      return reply.status(204).send(null);
    },
  );

  app.get(
    '/api/v1/auth/sessions',
    { schema: { operationId: 'listSessions', description: 'Live sessions of the caller, newest first; `current` marks the one of this access token.', tags, summary: 'Your live sessions', response: { 200: z.object({ items: z.array(sessionSchema) }), ...commonErrors } } },
    async (request) => {
      const identity = requireIdentity(request);
      return { items: await listSessions(auth, identity.userId, identity.sid) };
    },
  );

  app.delete(
    '/api/v1/auth/sessions/:id',
    { schema: { operationId: 'endSession', description: 'Ends one of your sessions (e.g. a lost device); its tokens are refused within a second.', tags, summary: 'End one of your sessions', params: z.object({ id: z.string() }), response: { 204: z.null(), ...commonErrors } } },
    async (request, reply) => {
      const identity = requireIdentity(request);
      const sessionId = pathId(request.params.id);
      const n = await revokeAndAnnounce(auth, { sessionId, userId: identity.userId }, 'revoked_by_user', (em, revoked) =>
        revoked > 0
          ? actorOf(em, identity.userId).then((actor) =>
              recordAuditEvent(em, actor, requestMeta(request), { action: 'session.revoked', objectType: 'session', objectId: sessionId, publisherId: null, after: { reason: 'revoked_by_user' } }),
            )
          : Promise.resolve(),
      );
      if (n === 0) throw problem.notFound('No such live session of yours.');
      return reply.status(204).send(null);
    },
  );

  app.delete(
    '/api/v1/publishers/:publisherId/users/:userId/sessions',
    {
      schema: { operationId: 'endMemberSessions',
        tags: ['members'],
        summary: 'Sign a member out everywhere (members:remove)',
        description: 'Revokes every session of a member of this publisher; their access tokens are refused by every sidecar within a second.',
        params: z.object({ publisherId: z.string(), userId: z.string() }),
        response: { 204: z.null(), ...commonErrors },
      },
    },
    async (request, reply) => {
      const publisherId = pathId(request.params.publisherId);
      const userId = pathId(request.params.userId);
      const actor: AuditActor = await inRequestTx(
        deps,
        request,
        async (tx) => {
          requirePermission(tx, 'members:remove');
          // RLS shows the memberships of the context publisher (a department admin's department): a non-member looks like nobody.
          if (!(await tx.em.findOne(Membership, { publisherId, userId }))) throw problem.notFound('No such member of this publisher.');
          return { id: tx.ctx.userId, kind: tx.ctx.userKind === 'api_client' ? 'api_client' : 'user' };
        },
        { pathPublisherId: publisherId },
      );
      // the revocation is the sign-in service's (its role): its audit row is appended there, in the publisher's chain
      await revokeAndAnnounce(auth, { userId }, 'revoked_by_admin', (em, n) =>
        recordAuditEvent(em, actor, requestMeta(request), { action: 'member.sessions_revoked', objectType: 'member', objectId: userId, publisherId, after: { sessions_revoked: n } }),
      );
      return reply.status(204).send(null);
    },
  );

  app.post(
    '/api/v1/auth/password/forgot',
    {
      config: publicLimited,
      schema: { operationId: 'forgotPassword',
        tags,
        summary: 'Ask for a password-reset link',
        description: 'Always 202, whether or not the email has an account; the link (valid 1 h) goes to the address if it does.',
        security: [],
        body: z.strictObject({ email: emailAddress }),
        response: { 202: z.void().describe('no body'), ...signInErrors },
      },
    },
    async (request, reply) => {
      account.forgotPassword(request.body.email, requestMeta(request));
      return reply.status(202).send();
    },
  );

  app.post(
    '/api/v1/auth/password/reset',
    {
      config: publicLimited,
      schema: { operationId: 'resetPassword', description: 'The token from the reset mail (single use, 1 hour) and a new password (12+ characters).',
        tags,
        summary: 'Set a new password with a reset link (ends every session)',
        security: [],
        body: z.strictObject({ token: opaque, new_password: password }),
        response: { 204: z.null(), ...signInErrors, 422: problemSchema },
      },
    },
    async (request, reply) => {
      await account.resetPassword(request.body.token, request.body.new_password, requestMeta(request));
      return reply.status(204).send(null);
    },
  );

  app.post(
    '/api/v1/auth/email/verify',
    {
      config: publicLimited,
      schema: { operationId: 'verifyEmail', description: 'The token from the verification mail (single use, 24 hours).', tags, summary: 'Confirm an email address with a verification link', security: [], body: z.strictObject({ token: opaque }), response: { 204: z.null(), ...signInErrors } },
    },
    async (request, reply) => {
      await account.verifyEmail(request.body.token, requestMeta(request));
      return reply.status(204).send(null);
    },
  );

  app.post(
    '/api/v1/auth/email/verification',
    { schema: { operationId: 'sendEmailVerification', description: 'Mails a verification link to your address.', tags, summary: 'Mail yourself a verification link (valid 24 h)', response: { 202: z.void().describe('no body'), ...commonErrors } } },
    async (request, reply) => {
      await account.sendEmailVerification(requireIdentity(request).userId, requestMeta(request));
      return reply.status(202).send();
    },
  );

  app.put(
    '/api/v1/users/me/password',
    {
      schema: { operationId: 'changePassword', description: 'Needs your current password; your other sessions end, this one stays.',
        tags: ['users'],
        summary: 'Change your password (ends your other sessions)',
        body: z.strictObject({ current_password: password, new_password: password }),
        response: { 204: z.null(), ...commonErrors, 409: problemSchema, 422: problemSchema },
      },
    },
    async (request, reply) => {
      const identity = requireIdentity(request);
      await account.changePassword(identity.userId, identity.sid, request.body.current_password, request.body.new_password, requestMeta(request));
      return reply.status(204).send(null);
    },
  );

  app.post(
    '/api/v1/users/me/mfa/totp',
    {
      schema: { operationId: 'startTotpEnrolment',
        tags: ['users'],
        summary: 'Start TOTP enrolment',
        description: 'Returns a new secret and its otpauth:// URI; confirm with a code from the authenticator to enable it.',
        response: { 200: z.object({ secret: z.string(), otpauth_uri: z.string() }), ...commonErrors, 409: problemSchema },
      },
    },
    async (request, reply) => {
      reply.header('cache-control', 'no-store');
      return account.enrolTotp(requireIdentity(request).userId, requestMeta(request));
    },
  );

  app.post(
    '/api/v1/users/me/mfa/totp/confirm',
    {
      schema: { operationId: 'confirmTotp', description: 'A code from the authenticator the enrolment secret was added to; answers the recovery codes once.',
        tags: ['users'],
        summary: 'Enable TOTP with a code; returns 10 single-use recovery codes (shown once)',
        body: z.strictObject({ code: z.string().min(1).max(16) }),
        response: { 200: z.object({ recovery_codes: z.array(z.string()) }), ...commonErrors, 409: problemSchema, 422: problemSchema },
      },
    },
    async (request, reply) => {
      reply.header('cache-control', 'no-store');
      return { recovery_codes: await account.confirmTotp(requireIdentity(request).userId, request.body.code, requestMeta(request)) };
    },
  );

  app.delete(
    '/api/v1/users/me/mfa/totp',
    {
      schema: { operationId: 'disableTotp', description: 'Needs a current code (or a recovery code).',
        tags: ['users'],
        summary: 'Disable TOTP (needs a current code)',
        body: z.strictObject({ code: z.string().min(1).max(16) }),
        response: { 204: z.null(), ...commonErrors, 409: problemSchema, 422: problemSchema },
      },
    },
    async (request, reply) => {
      await account.disableTotp(requireIdentity(request).userId, request.body.code, requestMeta(request));
      return reply.status(204).send(null);
    },
  );

  app.get(
    '/.well-known/openid-configuration',
    { config: { public: true }, schema: { operationId: 'getOpenIdConfiguration', description: 'Where the keys and the sign-in endpoints are; `issuer` is the `iss` of every access token.', tags, summary: 'Issuer metadata (OpenID Connect Discovery 1.0 / RFC 8414)', security: [], response: { 200: z.record(z.string(), z.unknown()), 503: problemSchema } } },
    async (_request, reply) => {
      reply.header('cache-control', 'public, max-age=300');
      const issuer = auth.tokens.issuer;
      return {
        issuer,
        jwks_uri: `${issuer}/api/v1/auth/jwks.json`,
        subject_types_supported: ['public'],
        id_token_signing_alg_values_supported: [KEY_ALG],
        access_token_signing_alg_values_supported: [KEY_ALG],
        claims_supported: ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'client_id', 'sid', 'auth_time', 'amr'],
        'x-login_endpoint': `${issuer}/api/v1/auth/login`,
        'x-mfa_endpoint': `${issuer}/api/v1/auth/mfa/verify`,
        'x-logout_endpoint': `${issuer}/api/v1/auth/logout`,
      };
    },
  );

  app.get(
    '/api/v1/auth/jwks.json',
    { config: { public: true }, schema: { operationId: 'getIssuerJwks', description: 'The next, active and still-valid retired keys; verifiers cache it for 60 s.', tags, summary: "The issuer's public signing keys (RFC 7517)", security: [], response: { 200: z.object({ keys: z.array(z.record(z.string(), z.unknown())) }), 503: problemSchema } } },
    async (_request, reply) => {
      reply.header('cache-control', 'public, max-age=60');
      return auth.keys.jwks();
    },
  );
};
