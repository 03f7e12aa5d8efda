/**
 * The revocation measurement of issue 8: "membership removed → first deny at a second sidecar",
 * repeated. Shared by bench/revocation.bench.ts and test/sidecar/epoch-push.test.ts.
 *
 * One round: grant the membership (RelationshipWriter: OpenFGA Write + epoch bump and push), ask
 * the sidecar twice (allowed; the second answer comes from its decision cache), then delete the
 * membership and ask again back to back until it answers 403; the time from the start of the
 * delete to that first 403 is the round's latency (also reported from the moment the delete
 * returned). Then `confirm` more requests, each of which
 * must be 403 too: any 200 among them is a stale allow.
 */
import { performance } from 'node:perf_hooks';
import type { TupleKey } from '@openfga/sdk';
import type { RelationshipWriter } from '../../policies/src/relationships.ts';

/** What {@link measureRevocations} found. Times in ms. */
export type RevocationResult = {
  rounds: number;
  /** per round: delete started → first 403 at the probed sidecar (Infinity: none within `timeoutMs`) */
  latenciesMs: number[];
  p50: number;
  p99: number;
  max: number;
  /** the same, from the moment the writer's call returned (OpenFGA Write + bump done): the push's share */
  afterWrite: { latenciesMs: number[]; p50: number; p99: number; max: number };
  /** p50 of one probe's round trip (the allowed probes before each removal): the floor of the latency */
  probeP50: number;
  /** 200s after a round's first 403 (must be 0) */
  staleAllows: number;
  /** rounds in which the membership was not allowed before its removal (must be 0) */
  notAllowedBefore: number;
  /** answers other than 200/403 */
  otherStatuses: number[];
};

/** The p-th percentile (nearest rank) of `xs`. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/**
 * Run `rounds` rounds (see the module doc).
 * @param o.probe one request to the sidecar under test as the member; resolves to the HTTP status.
 * @param o.confirm requests after the first 403 that must all be 403 (default 3).
 * @param o.timeoutMs give up a round after this long without a 403 (default 5000).
 * @param o.probeGapMs pause between probes of one round (default 0: back to back).
 */
export async function measureRevocations(o: {
  writer: RelationshipWriter;
  tuple: TupleKey;
  probe(): Promise<number>;
  rounds: number;
  confirm?: number;
  timeoutMs?: number;
  probeGapMs?: number;
}): Promise<RevocationResult> {
  const latenciesMs: number[] = [];
  const afterMs: number[] = [];
  const probeMs: number[] = [];
  const otherStatuses: number[] = [];
  let staleAllows = 0;
  let notAllowedBefore = 0;
  const timeoutMs = o.timeoutMs ?? 5000;
  const pause = () => (o.probeGapMs ? new Promise((r) => setTimeout(r, o.probeGapMs)) : undefined);
  for (let i = 0; i < o.rounds; i++) {
    await o.writer.write({ writes: [o.tuple] });
    // The grant reaches the sidecar by the same push as a removal does (not by the time the writer
    // returns): wait for it, within the timeout, before measuring the removal.
    let granted = await o.probe();
    for (const until = performance.now() + timeoutMs; granted !== 200 && performance.now() < until; granted = await o.probe()) await new Promise((r) => setTimeout(r, 5));
    const before = [granted];
    const p0 = performance.now();
    before.push(await o.probe());
    probeMs.push(performance.now() - p0);
    if (before.some((s) => s !== 200)) notAllowedBefore++;
    const started = performance.now();
    await o.writer.write({ deletes: [o.tuple] });
    const written = performance.now();
    let latency = Infinity;
    while (performance.now() - started < timeoutMs) {
      const status = await o.probe();
      if (status === 403) {
        latency = performance.now() - started;
        afterMs.push(performance.now() - written);
        break;
      }
      if (status !== 200) otherStatuses.push(status);
      await pause();
    }
    latenciesMs.push(latency);
    for (let j = 0; j < (o.confirm ?? 3); j++) {
      const status = await o.probe();
      if (status === 200) staleAllows++;
      else if (status !== 403) otherStatuses.push(status);
    }
  }
  return {
    rounds: o.rounds,
    latenciesMs,
    p50: percentile(latenciesMs, 50),
    p99: percentile(latenciesMs, 99),
    max: Math.max(...latenciesMs),
    afterWrite: { latenciesMs: afterMs, p50: percentile(afterMs, 50), p99: percentile(afterMs, 99), max: Math.max(...afterMs) },
    probeP50: percentile(probeMs, 50),
    staleAllows,
    notAllowedBefore,
    otherStatuses,
  };
}
