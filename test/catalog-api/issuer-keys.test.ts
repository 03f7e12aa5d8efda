/**
 * The issuer: discovery metadata, the JWKS, access tokens per RFC 9068, and key rotation — the next
 * key is published before it signs, the retired key stays published until every token it signed has
 * expired, private keys are sealed (never plaintext in the database), the wrong key-encryption key
 * is refused; after the KEK is lost, sign-in fails closed (503, the JWKS still served) until
 * `keys reset` replaces the keys, and recovers without a restart.
 */
import t from 'tap';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { DEMO_PASSWORD } from '../../migrations/seed/demo.ts';
import { checkKeys, createIssuerKeys, listKeys, replaceUnreadableKeys, rotateKeys } from '../../catalog-api/src/modules/auth/keys/key-store.ts';
import { loadKek, seal, unseal } from '../../catalog-api/src/modules/auth/secrets.ts';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import { useSuite } from './helpers.ts';

const suite = useSuite(t, 'issuer');
const kekFile = process.env.ISSUER_KEK_FILE ?? '.data/issuer-kek.key';

const jwks = async () => (await suite.ta.app.inject({ method: 'GET', url: '/api/v1/auth/jwks.json' })).json() as { keys: { kid: string; d?: string; alg: string }[] };
async function signIn(): Promise<string> {
  const r = await suite.ta.app.inject({ method: 'POST', url: '/api/v1/auth/login', headers: { 'x-forwarded-for': '10.3.0.1' }, payload: { email: 'viewer@dmp.example', password: DEMO_PASSWORD } });
  t.equal(r.statusCode, 200);
  return r.json().access_token;
}

t.test('discovery metadata and the JWKS', async (t) => {
  const meta = await suite.ta.app.inject({ method: 'GET', url: '/.well-known/openid-configuration' });
  t.equal(meta.statusCode, 200);
  const m = meta.json();
  t.equal(m.issuer, 'http://127.0.0.1:8000');
  t.equal(m.jwks_uri, 'http://127.0.0.1:8000/api/v1/auth/jwks.json');
  const set = await jwks();
  t.equal(set.keys.length, 2, 'active + next');
  t.ok(set.keys.every((k) => k.alg === 'ES256' && !k.d), 'public ES256 keys only');
});

t.test('access tokens: RFC 9068 header and claims, no roles', async (t) => {
  const token = await signIn();
  const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(await jwks()), {
    issuer: 'http://127.0.0.1:8000',
    audience: 'music-publishing',
    typ: 'at+jwt',
    algorithms: ['ES256'],
  });
  t.equal(protectedHeader.typ, 'at+jwt');
  for (const claim of ['iss', 'aud', 'sub', 'exp', 'iat', 'jti', 'client_id', 'sid', 'auth_time', 'amr']) t.ok(payload[claim] !== undefined, `claim ${claim}`);
  t.equal(payload.exp! - payload.iat!, 900, '15 minutes');
  t.same(payload.amr, ['pwd']);
  t.notOk(payload.roles ?? payload.permissions ?? payload.scope, 'no roles or permissions in the token');
});

t.test('private keys are sealed under the KEK; the wrong KEK is refused', async (t) => {
  const rows = (await suite.su.query(`select kid, private_jwe, public_jwk from signing_keys`)).rows;
  t.ok(rows.length >= 2);
  for (const r of rows) {
    t.equal(r.private_jwe.split('.').length, 5, 'a compact JWE');
    t.notMatch(r.private_jwe, /"d"/, 'no plaintext private key');
    t.notOk(r.public_jwk.d, 'the public JWK has no private part');
  }
  const kek = loadKek(kekFile);
  const sealed = await seal(kek, 'secret');
  t.equal(await unseal(kek, sealed), 'secret');
  const dir = mkdtempSync(join(tmpdir(), 'kek-'));
  writeFileSync(join(dir, 'k'), randomBytes(32).toString('base64url'));
  await t.rejects(unseal(loadKek(join(dir, 'k')), sealed), /key-encryption key/, 'another KEK cannot open it');
  writeFileSync(join(dir, 'short'), randomBytes(16).toString('base64url'));
  t.throws(() => loadKek(join(dir, 'short')), /32 bytes/);
});

