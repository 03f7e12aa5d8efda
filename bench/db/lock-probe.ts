/**
 * Lock profile of a migration: while it runs, one connection per (table, mode) probes the table
 * every `intervalMs` with `SET LOCAL lock_timeout = <intervalMs>` and reports what was blocked for
 * how long (issue 8 §3). Modes: `read` = `SELECT 1 FROM t LIMIT 1` (ACCESS SHARE, what a reader
 * needs), `write` = `LOCK TABLE t IN ROW EXCLUSIVE MODE` (what INSERT/UPDATE/DELETE take).
 * PostgreSQL's lock conflict table (docs: "Explicit Locking", Table 13.2): ACCESS EXCLUSIVE (ALTER
 * TABLE, DROP, most DDL) blocks both; SHARE (CREATE INDEX) and the ROW EXCLUSIVE-conflicting modes
 * block only writers.
 *
 * A sampler reads the other backends' active statements from `pg_stat_activity` at the same pace,
 * so the report can say which statements of the migration took the time.
 *
 * A probe that times out (SQLSTATE 55P03) counts as blocked for that sample; consecutive blocked
 * samples form one blocked stretch, from the start of its first sample to the end of its last.
 * A probe waits at most `intervalMs` in the lock queue, so it delays the migration by at most that
 * once per table it has not locked yet.
 */
import pg from 'pg';

/** The blocked stretches of one (table, mode) probe, in ms from the probe's start. */
export type ProbeResult = { table: string; mode: 'read' | 'write'; samples: number; blocked: { fromMs: number; toMs: number }[] };

/** Where the migrating backend spent its time: sampled statement heads (first line, 100 chars) and ms. */
export type ActivityProfile = { statement: string; ms: number }[];

/** A running lock probe; `stop()` ends it and returns the results and the activity profile. */
export type LockProbe = { stop: () => Promise<{ probes: ProbeResult[]; activity: ActivityProfile }> };

/**
 * Start probing `tables` on `url` (a role that may read and lock them: the owner or a superuser).
 * @throws when a connection cannot be opened
 */
export async function startLockProbe(url: string, tables: readonly string[], intervalMs = 50): Promise<LockProbe> {
  const t0 = performance.now();
  let running = true;
  const loops: Promise<ProbeResult>[] = [];
  const clients: pg.Client[] = [];
  for (const table of tables) {
    for (const mode of ['read', 'write'] as const) {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      clients.push(c);
      const sql = mode === 'read' ? `select 1 from ${table} limit 1` : `lock table ${table} in row exclusive mode`;
      loops.push(
        (async () => {
          const res: ProbeResult = { table, mode, samples: 0, blocked: [] };
          let open: { fromMs: number; toMs: number } | null = null;
          while (running) {
            const start = performance.now() - t0;
            let blocked = false;
            try {
              await c.query('begin');
              await c.query(`set local lock_timeout = '${intervalMs}ms'`);
              await c.query(sql);
            } catch (err) {
              // 55P03 lock_not_available; anything else (e.g. the table does not exist yet or any more) is not a lock wait
              blocked = (err as { code?: string }).code === '55P03';
            } finally {
              await c.query('rollback').catch(() => undefined);
            }
            const end = performance.now() - t0;
            res.samples++;
            if (blocked) {
              if (open) open.toMs = end;
              else open = { fromMs: start, toMs: end };
            } else if (open) {
              res.blocked.push(open);
              open = null;
            }
            const wait = intervalMs - (end - start);
            if (wait > 0) await new Promise((r) => setTimeout(r, wait));
          }
          if (open) res.blocked.push(open);
          return res;
        })(),
      );
    }
  }
  // the other backends' active statements every intervalMs (the migration's, besides our probes)
  const sampler = new pg.Client({ connectionString: url });
  await sampler.connect();
  clients.push(sampler);
  const seen = new Map<string, number>();
  const sampling = (async () => {
    while (running) {
      const start = performance.now();
      const r = await sampler.query<{ q: string }>(
        `select left(split_part(btrim(query, E' \\n'), E'\\n', 1), 100) as q from pg_stat_activity
          where datname = current_database() and state = 'active' and pid <> pg_backend_pid()
            and query !~ '^(select 1 from \\w+ limit 1|lock table \\w+ in row exclusive mode|set local lock_timeout|begin|rollback)'`,
      );
      for (const x of r.rows) seen.set(x.q, (seen.get(x.q) ?? 0) + intervalMs);
      const wait = intervalMs - (performance.now() - start);
      if (wait > 0) await new Promise((res) => setTimeout(res, wait));
    }
  })();
  return {
    stop: async () => {
      running = false;
      const results = await Promise.all(loops);
      await sampling;
      await Promise.all(clients.map((c) => c.end()));
      const activity = [...seen.entries()].map(([statement, ms]) => ({ statement, ms })).sort((a, b) => b.ms - a.ms);
      return { probes: results, activity };
    },
  };
}

/** One line per probe: total blocked ms, longest stretch, and when it started (ms after the probe's start). */
export function summariseLocks(results: ProbeResult[]): { table: string; mode: string; blockedMs: number; longestMs: number; firstBlockedAtMs: number | null; samples: number }[] {
  return results.map((r) => {
    const lengths = r.blocked.map((b) => b.toMs - b.fromMs);
    return {
      table: r.table,
      mode: r.mode,
      blockedMs: Math.round(lengths.reduce((a, b) => a + b, 0)),
      longestMs: Math.round(Math.max(0, ...lengths)),
      firstBlockedAtMs: r.blocked.length ? Math.round(r.blocked[0]!.fromMs) : null,
      samples: r.samples,
    };
  });
}
