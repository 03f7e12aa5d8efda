/**
 * End-to-end harness: the real stack as separate processes on ephemeral loopback ports.
 * PostgreSQL, Redis, OpenFGA and the directory come from `scripts/test.sh` (scripts/services.sh)
 * through the environment; this module migrates and seeds the test database, delivers the
 * relationship outbox to OpenFGA, and spawns a mail catcher, the catalog API (the issuer) and one
 * or more sidecars exactly as `npm start` does. Access tokens come from the real sign-in flow.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DEMO_PASSWORD, DEMO_TOTP_SECRETS } from '../../migrations/seed/demo.ts';
import { totpCode } from '../../catalog-api/src/modules/auth/totp.ts';
import { freePort, waitHttp } from '../support/http.ts';
import { migrateUp } from '../../migrations/migrate.ts';
import { seed } from '../../migrations/seed/run.ts';

export const ROOT = resolve(import.meta.dirname, '../..');
export const DATA_DIR = process.env.DATA_DIR ?? join(ROOT, '.data');

/** Read a required environment variable. @throws when it is unset (run the tests via `npm test`). */
export function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests with \`npm test\` (scripts/test.sh)`);
  return value;
}

/**
 * A child process of the stack, with its captured output for failure messages; a sidecar's
 * `adminUrl` is its admin listener (/metrics, /healthz).
 */
export type Proc = { child: ChildProcess; url: string; adminUrl?: string; output: () => string; stop: () => Promise<void> };

/** Start `script` (a .ts under ROOT) with Node, `envVars` over this process's environment; see `startCommand`. */
export function startProcess(script: string, envVars: Record<string, string>, url: string, args: string[] = []): Proc {
  return startCommand(process.execPath, [script, ...args], envVars, url);
}

/**
 * Start the executable `bin` with `args` in ROOT, `envVars` over this process's environment
 * (LOG_LEVEL from TEST_LOG_LEVEL, default warn); the last 20 000 characters of its output are kept.
 * `stop()` sends SIGTERM, then SIGKILL after 5 s.
 */
export function startCommand(bin: string, args: string[], envVars: Record<string, string>, url: string): Proc {
  let out = '';
  const child = spawn(bin, args, {
    cwd: ROOT,
    env: { ...process.env, LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'warn', ...envVars },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.on('data', (d) => (out = (out + d).slice(-20_000)));
  child.stderr?.on('data', (d) => (out = (out + d).slice(-20_000)));
  return {
    child,
    url,
    output: () => out,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, sleep(5000).then(() => child.kill('SIGKILL'))]);
    },
  };
}

