/**
 * The access explorer in a real browser (issue 10 §5): Debian's Chromium driven by playwright-core
 * against the assembled stack (test/e2e/stack.ts: sidecar → catalog API → PostgreSQL, Redis,
 * OpenFGA, demo data), the page loaded through the sidecar under its strict CSP:
 *
 * - a system admin searches viewer@dmp.example (DMP, viewer, works_read), opens a DMP work (who-can
 *   lists editor@dmp.example for can_update; explain shows the path), sees the model history, runs
 *   the shadow test of an edited model (a decision made in this test changes; deploying needs the
 *   confirmation), deploys the active model's own content after its shadow run, and the live tail
 *   shows a deny a forbidden request made in this test produced;
 * - a publisher admin (owner@spirit.example): a DMP work is not found and DMP's users are not
 *   listed (the API narrows to Spirit), DMP's publisher context is refused with 403 — the page says
 *   so each time; no model section;
 * - a viewer, and a creator signing in with TOTP, are told they are not admins.
 *
 * Waiting is Playwright's auto-waiting (locator.waitFor / actions, bounded by WAIT_MS); no sleeps.
 */
import t, { type Test } from 'tap';
import { chromium, type Browser, type Page } from 'playwright-core';
import { DEMO_PASSWORD, DEMO_TOTP_SECRETS } from '../../migrations/seed/demo.ts';
import { totpCode } from '../../catalog-api/src/modules/auth/totp.ts';
import { PUBLISHER_IDS } from './policy.ts';
import { startStack, tokenFor, type Stack } from './stack.ts';
import { Redis } from 'ioredis';
import { resolveStore } from '../../policies/src/model.ts';
import { decisionStreamKey } from '../../policies/src/decision-log.ts';

/** Longest wait for one thing to appear, ms (the deny tail polls every 2 s, the decision log flushes every ~1 s). */
const WAIT_MS = 15_000;
const DMP = PUBLISHER_IDS.dmp;

let stack: Stack;
let browser: Browser;
t.before(async () => {
  [stack, browser] = await Promise.all([
    startStack(),
    chromium.launch({ executablePath: process.env.CHROMIUM_BIN ?? '/usr/bin/chromium', args: ['--no-sandbox'] }),
  ]);
  // The shadow run below replays this store's recent decisions: start from this suite's own, not
  // the thousands the other suites (and earlier runs on this machine) left in the shared stream.
  const storeName = process.env.OPENFGA_STORE_NAME ?? 'music-publishing';
  const storeId = await resolveStore(process.env.OPENFGA_API_URL ?? 'http://127.0.0.1:8080', storeName);
  const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/0');
  await redis.del(decisionStreamKey(storeId));
  redis.disconnect();
});
t.teardown(async () => {
  await browser?.close();
  await stack?.stop();
});

const sidecar = () => stack.sidecars[0]!.url;

