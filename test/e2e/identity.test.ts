/**
 * The identity issue's acceptance on the assembled stack (mail catcher, catalog API as the issuer,
 * two sidecars, real OpenFGA, Redis and the Samba AD DC): an Active Directory user in a nested
 * group edits DMP's catalog; creator1 signs in with password + TOTP; logout, a group removal
 * followed by `npm run directory -- sync`, and a disabled directory account each take effect at
 * both sidecars within a second.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { DEMO_PASSWORD, DEMO_TOTP_SECRETS } from '../../migrations/seed/demo.ts';
import { totpCode } from '../../catalog-api/src/modules/auth/totp.ts';
import { addMember, asAdmin, demoGroupDn, demoUserDn, removeMember, resetDirectory, setAttribute, UAC } from '../support/directory.ts';
import { PUBLISHER_IDS } from './policy.ts';
import { ROOT, postJson, signIn, startStack, type Stack } from './stack.ts';

let stack: Stack;
t.before(async () => {
  await resetDirectory();
  stack = await startStack({ sidecars: 2 });
});
t.teardown(async () => {
  await stack?.stop();
  await resetDirectory();
});

const TYPE = (kind: string) => `https://errors.music-publishing.example/${kind}`;

async function call(base: string, method: string, path: string, token: string, body?: unknown): Promise<Response> {
  return fetch(`${base}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      'x-publisher-id': PUBLISHER_IDS.dmp,
      ...(body ? { 'content-type': 'application/json' } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
}

/** Poll `path` on `base` until it answers `status`; returns the milliseconds it took (or -1 after `withinMs`). */
async function untilStatus(base: string, path: string, token: string, status: number, withinMs: number): Promise<number> {
  const started = Date.now();
  while (Date.now() - started <= withinMs) {
    if ((await call(base, 'GET', path, token)).status === status) return Date.now() - started;
    await sleep(20);
  }
  return -1;
}

