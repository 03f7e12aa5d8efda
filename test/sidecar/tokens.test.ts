/**
 * Access-token verification at the sidecar: the RFC 8725 ("JWT Best Current Practices") attack list
 * — every one a 401 `invalid_token` that never reaches the upstream — an oversized token (431), and
 * several trusted issuers: one by JWKS URL with revocable sessions, one found through OpenID Connect
 * Discovery whose users are named by another claim (`oid`, as Entra ID does) and whose access tokens
 * are typed `JWT`.
 */
import t from 'tap';
import { createServer } from 'node:http';
import { createPublicKey, randomUUID } from 'node:crypto';
import { SignJWT, base64url, calculateJwkThumbprint, exportJWK, generateKeyPair, type CryptoKey } from 'jose';
import { AUDIENCE, ISSUER, createIssuer, raw, startSidecar, useSidecarFixture } from './helpers.ts';

const user = randomUUID();
const publisher = randomUUID();
const fx = useSidecarFixture(t, { tuples: [{ user: `user:${user}`, relation: 'viewer', object: `publisher:${publisher}` }] });

const call = (port: number, token: string) => raw(port, 'GET', '/api/v1/works', { authorization: `Bearer ${token}`, 'x-publisher-id': publisher });
const b64 = (v: unknown) => base64url.encode(JSON.stringify(v));
const now = () => Math.floor(Date.now() / 1000);
const claims = (extra: Record<string, unknown> = {}) => ({ iss: ISSUER, aud: AUDIENCE, sub: user, sid: randomUUID(), iat: now(), exp: now() + 600, jti: randomUUID(), ...extra });

/** A loopback server answering every GET with `body` (an attacker's JWKS for jku/x5u). */
async function serve(t: Tap, body: unknown): Promise<string> {
  const s = createServer((_q, r) => r.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body)));
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => s.close(() => r())));
  return `http://127.0.0.1:${(s.address() as { port: number }).port}`;
}
type Tap = { teardown(fn: () => unknown): void };

/**
 * Sign a compact JWS with any protected header, valid signature included (jose refuses to sign a
 * header whose `crit` names an extension it does not know): ES256 over `header.payload`, the
 * signature in the IEEE P1363 form JWS uses (RFC 7518 §3.4), which WebCrypto produces.
 */
async function signRaw(header: Record<string, unknown>, payload: Record<string, unknown>, key: CryptoKey): Promise<string> {
  const input = `${b64(header)}.${b64(payload)}`;
  const sig = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key, new TextEncoder().encode(input));
  return `${input}.${base64url.encode(new Uint8Array(sig))}`;
}

t.test('the RFC 8725 attack list: every forgery → 401 invalid_token, the upstream sees nothing', async (t) => {
  t.equal((await call(fx.sidecar.port, await fx.issuer.token(user))).status, 200, 'a genuine token passes (control)');
  const attacker = await generateKeyPair('ES256', { extractable: true });
  const attackerJwk = await exportJWK(attacker.publicKey);
  const attackerKid = await calculateJwkThumbprint(attackerJwk);
  const evil = await serve(t, { keys: [{ ...attackerJwk, kid: attackerKid, alg: 'ES256', use: 'sig' }] });
  const signWith = (header: Record<string, unknown>, payload = claims(), key = attacker.privateKey) =>
    new SignJWT(payload).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', ...header } as { alg: string }).sign(key);
  const genuine = await fx.issuer.token(user);
  const [h, p] = genuine.split('.');
  const publicPem = createPublicKey({ key: fx.issuer.publicJwk as never, format: 'jwk' }).export({ type: 'spki', format: 'pem' });

  const cases: [string, string][] = [
    ...['none', 'None', 'NONE', 'nOnE'].map((alg): [string, string] => [`alg ${alg}`, `${b64({ alg, typ: 'at+jwt' })}.${b64(claims())}.`]),
    ['signature stripped', `${h}.${p}.`],
    ['signature of another token', `${h}.${b64(claims({ sub: randomUUID() }))}.${genuine.split('.')[2]}`],
    ['HS256 with the public JWK as secret', await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid: fx.issuer.kid }).sign(new TextEncoder().encode(JSON.stringify(fx.issuer.publicJwk)))],
    ['HS256 with the public PEM as secret', await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid: fx.issuer.kid }).sign(new TextEncoder().encode(String(publicPem)))],
    ['embedded jwk header (the attacker\'s key)', await signWith({ jwk: attackerJwk })],
    ['embedded jwk with our kid', await signWith({ jwk: attackerJwk, kid: fx.issuer.kid })],
    ['jku pointing elsewhere', await signWith({ jku: `${evil}/jwks.json`, kid: attackerKid })],
    ['x5u pointing elsewhere', await signWith({ x5u: `${evil}/cert.pem`, kid: attackerKid })],
    ['kid path traversal', await signWith({ kid: '../../../../../../dev/null' })],
    ['kid SQL injection', await signWith({ kid: "x' UNION SELECT 'secret' --" })],
    ['unknown kid', await signWith({ kid: attackerKid })],
    ['ES256 all-zero signature', `${h}.${p}.${base64url.encode(new Uint8Array(64))}`],
    ['exp in the past', await fx.issuer.token(user, { expSeconds: -60 })],
    ['nbf in the future', await new SignJWT(claims({ nbf: now() + 120 })).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: fx.issuer.kid }).sign(fx.issuer.privateKey)],
    ['iat in the future', await new SignJWT(claims({ iat: now() + 120 })).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: fx.issuer.kid }).sign(fx.issuer.privateKey)],
    ['iat older than the maximum token age', await new SignJWT(claims({ iat: now() - 2 * 86_400 })).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: fx.issuer.kid }).sign(fx.issuer.privateKey)],
    ['wrong iss', await fx.issuer.token(user, { iss: 'https://evil.example' })],
    ['wrong aud', await fx.issuer.token(user, { aud: 'someone-else' })],
    ['wrong typ (an ID token)', await fx.issuer.token(user, { typ: 'JWT' })],
    ['unknown crit', await signRaw({ alg: 'ES256', typ: 'at+jwt', kid: fx.issuer.kid, crit: ['x-custom'], 'x-custom': 1 }, claims(), fx.issuer.privateKey)],
    ['our iss, the attacker\'s key', await signWith({ kid: fx.issuer.kid })],
  ];
  const before = fx.upstream.received.length;
  for (const [name, token] of cases) {
    const res = await call(fx.sidecar.port, token);
    t.equal(res.status, 401, `${name} → 401`);
    t.match(String(res.headers['www-authenticate']), /error="invalid_(token|request)"/, `${name}: RFC 6750 error`);
  }
  t.equal(fx.upstream.received.length, before, 'the upstream saw none of them');
});

