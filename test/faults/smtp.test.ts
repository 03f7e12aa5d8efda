/**
 * Fault matrix, the SMTP server (a real one: scripts/mail-catcher.ts) behind a fault proxy (README
 * "Failure behaviour"): down (refused), slow (replies 2 s late, beyond SMTP_TIMEOUT_MS) and
 * partitioned (silent) → degraded but correct: the request that sends mail (forgotten password)
 * answers 202 as fast as normally (+ 100 ms) — mail goes out in the background — and a made-up
 * reset token is refused; back → the queued message is delivered by a retry (mail/mailer.ts: after
 * 1 s, 4 s, 16 s) without a restart, and its link works exactly once.
 */
import t from 'tap';
import { buildTestApp, useSuite, type TestApp } from '../catalog-api/helpers.ts';
import { startMailCatcher, tokenInMail } from '../support/mail.ts';
import { SLACK_MS, baselineMs, proxyFor, timed } from './helpers.ts';
import type { FaultMode } from '../support/fault-proxy.ts';

const suite = useSuite(t, 'faults_smtp');

t.test('SMTP down, slow, partitioned → 202 at once, nothing leaks; back → the mail arrives, its link works once', async (t) => {
  const mail = await startMailCatcher();
  t.teardown(() => mail.stop());
  const { proxy, url } = await proxyFor(t, mail.url, 25);
  const api: TestApp = await buildTestApp(suite.db, {}, { SMTP_URL: url, SMTP_TIMEOUT_MS: '500' });
  t.teardown(() => api.close());
  let n = 0;
  const post = (url: string, payload: object) =>
    api.app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json', 'x-forwarded-for': `10.9.${Math.floor(++n / 250)}.${n % 250}` }, payload });
  const forgot = () => post('/api/v1/auth/password/forgot', { email: 'viewer@dmp.example' });

  t.equal((await forgot()).statusCode, 202, 'healthy');
  await mail.waitFor('viewer@dmp.example', { subject: /password/i });
  const normal = await baselineMs(3, forgot);
  await api.app.inject({ url: '/healthz' });

  const cases: [string, FaultMode][] = [
    ['down (connection refused)', 'refuse'],
    ['slow (replies 2 s late)', { delayMs: 2000 }],
    ['partitioned (silent)', 'blackhole'],
  ];
  let password = 'a-new-password-0';
  let sent = 4; // the healthy request's message and the baseline's three
  const delivered = async (count: number) => {
    for (let i = 0; i < 100 && (await mail.all()).length < count; i++) await new Promise((r) => setTimeout(r, 50));
    return (await mail.all()).length;
  };
  for (const [label, mode] of cases) {
    t.equal(await delivered(sent), sent, `${label}: every earlier message is out`);
    const before = sent++;
    await proxy.set(mode);
    const r = await timed(forgot);
    t.equal(r.value.statusCode, 202, `${label}: forgotten password → 202`);
    t.ok(r.ms <= normal + SLACK_MS, `${label}: answered in ${r.ms.toFixed(0)} ms (≤ ${normal.toFixed(0)} ms + 100 ms: the request never waits for the mail server)`);
    const guessed = await post('/api/v1/auth/password/reset', { token: 'made-up-token-000000000000000000000000000', new_password: 'a-guessed-password-1' });
    t.equal(guessed.statusCode, 400, `${label}: a made-up reset token → 400`);
    await new Promise((r) => setTimeout(r, 700)); // the first attempt fails (refused / times out after SMTP_TIMEOUT_MS)
    t.equal((await mail.all()).length, before, `${label}: nothing delivered while the server is away`);

    await proxy.set('pass');
    const got = await mail.waitFor('viewer@dmp.example', { subject: /password/i, after: before, timeoutMs: 8000 });
    t.ok(got, `${label}: back → the message is delivered by a retry, without a restart`);
    password = `a-new-password-${label.length}`;
    const reset = await post('/api/v1/auth/password/reset', { token: tokenInMail(got), new_password: password });
    t.equal(reset.statusCode, 204, `${label}: its link resets the password`);
    t.equal((await post('/api/v1/auth/password/reset', { token: tokenInMail(got), new_password: `${password}-again` })).statusCode, 400, `${label}: … once`);
  }
  const login = await post('/api/v1/auth/login', { email: 'viewer@dmp.example', password });
  t.equal(login.statusCode, 200, 'the last new password signs in');
});
