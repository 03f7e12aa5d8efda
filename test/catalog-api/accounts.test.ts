/**
 * Accounts and usage against real PostgreSQL (RLS as `catalog_app`): every publisher has an
 * account (trigger), reading it needs accounts:read, plan changes (downgrade below the seats in use
 * → 409 with the numbers, custom plan for system admins, the enterprise cycle), the account list for
 * system admins (filters, keyset pages), the daily usage series, and a trial that ends without a
 * plan: read-only in the catalog API and in RLS (exhaustively per permission), lifted by choosing a
 * plan, and mirrored into the relationship outbox by the trial sweep.
 */
import t from 'tap';
import { DEMO_ACCOUNTS } from '../../migrations/seed/demo.ts';
import { PERMISSION_NAMES, READ_ONLY_ALLOWED_WRITES, READ_ONLY_BLOCKED_PERMISSIONS } from '../../policies/src/permissions.ts';
import { useSuite } from './helpers.ts';
import { CREATOR1, DMP, DMP_ADMIN, DMP_EDITOR, DMP_MANAGER, DMP_VIEWER, MULTI, SHEER, SONGTRUST, SPIRIT, SPIRIT_OWNER, SYSADMIN, TYPE } from '../support/demo-ids.ts';


const s = useSuite(t, 'accounts');
const api = (sub: string, method: 'GET' | 'PUT' | 'POST' | 'PATCH' | 'DELETE', url: string, payload?: object, publisher: string | null = null) =>
  s.ta.as(sub, publisher, { method, url, ...(payload ? { payload } : {}) });
const accountRow = async (p: string) => (await s.su.query(`select * from accounts where publisher_id = $1`, [p])).rows[0];
const seatsUsed = async (p: string) =>
  (
    await s.su.query(
      `select (select count(*) from user_publishers where publisher_id = $1 and role <> 'api_user')::int
            + (select count(*) from invitations where publisher_id = $1 and accepted_at is null and revoked_at is null and expires_at > now())::int as used`,
      [p],
    )
  ).rows[0].used as number;

t.test('every publisher has an account; the demo ones are customers, a new one starts a 14-day trial', async (t) => {
  const dmp = await api(DMP_ADMIN, 'GET', `/api/v1/publishers/${DMP}/account`);
  t.equal(dmp.statusCode, 200, dmp.body);
  t.match(dmp.json(), {
    publisher_id: DMP,
    plan: { type: DEMO_ACCOUNTS.dmp!.plan, seats: 2000, over_limit: 'warn' },
    billing_cycle: 'annual',
    seats: { limit: 2000, used: await seatsUsed(DMP) },
    status: 'active',
    read_only: false,
    billing_email: 'billing@dmp.example',
    payment_method_on_file: false,
  });
  t.notOk('payment_method_ref' in dmp.json(), 'the payment token is write-only');
  const created = await api(SYSADMIN, 'POST', '/api/v1/publishers', { name: 'Trial Tunes', slug: 'trial-tunes', type: 'boutique' });
  t.equal(created.statusCode, 201);
  const account = await api(SYSADMIN, 'GET', `/api/v1/publishers/${created.json().id}/account`);
  t.match(account.json(), { plan: { type: 'starter', seats: 5, api_calls_per_month: 100_000 }, seats: { limit: 5, used: 0 }, status: 'trial', read_only: false });
  const days = (Date.parse(account.json().trial_ends_at) - Date.now()) / 86_400_000;
  t.ok(days > 13.9 && days <= 14, `the trial ends in 14 days (${days.toFixed(3)})`);
});