t.test('a 20 KiB token → 431, not parsed', async (t) => {
  const res = await call(fx.sidecar.port, 'a'.repeat(20 * 1024));
  t.equal(res.status, 431);
});

t.test('several issuers: by JWKS URL with sessions, and by discovery with another subject claim', async (t) => {
  const entra = await createIssuer();
  t.teardown(() => entra.close());
  const entraIssuer = 'https://login.test.local/tenant-1/v2.0';
  let discovery: Record<string, unknown> = { issuer: entraIssuer, jwks_uri: entra.jwksUrl };
  const meta = createServer((_q, r) => r.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(discovery)));
  await new Promise<void>((r) => meta.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => meta.close(() => r())));
  const discoveryUrl = `http://127.0.0.1:${(meta.address() as { port: number }).port}/tenant-1/v2.0/.well-known/openid-configuration`;
  const issuers = [
    { issuer: ISSUER, audience: AUDIENCE, jwks_uri: fx.issuer.jwksUrl, sessions: true },
    { issuer: entraIssuer, audience: 'api://music-publishing', discovery_url: discoveryUrl, typ: 'JWT', subject_claim: 'oid', algorithms: ['ES256'] },
  ];
  const s = await startSidecar({ ...fx.env, JWT_ISSUERS: JSON.stringify(issuers), JWT_JWKS_COOLDOWN_MS: '0' });
  t.teardown(() => s.close());
  const entraToken = (oid: string, sub = 'pairwise-subject-abc') =>
    new SignJWT({ oid, sub, tid: 'tenant-1', amr: ['pwd', 'mfa'] })
      .setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: entra.kid })
      .setIssuer(entraIssuer)
      .setAudience('api://music-publishing')
      .setIssuedAt()
      .setExpirationTime('10m')
      .sign(entra.privateKey);

  t.equal((await call(s.port, await fx.issuer.token(user))).status, 200, 'our issuer');
  const ok = await call(s.port, await entraToken(user));
  t.equal(ok.status, 200, 'the discovered issuer, user named by oid');
  t.equal(fx.upstream.received.at(-1)!.headers['x-identity-assertion'] !== undefined, true, 'forwarded with an assertion');
  t.equal((await call(s.port, await entraToken(randomUUID()))).status, 403, 'a user of that issuer without a relationship → 403');
  t.equal((await call(s.port, await entraToken('not-a-uuid'))).status, 401, 'oid must be a user id');
  const unknown = await new SignJWT({}).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: entra.kid }).setIssuer('https://unknown.example').setAudience(AUDIENCE).setSubject(user).setIssuedAt().setExpirationTime('10m').sign(entra.privateKey);
  t.equal((await call(s.port, unknown)).status, 401, 'an issuer not configured → 401');

  // A discovery document naming another issuer is not trusted (OpenID Connect Discovery §4.3).
  discovery = { issuer: 'https://impostor.example', jwks_uri: entra.jwksUrl };
  const s2 = await startSidecar({ ...fx.env, JWT_ISSUERS: JSON.stringify(issuers) });
  t.teardown(() => s2.close());
  const res = await call(s2.port, await entraToken(user));
  t.equal(res.status, 503, 'issuer mismatch in discovery → keys unavailable (fail closed)');
  t.equal((await call(s2.port, await fx.issuer.token(user))).status, 200, 'the other issuer keeps working');
});

t.test('issuer configuration is validated at start', async (t) => {
  const { loadConfig } = await import('../../sidecar/src/config.ts');
  t.throws(() => loadConfig({ JWT_ISSUERS: 'not json' }), /JWT_ISSUERS: must be a JSON array/);
  t.throws(() => loadConfig({ JWT_ISSUERS: JSON.stringify([{ issuer: 'x', audience: 'y' }]) }), /exactly one of jwks_uri and discovery_url/);
  t.throws(() => loadConfig({ JWT_ISSUERS: JSON.stringify([{ issuer: 'x', audience: 'y', jwks_uri: 'http://a/j', algorithms: ['HS256'] }]) }), /JWT_ISSUERS/);
  const c = loadConfig({});
  t.same(c.jwt.issuers.map((i) => ({ issuer: i.issuer, sessions: i.sessions, typ: i.typ })), [{ issuer: 'http://127.0.0.1:8000', sessions: true, typ: 'at+jwt' }], 'default: the platform issuer, sessions revocable');
});