async function node(args: string[], envVars: Record<string, string> = {}): Promise<void> {
  const child = spawn(process.execPath, args, { cwd: ROOT, env: { ...process.env, ...envVars }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  if (code !== 0) throw new Error(`node ${args.join(' ')} exited ${code}:\n${out}`);
}

/**
 * Make the keys (scripts/keys.ts init), migrate + seed the test database (idempotent), deploy the
 * local model into the OpenFGA store (`policies deploy`) and deliver the outbox to OpenFGA.
 * @returns the path of the sidecars' signing key (PEM)
 * @throws when one of those steps fails (its output is in the message)
 */
export async function prepareStack(): Promise<string> {
  // the relays' role (migration 0011); an environment made before it names none: catalog_jobs on the same database
  if (!process.env.JOBS_DATABASE_URL) {
    const jobs = new URL(env('DATABASE_URL'));
    jobs.username = jobs.password = 'catalog_jobs';
    process.env.JOBS_DATABASE_URL = jobs.toString();
  }
  await node(['scripts/keys.ts', 'init', DATA_DIR]);
  await migrateUp(env('DATABASE_OWNER_URL'));
  await seed(env('DATABASE_OWNER_URL'));
  // As scripts/start.sh: the local model reaches the store through `policies deploy` (a process
  // start never writes it into a store that has a model: policies/src/active-model.ts).
  await node(['policies/src/cli.ts', 'deploy', '--skip-shadow']);
  await node(['catalog-api/src/outbox/drain.ts']);
  return join(DATA_DIR, 'sidecar-signing-key.pem');
}

/** The running stack of one test file. */
export type Stack = {
  api: Proc;
  sidecars: Proc[];
  /** the mail catcher's folder (one .eml per message) */
  mailDir: string;
  /** Start one more sidecar process sharing Redis, OpenFGA and the upstream; `env` adds to or overrides its settings. */
  addSidecar: (env?: Record<string, string>) => Promise<Proc>;
  stop: () => Promise<void>;
};

let current: Stack | null = null;

/**
 * Migrate + seed the test database (idempotent), deliver the outbox to OpenFGA, and start a mail
 * catcher, the catalog API plus `sidecars` sidecar processes (default 1).
 * @throws when a process does not become healthy within 30 s (its output is in the message).
 */
export async function startStack(opts: { sidecars?: number; env?: Record<string, string> } = {}): Promise<Stack> {
  const signingKey = await prepareStack();
  const [apiPort, firstSidecarPort, smtpPort] = [await freePort(), await freePort(), await freePort()];
  const mailDir = mkdtempSync(join(tmpdir(), 'e2e-mail-'));
  const mail = startProcess('scripts/mail-catcher.ts', {}, `smtp://127.0.0.1:${smtpPort}`, ['--port', String(smtpPort), '--dir', mailDir]);
  const issuer = `http://127.0.0.1:${firstSidecarPort}`;
  const api = startProcess(
    'catalog-api/src/main.ts',
    {
      CATALOG_HOST: '127.0.0.1',
      CATALOG_PORT: String(apiPort),
      SIDECAR_JWKS_URL: `${issuer}/.well-known/jwks.json`,
      JWT_ISSUER: issuer,
      APP_BASE_URL: issuer,
      SMTP_URL: `smtp://127.0.0.1:${smtpPort}`,
      // Every suite signs its users in from 127.0.0.1 within a minute of the others; the per-IP
      // limit itself is proven in test/catalog-api/sign-in-guards.test.ts.
      SIGN_IN_RATE_LIMIT_PER_MINUTE: '100000',
      ...opts.env,
    },
    `http://127.0.0.1:${apiPort}`,
  );
  const sidecars: Proc[] = [];
  const addSidecar = async (port?: number, extraEnv: Record<string, string> = {}): Promise<Proc> => {
    const p = port ?? (await freePort());
    const adminPort = await freePort();
    const proc = startProcess(
      'sidecar/src/main.ts',
      {
        SIDECAR_HOST: '127.0.0.1',
        SIDECAR_PORT: String(p),
        ADMIN_PORT: String(adminPort),
        UPSTREAM_URL: api.url,
        SIDECAR_SIGNING_KEY_FILE: signingKey,
        JWT_ISSUER: issuer,
        JWT_JWKS_URL: `${api.url}/api/v1/auth/jwks.json`,
        // one process per sidecar: the suites kill, count and flush per sidecar process
        // (SIDECAR_WORKERS > 1 is tested by test/sidecar/workers.test.ts)
        SIDECAR_WORKERS: '1',
        ...opts.env,
        ...extraEnv,
      },
      `http://127.0.0.1:${p}`,
    );
    proc.adminUrl = `http://127.0.0.1:${adminPort}`;
    try {
      await waitHttp(`${proc.url}/healthz`, 30_000);
      await waitHttp(`${proc.adminUrl}/healthz`, 30_000);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${proc.output()}`);
    }
    sidecars.push(proc);
    return proc;
  };
  try {
    await waitHttp(`${api.url}/healthz`, 30_000);
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${api.output()}`);
  }
  await addSidecar(firstSidecarPort);
  for (let i = 1; i < (opts.sidecars ?? 1); i++) await addSidecar();
  tokens.clear();
  current = {
    api,
    sidecars,
    mailDir,
    addSidecar: (extraEnv) => addSidecar(undefined, extraEnv),
    stop: async () => {
      await Promise.all([...sidecars, api, mail].map((p) => p.stop()));
      current = null;
    },
  };
  return current;
}

let signInBase: string | undefined;
/**
 * Send `postJson`, `signIn` and `tokenFor` to the sidecar at `url` instead of the first sidecar of
 * `startStack`'s stack (a stack started another way, e.g. test/e2e/cluster-stack.ts); clears the
 * token cache. `undefined` undoes it.
 */
export function useSidecar(url: string | undefined): void {
  signInBase = url;
  tokens.clear();
}

/** POST JSON to the first sidecar of the running stack (or the one `useSidecar` named). */
export async function postJson(path: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: any }> {
  const base = signInBase ?? current?.sidecars[0]!.url;
  if (!base) throw new Error('no stack is running');
  const res = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

/**
 * Sign `email` in through the real flow (demo password; creator1's TOTP from the demo secret — a
 * code works once, so when the current step's code was used the next step's is sent, which the
 * ±1 step window accepts; when that was used too, after the next step begins, the one after it).
 * @returns the token response (`access_token`, `refresh_token` …)
 * @throws when sign-in does not succeed
 */
export async function signIn(email: string, password = DEMO_PASSWORD): Promise<{ access_token: string; refresh_token: string }> {
  let r = await postJson('/api/v1/auth/login', { email, password });
  if (r.status !== 200) throw new Error(`sign-in of ${email} failed: ${r.status} ${JSON.stringify(r.json)}`);
  if (r.json.mfa_required) {
    const secret = DEMO_TOTP_SECRETS[email];
    if (!secret) throw new Error(`${email} needs a TOTP code the tests do not know`);
    const mfaToken = r.json.mfa_token as string;
    for (const offsetMs of [0, 30_000]) {
      r = await postJson('/api/v1/auth/mfa/verify', { mfa_token: mfaToken, code: totpCode(secret, Date.now() + offsetMs) });
      if (r.status === 200) break;
    }
    if (r.status === 401) {
      // both were used moments ago (another suite signed the creator in with the next step's code):
      // wait for the next step, whose next code no one has used yet
      await sleep(30_000 - (Date.now() % 30_000) + 100);
      r = await postJson('/api/v1/auth/mfa/verify', { mfa_token: mfaToken, code: totpCode(secret, Date.now() + 30_000) });
    }
    if (r.status !== 200) throw new Error(`MFA of ${email} failed: ${r.status} ${JSON.stringify(r.json)}`);
  }
  return r.json;
}

const tokens = new Map<string, string>();
/** An access token of the seeded user `email` from the real sign-in flow (cached per stack). */
export async function tokenFor(email: string): Promise<string> {
  const cached = tokens.get(email);
  if (cached) return cached;
  const { access_token } = await signIn(email);
  tokens.set(email, access_token);
  return access_token;
}
