import t from 'tap';
import { stringify } from 'yaml';
import { loadModel } from '../../policies/src/model.ts';
import { loadRouteRules, parseRouteRules, redactPath, validateRoutesAgainstModel, type RouteRule } from '../../policies/src/routes.ts';
import { PERMISSION_NAMES, permissionRelation } from '../../policies/src/permissions.ts';

const doc = (routes: unknown[]) => stringify({ version: 1, routes });
const ok = { method: 'GET', path: '/api/v1/works', relation: 'works_read', object: 'publisher:{publisher}' };

t.test('policies/routes.yaml loads and matches the model', async (t) => {
  const rules = loadRouteRules();
  validateRoutesAgainstModel(rules, loadModel());
  const find = (method: string, path: string) => rules.find((r) => r.method === method && r.path === path);
  for (const [plural, type] of [['works', 'work'], ['songwriters', 'songwriter'], ['recordings', 'recording']] as const) {
    t.same(find('GET', `/api/v1/${plural}`), { method: 'GET', path: `/api/v1/${plural}`, relation: `${plural}_read`, object: 'publisher:{publisher}' });
    t.same(find('POST', `/api/v1/${plural}`), { method: 'POST', path: `/api/v1/${plural}`, relation: `${plural}_create`, object: 'publisher:{publisher}' });
    for (const [method, relation] of [['GET', 'can_read'], ['PATCH', 'can_update'], ['DELETE', 'can_delete']] as const) {
      t.same(find(method, `/api/v1/${plural}/{id}`), { method, path: `/api/v1/${plural}/{id}`, relation, object: `${type}:{id}` });
    }
  }
  t.same(find('GET', '/api/v1/users/me'), { method: 'GET', path: '/api/v1/users/me', authenticated: true });
  t.same(find('GET', '/api/v1/publishers/{publisherId}/users'), { method: 'GET', path: '/api/v1/publishers/{publisherId}/users', relation: 'members_read', object: 'publisher:{publisherId}' });
  t.same(find('PUT', '/api/v1/publishers/{publisherId}/users/{userId}/role')?.relation, 'members_update_role');
  t.same(find('POST', '/api/v1/publishers')?.object, 'system:platform', 'creating publishers: system admins');
  t.same(find('POST', '/api/v1/invitations/{token}/accept')?.public, true, 'the invitation token is the credential');
  t.equal(find('GET', '/api/v1/members'), undefined, 'the old /members routes are gone');
  // every permission relation a rule names exists in the catalogue (or is a row relation / the platform's)
  const known = new Set([...PERMISSION_NAMES.map(permissionRelation), 'can_read', 'can_update', 'can_delete', 'can_administer']);
  for (const r of rules) if (r.relation) t.ok(known.has(r.relation), `${r.method} ${r.path}: ${r.relation} is a permission`);
  for (const p of ['/docs', '/docs/*', '/api/v1/openapi.json']) t.equal(find('GET', p)?.public, true, p);
  const signIn = ['login', 'mfa/verify', 'refresh', 'password/forgot', 'password/reset', 'email/verify'];
  for (const p of signIn) t.same(find('POST', `/api/v1/auth/${p}`), { method: 'POST', path: `/api/v1/auth/${p}`, public: true }, `sign-in step ${p} is public`);
  for (const p of ['/.well-known/openid-configuration', '/api/v1/auth/jwks.json']) t.equal(find('GET', p)?.public, true, `issuer metadata ${p} is public`);
  for (const [method, path] of [['POST', '/api/v1/auth/logout'], ['GET', '/api/v1/auth/sessions'], ['DELETE', '/api/v1/auth/sessions/{id}'], ['PUT', '/api/v1/users/me/password'], ['POST', '/api/v1/users/me/mfa/totp']] as const) {
    t.same(find(method, path), { method, path, authenticated: true }, `${method} ${path}: any signed-in user, no publisher context`);
  }
  for (const method of ['GET', 'PUT', 'DELETE'] as const) {
    t.same(find(method, '/api/v1/publishers/{publisherId}/directory'), { method, path: '/api/v1/publishers/{publisherId}/directory', relation: 'can_administer', object: 'system:platform' }, `${method} directory: system admins`);
  }
  t.same(find('DELETE', '/api/v1/publishers/{publisherId}/users/{userId}/sessions'), {
    method: 'DELETE',
    path: '/api/v1/publishers/{publisherId}/users/{userId}/sessions',
    relation: 'members_remove',
    object: 'publisher:{publisherId}',
  });
  const keys = rules.map((r) => `${r.method} ${r.path}`);
  t.equal(new Set(keys).size, keys.length, 'no route is listed twice');
});

t.test('valid rules of every kind parse', async (t) => {
  const rules: RouteRule[] = parseRouteRules(
    doc([
      ok,
      { method: 'GET', path: '/', public: true },
      { method: 'GET', path: '/static/*', public: true },
      { method: 'GET', path: '/me', authenticated: true },
      { method: 'PUT', path: '/a/{x}/b/{y}', relation: 'can_update', object: 'work:{y}' },
      { method: 'PUT', path: '/a/{x}', relation: 'can_update', object: 'publisher:{publisher}', forward_headers: ['x-http-method-override'] },
      { method: 'GET', path: '/platform/{x}', relation: 'admin', object: 'system:platform' },
    ]),
  );
  t.equal(rules.length, 7);
  t.equal(rules[6]!.object, 'system:platform', 'a fixed object (the platform itself)');
  t.same(rules[5]!.forward_headers, ['x-http-method-override'], 'forward_headers kept');
  t.same(rules[0], ok);
});

