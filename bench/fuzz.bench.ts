/**
 * Fuzz mode (issue 9 §4): `npm run bench -- fuzz` runs FUZZ_RUNS property cases (default 100,000)
 * per transport through the sidecar's real pipeline — in process (light-my-request, raw targets)
 * and over raw TCP sockets against a sidecar child process — with real OpenFGA and Redis and a
 * recording upstream. Arbitraries, oracle, model and invariants: test/support/fuzz.ts (the test
 * command runs a few thousand of the same cases: test/sidecar/fuzz.test.ts).
 *
 * Prints a Markdown report (cases, time, rate, forwards, answers by status and by family, the
 * seed, the child's RSS before and after) and writes it with the raw numbers as JSON to
 * BENCH_REPORT_DIR (default .data/bench). Exit 1 on the first broken invariant: fast-check's report
 * names the seed and path (replay with FUZZ_SEED=<seed> FUZZ_PATH=<path>) and the case.
 *
 * Environment: FUZZ_RUNS [100000 per transport], FUZZ_TRANSPORTS [inject,http], FUZZ_SEED,
 * FUZZ_PATH, BENCH_REPORT_DIR, and what scripts/bench.sh exports (OPENFGA_API_URL, REDIS_URL).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { runFuzz, startFuzzFixture, type FuzzStats } from '../test/support/fuzz.ts';

const ROOT = resolve(import.meta.dirname, '..');
const runs = Number(process.env.FUZZ_RUNS ?? 100_000);
const wanted = (process.env.FUZZ_TRANSPORTS ?? 'inject,http').split(',').map((s) => s.trim()) as ('inject' | 'http')[];
const reportDir = resolve(ROOT, process.env.BENCH_REPORT_DIR ?? '.data/bench');

/** Resident set size (MiB) of a process (Linux /proc). */
function rssMiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
}

const fx = await startFuzzFixture({ transports: wanted });
const startedAt = new Date();
const results: (FuzzStats & { rssBeforeMiB?: number; rssAfterMiB?: number })[] = [];
let failure: Error | null = null;
try {
  for (const transport of fx.transports) {
    const pid = transport.name === 'http' ? fx.process!.child.pid! : process.pid;
    const rssBeforeMiB = rssMiB(pid);
    process.stderr.write(`fuzz: ${runs} cases ${transport.name} …\n`);
    const stats = await runFuzz(fx, transport, { runs });
    results.push({ ...stats, rssBeforeMiB, rssAfterMiB: rssMiB(pid) });
  }
} catch (err) {
  failure = err as Error;
} finally {
  await fx.close();
}

const lines: string[] = [];
lines.push(`Fuzz run ${startedAt.toISOString()}, Node ${process.version}, ${runs} cases per transport\n`);
lines.push('| transport | cases | seconds | cases/s | forwarded | 2xx | 400 | 401 | 403 | 404 | 431 | other | 5xx | seed | RSS before → after (MiB) |');
lines.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |');
for (const r of results) {
  const s = (k: string) => r.statuses[k] ?? 0;
  const two = Object.entries(r.statuses).filter(([k]) => k.startsWith('2')).reduce((a, [, v]) => a + v, 0);
  const five = Object.entries(r.statuses).filter(([k]) => k.startsWith('5')).reduce((a, [, v]) => a + v, 0);
  const other = r.runs - two - five - ['400', '401', '403', '404', '431'].reduce((a, k) => a + s(k), 0);
  const where = r.transport === 'http' ? 'sidecar process' : 'bench process';
  lines.push(
    `| ${r.transport === 'http' ? 'raw TCP → sidecar process' : 'in process (inject)'} | ${r.runs} | ${(r.ms / 1000).toFixed(0)} | ${((r.runs * 1000) / r.ms).toFixed(0)} | ${r.forwarded} | ${two} | ${s('400')} | ${s('401')} | ${s('403')} | ${s('404')} | ${s('431')} | ${other} | ${five} | ${r.seed} | ${r.rssBeforeMiB?.toFixed(0)} → ${r.rssAfterMiB?.toFixed(0)} (${where}) |`,
  );
}
lines.push('\nBy family (status: cases):\n');
for (const r of results) for (const [family, statuses] of Object.entries(r.families)) lines.push(`- ${r.transport} ${family}: ${JSON.stringify(statuses)}`);
if (failure) lines.push(`\nFAILED: ${failure.message}`);
else lines.push(`\nEvery invariant held for ${results.reduce((a, r) => a + r.runs, 0)} cases; the sidecar answered /healthz after each run.`);
const markdown = lines.join('\n');
console.log(`\n${markdown}`);

mkdirSync(reportDir, { recursive: true });
const file = join(reportDir, `fuzz-${startedAt.toISOString().replace(/[:.]/g, '-')}`);
writeFileSync(`${file}.json`, JSON.stringify({ startedAt, node: process.version, runsPerTransport: runs, results, failure: failure?.message ?? null }, null, 2));
writeFileSync(`${file}.md`, `${markdown}\n`);
console.log(`\nreport: ${file}.json, ${file}.md`);
process.exit(failure ? 1 : 0);
