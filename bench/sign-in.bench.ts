/**
 * Benchmark: sign-in latency through the sidecar, internal (argon2id) and Active Directory (LDAPS
 * search + bind + nested-group search on the demo Samba AD DC), measured side by side in one run.
 *
 *   internal    POST /api/v1/auth/login for viewer@dmp.example (argon2id m = 19 MiB, t = 2, p = 1)
 *   ad          POST /api/v1/auth/login for ad.viewer@dmp.example (service bind + search, user bind,
 *               LDAP_MATCHING_RULE_IN_CHAIN group search; a fresh TLS connection each)
 *   unknown     an email without an account (the dummy-hash path: must cost what `internal` costs)
 *
 * Each case first one client at a time (latency without queueing), then `BENCH_SIGNIN_CONNECTIONS`
 * at once (throughput of the two cores). Every answer must be a 200 (401 for `unknown`); the run
 * fails otherwise. The stack is the e2e harness's (test/e2e/stack.ts): catalog API + sidecar
 * processes on the bench database, real PostgreSQL, Redis, OpenFGA and the directory.
 *
 * Environment: BENCH_SIGNIN_REQUESTS [200 per case and mode], BENCH_SIGNIN_CONNECTIONS [8], and
 * what scripts/bench.sh exports (scripts/services.sh).
 */
import autocannon from 'autocannon';
import { readFileSync } from 'node:fs';
import { DEMO_PASSWORD } from '../migrations/seed/demo.ts';
import { startStack } from '../test/e2e/stack.ts';
import { resetDirectory } from '../test/support/directory.ts';

const requests = Number(process.env.BENCH_SIGNIN_REQUESTS ?? 200);
const connections = Number(process.env.BENCH_SIGNIN_CONNECTIONS ?? 8);

await resetDirectory();
const stack = await startStack({ env: { LOG_LEVEL: 'warn' } });
const base = stack.sidecars[0]!.url;

/** CPU time (user + system) a process has used, in seconds (Linux /proc, USER_HZ = 100). */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

type Row = { name: string; mode: string; rps: number; p50: number; p99: number; bad: number; apiCpuMsPerReq: number };
/**
 * One row: `requests` sign-ins of `email` (a function: a new email per request) with `conns`
 * clients; `expected` is the status every answer must have.
 */
async function run(name: string, email: string | (() => string), expected: number, conns: number): Promise<Row> {
  const body = () => JSON.stringify({ email: typeof email === 'string' ? email : email(), password: DEMO_PASSWORD });
  const opts = {
    url: `${base}/api/v1/auth/login`,
    method: 'POST' as const,
    headers: { 'content-type': 'application/json' },
    // a fresh body per request, so unknown emails never reach their lockout threshold
    requests: [{ setupRequest: (req: autocannon.Request) => ({ ...req, body: body() }) }],
    connections: conns,
  };
  await autocannon({ ...opts, amount: Math.min(20, requests) }); // warm-up: JIT, pools, the directory's caches
  const pid = stack.api.child.pid!;
  const cpu0 = cpuSeconds(pid);
  const started = performance.now();
  const r = await autocannon({ ...opts, amount: requests });
  const seconds = (performance.now() - started) / 1000;
  const good = r.statusCodeStats?.[`${expected}`]?.count ?? 0;
  return {
    name,
    mode: conns === 1 ? 'one at a time' : `${conns} at once`,
    rps: r.requests.total / seconds, // autocannon's per-second average is too coarse for a short run
    p50: r.latency.p50,
    p99: r.latency.p99,
    bad: r.requests.total - good + r.errors + r.timeouts,
    apiCpuMsPerReq: ((cpuSeconds(pid) - cpu0) * 1000) / r.requests.total,
  };
}

let unknown = 0;
const rows: Row[] = [];
try {
  for (const conns of [1, connections]) {
    rows.push(await run('internal (argon2id)', 'viewer@dmp.example', 200, conns));
    rows.push(await run('Active Directory (LDAPS)', 'ad.viewer@dmp.example', 200, conns));
    rows.push(await run('unknown email (dummy hash)', () => `nobody-${Date.now()}-${++unknown}@songtrust.example`, 401, conns));
  }
} finally {
  await stack.stop();
}

console.log(`\n${requests} sign-ins per row, through the sidecar, ${new Date().toISOString()}, Node ${process.version}\n`);
console.log('| sign-in | clients | req/s | p50 ms | p99 ms | unexpected answers | catalog API CPU ms/sign-in |');
console.log('| --- | --- | ---: | ---: | ---: | ---: | ---: |');
for (const r of rows) {
  console.log(`| ${r.name} | ${r.mode} | ${r.rps.toFixed(0)} | ${r.p50} | ${r.p99} | ${r.bad} | ${r.apiCpuMsPerReq.toFixed(1)} |`);
}
process.exit(rows.some((r) => r.bad > 0) ? 1 : 0);
