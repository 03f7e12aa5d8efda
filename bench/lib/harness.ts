/**
 * Shared measuring helpers of the benchmarks: CPU time and RSS of server processes from Linux
 * /proc, CPU pinning with taskset, closed-loop runs with autocannon, Markdown tables, and the
 * JSON + Markdown reports under .data/bench/.
 *
 * Source of the /proc fields: proc(5) — /proc/<pid>/stat fields 14 (utime) and 15 (stime), in
 * clock ticks (USER_HZ, 100 on Linux/x86-64), and field 4 (ppid); /proc/<pid>/status VmRSS (KiB).
 */
import autocannon from 'autocannon';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '../..');
/** Clock ticks per second of /proc/<pid>/stat (USER_HZ; 100 on every Linux this runs on). */
const USER_HZ = 100;

/** BENCH_SMOKE=1: each mode runs for a few seconds and only checks that it produced numbers. */
export const SMOKE = process.env.BENCH_SMOKE === '1';

/**
 * Node flags from environment variable `name` (space separated, e.g. BENCH_SIDECAR_NODE_ARGS =
 * `--cpu-prof --cpu-prof-dir=/tmp/prof`), or from `fallback` when it is unset.
 */
export function nodeArgsFrom(name: string, fallback = ''): string[] {
  return (process.env[name] ?? fallback).split(' ').filter(Boolean);
}

/** The fields of /proc/<pid>/stat after the command name (field 3 = index 0). @throws when the pid is gone */
function statFields(pid: number): string[] {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return s.slice(s.lastIndexOf(') ') + 2).split(' ');
}

/** CPU time (user + system, all threads) process `pid` has used, in seconds; 0 when it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const f = statFields(pid);
    return (Number(f[11]) + Number(f[12])) / USER_HZ;
  } catch {
    return 0;
  }
}

/** `pid` and all its descendants (e.g. nginx's workers, node:cluster workers), by ppid from /proc. */
export function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const ppid = Number(statFields(Number(d))[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(d)]);
    } catch {
      /* exited meanwhile */
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    out.push(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  walk(pid);
  return out;
}

/** Resident set size of `pid` in MiB (VmRSS); 0 when it is gone. */
export function rssMiB(pid: number | undefined): number {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
}

/**
 * A set of server processes whose CPU is measured together (e.g. "nginx": master + workers).
 * `pids` is asked at the start and at the end of a window, so processes that come and go (a
 * database connection pool's backends) are counted while alive.
 */
export type ProcessGroup = { name: string; pids: () => number[] | Promise<number[]> };

/** CPU seconds per group over a window: call the result at the end. */
export async function cpuWindow(groups: ProcessGroup[]): Promise<() => Promise<Record<string, number>>> {
  const start = new Map<string, Map<number, number>>();
  for (const g of groups) start.set(g.name, new Map((await g.pids()).map((p) => [p, cpuSeconds(p)])));
  return async () => {
    const out: Record<string, number> = {};
    for (const g of groups) {
      const before = start.get(g.name)!;
      const pids = new Set([...before.keys(), ...(await g.pids())]);
      let s = 0;
      // a pid seen only at the end started inside the window: all its CPU counts
      for (const p of pids) s += Math.max(0, cpuSeconds(p) - (before.get(p) ?? 0));
      out[g.name] = s;
    }
    return out;
  };
}

/**
 * The CPUs servers and the load generator run on. With ≥ 2 CPUs the servers get CPU 0 and the load
 * generator CPU 1 (env BENCH_SERVER_CPUS / BENCH_LOAD_CPUS, taskset lists such as `0` or `0-2`,
 * override); with one CPU or no taskset nothing is pinned (`undefined`).
 */
export function cpuPlan(): { server?: string; load?: string } {
  const taskset = spawnSync('taskset', ['-V'], { encoding: 'utf8' }).status === 0;
  if (!taskset) return {};
  if (process.env.BENCH_SERVER_CPUS || process.env.BENCH_LOAD_CPUS) return { server: process.env.BENCH_SERVER_CPUS, load: process.env.BENCH_LOAD_CPUS };
  return availableParallelism() >= 2 ? { server: '0', load: '1' } : {};
}

/**
 * A command line pinned to `cpus` with taskset(1) (which execs the command: the pid is the command's).
 * @param cpus a taskset CPU list, or undefined for no pinning
 */
export function pinned(cmd: string, args: string[], cpus: string | undefined): [string, string[]] {
  return cpus ? ['taskset', ['-c', cpus, cmd, ...args]] : [cmd, args];
}

/** Pin every thread of this process to `cpus` (taskset -a -p). No-op for undefined. @throws when taskset fails */
export function pinSelf(cpus: string | undefined): void {
  if (!cpus) return;
  const r = spawnSync('taskset', ['-a', '-p', '-c', cpus, String(process.pid)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`taskset -a -p -c ${cpus} ${process.pid} failed: ${r.stderr}`);
}

/** One closed-loop result (autocannon): mean req/s, latency percentiles in ms, failures. */
export type LoadResult = { rps: number; p50: number; p99: number; requests: number; failures: number };

/**
 * Saturate `url` with autocannon (closed loop: `connections` clients, each sending its next request
 * when the answer came) for `durationS` seconds; `requests` cycle per connection (same stream for
 * every target). Any non-2xx answer or socket error counts as a failure.
 */
export async function closedLoop(url: string, opts: { connections: number; durationS: number; requests: autocannon.Request[] }): Promise<LoadResult> {
  const r = await autocannon({ url, connections: opts.connections, duration: opts.durationS, requests: opts.requests });
  return { rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, requests: r.requests.total, failures: r.non2xx + r.errors + r.timeouts };
}

/** A Markdown table: header row, alignment row (text left, the rest right), one row per line. */
export function markdownTable(header: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map((_, i) => (i === 0 ? '---' : '---:'))), ...rows.map(line)].join('\n');
}

/** Fixed decimals, or `–` for a missing / non-finite number. */
export function fmt(n: number | undefined, digits = 0): string {
  return n === undefined || !Number.isFinite(n) ? '–' : n.toFixed(digits);
}

/**
 * Write `<name>.json` and `<name>.md` to BENCH_OUT_DIR (default .data/bench/) and return their paths.
 */
export function writeReport(name: string, json: unknown, markdown: string): { json: string; md: string } {
  const dir = process.env.BENCH_OUT_DIR ?? join(process.env.DATA_DIR ?? join(ROOT, '.data'), 'bench');
  mkdirSync(dir, { recursive: true });
  const paths = { json: join(dir, `${name}.json`), md: join(dir, `${name}.md`) };
  writeFileSync(paths.json, `${JSON.stringify(json, null, 2)}\n`);
  writeFileSync(paths.md, `${markdown}\n`);
  return paths;
}
