/**
 * The explain / who-can / what-can commands of the policies CLI (policies/src/cli.ts adds them):
 *   explain <user> <permission> <object>   ALLOWED with the path, or DENIED with the reasons
 *   who-can <permission> <object>          the users (and usersets) holding it (ListUsers)
 *   what-can <user> <permission> <type>    the objects of <type> the user holds it on (StreamedListObjects)
 * <user>: `user:<uuid>`, a bare uuid, or an email — an email is resolved in the catalog database as
 * the schema owner (`--database-url`, env DATABASE_OWNER_URL), read only. `--context '<json>'` is the
 * condition context (e.g. `{"client_ip":"10.0.0.1"}`); `--model-id` pins a model (default: the
 * store's newest). Exit 0 when the question was answered (allowed or not), 1 on errors.
 */
import type { Command } from 'commander';
import { resolveStore } from './model.ts';
import { explain, whatCan, whoCan } from './explain.ts';
import { resolveUser } from './resolve-user.ts';

type Conn = { apiUrl: string; storeName: string };
type Common = Conn & { modelId?: string; context?: string; databaseUrl: string };

/** `--context` JSON → object. @throws Error when it is not a JSON object. */
export function parseContext(text: string | undefined): Record<string, unknown> | undefined {
  if (text === undefined) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new Error(`--context must be a JSON object: ${(err as Error).message}`, { cause: err });
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('--context must be a JSON object, e.g. {"client_ip":"10.0.0.1"}');
  return v as Record<string, unknown>;
}

function withCommon(cmd: Command, withConn: (c: Command) => Command): Command {
  return withConn(cmd)
    .option('--model-id <id>', "authorization model id (default: the store's newest)")
    .option('--context <json>', 'condition context as a JSON object, e.g. {"client_ip":"10.0.0.1"}')
    .option('--database-url <url>', 'catalog database as the schema owner, to resolve an email (read only)',
      process.env.DATABASE_OWNER_URL || 'postgres://catalog_owner:catalog_owner@127.0.0.1:5432/publishing');
}

/**
 * Add `explain`, `who-can` and `what-can` to the policies program.
 * @param withConn the CLI's `--api-url` / `--store-name` options (policies/src/cli.ts).
 */
export function addExplainCommands(program: Command, withConn: (c: Command) => Command): void {
  withCommon(program.command('explain'), withConn)
    .description('explain why a user holds a permission on an object (or why not)')
    .argument('<user>', 'user:<uuid>, a uuid, or an email (looked up in the database)')
    .argument('<permission>', 'the relation, e.g. can_update or works_update_all')
    .argument('<object>', 'type:id, e.g. work:<uuid> or publisher:<uuid>')
    .action(async (userText: string, relation: string, object: string, opts: Common) => {
      const context = parseContext(opts.context);
      const user = await resolveUser(userText, opts.databaseUrl);
      const storeId = await resolveStore(opts.apiUrl, opts.storeName);
      const e = await explain({ apiUrl: opts.apiUrl, storeId, modelId: opts.modelId, user, relation, object, ...(context ? { context } : {}) });
      console.log(e.text);
    });

  withCommon(program.command('who-can'), withConn)
    .description('list the users holding a permission on an object (OpenFGA ListUsers)')
    .argument('<permission>', 'the relation, e.g. can_read')
    .argument('<object>', 'type:id')
    .option('--user-type <type>', 'the user type to list', 'user')
    .action(async (relation: string, object: string, opts: Common & { userType: string }) => {
      const context = parseContext(opts.context);
      const storeId = await resolveStore(opts.apiUrl, opts.storeName);
      const r = await whoCan({ apiUrl: opts.apiUrl, storeId, modelId: opts.modelId, relation, object, userType: opts.userType, ...(context ? { context } : {}) });
      console.log(`${r.users.length} user(s) with ${relation} on ${object}:`);
      for (const u of r.users) console.log(`  ${u}`);
      if (r.usersets.length) console.log(`usersets: ${r.usersets.join(', ')}`);
      if (r.truncated) console.log("TRUNCATED: OpenFGA's ListUsers limits (max results / deadline) cut the answer");
    });

  withCommon(program.command('what-can'), withConn)
    .description('list the objects of a type a user holds a permission on (OpenFGA StreamedListObjects)')
    .argument('<user>', 'user:<uuid>, a uuid, or an email (looked up in the database)')
    .argument('<permission>', 'the relation, e.g. can_update')
    .argument('<type>', 'the object type, e.g. work')
    .option('--max-results <n>', 'objects listed at most', '1000')
    .action(async (userText: string, relation: string, type: string, opts: Common & { maxResults: string }) => {
      const context = parseContext(opts.context);
      const maxResults = Number(opts.maxResults);
      if (!Number.isInteger(maxResults) || maxResults < 1) throw new Error(`--max-results must be a positive integer, got "${opts.maxResults}"`);
      const user = await resolveUser(userText, opts.databaseUrl);
      const storeId = await resolveStore(opts.apiUrl, opts.storeName);
      const r = await whatCan({ apiUrl: opts.apiUrl, storeId, modelId: opts.modelId, user, relation, type, maxResults, ...(context ? { context } : {}) });
      console.log(`${r.objects.length} ${type} object(s) ${user} has ${relation} on:`);
      for (const o of r.objects) console.log(`  ${o}`);
      if (r.truncated) console.log(`TRUNCATED: more than ${maxResults} or cut by OpenFGA's deadline`);
    });
}