const invalid: [string, unknown, RegExp][] = [
  ['bad YAML', '{{{', /invalid YAML/],
  ['wrong version', stringify({ version: 2, routes: [ok] }), /version must be 1/],
  ['no routes', stringify({ version: 1, routes: [] }), /at least one rule/],
  ['unknown top-level key', stringify({ version: 1, routes: [ok], extra: 1 }), /extra/],
  ['method outside the HTTP set', doc([{ ...ok, method: 'FETCH' }]), /routes\[0\].*method must be one of GET/],
  ['lower-case method', doc([ok, { ...ok, method: 'get' }]), /routes\[1\].*method must be one of/],
  ['path without leading slash', doc([{ ...ok, path: 'api/v1/works' }]), /routes\[0\].*path must start with "\/"/],
  ['partial-segment param', doc([{ ...ok, path: '/works/x{id}' }]), /routes\[0\].*whole-segment \{name\} parameter/],
  ['bad param name', doc([{ ...ok, path: '/works/{1d}' }]), /routes\[0\].*whole-segment/],
  ['param named publisher', doc([{ ...ok, path: '/p/{publisher}' }]), /routes\[0\].*reserved for the publisher context/],
  ['repeated param', doc([{ method: 'GET', path: '/a/{id}/b/{id}', public: true }]), /routes\[0\].*appears twice/],
  ['wildcard not last', doc([{ method: 'GET', path: '/a/*/b', public: true }]), /routes\[0\].*only allowed as the last segment/],
  ['empty segment', doc([{ method: 'GET', path: '/a//b', public: true }]), /routes\[0\].*empty segment/],
  ['no mode', doc([{ method: 'GET', path: '/a' }]), /routes\[0\].*exactly one of public/],
  ['two modes', doc([{ method: 'GET', path: '/a', public: true, authenticated: true }]), /routes\[0\].*exactly one of public/],
  ['public and relation', doc([{ ...ok, public: true }]), /routes\[0\].*exactly one of public/],
  ['public: false', doc([{ method: 'GET', path: '/a', public: false }]), /routes\[0\].*public must be true/],
  ['relation without object', doc([{ method: 'GET', path: '/a', relation: 'can_read' }]), /routes\[0\].*relation and object must be given together/],
  ['object without relation', doc([{ method: 'GET', path: '/a', object: 'work:{publisher}' }]), /routes\[0\].*relation and object must be given together/],
  ['object not a template', doc([{ ...ok, object: 'publisher' }]), /routes\[0\].*must be a template <type>:\{param\}/],
  ['object with a wildcard id', doc([{ ...ok, object: 'work:*' }]), /routes\[0\].*must be a template <type>:\{param\} or a fixed object/],
  ['object with a half-template id', doc([{ ...ok, object: 'work:x{publisher}' }]), /routes\[0\].*must be a template <type>:\{param\} or a fixed object/],
  ['object param not in path', doc([{ ...ok, path: '/works/{id}', object: 'work:{workId}' }]), /routes\[0\].*\{workId\}, which is neither a path parameter nor \{publisher\}/],
  ['unknown key', doc([{ ...ok, cache: true }]), /routes\[0\].*cache/],
  ['forward_headers naming an ordinary header', doc([{ ...ok, forward_headers: ['x-user-id'] }]), /routes\[0\].*forward_headers names only these \(lower case\): x-http-method-override/],
  ['forward_headers in upper case', doc([{ ...ok, forward_headers: ['X-HTTP-Method-Override'] }]), /routes\[0\].*forward_headers names only these/],
  ['forward_headers empty', doc([{ ...ok, forward_headers: [] }]), /routes\[0\].*forward_headers: name at least one header/],
  ['duplicate method + path', doc([ok, { method: 'POST', path: '/api/v1/works', public: true }, ok]), /routes\[2\] \(GET \/api\/v1\/works\): duplicate of routes\[0\]/],
  ['duplicate modulo param names', doc([{ ...ok, path: '/w/{a}', object: 'work:{a}' }, { ...ok, path: '/w/{b}', object: 'work:{b}' }]), /routes\[1\].*duplicate of routes\[0\]/],
];

for (const [name, text, message] of invalid) {
  t.test(`rejects: ${name}`, async (t) => {
    t.throws(() => parseRouteRules(text as string, 'test.yaml'), { message });
    t.throws(() => parseRouteRules(text as string, 'test.yaml'), { message: /^test\.yaml: / });
  });
}

t.test('validateRoutesAgainstModel names unknown types and relations', async (t) => {
  const model = loadModel();
  const rules = parseRouteRules(
    doc([ok, { method: 'GET', path: '/x/{id}', relation: 'can_read', object: 'album:{id}' }, { method: 'GET', path: '/y/{id}', relation: 'can_fly', object: 'work:{id}' }]),
  );
  t.throws(() => validateRoutesAgainstModel(rules, model), {
    message: /routes\[1\] \(GET \/x\/\{id\}\): type "album" is not in the model[\s\S]*routes\[2\] \(GET \/y\/\{id\}\): type "work" has no relation "can_fly"/,
  });
  t.doesNotThrow(() => validateRoutesAgainstModel(rules.slice(0, 1), model));
});

t.test('credential path segments are redacted in logs', async (t) => {
  const token = '6f7323a2-f5c0-40a5-a9dd-6b49264b18d7';
  t.equal(redactPath(`/api/v1/invitations/${token}/accept`), '/api/v1/invitations/[redacted]/accept');
  t.equal(redactPath(`/ext-authz/api/v1/invitations/${token}/accept?x=1`), '/ext-authz/api/v1/invitations/[redacted]/accept?x=1');
  t.equal(redactPath('/api/v1/works?limit=5'), '/api/v1/works?limit=5', 'other paths unchanged');
});