t.test('rotation: publish before signing, keep the retired key until its tokens expired', async (t) => {
  const kek = loadKek(kekFile);
  const orm = suite.ta.authOrm;
  const before = await listKeys(orm);
  const next = before.find((k) => k.status === 'next')!;
  const active = before.find((k) => k.status === 'active')!;
  await t.rejects(rotateKeys(orm, kek, { publishAheadMs: 3_600_000, accessTokenTtlMs: 900_000 }), /published for/, 'a next key published too recently is not promoted');

  const oldToken = await signIn();
  t.equal(decodeProtectedHeader(oldToken).kid, active.kid);
  const r = await rotateKeys(orm, kek, { publishAheadMs: 0, accessTokenTtlMs: 900_000 });
  t.equal(r.activated, next.kid, 'the published next key signs now');
  t.equal(r.retired, active.kid);
  const keys = createIssuerKeys({ orm, kek, reloadMs: 0 });
  t.equal((await keys.signingKey()).kid, next.kid, 'a fresh process signs with the new key');
  const rows = await listKeys(orm);
  const retired = rows.find((k) => k.kid === active.kid)!;
  t.equal(retired.status, 'retired');
  t.ok(Math.abs(retired.expiresAt!.getTime() - (retired.retiredAt!.getTime() + 900_000 + 60_000)) < 1000, 'published until retirement + token lifetime + skew');
  const fresh = createIssuerKeys({ orm, kek, reloadMs: 0 });
  const set = await fresh.jwks();
  t.same(new Set(set.keys.map((k) => k.kid)), new Set([active.kid, r.activated, r.next]), 'JWKS: retired, active and the new next');
  const { payload } = await jwtVerify(oldToken, createLocalJWKSet(set), { algorithms: ['ES256'] });
  t.ok(payload.sub, 'a token of the retired key still verifies during its grace');

  // grace over: the retired key leaves the JWKS, and the next rotation deletes it
  await suite.su.query(`update signing_keys set expires_at = now() - interval '1 second' where kid = $1`, [active.kid]);
  const later = await createIssuerKeys({ orm, kek, reloadMs: 0 }).jwks();
  t.notOk(later.keys.some((k) => k.kid === active.kid), 'gone from the JWKS after its grace');
  await t.rejects(jwtVerify(oldToken, createLocalJWKSet(later), { algorithms: ['ES256'] }), 'its tokens no longer verify');
  const r2 = await rotateKeys(orm, kek, { publishAheadMs: 0, accessTokenTtlMs: 900_000 });
  t.same(r2.deleted, [active.kid], 'deleted by the next rotation');
  await keys.close();
  await fresh.close();
});

t.test('a lost key-encryption key: sign-in fails closed with 503, `reset` replaces the keys, sign-in recovers', async (t) => {
  const orm = suite.ta.authOrm;
  const kek = loadKek(kekFile);
  const dir = mkdtempSync(join(tmpdir(), 'kek-'));
  writeFileSync(join(dir, 'other'), randomBytes(32).toString('base64url'));
  const other = loadKek(join(dir, 'other'));
  const ttl = { accessTokenTtlMs: 900_000 };
  const before = await listKeys(orm);
  const oldActive = before.find((k) => k.status === 'active')!;
  const oldNext = before.find((k) => k.status === 'next')!;

  // A process holding only the other KEK: no signing, told once, the public JWKS still served.
  const told: string[] = [];
  const lost = createIssuerKeys({ orm, kek: other, reloadMs: 0, onError: (err) => told.push((err as Error).message) });
  const refused = await lost.signingKey().then(() => null, (err: { status?: number; kind?: string }) => err);
  t.same(refused && { status: refused.status, kind: refused.kind }, { status: 503, kind: 'upstream-unavailable' }, 'no signing with a key it cannot open');
  await lost.reload();
  t.equal(told.length, 1, 'the cause is reported once, not at every reload');
  t.match(told[0], new RegExp(`active key ${oldActive.kid} cannot be opened.*keys -- reset`), 'the report names the key and the remedy');
  const served = (await lost.jwks()).keys.map((k) => k.kid);
  t.ok(served.includes(oldActive.kid) && served.includes(oldNext.kid), 'the JWKS is still served');
  t.same((await checkKeys(orm, other)).map((k) => k.readable), [false, false], 'check: neither key opens');
  t.same((await checkKeys(orm, kek)).map((k) => k.readable), [true, true], 'check: the right KEK opens both');

  const r = await replaceUnreadableKeys(orm, other, ttl);
  t.same(r.retired, [oldActive.kid], 'the active key is retired (its tokens keep verifying until they expire)');
  t.same(r.deleted, [oldNext.kid], 'the next key, which never signed, is deleted');
  t.equal(r.created.length, 2, 'a new active and next key');
  t.same(await replaceUnreadableKeys(orm, other, ttl), { retired: [], deleted: [], created: [] }, 'a second reset changes nothing');
  await lost.reload();
  t.ok(r.created.includes((await lost.signingKey()).kid), 'the process signs again after its next reload');
  t.ok((await lost.jwks()).keys.some((k) => k.kid === oldActive.kid), 'the retired key stays published');
  await lost.close();

  // The API holds the original KEK: within its reload period it answers 503, then recovers.
  // One client address per attempt: polling must not meet the sign-in rate limit.
  let attempt = 0;
  const login = () =>
    suite.ta.app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      headers: { 'x-forwarded-for': `10.4.${Math.floor(attempt / 250)}.${attempt++ % 250}` },
      payload: { email: 'viewer@dmp.example', password: DEMO_PASSWORD },
    });
  const until = async (status: number) => {
    for (let i = 0; i < 80; i++) {
      const res = await login();
      if (res.statusCode === status) return res;
      await new Promise((ok) => setTimeout(ok, 100));
    }
    return login();
  };
  const down = await until(503);
  t.equal(down.statusCode, 503, 'sign-in fails closed');
  t.notMatch(down.body, /key-encryption|sealed/, 'the reason is in the log, not in the answer');
  t.equal((await suite.ta.app.inject({ method: 'GET', url: '/api/v1/auth/jwks.json' })).statusCode, 200, 'the JWKS is still served');
  await replaceUnreadableKeys(orm, kek, ttl);
  t.equal((await until(200)).statusCode, 200, 'sign-in recovers without a restart once the keys are replaced');
});
