/**
 * The peer people would pick instead of the sidecar, for bench/peer.bench.ts: Debian's nginx with
 * `auth_request` asking Open Policy Agent (bench/peer/authz.rego, in-memory data), in front of the
 * same upstream — and the same nginx as a plain reverse proxy, to separate nginx's own cost.
 *
 * OPA: `opa run --server` with the policy and one data document (the issuer's JWKS, issuer,
 * audience, memberships), the inter-query cache of verified JWTs on (`io_jwt`, off by default in
 * OPA — the sidecar caches verified tokens too; https://www.openpolicyagent.org/docs/configuration,
 * "Caching"). nginx asks OPA's v0 data API (the input is the body; an undefined `allow` answers 404,
 * which the auth location turns into 403 — auth_request takes 2xx as allow and 401/403 as deny,
 * https://nginx.org/en/docs/http/ngx_http_auth_request_module.html). The token, publisher and path
 * reach the JSON body only through maps that accept their syntax alone (no JSON injection).
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JSONWebKeySet } from 'jose';
import { freePort, waitHttp } from '../../test/support/http.ts';
import { nginxBinary } from '../../test/support/nginx.ts';
import { ROOT, pinned } from './harness.ts';
import { AUDIENCE, stopProcess, type Membership, type ServerProcess } from './sidecar-stack.ts';

/** The OPA binary: OPA_BIN, else tools/cache/bin/opa (scripts/lib.sh ensure_opa_bin). */
export const OPA_BIN = process.env.OPA_BIN ?? join(ROOT, 'tools/cache/bin/opa');
/** The Rego policy of the peer. */
export const PEER_POLICY = join(ROOT, 'bench/peer/authz.rego');

/**
 * Start OPA on a free loopback port with {@link PEER_POLICY} and the data the policy reads.
 * @param opts.cpus taskset CPU list to pin it to
 * @throws when OPA does not answer /health within 20 s (its output in the message)
 */
export async function startOpa(opts: { jwks: JSONWebKeySet; issuer: string; memberships: Membership[]; cpus?: string }): Promise<ServerProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-opa-'));
  const memberships: Record<string, Record<string, string>> = {};
  for (const m of opts.memberships) (memberships[m.publisher] ??= {})[m.user] = m.relation;
  writeFileSync(join(dir, 'data.json'), JSON.stringify({ jwks: JSON.stringify(opts.jwks), issuer: opts.issuer, audience: AUDIENCE, memberships }));
  writeFileSync(
    join(dir, 'config.yaml'),
    ['caching:', '  inter_query_builtin_value_cache:', '    named:', '      io_jwt:', '        disabled: false', '        max_num_entries: 10000', ''].join('\n'),
  );
  const port = await freePort();
  const [cmd, args] = pinned(
    OPA_BIN,
    ['run', '--server', '--addr', `127.0.0.1:${port}`, '--config-file', join(dir, 'config.yaml'), '--log-level', 'error', '--skip-version-check', PEER_POLICY, join(dir, 'data.json')],
    opts.cpus,
  );
  let out = '';
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  proc.stdout!.on('data', (d) => (out = (out + d).slice(-10_000)));
  proc.stderr!.on('data', (d) => (out = (out + d).slice(-10_000)));
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitHttp(`${url}/health`, 20_000);
  } catch (err) {
    proc.kill('SIGKILL');
    throw new Error(`${(err as Error).message}\n${out}`);
  }
  return {
    url,
    pid: proc.pid!,
    proc,
    stop: async () => {
      await stopProcess(proc);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The peer's nginx: a plain proxy listener and an `auth_request` → OPA listener. */
export type PeerNginx = ServerProcess & { plainUrl: string; authzUrl: string };

/** The nginx configuration of the peer (one server per listener; `host:port` addresses). */
export function peerNginxConf(o: { workers: number; plain: string; authz: string; upstream: string; opa: string }): string {
  return `# bench/lib/peer.ts: the peer of the side-by-side benchmark (generated)
worker_processes ${o.workers};
pid nginx.pid;
error_log logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path tmp/client_body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    server_tokens off;
    upstream app { server ${o.upstream}; keepalive 64; }
    upstream opa { server ${o.opa}; keepalive 64; }
    # only well-formed values reach OPA's JSON input (anything else becomes "" and is denied)
    map $http_authorization $peer_token { "~^Bearer (?<peer_t>[A-Za-z0-9_.-]+)$" $peer_t; default ""; }
    map $http_x_publisher_id $peer_publisher { "~^[0-9a-fA-F-]{36}$" $http_x_publisher_id; default ""; }
    map $request_uri $peer_path { "~^(?<peer_p>/[A-Za-z0-9/_.-]*)(\\?.*)?$" $peer_p; default ""; }

    server {
        listen ${o.plain};
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    server {
        listen ${o.authz};
        location / {
            auth_request /_opa;
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "";
        }
        location = /_opa {
            internal;
            proxy_pass http://opa/v0/data/peer/authz/allow;
            proxy_http_version 1.1;
            proxy_method POST;
            proxy_pass_request_headers off;
            proxy_set_header Connection "";
            proxy_set_header Content-Type application/json;
            proxy_set_body '{"token":"$peer_token","publisher":"$peer_publisher","method":"$request_method","path":"$peer_path"}';
            proxy_intercept_errors on;
            error_page 404 = @opa_deny;
        }
        location @opa_deny { return 403; }
    }
}
`;
}

/**
 * Start Debian's nginx (test/support/nginx.ts nginxBinary) with {@link peerNginxConf} in a
 * temporary prefix, pinned to `cpus`; `pid` is the master's (its workers are its children).
 * @param opts.workers worker_processes (default 1: the per-core comparison)
 * @throws when `nginx -t` fails or it does not answer within 10 s
 */
export async function startPeerNginx(opts: { upstreamUrl: string; opaUrl: string; workers?: number; cpus?: string }): Promise<PeerNginx> {
  const bin = nginxBinary();
  const prefix = mkdtempSync(join(tmpdir(), 'bench-nginx-'));
  chmodSync(prefix, 0o755); // workers run as nobody when the master is root
  for (const d of ['conf', 'logs', 'tmp']) mkdirSync(join(prefix, d));
  const [plain, authz] = [await freePort(), await freePort()];
  const hostPort = (u: string) => new URL(u).host;
  writeFileSync(
    join(prefix, 'conf/nginx.conf'),
    peerNginxConf({ workers: opts.workers ?? 1, plain: `127.0.0.1:${plain}`, authz: `127.0.0.1:${authz}`, upstream: hostPort(opts.upstreamUrl), opa: hostPort(opts.opaUrl) }),
  );
  const base = ['-p', `${prefix}/`, '-c', 'conf/nginx.conf', '-e', 'logs/error.log'];
  const check = spawnSync(bin, [...base, '-t'], { encoding: 'utf8' });
  if (check.status !== 0) throw new Error(`nginx -t failed:\n${check.stderr}${check.stdout}`);
  const [cmd, args] = pinned(bin, [...base, '-g', 'daemon off;'], opts.cpus);
  const proc = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  const plainUrl = `http://127.0.0.1:${plain}`;
  try {
    await waitHttp(`${plainUrl}/`, 10_000);
  } catch (err) {
    proc.kill('SIGKILL');
    throw err;
  }
  return {
    url: plainUrl,
    plainUrl,
    authzUrl: `http://127.0.0.1:${authz}`,
    pid: proc.pid!,
    proc,
    stop: async () => {
      await stopProcess(proc);
      rmSync(prefix, { recursive: true, force: true });
    },
  };
}