t.test('reading the account needs accounts:read, usage needs usage:read, at the own publisher only', async (t) => {
  const cases: [string, string, string, number][] = [
    [DMP_ADMIN, DMP, 'account', 200],
    [DMP_MANAGER, DMP, 'account', 403],
    [DMP_EDITOR, DMP, 'account', 403],
    [DMP_VIEWER, DMP, 'account', 403],
    [SPIRIT_OWNER, DMP, 'account', 403],
    [SYSADMIN, DMP, 'account', 200],
    [DMP_ADMIN, DMP, 'account/usage', 200],
    [DMP_MANAGER, DMP, 'account/usage', 200],
    [DMP_EDITOR, DMP, 'account/usage', 403],
    [DMP_VIEWER, DMP, 'account/usage', 403],
    [SPIRIT_OWNER, DMP, 'account/usage', 403],
    [CREATOR1, SONGTRUST, 'account/usage', 403],
  ];
  for (const [who, p, path, status] of cases) {
    t.equal((await api(who, 'GET', `/api/v1/publishers/${p}/${path}`)).statusCode, status, `${who} GET ${path} of ${p}`);
  }
  // RLS: the app role sees the account row only with accounts:read at the context publisher
  const rows = async (user: string, publisher: string) => {
    await s.su.query('begin');
    try {
      await s.su.query(`set local role catalog_app`);
      await s.su.query(`select set_config('app.user_id', $1, true), set_config('app.publisher_id', $2, true), set_config('app.access_scope', 'publisher', true)`, [user, publisher]);
      return (await s.su.query(`select publisher_id from accounts`)).rows.map((r) => r.publisher_id);
    } finally {
      await s.su.query('rollback');
    }
  };
  t.same(await rows(DMP_ADMIN, DMP), [DMP], 'an admin sees their account only');
  t.same(await rows(DMP_VIEWER, DMP), [], 'a viewer sees none');
  t.same(await rows(DMP_ADMIN, SPIRIT), [], 'not through another publisher context');
});

t.test('plan changes: downgrade below the seats in use → 409 with the numbers, nothing changed', async (t) => {
  const url = `/api/v1/publishers/${SPIRIT}/account/plan`;
  t.equal((await api(MULTI, 'PUT', url, { plan_type: 'starter' })).statusCode, 403, 'an editor cannot change the plan');
  const used = await seatsUsed(SPIRIT);
  const before = await accountRow(SPIRIT);
  const down = await api(SPIRIT_OWNER, 'PUT', url, { plan_type: 'starter', seats: used - 1 });
  t.equal(down.statusCode, 409);
  t.equal(down.json().type, TYPE('seats-in-use'));
  t.match(down.json().detail, new RegExp(`${used} seats are in use .* would allow ${used - 1}`));
  t.same(down.json().errors, [{ field: 'seats', reason: `in use: ${used}; requested: ${used - 1}` }]);
  t.same(await accountRow(SPIRIT), before, 'nothing written');
  const exact = await api(SPIRIT_OWNER, 'PUT', url, { plan_type: 'starter', seats: used, billing_email: 'accounts@spirit.example', payment_method_ref: 'pm_1NqTestToken', billing_address: { city: 'London', country: 'GB' } });
  t.equal(exact.statusCode, 200, exact.body);
  t.match(exact.json(), { plan: { type: 'starter' }, seats: { limit: used, used }, status: 'active', billing_email: 'accounts@spirit.example', payment_method_on_file: true, billing_address: { city: 'London', country: 'GB' } });
  t.equal((await accountRow(SPIRIT)).updated_by, SPIRIT_OWNER);
  const invite = await api(SPIRIT_OWNER, 'POST', `/api/v1/publishers/${SPIRIT}/users/invite`, { email: 'one.more@spirit.example', role: 'viewer' });
  t.equal(invite.statusCode, 409, 'the account is full');
  t.equal(invite.json().type, TYPE('seats-exhausted'));
  t.equal((await api(SPIRIT_OWNER, 'PUT', url, { plan_type: 'starter', seats: 6 })).statusCode, 422, 'not above the plan');
  t.equal((await api(SPIRIT_OWNER, 'PUT', url, { plan_type: 'professional', billing_cycle: 'enterprise' })).statusCode, 422, 'the enterprise cycle is for enterprise plans');
  t.equal((await api(SPIRIT_OWNER, 'PUT', url, { plan_type: 'custom', seats: 500 })).statusCode, 403, 'the custom plan is set by a system admin');
  const custom = await api(SYSADMIN, 'PUT', url, { plan_type: 'custom', seats: 500, billing_cycle: 'enterprise' });
  t.equal(custom.statusCode, 200, custom.body);
  t.match(custom.json(), { plan: { type: 'custom', api_calls_per_month: null }, seats: { limit: 500 }, billing_cycle: 'enterprise' });
  const card = await api(SPIRIT_OWNER, 'PUT', url, { plan_type: 'professional', payment_method_ref: 'card4111111111111111' });
  t.equal(card.statusCode, 400, 'a card number is refused');
  t.match(card.body, /card number/);
  for (const bad of [{}, { plan_type: 'gold' }, { plan_type: 'starter', seats: 0 }, { plan_type: 'starter', colour: 'red' }]) {
    t.equal((await api(SPIRIT_OWNER, 'PUT', url, bad)).statusCode, 400, JSON.stringify(bad));
  }
  t.equal((await accountRow(SPIRIT)).plan_type, 'custom', 'the refused changes wrote nothing');
  t.equal((await api(SPIRIT_OWNER, 'PUT', url, { plan_type: 'professional' })).statusCode, 422, 'the enterprise cycle stays unless changed');
  t.equal((await api(SPIRIT_OWNER, 'PUT', url, { plan_type: 'professional', billing_cycle: 'monthly' })).statusCode, 200, 'back to professional (50 seats)');
});

