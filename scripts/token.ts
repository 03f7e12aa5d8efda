/**
 * `npm run -s token -- <email> [password]`: sign in through the real flow (POST /api/v1/auth/login
 * on the sidecar, SIDECAR_URL [http://127.0.0.1:8000]) and print the access token. The password
 * defaults to the demo password; a seeded user with TOTP (creator1@songtrust.example) gets its code
 * computed from the demo secret — a code is accepted once, so a second call within 30 s waits for
 * the next one. Exit 1 with the problem's detail on stderr when sign-in fails.
 */
import { request } from 'undici';
import { DEMO_PASSWORD, DEMO_TOTP_SECRETS } from '../migrations/seed/demo.ts';
import { totpCode } from '../catalog-api/src/modules/auth/totp.ts';
import { PROBLEM_TYPE_BASE } from '../catalog-api/src/errors.ts';

const [email, password = DEMO_PASSWORD] = process.argv.slice(2);
if (!email) {
  process.stderr.write('usage: npm run -s token -- <email> [password]\n');
  process.exit(2);
}
const base = (process.env.SIDECAR_URL ?? 'http://127.0.0.1:8000').replace(/\/+$/, '');

async function post(path: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await request(`${base}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    headersTimeout: 15_000,
    bodyTimeout: 15_000,
  });
  return { status: res.statusCode, json: (await res.body.json().catch(() => ({}))) as Record<string, unknown> };
}

function fail(r: { status: number; json: Record<string, unknown> }): never {
  process.stderr.write(`sign-in failed (${r.status}): ${String(r.json.detail ?? r.json.title ?? 'no detail')}\n`);
  process.exit(1);
}

let r = await post('/api/v1/auth/login', { email, password });
if (r.status !== 200) fail(r);
if (r.json.mfa_required) {
  const secret = DEMO_TOTP_SECRETS[email.toLowerCase()];
  if (!secret) fail({ status: 401, json: { detail: 'this account needs a TOTP code; use POST /api/v1/auth/mfa/verify by hand' } });
  const mfaToken = r.json.mfa_token;
  r = await post('/api/v1/auth/mfa/verify', { mfa_token: mfaToken, code: totpCode(secret) });
  if (r.status === 401 && r.json.type === `${PROBLEM_TYPE_BASE}unauthenticated`) {
    const wait = 30_000 - (Date.now() % 30_000) + 200;
    process.stderr.write(`this TOTP code was used already; waiting ${Math.ceil(wait / 1000)} s for the next one\n`);
    await new Promise((res) => setTimeout(res, wait));
    r = await post('/api/v1/auth/mfa/verify', { mfa_token: mfaToken, code: totpCode(secret) });
  }
  if (r.status !== 200) fail(r);
}
process.stdout.write(`${String(r.json.access_token)}\n`);
