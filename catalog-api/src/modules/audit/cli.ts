/**
 * `npm run audit -- verify [--chain <publisher id|platform>] [--database-url <url>] [--json]`:
 * recompute every hash chain of the audit log (verify.ts) and report each edited row, gap and
 * reordering. Prints one line per chain (rows, head sequence number and hash — keep them: a later
 * run that shows a shorter chain or another head found rows deleted from the end) and one line per
 * problem; `--json` prints the report as JSON instead.
 * Exit code: 0 the log is intact, 1 problems were found, 2 the command could not run (usage,
 * connection).
 * Environment: DATABASE_OWNER_URL (the schema owner, whose select policy shows every row), or
 * `--database-url` for another role that reads every row (a BYPASSRLS read role).
 */
import { Command, InvalidArgumentError } from 'commander';
import { loadConfig } from '../../config.ts';
import { createOrm } from '../../db/orm.ts';
import { isUuid } from '../common/http.ts';
import { PLATFORM, verifyAuditLog, type VerifyReport } from './verify.ts';

/** Statement timeout of the verifier's reads, ms (pages of 1000 rows). */
const STATEMENT_TIMEOUT_MS = 60_000;

const chainArg = (v: string) => {
  if (v !== PLATFORM && !isUuid(v)) throw new InvalidArgumentError('a publisher id or "platform"');
  return v;
};

/** The human-readable report. */
function render(r: VerifyReport): string {
  const lines = r.chains.map((c) => `chain ${c.chain}: ${c.rows} rows, head ${c.headSeq} ${c.headHash}`);
  for (const p of r.problems) lines.push(`${p.kind.toUpperCase()} chain ${p.chain} seq ${p.seq} (id ${p.id}): ${p.detail}`);
  lines.push(r.problems.length ? `audit log NOT intact: ${r.problems.length} problem(s) in ${r.rows} rows` : `audit log intact: ${r.rows} rows in ${r.chains.length} chain(s)`);
  return lines.join('\n');
}

const program = new Command('audit').description('Work with the append-only audit log').exitOverride();
program
  .command('verify')
  .description('recompute the hash chains and report edited rows, gaps and reorderings')
  .option('--chain <chain>', 'only this chain: a publisher id, or "platform"', chainArg)
  .option('--database-url <url>', 'connect as this role instead of DATABASE_OWNER_URL')
  .option('--json', 'print the report as JSON')
  .action(async (opts: { chain?: string; databaseUrl?: string; json?: boolean }) => {
    const config = loadConfig();
    const orm = await createOrm({ DATABASE_URL: opts.databaseUrl ?? config.DATABASE_OWNER_URL, DB_POOL_MAX: 1, DB_STATEMENT_TIMEOUT_MS: STATEMENT_TIMEOUT_MS });
    try {
      const report = await verifyAuditLog(orm.em.fork(), { chain: opts.chain });
      console.log(opts.json ? JSON.stringify(report, null, 2) : render(report));
      process.exitCode = report.problems.length ? 1 : 0;
    } finally {
      await orm.close(true);
    }
  });

try {
  await program.parseAsync(process.argv);
} catch (err) {
  const e = err as { code?: string; exitCode?: number; message?: string };
  if (e.code?.startsWith('commander.')) process.exit(e.code === 'commander.helpDisplayed' || e.code === 'commander.version' ? 0 : 2);
  console.error(`audit: ${e.message ?? String(err)}`);
  process.exit(2);
}
