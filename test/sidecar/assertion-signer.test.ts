/**
 * The identity assertion's signer (sidecar/src/identity/assertion.ts): the algorithm follows the
 * key file (Ed25519 → EdDSA, P-256 → ES256), the JWS it builds with node:crypto verifies with jose
 * against its JWKS and passes the catalog API's own verifier (catalog-api/src/plugins/identity.ts,
 * with its Redis replay guard — real Redis), other key types are refused at start.
 */
import t from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { createLocalJWKSet, decodeProtectedHeader, exportPKCS8, generateKeyPair, jwtVerify } from 'jose';
import { createAssertionSigner, queryHash } from '../../sidecar/src/identity/assertion.ts';
import { createAssertionVerifier } from '../../catalog-api/src/plugins/identity.ts';
import { createReplayGuard } from '../../catalog-api/src/plugins/assertion-replay.ts';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/0';
const dir = mkdtempSync(join(tmpdir(), 'assertion-signer-'));
const ISSUER = 'urn:music-publishing:sidecar';
const AUDIENCE = 'catalog-api';

async function keyFile(alg: 'EdDSA' | 'ES256' | 'RS256' | 'ES384'): Promise<string> {
  const file = join(dir, `${alg}-${randomUUID()}.pem`);
  writeFileSync(file, await exportPKCS8((await generateKeyPair(alg, { extractable: true })).privateKey), { mode: 0o600 });
  return file;
}

const redis = new Redis(REDIS_URL, { enableOfflineQueue: true, maxRetriesPerRequest: 1 });
t.teardown(() => redis.disconnect());
const replay = createReplayGuard({ redis, prefix: `test-assertion-signer:${randomUUID()}:`, clockToleranceSec: 5, connectWaitMs: 1000 });

for (const alg of ['EdDSA', 'ES256'] as const) {
  t.test(`a ${alg} key file signs ${alg} assertions that jose and the catalog API accept`, async (t) => {
    const warnings: string[] = [];
    const signer = await createAssertionSigner({ keyFile: await keyFile(alg), issuer: ISSUER, audience: AUDIENCE, warn: (m) => warnings.push(m) });
    t.same(warnings, []);
    t.equal(signer.alg, alg);
    const jwks = signer.jwks();
    t.equal(jwks.keys.length, 1);
    t.match(jwks.keys[0], { kid: signer.kid, alg, use: 'sig', kty: alg === 'EdDSA' ? 'OKP' : 'EC' });
    t.notOk('d' in jwks.keys[0]!, 'no private part in the JWKS');
    const sub = randomUUID();
    const publisherId = randomUUID();
    const jwt = signer.sign({ sub, publisherId, scope: 'catalog', sid: 's-1', amr: ['pwd'], requestId: 'r-1', method: 'post', path: '/api/v1/works', query: 'a=1&b=2' });
    t.same(decodeProtectedHeader(jwt), { alg, kid: signer.kid, typ: 'JWT' });
    const { payload } = await jwtVerify(jwt, createLocalJWKSet(jwks), { algorithms: [alg], issuer: ISSUER, audience: AUDIENCE, typ: 'JWT' });
    t.match(payload, { sub, publisher_id: publisherId, scope: 'catalog', sid: 's-1', amr: ['pwd'], request_id: 'r-1', htm: 'POST', htu: '/api/v1/works', htq: queryHash('a=1&b=2') });
    t.equal(payload.exp! - payload.iat!, 60);
    t.type(payload.jti, 'string');

    const verify = createAssertionVerifier({ issuer: ISSUER, audience: AUDIENCE, getKey: createLocalJWKSet(jwks), replay });
    const identity = await verify(jwt, { method: 'POST', path: '/api/v1/works', query: 'a=1&b=2' });
    t.match(identity, { userId: sub, publisherId, requestId: 'r-1', sid: 's-1' });
    await t.rejects(verify(jwt, { method: 'POST', path: '/api/v1/works', query: 'a=1&b=2' }), { message: /already used/ }, 'the jti is accepted once');
    const other = signer.sign({ sub, scope: '', requestId: 'r-2', method: 'GET', path: '/api/v1/works', query: '' });
    await t.rejects(verify(other, { method: 'GET', path: '/api/v1/works', query: 'x=1' }), { message: /query/ }, 'htq binds the query');
    t.not(other.split('.')[2], jwt.split('.')[2]);
    t.throws(() => signer.sign({ sub, scope: '', requestId: 'r', method: 'GET', path: '/a?b', query: '' }), /query string/);
  });
}

t.test('a tampered assertion is refused', async (t) => {
  const signer = await createAssertionSigner({ keyFile: await keyFile('EdDSA'), issuer: ISSUER, audience: AUDIENCE, warn: () => undefined });
  const [h, p, s] = signer.sign({ sub: randomUUID(), scope: '', requestId: 'r', method: 'GET', path: '/x', query: '' }).split('.');
  const forged = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p!, 'base64url').toString()), sub: randomUUID() })).toString('base64url');
  await t.rejects(jwtVerify(`${h}.${forged}.${s}`, createLocalJWKSet(signer.jwks())), { code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' });
});

t.test('other key types are refused; no key file → an ephemeral ES256 key and a warning', async (t) => {
  for (const alg of ['RS256', 'ES384'] as const) {
    await t.rejects(createAssertionSigner({ keyFile: await keyFile(alg), issuer: ISSUER, audience: AUDIENCE, warn: () => undefined }), /not a PKCS#8 PEM Ed25519 or P-256 private key/, alg);
  }
  const warnings: string[] = [];
  const signer = await createAssertionSigner({ keyFile: join(dir, 'missing.pem'), issuer: ISSUER, audience: AUDIENCE, warn: (m) => warnings.push(m) });
  t.equal(signer.alg, 'ES256');
  t.match(warnings, [/does not exist/]);
  const jwt = signer.sign({ sub: randomUUID(), scope: '', requestId: 'r', method: 'GET', path: '/x', query: '' });
  await t.resolves(jwtVerify(jwt, createLocalJWKSet(signer.jwks()), { algorithms: ['ES256'] }));
});
