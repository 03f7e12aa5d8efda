/**
 * End-to-end harness: the real stack as separate processes on ephemeral loopback ports.
 * PostgreSQL, Redis and OpenFGA come from `scripts/test.sh` (scripts/services.sh) through the
 * environment; this module migrates and seeds the test database, delivers the relationship outbox
 * to OpenFGA, and spawns the catalog API and one or more sidecars exactly as `npm start` does.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { devIssuerFiles, ensureKeyPair, signAccessToken } from '../../scripts/dev-issuer.ts';
import { USERS } from '../../migrations/seed/demo.ts';
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

/** A child process of the stack, with its captured output for failure messages. */
export type Proc = { child: ChildProcess; url: string; output: () => string; stop: () => Promise<void> };

function startProcess(script: string, envVars: Record<string, string>, url: string): Proc {
  let out = '';
  const child = spawn(process.execPath, [script], {
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

/** The running stack of one test file. */
export type Stack = {
  api: Proc;
  sidecars: Proc[];
  /** Start one more sidecar process sharing Redis, OpenFGA and the upstream. */
  addSidecar: () => Promise<Proc>;
  stop: () => Promise<void>;
};

/**
 * Migrate + seed the test database (idempotent), deliver the outbox to OpenFGA, and start the
 * catalog API plus `sidecars` sidecar processes (default 1).
 * @throws when a process does not become healthy within 30 s (its output is in the message).
 */
export async function startStack(opts: { sidecars?: number; env?: Record<string, string> } = {}): Promise<Stack> {
  const issuer = devIssuerFiles(DATA_DIR);
  await ensureKeyPair(issuer.pem, issuer.jwks);
  const signingKey = join(DATA_DIR, 'sidecar-signing-key.pem');
  await ensureKeyPair(signingKey);
  await migrateUp(env('DATABASE_OWNER_URL'));
  await seed(env('DATABASE_OWNER_URL'));
  await node(['catalog-api/src/outbox/drain.ts']);

  const [apiPort, firstSidecarPort] = [await freePort(), await freePort()];
  const jwksUrl = `http://127.0.0.1:${firstSidecarPort}/.well-known/jwks.json`;
  const api = startProcess(
    'catalog-api/src/main.ts',
    { CATALOG_HOST: '127.0.0.1', CATALOG_PORT: String(apiPort), SIDECAR_JWKS_URL: jwksUrl, ...opts.env },
    `http://127.0.0.1:${apiPort}`,
  );
  const sidecars: Proc[] = [];
  const addSidecar = async (port?: number): Promise<Proc> => {
    const p = port ?? (await freePort());
    const proc = startProcess(
      'sidecar/src/main.ts',
      {
        SIDECAR_HOST: '127.0.0.1',
        SIDECAR_PORT: String(p),
        UPSTREAM_URL: api.url,
        SIDECAR_SIGNING_KEY_FILE: signingKey,
        JWT_JWKS_FILE: issuer.jwks,
        ...opts.env,
      },
      `http://127.0.0.1:${p}`,
    );
    try {
      await waitHttp(`${proc.url}/healthz`, 30_000);
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
  return {
    api,
    sidecars,
    addSidecar: () => addSidecar(),
    stop: async () => {
      await Promise.all([...sidecars, api].map((p) => p.stop()));
    },
  };
}

const tokens = new Map<string, string>();
/** An access token from the development issuer for the seeded user `email` (cached per run). */
export async function tokenFor(email: string): Promise<string> {
  const cached = tokens.get(email);
  if (cached) return cached;
  const user = USERS.find((u) => u.email === email);
  if (!user) throw new Error(`no seeded user ${email}`);
  const token = await signAccessToken(devIssuerFiles(DATA_DIR).pem, { sub: user.id, email: user.email });
  tokens.set(email, token);
  return token;
}