t.test('GET /api/v1/accounts: system admins only, filters, keyset pages', async (t) => {
  t.equal((await api(DMP_ADMIN, 'GET', '/api/v1/accounts')).statusCode, 403);
  const enterprise = await api(SYSADMIN, 'GET', '/api/v1/accounts?plan_type=enterprise');
  t.equal(enterprise.statusCode, 200, enterprise.body);
  t.same(enterprise.json().items.map((a: { publisher_id: string }) => a.publisher_id).sort(), [DMP, SHEER].sort());
  const all = (await s.su.query(`select publisher_id from accounts order by created_at, publisher_id`)).rows.map((r) => r.publisher_id);
  const seen: string[] = [];
  let cursor: string | null = null;
  do {
    const page: { items: { publisher_id: string }[]; next_cursor: string | null } = (await api(SYSADMIN, 'GET', `/api/v1/accounts?limit=2${cursor ? `&cursor=${cursor}` : ''}`)).json();
    seen.push(...page.items.map((a) => a.publisher_id));
    cursor = page.next_cursor;
  } while (cursor);
  t.same(seen, all, 'every account once, in order');
  const trials = (await api(SYSADMIN, 'GET', '/api/v1/accounts?status=trial')).json().items;
  t.ok(trials.length >= 1 && trials.every((a: { status: string }) => a.status === 'trial'));
  t.equal((await api(SYSADMIN, 'GET', '/api/v1/accounts?cursor=bogus')).statusCode, 400);
});

t.test('usage: one entry per UTC day, zeros where nothing was counted, bounded ranges', async (t) => {
  await s.su.query(
    `insert into account_usage (publisher_id, day, api_calls, storage_bytes, seats_used) values ($1, '2026-11-02', 120, 4096, 5), ($1, '2026-11-04', 7, null, null), ($2, '2026-11-02', 999, 1, 1)`,
    [DMP, SPIRIT],
  );
  // two "API clients" (any user id will do for the table): 100 + 5 and 20 calls in the range, one day outside it
  await s.su.query(
    `insert into api_client_usage (publisher_id, client_id, day, api_calls) values ($1, $2, '2026-11-02', 100), ($1, $2, '2026-11-05', 5), ($1, $3, '2026-11-03', 20), ($1, $3, '2026-11-09', 50)`,
    [DMP, DMP_EDITOR, DMP_VIEWER],
  );
  const r = await api(DMP_MANAGER, 'GET', `/api/v1/publishers/${DMP}/account/usage?from=2026-11-01&to=2026-11-05`);
  t.equal(r.statusCode, 200, r.body);
  t.same(r.json(), {
    publisher_id: DMP,
    from: '2026-11-01',
    to: '2026-11-05',
    days: [
      { day: '2026-11-01', api_calls: 0, storage_bytes: null, seats_used: null },
      { day: '2026-11-02', api_calls: 120, storage_bytes: 4096, seats_used: 5 },
      { day: '2026-11-03', api_calls: 0, storage_bytes: null, seats_used: null },
      { day: '2026-11-04', api_calls: 7, storage_bytes: null, seats_used: null },
      { day: '2026-11-05', api_calls: 0, storage_bytes: null, seats_used: null },
    ],
    api_clients: [
      { client_id: DMP_EDITOR, api_calls: 105 },
      { client_id: DMP_VIEWER, api_calls: 20 },
    ],
  });
  const month = (await api(DMP_MANAGER, 'GET', `/api/v1/publishers/${DMP}/account/usage`)).json();
  const today = new Date().toISOString().slice(0, 10);
  t.equal(month.to, today);
  t.equal(month.from, `${today.slice(0, 7)}-01`, 'the default range is this month');
  t.equal(month.days.length, Number(today.slice(8, 10)));
  t.equal((await api(DMP_MANAGER, 'GET', `/api/v1/publishers/${DMP}/account/usage?from=2026-11-05&to=2026-11-01`)).statusCode, 422);
  t.equal((await api(DMP_MANAGER, 'GET', `/api/v1/publishers/${DMP}/account/usage?from=2024-01-01&to=2026-11-01`)).statusCode, 422);
  t.equal((await api(DMP_MANAGER, 'GET', `/api/v1/publishers/${DMP}/account/usage?from=yesterday`)).statusCode, 400);
});

