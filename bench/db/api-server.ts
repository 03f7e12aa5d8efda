/**
 * The catalog API for the latency benchmark, in a process of its own (so that the load generator
 * does not share its event loop or its core): `buildCatalogApi` through test/catalog-api/helpers.ts
 * `buildTestApp` on the database named by the `BENCH_DB_NAME` environment variable (roles as
 * test/migrations/db.ts gives them), listening on a free loopback port.
 *
 * Started by {@link startApiServer} with an IPC channel: the child sends
 * `{ url, jwk }` — its address and the private JWK of the assertion signing key its key set trusts —
 * once it listens, and closes when the parent disconnects or sends `'close'`.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { exportJWK, importJWK, type JWK, type CryptoKey } from 'jose';
import type { SigningKey } from '../../test/catalog-api/helpers.ts';
import { nodeArgsFrom } from '../lib/harness.ts';

/** A running API child: its base URL, the key to sign assertions with, its pid, and how to stop it. */
export type ApiServer = { url: string; key: SigningKey; pid: number; close: () => Promise<void> };

/**
 * Fork this file as the API process on database `dbName` (extra environment `env`; more Node flags
 * in BENCH_API_NODE_ARGS, space separated, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`).
 * @throws when the child exits before it listens
 */
export async function startApiServer(dbName: string, env: Record<string, string> = {}): Promise<ApiServer> {
  const execArgv = [...process.execArgv, ...nodeArgsFrom('BENCH_API_NODE_ARGS')];
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), [], { env: { ...process.env, ...env, BENCH_DB_NAME: dbName }, execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const hello = await new Promise<{ url: string; jwk: JWK & { kid: string } }>((resolve, reject) => {
    child.once('message', (m) => resolve(m as { url: string; jwk: JWK & { kid: string } }));
    child.once('exit', (code) => reject(new Error(`the API process exited with ${code} before listening`)));
  });
  const { d: _d, ...publicJwk } = hello.jwk;
  const privateKey = (await importJWK(hello.jwk, 'ES256')) as CryptoKey;
  return {
    url: hello.url,
    key: { privateKey, jwk: publicJwk, kid: hello.jwk.kid },
    pid: child.pid!,
    close: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.send('close');
      await exited;
    },
  };
}

async function main() {
  const { withDb, ADMIN_URL } = await import('../../test/migrations/db.ts');
  const { buildTestApp } = await import('../../test/catalog-api/helpers.ts');
  const name = process.env.BENCH_DB_NAME!;
  const db = {
    name,
    adminUrl: withDb(ADMIN_URL, name),
    ownerUrl: withDb(ADMIN_URL, name, 'catalog_owner'),
    appUrl: withDb(ADMIN_URL, name, 'catalog_app'),
    authUrl: withDb(ADMIN_URL, name, 'catalog_auth'),
    jobsUrl: withDb(ADMIN_URL, name, 'catalog_jobs'),
    drop: async () => undefined,
  };
  const ta = await buildTestApp(db);
  const url = await ta.app.listen({ port: 0, host: '127.0.0.1' });
  const jwk = { ...(await exportJWK(ta.key.privateKey)), kid: ta.key.kid, alg: 'ES256' };
  const stop = async () => {
    await ta.close();
    process.exit(0);
  };
  process.on('message', (m) => m === 'close' && void stop());
  process.on('disconnect', () => void stop());
  process.send!({ url, jwk });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err: unknown) => {
    process.stderr.write(`bench API process: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  });
}