/** A call through the sidecar as `email`. @returns status and parsed body */
async function call(email: string, method: string, path: string, publisher?: string): Promise<{ status: number; json: any }> {
  const headers: Record<string, string> = { authorization: `Bearer ${await tokenFor(email)}` };
  if (publisher) headers['x-publisher-id'] = publisher;
  const res = await fetch(`${sidecar()}${path}`, { method, headers });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

/** Page errors and CSP violations seen on each page ({@link noProblems} asserts there were none). */
const problemsOf = new WeakMap<Page, string[]>();

/** Assert that `page` had no script error and violated no CSP directive. */
function noProblems(t: Test, page: Page): void {
  t.same(problemsOf.get(page), [], 'no script error, no CSP violation');
}

/** A fresh browser context (no shared storage) on the explorer, through the sidecar. */
async function openExplorer(t: Test): Promise<Page> {
  const context = await browser.newContext();
  t.teardown(() => context.close());
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const problems: string[] = [];
  problemsOf.set(page, problems);
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy|Refused to/i.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  const res = await page.goto(`${sidecar()}/explorer`);
  t.equal(res?.status(), 200, '/explorer through the sidecar (redirected to /explorer/)');
  t.equal(new URL(page.url()).pathname, '/explorer/');
  t.match(res?.headers()['content-security-policy'], /^default-src 'self'/, 'the CSP reaches the browser through the sidecar');
  return page;
}

/** Sign in on the page with the demo password (and the TOTP code when asked). */
async function signInOnPage(page: Page, email: string): Promise<void> {
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(DEMO_PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  const secret = DEMO_TOTP_SECRETS[email];
  if (secret) {
    await page.getByLabel('Authenticator code').fill(totpCode(secret, Date.now()));
    await page.getByRole('button', { name: 'Verify' }).click();
  }
  await page.getByText(`Signed in as ${email}`).waitFor();
}

/** The section under the heading `name`. */
const section = (page: Page, name: string) => page.getByRole('region', { name });

t.test('system admin: a user\'s access, who can act on a work and why, model history and shadow, the live deny tail', async (t) => {
  // a DMP work, an allowed request (shadowed below) and a forbidden one (the tail shows it)
  const works = await call('editor@dmp.example', 'GET', '/api/v1/works?limit=5', DMP);
  t.equal(works.status, 200);
  const work = works.json.items[0] as { id: string; title: string };
  t.ok(work, 'DMP has works');
  t.equal((await call('viewer@dmp.example', 'GET', '/api/v1/works?limit=1', DMP)).status, 200, 'the viewer may list works');
  t.equal((await call('viewer@dmp.example', 'DELETE', `/api/v1/works/${work.id}`, DMP)).status, 403, 'the viewer may not delete a work');

  const page = await openExplorer(t);
  await signInOnPage(page, 'sysadmin@example.com');
  t.ok(await page.getByText('(system admin)').isVisible());
  t.equal(await page.evaluate('window.localStorage.length + window.sessionStorage.length + document.cookie.length'), 0, 'the token is not stored');

  // a user's access
  const users = section(page, "A user's access");
  await users.getByLabel('Email starts with').fill('viewer@dmp.example');
  await users.getByRole('button', { name: 'Search users' }).click();
  await users.getByRole('button', { name: 'viewer@dmp.example' }).click();
  const membership = users.getByRole('row').filter({ hasText: 'Downtown Music Publishing' });
  await membership.waitFor();
  t.equal(await membership.getByRole('cell').nth(1).textContent(), 'viewer', 'DMP: viewer');
  const perms = users.getByRole('list', { name: 'Permissions at Downtown Music Publishing' });
  await perms.getByText('works_read', { exact: true }).waitFor();
  t.notOk(await perms.getByText('works_delete', { exact: true }).count(), 'no works_delete');

  // who can act on a DMP work, and why
  await page.getByLabel('Publisher context').selectOption({ label: 'Downtown Music Publishing' });
  const worksView = section(page, 'Who can act on a work');
  await worksView.getByRole('row').filter({ hasText: work.id }).getByRole('button', { name: /Who can/ }).click();
  const canUpdate = worksView.getByRole('table').filter({ has: page.locator('caption', { hasText: 'can_update' }) });
  const editorRow = canUpdate.getByRole('row').filter({ hasText: 'editor@dmp.example' });
  await editorRow.waitFor();
  await editorRow.getByRole('button', { name: 'Why may editor@dmp.example can_update?' }).click();
  const path = worksView.getByRole('list', { name: 'Decision path' });
  await path.getByRole('listitem').first().waitFor();
  t.ok(await worksView.getByText('Allowed', { exact: true }).isVisible(), 'allowed');
  t.ok((await path.getByRole('listitem').count()) >= 1, 'the path has at least one step');

  // the live tail shows the viewer's forbidden delete
  const tail = section(page, 'Recent denies');
  const deny = tail.getByRole('row').filter({ hasText: `work:${work.id}` }).filter({ hasText: 'can_delete' });
  await deny.first().waitFor();
  t.match(await deny.first().textContent(), /DELETE \/api\/v1\/works\/\{id\}/, 'with its route rule');

  // model history, shadow of an edited model (the viewer's list above would be denied)
  const models = section(page, 'Authorization model');
  const history = models.getByRole('table').filter({ has: page.locator('caption', { hasText: 'Version history' }) });
  await history.getByText('active', { exact: true }).waitFor();
  t.ok((await history.locator('tbody tr').count()) >= 1, 'at least one version');
  const candidate = models.getByLabel('Candidate model (DSL)');
  await page.waitForFunction("/define works_read_all:/.test(document.querySelector('textarea[name=candidate]')?.value ?? '')"); // the active model's DSL
  const dsl = await candidate.inputValue();
  await candidate.fill(dsl.replace(/define works_read_all: .*$/m, 'define works_read_all: [user]'));
  const deployButton = models.getByRole('button', { name: 'Deploy candidate' });
  t.equal(await deployButton.count(), 0, 'no deploy before a shadow run');
  await models.getByRole('button', { name: 'Run shadow test' }).click();
  const report = models.getByRole('group', { name: 'Shadow report' });
  // a shadow run copies the store's tuples and replays up to 1,000 recent decisions: allow for a
  // loaded machine, and say what the page shows when no report comes
  await report.getByText(/\d+ would change/).waitFor({ timeout: 120_000 }).catch(async (err: Error) => {
    throw new Error(`${err.message}\npage says: ${(await models.innerText()).slice(0, 2000)}`);
  });
  const changed = report.getByRole('row').filter({ hasText: 'GET /api/v1/works' }).filter({ hasText: 'works_read' });
  t.ok((await changed.count()) >= 1, 'the viewer\'s list of works is among the changes');
  t.ok(await deployButton.isDisabled(), 'deploying needs the confirmation');
  await models.getByRole('checkbox', { name: /I accept that/ }).check();
  t.ok(await deployButton.isEnabled(), 'enabled once the changes are accepted');

  // deploy the active model's own content (harmless for the suites after this one): shadow, then deploy
  const activeId = (await history.getByRole('row').filter({ hasText: 'active' }).locator('td').first().textContent())!;
  await history.getByRole('button', { name: `View model ${activeId}` }).click();
  await models.getByRole('button', { name: 'Use as candidate' }).click();
  t.equal(await deployButton.count(), 0, 'a new candidate needs a new shadow run');
  await models.getByRole('button', { name: 'Run shadow test' }).click();
  await report.getByText('no decision changes').waitFor({ timeout: 60_000 });
  t.ok(await deployButton.isEnabled(), 'nothing changes: no confirmation needed');
  await deployButton.click();
  await models.getByText(`Unchanged: model ${activeId} is already active.`).waitFor({ timeout: 60_000 });
  noProblems(t, page);
});

t.test('publisher admin: another publisher\'s work and users stay out of sight; the page says so', async (t) => {
  const works = await call('editor@dmp.example', 'GET', '/api/v1/works?limit=1', DMP);
  const dmpWork = works.json.items[0].id as string;
  const page = await openExplorer(t);
  await signInOnPage(page, 'owner@spirit.example');
  t.ok(await page.getByText(/\(admin at Spirit/).isVisible());
  t.equal(await section(page, 'Authorization model').count(), 0, 'no model section for a publisher admin');

  // a DMP work: refused by the API (a row outside the caller's publisher is not found: RLS hides it)
  const worksView = section(page, 'Who can act on a work');
  await worksView.getByLabel('Work id').fill(dmpWork);
  const answer = page.waitForResponse((r) => r.url().includes('/api/v1/authz/who-can'));
  await worksView.getByRole('button', { name: 'Inspect work' }).click();
  t.equal((await answer).status(), 404, 'the API refuses the other publisher\'s work');
  const alert = worksView.getByRole('alert');
  await alert.waitFor();
  t.match(await alert.textContent(), /^Not found \(404\): .*in your publisher/);
  t.equal(await worksView.getByRole('table').filter({ has: page.locator('caption', { hasText: 'can_update' }) }).count(), 0, 'no who-can answer shown');

  // a DMP user: not among Spirit's members
  const users = section(page, "A user's access");
  await users.getByLabel('Email starts with').fill('viewer@dmp.example');
  await users.getByRole('button', { name: 'Search users' }).click();
  await users.getByText('No user matches.').waitFor();

  // asking in DMP's context (the page offers Spirit only): the sidecar answers 403, shown as such
  await page.evaluate(`document.querySelector('select[name=publisher]').add(new Option('DMP (not mine)', '${DMP}'))`);
  await page.getByLabel('Publisher context').selectOption({ label: 'DMP (not mine)' });
  await users.getByLabel('Email starts with').fill('viewer@dmp.example');
  const refused = page.waitForResponse((r) => r.url().includes('/api/v1/authz/users'));
  await users.getByRole('button', { name: 'Search users' }).click();
  t.equal((await refused).status(), 403, 'the API answers 403 for another publisher\'s context');
  await users.getByRole('alert').waitFor();
  t.match(await users.getByRole('alert').textContent(), /^Access denied \(403\)/, 'the page says access is denied');
  noProblems(t, page);
});

t.test('a viewer, and a creator signing in with TOTP, are told they are not admins', async (t) => {
  for (const email of ['viewer@dmp.example', 'creator1@songtrust.example']) {
    const page = await openExplorer(t);
    await signInOnPage(page, email);
    await page.getByText('You are not an admin').waitFor();
    t.equal(await section(page, "A user's access").count(), 0, `${email}: no explorer views`);
    noProblems(t, page);
  }
});
