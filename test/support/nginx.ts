/**
 * A private nginx for the suites: the shipped configuration template (examples/nginx/) filled in
 * with ephemeral ports and run by Debian's nginx in a temporary prefix directory (`daemon off`, its
 * own pid file, logs and temp files), stopped and removed at the end.
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './http.ts';

const ROOT = resolve(import.meta.dirname, '../..');
/** The shipped nginx configuration template. */
export const NGINX_TEMPLATE = join(ROOT, 'examples/nginx/nginx.conf.template');

/**
 * The nginx binary: `NGINX_BIN` (scripts/test.sh sets it), else what `ensure_nginx`
 * (scripts/lib.sh: installs Debian's package when missing) prints.
 * @throws when nginx cannot be had (the script's output is in the message)
 */
export function nginxBinary(): string {
  if (process.env.NGINX_BIN) return process.env.NGINX_BIN;
  const r = spawnSync('bash', ['-c', `source "${ROOT}/scripts/lib.sh" && ensure_nginx`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ensure_nginx failed (${r.status}):\n${r.stderr}${r.stdout}`);
  return r.stdout.trim();
}

/**
 * Fill in the template's `${NAME}` placeholders (envsubst's syntax).
 * @param vars every placeholder's value
 * @throws when the template names a placeholder `vars` lacks (so no `${…}` reaches nginx)
 */
export function renderTemplate(template: string, vars: Record<string, string>): string {
  return template.replace(/\$\{([A-Z_][A-Z0-9_]*)\}/g, (_m, name: string) => {
    const v = vars[name];
    if (v === undefined) throw new Error(`the nginx template needs \${${name}}`);
    return v;
  });
}

/** A running private nginx. */
export type Nginx = {
  /** `http://127.0.0.1:<port>` */
  url: string;
  port: number;
  /** the prefix directory (conf/, logs/, tmp/) */
  prefix: string;
  /** logs/error.log so far */
  errorLog(): string;
  stop(): Promise<void>;
};

async function waitPort(port: number, timeoutMs: number, alive: () => boolean): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && alive()) {
    const ok = await new Promise<boolean>((r) => {
      const s = connect(port, '127.0.0.1', () => (s.destroy(), r(true)));
      s.on('error', () => r(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`nginx did not listen on 127.0.0.1:${port}`);
}

/**
 * Start nginx with the shipped template in front of `sidecar` and `catalogApi` (each `host:port`).
 * The configuration is checked with `nginx -t` first.
 * @param opts.bin the nginx binary (default {@link nginxBinary})
 * @throws when the configuration test fails or nginx does not listen within 10 s (output in the message)
 */
export async function startNginx(opts: { sidecar: string; catalogApi: string; bin?: string }): Promise<Nginx> {
  const bin = opts.bin ?? nginxBinary();
  const prefix = mkdtempSync(join(tmpdir(), 'nginx-'));
  // Workers run as `nobody` when the master is root: they must reach the temp directories.
  chmodSync(prefix, 0o755);
  for (const d of ['conf', 'logs', 'tmp']) mkdirSync(join(prefix, d));
  const port = await freePort();
  const conf = renderTemplate(readFileSync(NGINX_TEMPLATE, 'utf8'), {
    NGINX_LISTEN: `127.0.0.1:${port}`,
    SIDECAR_ADDR: opts.sidecar,
    CATALOG_API_ADDR: opts.catalogApi,
  });
  writeFileSync(join(prefix, 'conf/nginx.conf'), conf);
  const args = ['-p', `${prefix}/`, '-c', 'conf/nginx.conf', '-e', 'logs/error.log'];
  const check = spawnSync(bin, [...args, '-t'], { encoding: 'utf8' });
  if (check.status !== 0) throw new Error(`nginx -t failed:\n${check.stderr}${check.stdout}`);
  let out = '';
  const child = spawn(bin, [...args, '-g', 'daemon off;'], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const errorLog = () => {
    const f = join(prefix, 'logs/error.log');
    return existsSync(f) ? readFileSync(f, 'utf8') : '';
  };
  try {
    await waitPort(port, 10_000, () => child.exitCode === null);
  } catch (err) {
    child.kill('SIGKILL');
    throw new Error(`${(err as Error).message}\n${out}\n${errorLog()}`);
  }
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    prefix,
    errorLog,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM'); // fast shutdown (SIGQUIT would wait for keep-alive connections)
        await Promise.race([exited, sleep(5000).then(() => child.kill('SIGKILL'))]);
      }
      rmSync(prefix, { recursive: true, force: true });
    },
  };
}
