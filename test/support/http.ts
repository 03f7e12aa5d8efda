/**
 * Small network helpers shared by the suites that start real processes on loopback.
 */
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** A free TCP port on 127.0.0.1 (the OS picks it; there is a small race until it is bound again). */
export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => res(port));
    });
  });
}

/** Poll `url` every 100 ms until it answers 2xx. @throws after `timeoutMs` (default 20 000 ms). */
export async function waitHttp(url: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) throw new Error(`${url} did not come up within ${timeoutMs} ms`);
    await sleep(100);
  }
}

/**
 * Sum of a sidecar's `sidecar_decisions_total` samples (Prometheus text from `${adminBase}/metrics`,
 * the sidecar's admin listener) with label `source` (`lru` | `redis` | `pdp`) and, when given, `allowed`.
 * @throws when the admin listener does not answer 200
 */
export async function decisions(adminBase: string, source: string, allowed?: boolean): Promise<number> {
  const res = await fetch(`${adminBase}/metrics`);
  if (res.status !== 200) throw new Error(`${adminBase}/metrics answered ${res.status} (is it the admin listener?)`);
  const text = await res.text();
  return text
    .split('\n')
    .filter((l) => l.startsWith('sidecar_decisions_total{') && l.includes(`source="${source}"`) && (allowed === undefined || l.includes(`allowed="${allowed}"`)))
    .reduce((sum, l) => sum + Number(l.split(' ').pop()), 0);
}

/**
 * Poll `probe` every 20 ms until it gives `want`.
 * @returns the milliseconds it took, -1 when it did not within `withinMs`
 */
export async function within(withinMs: number, want: number, probe: () => Promise<number>): Promise<number> {
  const started = Date.now();
  while (Date.now() - started <= withinMs) {
    if ((await probe()) === want) return Date.now() - started;
    await sleep(20);
  }
  return -1;
}
