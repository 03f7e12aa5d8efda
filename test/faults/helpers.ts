/**
 * Shared pieces of the fault-matrix suites (test/faults/*.test.ts; README "Failure behaviour"):
 * timing a call, the bound every faulty answer must meet (the dependency's timeout + 100 ms, over
 * the same call's normal time), and a fault proxy in front of a service named by a URL.
 */
import type { Test } from 'tap';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.ts';

/** The slack the issue allows over a dependency's timeout (issue 9 §3). */
export const SLACK_MS = 100;

/** Run `fn` and measure it. @returns its value and the milliseconds it took */
export async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  const value = await fn();
  return { value, ms: performance.now() - started };
}

/** The median of `xs` (the upper one of an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/**
 * The median time of `n` runs of `fn`, one after the other — a call's normal time, measured in the
 * same test as its faulty twin (the machine is shared: absolute times mean little).
 */
export async function baselineMs(n: number, fn: () => Promise<unknown>): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) times.push((await timed(fn)).ms);
  return median(times);
}

/**
 * A fault proxy in front of the host and port of `url` (e.g. `redis://127.0.0.1:6379/5`), closed
 * at `t`'s teardown.
 * @returns the proxy and `url` with its host and port replaced by the proxy's
 */
export async function proxyFor(t: Test, url: string, defaultPort: number): Promise<{ proxy: FaultProxy; url: string }> {
  const u = new URL(url);
  const proxy = await startFaultProxy({ host: u.hostname, port: Number(u.port || defaultPort) });
  t.teardown(() => proxy.close());
  u.host = proxy.address;
  // URL adds a '/' path to `http://host:port`; keep the caller's form
  const out = u.toString();
  return { proxy, url: url.endsWith('/') || u.pathname !== '/' ? out : out.replace(/\/$/, '') };
}

/**
 * Call `probe` every 20 ms for `forMs` and collect what it answers (e.g. statuses while a service
 * comes back), stopping early once `until` holds for an answer.
 */
export async function watch<T>(forMs: number, probe: () => Promise<T>, until: (v: T) => boolean = () => false): Promise<T[]> {
  const seen: T[] = [];
  const deadline = Date.now() + forMs;
  while (Date.now() < deadline) {
    const v = await probe();
    seen.push(v);
    if (until(v)) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  return seen;
}