/** `npm run directory -- sync <publisher>` as its own process, against the stack's database. */
async function directorySync(publisher: string): Promise<string> {
  const child = spawn(process.execPath, ['catalog-api/src/modules/directory/cli.ts', 'sync', publisher], { cwd: ROOT, env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const code = await new Promise<number | null>((r) => child.on('exit', r));
  if (code !== 0) throw new Error(`directory sync exited ${code}: ${out}`);
  return out;
}

t.test('done-when: ad.editor@dmp.example (nested group → editor) lists and edits DMP works through the sidecar', async (t) => {
  const login = await postJson('/api/v1/auth/login', { email: 'ad.editor@dmp.example', password: DEMO_PASSWORD });
  t.equal(login.status, 200, 'signed in against the directory');
  t.equal(login.json.token_type, 'Bearer');
  const token = login.json.access_token as string;
  const [a, b] = stack.sidecars.map((s) => s.url) as [string, string];
  const list = await call(a, 'GET', '/api/v1/works?limit=1', token);
  t.equal(list.status, 200, "DMP's works");
  const work = ((await list.json()) as { items: { id: string; title: string }[] }).items[0]!;
  const patch = await call(b, 'PATCH', `/api/v1/works/${work.id}`, token, { title: `${work.title} (AD edit)` });
  t.equal(patch.status, 200, 'PATCH allowed: DMP-Catalog-Team is inside DMP-Editors');
  t.equal(((await patch.json()) as { title: string }).title, `${work.title} (AD edit)`);
  const del = await call(a, 'DELETE', `/api/v1/works/${work.id}`, token);
  t.equal(del.status, 403, 'an editor cannot delete (manager and up)');
});

t.test('done-when: creator1@songtrust.example signs in with password + TOTP', async (t) => {
  const first = await postJson('/api/v1/auth/login', { email: 'creator1@songtrust.example', password: DEMO_PASSWORD });
  t.equal(first.status, 200);
  t.equal(first.json.mfa_required, true, 'the password alone is not enough');
  t.notOk(first.json.access_token, 'no token before the second factor');
  const wrong = await postJson('/api/v1/auth/mfa/verify', { mfa_token: first.json.mfa_token, code: '000000' });
  t.equal(wrong.status, 401, 'a wrong code is refused');
  const tokens = await signIn('creator1@songtrust.example');
  const res = await fetch(`${stack.sidecars[0]!.url}/api/v1/works?limit=5`, {
    headers: { authorization: `Bearer ${tokens.access_token}`, 'x-publisher-id': PUBLISHER_IDS.songtrust },
  });
  t.equal(res.status, 200, 'the token opens the catalog');
  t.ok(DEMO_TOTP_SECRETS['creator1@songtrust.example'], 'the demo secret that npm start prints');
  t.ok(totpCode(DEMO_TOTP_SECRETS['creator1@songtrust.example']!).match(/^\d{6}$/));
});

t.test('done-when: logout makes the next call 401 at both sidecars within 1 s', async (t) => {
  const { access_token: token } = await signIn('viewer@dmp.example');
  const [a, b] = stack.sidecars.map((s) => s.url) as [string, string];
  for (const s of [a, b]) t.equal((await call(s, 'GET', '/api/v1/works?limit=1', token)).status, 200, `allowed on ${s}`);
  const out = await fetch(`${a}/api/v1/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
  t.equal(out.status, 204);
  for (const s of [a, b]) {
    const took = await untilStatus(s, '/api/v1/works?limit=1', token, 401, 1000);
    t.ok(took >= 0, `refused on ${s} after ${took} ms`);
    const res = await call(s, 'GET', '/api/v1/works?limit=1', token);
    t.equal(((await res.json()) as { type: string }).type, TYPE('unauthenticated'));
  }
});

t.test('AD: removed from its group, then `directory sync` → 403 at both sidecars; disabled → its session ends', async (t) => {
  const viewer = await signIn('ad.viewer@dmp.example');
  const admin = await signIn('ad.admin@dmp.example');
  const [a, b] = stack.sidecars.map((s) => s.url) as [string, string];
  for (const s of [a, b]) {
    t.equal((await call(s, 'GET', '/api/v1/works?limit=1', viewer.access_token)).status, 200, `viewer allowed on ${s}`);
    t.equal((await call(s, 'GET', '/api/v1/works?limit=1', admin.access_token)).status, 200, `admin allowed on ${s}`);
  }
  await asAdmin((c) => removeMember(c, demoGroupDn('DMP-Viewers'), demoUserDn('ad.viewer')));
  await setAttribute(demoUserDn('ad.admin'), 'userAccountControl', [UAC.disabled]);
  const summary = await directorySync('dmp');
  t.match(summary, /2 removed/, 'the sync reports both removals');
  for (const s of [a, b]) {
    // The viewer's membership tuple is gone and their sessions were revoked: either answer ends access.
    const viewerTook = await untilStatus(s, '/api/v1/works?limit=1', viewer.access_token, 401, 1000);
    t.ok(viewerTook >= 0, `the removed viewer is refused on ${s} (${viewerTook} ms)`);
    const adminTook = await untilStatus(s, '/api/v1/works?limit=1', admin.access_token, 401, 1000);
    t.ok(adminTook >= 0, `the disabled admin's session ended on ${s} (${adminTook} ms)`);
  }
  const again = await postJson('/api/v1/auth/login', { email: 'ad.viewer@dmp.example', password: DEMO_PASSWORD });
  t.equal(again.status, 403, 'signing in again: no mapped group');
  t.equal(again.json.type, TYPE('no-directory-role'));
  const disabled = await postJson('/api/v1/auth/login', { email: 'ad.admin@dmp.example', password: DEMO_PASSWORD });
  t.equal(disabled.status, 403);
  t.equal(disabled.json.type, TYPE('account-disabled'), "AD's 533 becomes its own problem type");
});

t.test('AD: moved from DMP-Catalog-Team to DMP-Viewers, then `directory sync` → PATCH 403 at both sidecars, reads still allowed', async (t) => {
  const editor = await signIn('ad.editor@dmp.example');
  const [a, b] = stack.sidecars.map((s) => s.url) as [string, string];
  const list = await call(a, 'GET', '/api/v1/works?limit=1', editor.access_token);
  const work = ((await list.json()) as { items: { id: string; title: string }[] }).items[0]!;
  for (const s of [a, b]) t.equal((await call(s, 'PATCH', `/api/v1/works/${work.id}`, editor.access_token, { title: work.title })).status, 200, `editing on ${s}`);
  await asAdmin(async (c) => {
    await removeMember(c, demoGroupDn('DMP-Catalog-Team'), demoUserDn('ad.editor'));
    await addMember(c, demoGroupDn('DMP-Viewers'), demoUserDn('ad.editor'));
  });
  t.match(await directorySync('dmp'), /1 role changes/);
  for (const s of [a, b]) {
    const res = await call(s, 'PATCH', `/api/v1/works/${work.id}`, editor.access_token, { title: `${work.title} (must not land)` });
    t.equal(res.status, 403, `PATCH refused on ${s}: the role is viewer now`);
    t.equal((await call(s, 'GET', `/api/v1/works/${work.id}`, editor.access_token)).status, 200, `the session lives on, reads allowed on ${s}`);
  }
  const row = await call(a, 'GET', `/api/v1/works/${work.id}`, editor.access_token);
  t.equal(((await row.json()) as { title: string }).title, work.title, 'the refused PATCH changed nothing');
});
