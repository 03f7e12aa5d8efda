/**
 * Property-based fuzzing of the sidecar (issue 9 §4) — the test command's share: FUZZ_TEST_RUNS
 * cases (default 3,000) per transport, in process (light-my-request into the real pipeline, raw
 * targets) and over raw TCP sockets against a sidecar child process, with real OpenFGA, Redis and
 * a recording upstream. Arbitraries, the target oracle, the forwarding model and the invariants
 * are in test/support/fuzz.ts (the bench mode, `npm run bench -- fuzz`, runs 100,000 per
 * transport). A failure prints fast-check's seed and path; replay with FUZZ_SEED / FUZZ_PATH.
 *
 * Before the properties, a few fixed cases prove that the invariants can fail — a permissive
 * oracle or model would let every property pass.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { checkCase, forwardPermitted, isUnambiguousTarget, runFuzz, startFuzzFixture, type FuzzCase, type FuzzFixture } from '../support/fuzz.ts';

const runs = Number(process.env.FUZZ_TEST_RUNS ?? 3000);
let fx: FuzzFixture;
t.before(async () => {
  fx = await startFuzzFixture({ transports: ['inject', 'http'] });
});
t.teardown(() => fx?.close());

t.test('the target oracle: RFC 3986 readings, independent of the sidecar', async (t) => {
  for (const ok of ['/api/v1/works', '/docs/', '/docs/a%20b?x=%2F&y=/../z', '/docs/caf%C3%A9', '/docs/a%3Bb', "/docs/!$&'()*+,=:@", '/docs/..a/.b']) t.ok(isUnambiguousTarget(ok), ok);
  for (const bad of ['', '*', 'http://x/docs/a', '//docs/a', '/docs//a', '/docs/./a', '/docs/%2e%2E/a', '/docs/a%2Fb', '/docs/a%5cb', '/docs/a\\b', '/docs/a;b', '/docs/%00', '/docs/%C0%AF', '/docs/%E0%80%AE', '/docs/%41', '/docs/%zz', '/docs/\u00e9', '/docs/a b', '/docs/a#b', '/docs/x?%'])
    t.notOk(isUnambiguousTarget(bad), JSON.stringify(bad));
});

t.test('the forwarding model follows the fixture: the viewer reads its publisher, nothing else', async (t) => {
  const { world, pool } = fx;
  const me = pool.valid.find((v) => v.sub === world.user)!.token;
  const stranger = pool.valid.find((v) => v.sub === world.stranger)!.token;
  const h = (token: string, publisher = world.publisher): [string, string][] => [['Authorization', `Bearer ${token}`], ['X-Publisher-Id', publisher]];
  t.ok(forwardPermitted(world, pool, 'GET', '/api/v1/works?limit=1', h(me)));
  t.ok(forwardPermitted(world, pool, 'HEAD', `/api/v1/works/${world.work.toUpperCase()}`, h(me)));
  t.ok(forwardPermitted(world, pool, 'GET', '/api/v1/users/me', h(stranger)));
  t.notOk(forwardPermitted(world, pool, 'GET', '/api/v1/works', h(stranger)), 'a stranger');
  t.notOk(forwardPermitted(world, pool, 'GET', '/api/v1/works', h(me, randomUUID())), 'another publisher');
  t.notOk(forwardPermitted(world, pool, 'POST', '/api/v1/works', h(me)), 'a viewer cannot create');
  t.notOk(forwardPermitted(world, pool, 'GET', '/api/v1/works', h(me.slice(0, -2))), 'a truncated token');
  t.notOk(forwardPermitted(world, pool, 'GET', '/docs/x', [...h(me), ['authorization', `Bearer ${me}`]]), 'two Authorization fields');
});

t.test('the invariants can fail', async (t) => {
  const [inject] = fx.transports;
  const { world, pool } = fx;
  const me = pool.valid.find((v) => v.sub === world.user)!.token;
  const good = (target: string, extra: [string, string][] = []): FuzzCase => ({ family: 'good', method: 'GET', target, headers: [['Authorization', `Bearer ${me}`], ['X-Publisher-Id', world.publisher], ...extra] });
  t.same(await checkCase(fx, inject!, good('/api/v1/works?limit=1')), { status: 200, forwarded: true }, 'a good case passes');
  // a "good" case the sidecar must refuse (another publisher): the good-case invariant fires
  await t.rejects(checkCase(fx, inject!, good('/api/v1/works', [['X-Publisher-Id', randomUUID()]])), { name: 'InvariantViolation', message: /did not reach the upstream/ }, 'a refused good case is reported');
  // the upstream answering for the sidecar is noticed: a forwarded request the model forbids
  const answered: FuzzCase = { family: 'headers', method: 'GET', target: '/docs/x', headers: [] };
  const realSend = inject!.send;
  inject!.send = async (c) => {
    const r = await realSend(c);
    fx.upstream.received.push({ method: 'GET', url: '/api/v1/works', headers: {}, bytes: 0 });
    return r;
  };
  try {
    await t.rejects(checkCase(fx, inject!, answered), { name: 'InvariantViolation', message: /called 2 times/ }, 'an extra upstream call is reported');
  } finally {
    inject!.send = realSend;
  }
});

t.test('found by the fuzzer: overlong UTF-8 is non-canonical; no client X-Forwarded-* reaches the upstream', async (t) => {
  const { world, pool } = fx;
  const me = pool.valid.find((v) => v.sub === world.user)!.token;
  for (const transport of fx.transports) {
    // a lax decoder reads %C0%AE as "." and %C0%AF as "/": /docs/../api/v1/works on a public route
    for (const target of ['/docs/%C0%AE%C0%AE/api/v1/works', '/docs/%C0%AF', '/docs/%E0%80%AE', '/docs/%ED%A0%80', '/docs/%FF']) {
      const res = await transport.send({ family: 'target', method: 'GET', target, headers: [] });
      t.equal(res.status, 400, `${transport.name} ${target} → 400`);
      t.match(JSON.parse(res.body).type, /non-canonical-path$/, `${transport.name} ${target}: non-canonical-path`);
    }
    const spoofed: [string, string][] = ['X-Forwarded-Prefix', 'X-Forwarded-Path', 'X-Forwarded-Uri', 'X-Forwarded-Method', 'X-Forwarded-Port', 'X-Forwarded-Server', 'X-Forwarded-Ssl'].map((n) => [n, '/admin']);
    fx.upstream.received.length = 0;
    const res = await transport.send({ family: 'good', method: 'GET', target: '/api/v1/works', headers: [['Authorization', `Bearer ${me}`], ['X-Publisher-Id', world.publisher], ...spoofed] });
    t.equal(res.status, 200, `${transport.name}: allowed`);
    const got = fx.upstream.received[0]!.headers;
    t.same(Object.keys(got).filter((k) => k.startsWith('x-forwarded-')).sort(), ['x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto'], `${transport.name}: only the sidecar's own X-Forwarded-*`);
  }
});

for (const name of ['inject', 'http'] as const) {
  t.test(`${runs} fuzz cases ${name === 'inject' ? 'in process' : 'over raw sockets'}: no 5xx, no forward of a non-canonical or unauthenticated request, good requests get through, no crash`, async (t) => {
    const transport = fx.transports.find((x) => x.name === name)!;
    const stats = await runFuzz(fx, transport, { runs });
    t.comment(`seed ${stats.seed}: ${stats.runs} cases in ${stats.ms} ms, ${stats.forwarded} forwarded, statuses ${JSON.stringify(stats.statuses)}, families ${JSON.stringify(stats.families)}`);
    t.equal(stats.runs, runs, 'every case ran');
    t.ok(stats.forwarded > runs / 20, 'a fair share reached the upstream (the good cases at least)');
    t.ok((stats.statuses[400] ?? 0) > runs / 20 && (stats.statuses[401] ?? 0) > runs / 50 && (stats.statuses[404] ?? 0) > 0, 'the refusals are exercised');
    t.ok((stats.families['ext-authz']?.[200] ?? 0) > 0 && (stats.families['ext-authz']?.[400] ?? 0) > 0, '/ext-authz both allowed and refused');
    t.ok((stats.families.token?.[401] ?? 0) > 0 && (stats.families.token?.[403] ?? 0) + (stats.families.headers?.[403] ?? 0) > 0, 'tokens refused; genuine ones denied by the model');
    if (name === 'http') t.equal(fx.process!.child.exitCode, null, 'the sidecar process is alive');
  });
}
