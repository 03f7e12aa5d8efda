/**
 * Catalog API latency on a big catalog (issue 8 §3): the catalog API (`buildCatalogApi` through
 * test/catalog-api/helpers.ts `buildTestApp`, as `catalog_app` under RLS, its real pool, Redis
 * replay check and assertion verification) in a process of its own (bench/db/api-server.ts),
 * listening on a free port, driven by autocannon at `connections` concurrent requests. Every request carries its own signed
 * identity assertion (a fresh `jti`, bound to its method, path and query like the sidecar's), all
 * signed before the run; requests spread over every publisher of the data set, lists over random
 * pages (a keyset cursor at a random row of the publisher, or the first page), gets over random
 * rows.
 */
import autocannon from 'autocannon';
import type pg from 'pg';
import { readFileSync } from 'node:fs';
import { assertion, bindingOf, type SigningKey } from '../../test/catalog-api/helpers.ts';
import type { BenchPublisher } from './catalog-data.ts';

/** A scenario: who asks and what. */
export type Scenario = { name: string; who: 'staff' | 'creator'; kind: 'list' | 'get'; collection: 'works' | 'songwriters' | 'recordings' };

/** What one scenario measured (latencies in ms). */
export type LatencyRow = { name: string; requests: number; rps: number; p50: number; p90: number; p99: number; max: number; non2xx: number; errors: number; apiCpuMsPerRequest: number };

/** CPU time (user + system) process `pid` has used, in ms (Linux /proc/<pid>/stat, USER_HZ = 100). */
export function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** A prepared request: path and identity assertion. */
type Prepared = { path: string; token: string };

/** Keyset cursor as the API hands it out (MikroORM's: base64url of the JSON `[created_at, id]`). */
function cursorOf(createdAt: string, id: string): string {
  return Buffer.from(JSON.stringify([createdAt, id])).toString('base64url');
}

/**
 * Sample rows of the scenario's collection for every publisher (visible to the caller: all rows for
 * staff, the caller's own for a creator), read on `su` (a superuser client).
 * @returns per publisher index the `(created_at, id)` of up to `per` random rows
 */
async function sampleRows(su: pg.ClientBase, s: Scenario, publishers: BenchPublisher[], per: number): Promise<{ createdAt: string; id: string }[][]> {
  await su.query(`set timezone = 'UTC'`);
  const out: { createdAt: string; id: string }[][] = [];
  for (const p of publishers) {
    const r = await su.query<{ created_at: string; id: string }>(
      `select created_at::text as created_at, id::text as id from ${s.collection}
        where publisher_id = $1 and deleted_at is null ${s.who === 'creator' ? 'and owner_user_id = $3' : ''}
        order by random() limit $2`,
      s.who === 'creator' ? [p.id, per, p.creatorUserId] : [p.id, per],
    );
    out.push(r.rows.map((x) => ({ createdAt: x.created_at, id: x.id })));
  }
  return out;
}

/**
 * Prepare `n` requests of scenario `s`: paths and their signed assertions.
 * @throws when a publisher has no visible row for the scenario (the data set is too small)
 */
async function prepare(key: SigningKey, su: pg.ClientBase, s: Scenario, publishers: BenchPublisher[], n: number): Promise<Prepared[]> {
  const rows = await sampleRows(su, s, publishers, 50);
  const out: Prepared[] = [];
  for (let i = 0; i < n; i++) {
    const pi = i % publishers.length;
    const p = publishers[pi]!;
    const sample = rows[pi]!;
    if (sample.length === 0) throw new Error(`no ${s.collection} row visible to the ${s.who} of publisher ${p.id}`);
    const row = sample[Math.floor(Math.random() * sample.length)]!;
    const path =
      s.kind === 'get'
        ? `/api/v1/${s.collection}/${row.id}`
        : i % 10 === 0
          ? `/api/v1/${s.collection}?limit=50`
          : `/api/v1/${s.collection}?limit=50&cursor=${cursorOf(row.createdAt, row.id)}`;
    const sub = s.who === 'staff' ? p.staffUserId : p.creatorUserId;
    out.push({ path, token: await assertion(key, { sub, publisherId: p.id, ...bindingOf('GET', path), expiresIn: '10m' }) });
  }
  return out;
}

/**
 * Run scenario `s`: `n` requests at `connections` concurrent, against `api` (the API process:
 * its URL, the key its key set trusts and its pid, whose CPU time is read around the run).
 * @returns the latency row (autocannon's histogram, ms)
 */
export async function runScenario(api: { url: string; key: SigningKey; pid: number }, su: pg.ClientBase, s: Scenario, publishers: BenchPublisher[], n: number, connections: number): Promise<LatencyRow> {
  const prepared = await prepare(api.key, su, s, publishers, n);
  const cpu0 = cpuMs(api.pid);
  let next = 0;
  const result = await autocannon({
    url: api.url,
    connections,
    amount: n,
    requests: [
      {
        method: 'GET',
        setupRequest: (req) => {
          const x = prepared[next++ % prepared.length]!;
          return { ...req, path: x.path, headers: { ...req.headers, 'x-identity-assertion': x.token } };
        },
      },
    ],
  });
  return {
    name: s.name,
    requests: result.requests.total,
    rps: Math.round(result.requests.average),
    p50: result.latency.p50,
    p90: result.latency.p90,
    p99: result.latency.p99,
    max: result.latency.max,
    non2xx: result.non2xx,
    errors: result.errors + result.timeouts,
    apiCpuMsPerRequest: (cpuMs(api.pid) - cpu0) / Math.max(1, result.requests.total),
  };
}