t.test('a trial that ends without a plan makes the publisher read-only until a plan is chosen', async (t) => {
  const created = await api(SYSADMIN, 'POST', '/api/v1/publishers', { name: 'Lapsed Lyrics', slug: 'lapsed-lyrics', type: 'professional' });
  const P = created.json().id as string;
  // members: DMP's admin, editor and (as a creator) creator1
  await s.su.query(`insert into user_publishers (publisher_id, user_id, role) values ($1, $2, 'admin'), ($1, $3, 'editor'), ($1, $4, 'creator')`, [P, DMP_ADMIN, DMP_EDITOR, CREATOR1]);
  const work = await api(DMP_EDITOR, 'POST', '/api/v1/works', { title: 'Before The End' }, P);
  t.equal(work.statusCode, 201, 'writes work during the trial');
  const own = await api(CREATOR1, 'POST', '/api/v1/works', { title: 'Mine' }, P);
  t.equal(own.statusCode, 201);

  await s.su.query(`update accounts set trial_ends_at = now() - interval '1 second' where publisher_id = $1`, [P]);
  const works = async () => (await s.su.query(`select count(*)::int as n from works where publisher_id = $1`, [P])).rows[0].n as number;
  const count = await works();
  const refused: [string, 'POST' | 'PATCH' | 'PUT' | 'DELETE', string, object | undefined][] = [
    [DMP_EDITOR, 'POST', '/api/v1/works', { title: 'After The End' }],
    [DMP_EDITOR, 'PATCH', `/api/v1/works/${work.json().id}`, { title: 'Renamed' }],
    [CREATOR1, 'PATCH', `/api/v1/works/${own.json().id}`, { title: 'Mine, renamed' }],
    [DMP_ADMIN, 'DELETE', `/api/v1/works/${work.json().id}`, undefined],
    [DMP_ADMIN, 'PUT', `/api/v1/publishers/${P}/settings`, { auth_policy: 'internal' }],
    [DMP_ADMIN, 'PUT', `/api/v1/publishers/${P}/branding`, { display_name: 'LL' }],
    [DMP_ADMIN, 'PUT', `/api/v1/publishers/${P}`, { name: 'Lapsed Lyrics Ltd' }],
    [DMP_ADMIN, 'POST', `/api/v1/publishers/${P}/users/invite`, { email: 'late@lapsed.example', role: 'viewer' }],
    [DMP_ADMIN, 'POST', `/api/v1/publishers/${P}/departments`, { name: 'Jazz' }],
    [DMP_ADMIN, 'POST', `/api/v1/publishers/${P}/roles`, { name: 'clerk', permissions: ['works:read'] }],
  ];
  for (const [who, method, url, body] of refused) {
    const r = await api(who, method, url, body, P);
    t.equal(r.statusCode, 403, `${method} ${url}`);
    t.equal(r.json().type, TYPE('publisher-read-only'), `${method} ${url}: says why`);
  }
  t.equal(await works(), count, 'nothing written');
  t.equal((await api(DMP_EDITOR, 'GET', '/api/v1/works', undefined, P)).statusCode, 200, 'reads still work');
  t.equal((await api(CREATOR1, 'GET', `/api/v1/works/${own.json().id}`, undefined, P)).statusCode, 200);
  const account = (await api(DMP_ADMIN, 'GET', `/api/v1/publishers/${P}/account`)).json();
  t.match(account, { status: 'trial', read_only: true });
  t.equal((await api(SYSADMIN, 'POST', '/api/v1/works', { title: 'Platform staff fix' }, P)).statusCode, 201, 'system admins are excepted, as in the model');

  // RLS refuses the same permissions (SQL injected as catalog_app cannot write either): every permission, admin of P
  const can = async (user: string, permission: string) => {
    await s.su.query('begin');
    try {
      await s.su.query(`set local role catalog_app`);
      await s.su.query(`select set_config('app.user_id', $1, true), set_config('app.publisher_id', $2, true), set_config('app.access_scope', 'publisher', true)`, [user, P]);
      return (await s.su.query(`select app_caller_can($1) as ok`, [permission])).rows[0].ok as boolean;
    } finally {
      await s.su.query('rollback');
    }
  };
  for (const permission of PERMISSION_NAMES) {
    t.equal(await can(DMP_ADMIN, permission), !READ_ONLY_BLOCKED_PERMISSIONS.includes(permission), `RLS: admin ${permission}`);
  }
  t.ok(READ_ONLY_ALLOWED_WRITES.every((p) => PERMISSION_NAMES.includes(p)));
  t.equal(await can(SYSADMIN, 'works:create'), true, 'RLS: system admins keep writing');
  // … and every role's catalog writes, creators' included (their policies never ask app_caller_can)
  const asCatalogApp = async <T>(user: string, scope: string, fn: () => Promise<T>): Promise<T> => {
    await s.su.query('begin');
    try {
      await s.su.query(`set local role catalog_app`);
      await s.su.query(`select set_config('app.user_id', $1, true), set_config('app.publisher_id', $2, true), set_config('app.access_scope', $3, true)`, [user, P, scope]);
      return await fn();
    } finally {
      await s.su.query('rollback');
    }
  };
  await t.rejects(
    asCatalogApp(CREATOR1, 'own', () => s.su.query(`insert into works (publisher_id, owner_user_id, title) values ($1, $2, 'Injected')`, [P, CREATOR1])),
    { message: /row-level security/ },
    'RLS: a creator cannot insert',
  );
  t.equal((await asCatalogApp(CREATOR1, 'own', () => s.su.query(`update works set title = 'Injected' where id = $1`, [own.json().id]))).rowCount, 0, 'RLS: nor update their own work');
  t.equal((await asCatalogApp(DMP_EDITOR, 'publisher', () => s.su.query(`update works set title = 'Injected' where publisher_id = $1`, [P]))).rowCount, 0, 'RLS: an editor updates nothing');
  t.equal((await asCatalogApp(DMP_EDITOR, 'publisher', () => s.su.query(`select count(*)::int as n from works where publisher_id = $1`, [P]))).rows[0].n, count + 1, 'RLS: reads still see the rows (and the system admin’s work)');

  // the sweep stamps the ended trial and mirrors it into the relationship outbox (→ every sidecar)
  const stamped = await s.ta.app.trialSweep.run();
  t.ok(stamped >= 1, `stamped ${stamped}`);
  t.ok((await accountRow(P)).read_only_since, 'read_only_since set');
  const outbox = async () => (await s.su.query(`select operation from authz_outbox where object = $1 and relation = 'read_only' and subject = 'user:*' order by id`, [`publisher:${P}`])).rows.map((r) => r.operation);
  t.same(await outbox(), ['write']);
  t.equal(await s.ta.app.trialSweep.run(), 0, 'stamping is done once');
  const audit = async (action: string) => (await s.su.query(`select actor_kind, actor_id, publisher_id, before, after from audit_events where object_id = $1 and action = $2`, [P, action])).rows;
  t.same(await audit('account.trial_ended'), [{ actor_kind: 'system', actor_id: null, publisher_id: P, before: { read_only: false }, after: { read_only: true } }], 'the sweep is in the audit log, once');

  // members can still be removed (to fit a smaller plan) and the plan chosen
  t.equal((await api(DMP_ADMIN, 'DELETE', `/api/v1/publishers/${P}/users/${CREATOR1}`)).statusCode, 204, 'removing a member works while read-only');
  const chosen = await api(DMP_ADMIN, 'PUT', `/api/v1/publishers/${P}/account/plan`, { plan_type: 'starter' });
  t.equal(chosen.statusCode, 200, chosen.body);
  t.match(chosen.json(), { status: 'active', read_only: false });
  t.same(await audit('account.plan_changed'), [{ actor_kind: 'user', actor_id: DMP_ADMIN, publisher_id: P, before: { status: 'trial', read_only: true }, after: { status: 'active', read_only: false } }], 'who chose the plan and what changed');
  t.same(await outbox(), ['write', 'delete'], 'the read-only tuple is removed');
  t.equal((await api(DMP_EDITOR, 'POST', '/api/v1/works', { title: 'After The Plan' }, P)).statusCode, 201, 'writes work again');
});

t.test('cancelled accounts are read-only too', async (t) => {
  await s.su.query(`update accounts set status = 'cancelled' where publisher_id = $1`, [SPIRIT]);
  t.teardown(() => s.su.query(`update accounts set status = 'active' where publisher_id = $1`, [SPIRIT]));
  const r = await api(MULTI, 'POST', '/api/v1/works', { title: 'Cancelled' }, SPIRIT);
  t.equal(r.statusCode, 403);
  t.equal(r.json().type, TYPE('publisher-read-only'));
  t.same((await s.su.query(`select operation from authz_outbox where object = $1 and relation = 'read_only' order by id`, [`publisher:${SPIRIT}`])).rows.map((x) => x.operation), ['write']);
});
