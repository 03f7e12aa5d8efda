/**
 * Policies CLI: `npm run policies -- <command>` (or `node policies/src/cli.ts <command>`).
 *   validate              the model parses and every route rule names a relation of the model
 *   test                  `fga model test` on policies/tests/*.fga.yaml
 *   diff [--exit-code]    the store's newest model vs the local one (DSL lines)
 *   deploy [--accept-changes] [--skip-shadow]   shadow run first (refused when decisions change),
 *                         then write the local model when its content changed, migrate tuples
 *                         (policies/migrations/) and publish it; prints the report, store + model id
 *   shadow [--model file] [--sample N] [--from-file decisions.jsonl]   replay recent decisions
 *                         against the model in a scratch store; prints what changes
 *   models                list the store's model ids (newest first) with their creation time
 *   rollback <modelId>    write an older model's content again as the newest model
 *   explain <user> <permission> <object> | who-can <permission> <object> |
 *   what-can <user> <permission> <type>   explain and inspect decisions (policies/src/explain-cli.ts)
 *   active [--publish]    the active model id (Redis key, else the newest) and whether it is the newest
 * deploy and rollback publish the new active model (policies/src/active-model.ts): running sidecars
 * and catalog APIs switch to it within 1 s, without a restart.
 * Options: --api-url (OPENFGA_API_URL, default http://127.0.0.1:8080), --store-name
 * (OPENFGA_STORE_NAME, default music-publishing), --redis-url (REDIS_URL, default
 * redis://127.0.0.1:6379/0) — docs/CONTRACTS.md, "Environment".
 * Exit code 0 on success, 1 on failure (message on stderr).
 */
import { Command } from 'commander';
import { DEFAULT_MODEL_FILE, canonicalModel, fgaClient, loadModel, modelContent, readLatestModel, resolveStore, toDsl } from './model.ts';
import { DEFAULT_ROUTES_FILE, loadRouteRules, validateRoutesAgainstModel } from './routes.ts';
import { findTestFiles, runModelTests } from './fga-cli.ts';
import { lineDiff } from './diff.ts';
import { ulidTime } from './ulid.ts';
import { addExplainCommands } from './explain-cli.ts';
import { type ShadowCliOptions, deployCommand, shadowCommand } from './shadow-cli.ts';
import { DEFAULT_SHADOW_SAMPLE } from './shadow.ts';
import { DEFAULT_MIGRATIONS_DIR } from './model-migrations.ts';
import { activeModelKey, announceActiveModel, publishActiveModel, readActiveModel, withRedis } from './active-model.ts';
import { redisConnectionWithUrl } from './redis.ts';

type Conn = { apiUrl: string; storeName: string };

function withConn(cmd: Command): Command {
  return cmd
    .option('--api-url <url>', 'OpenFGA HTTP API', process.env.OPENFGA_API_URL || 'http://127.0.0.1:8080')
    .option('--store-name <name>', 'OpenFGA store name', process.env.OPENFGA_STORE_NAME || 'music-publishing');
}

/** Add `--redis-url` (where the active model is published). */
function withRedisUrl(cmd: Command): Command {
  return cmd.option('--redis-url <url>', 'Redis of the sidecars (active model key + channel); REDIS_CLUSTER_NODES / REDIS_SENTINELS apply too', process.env.REDIS_URL || 'redis://127.0.0.1:6379/0');
}

/** Publish `modelId` as the active model when needed (see `announceActiveModel`) and say so. */
async function announce(redisUrl: string, storeId: string, modelId: string, written: boolean): Promise<void> {
  const published = await withRedis(redisConnectionWithUrl(redisUrl), (redis) => announceActiveModel(redis, storeId, modelId, written)).catch((err: Error) => {
    throw new Error(`model ${modelId} is in OpenFGA but could not be published as the active model (${err.message}); run \`npm run policies -- active --publish\` once Redis answers`, { cause: err });
  });
  console.log(published ? `active model ${modelId} published (${activeModelKey(storeId)}): running sidecars switch within 1 s` : `active model ${modelId} (already published)`);
}

/** Add the options of `shadow` and `deploy` (policies/src/shadow-cli.ts). */
function withShadowOptions(cmd: Command): Command {
  return cmd
    .option('--model <file>', 'model DSL file', DEFAULT_MODEL_FILE)
    .option('--sample <n>', `most recent decisions replayed (default ${DEFAULT_SHADOW_SAMPLE})`)
    .option('--from-file <file>', 'decisions to replay, one JSON record a line, instead of the Redis decision stream')
    .option('--migrations <dir>', 'model migration files', DEFAULT_MIGRATIONS_DIR)
    .option('--budget <ms>', 'time budget of the replay in ms (default 60000)');
}

/** Build the CLI program (exported for tests). Actions throw; {@link main} turns that into exit 1. */
export function buildProgram(): Command {
  const program = new Command('policies').description('Validate, test, diff, deploy and roll back the OpenFGA policies').exitOverride();

  program
    .command('validate')
    .description('parse the model and check the route rules against it')
    .option('--model <file>', 'model DSL file', DEFAULT_MODEL_FILE)
    .option('--routes <file>', 'route rules file', DEFAULT_ROUTES_FILE)
    .action((opts: { model: string; routes: string }) => {
      const model = loadModel(opts.model);
      const rules = loadRouteRules(opts.routes);
      validateRoutesAgainstModel(rules, model);
      console.log(`ok: ${model.type_definitions.length} types in ${opts.model}; ${rules.length} route rules in ${opts.routes}`);
    });

  program
    .command('test')
    .description('run `fga model test` on policies/tests/*.fga.yaml')
    .argument('[files...]', 'test files (default: policies/tests/*.fga.yaml)')
    .action(async (files: string[]) => {
      const list = files.length ? files : findTestFiles();
      const results = await runModelTests(list);
      for (const r of results) process.stdout.write(r.output);
      const failed = results.filter((r) => r.code !== 0);
      if (failed.length) throw new Error(`model tests failed: ${failed.map((r) => r.file).join(', ')}`);
      console.log(`ok: ${results.length} model test file(s) passed`);
    });

  withConn(program.command('diff'))
    .description("compare the store's newest model with the local model")
    .option('--model <file>', 'model DSL file', DEFAULT_MODEL_FILE)
    .option('--exit-code', 'exit 1 when they differ')
    .action(async (opts: Conn & { model: string; exitCode?: boolean }) => {
      const local = loadModel(opts.model);
      const storeId = await resolveStore(opts.apiUrl, opts.storeName);
      const latest = await readLatestModel(opts.apiUrl, storeId);
      if (latest && canonicalModel(latest) === canonicalModel(local)) {
        console.log(`no changes: ${opts.model} = deployed model ${latest.id}`);
        return;
      }
      const before = latest ? toDsl(modelContent(latest)) : '';
      console.log(`--- deployed ${latest ? latest.id : '(no model)'} (store ${storeId})\n+++ local ${opts.model}`);
      console.log(lineDiff(before, toDsl(local)));
      if (opts.exitCode) process.exitCode = 1;
    });

  withShadowOptions(withRedisUrl(withConn(program.command('deploy'))))
    .description('shadow-test the local model on recent decisions, then write it (unless unchanged), migrate tuples and publish it')
    .option('--accept-changes', 'deploy even when the shadow run changes decisions')
    .option('--skip-shadow', 'no shadow run (bootstrap of a platform without recorded traffic)')
    .action(async (opts: ShadowCliOptions & { acceptChanges?: boolean; skipShadow?: boolean }) => deployCommand(opts));

  withShadowOptions(withRedisUrl(withConn(program.command('shadow'))))
    .description('replay recent decisions against the local model in a scratch store and report what changes')
    .action(async (opts: ShadowCliOptions) => shadowCommand(opts));

  withConn(program.command('models'))
    .description("list the store's models, newest first")
    .action(async (opts: Conn) => {
      const storeId = await resolveStore(opts.apiUrl, opts.storeName);
      const fga = fgaClient(opts.apiUrl, storeId);
      let token: string | undefined;
      let first = true;
      do {
        const page = await fga.readAuthorizationModels({ pageSize: 50, ...(token ? { continuationToken: token } : {}) });
        for (const m of page.authorization_models ?? []) {
          console.log(`${m.id}  ${ulidTime(m.id).toISOString()}${first ? '  (latest)' : ''}`);
          first = false;
        }
        token = page.continuation_token || undefined;
      } while (token);
      if (first) console.log('(no models)');
    });

  withRedisUrl(withConn(program.command('rollback')))
    .description("write an older model's content as the newest model (OpenFGA has no activate API)")
    .argument('<modelId>', 'the model id to restore')
    .action(async (modelId: string, opts: Conn & { redisUrl: string }) => {
      const storeId = await resolveStore(opts.apiUrl, opts.storeName);
      const fga = fgaClient(opts.apiUrl, storeId);
      const old = (await fga.readAuthorizationModel({ authorizationModelId: modelId })).authorization_model;
      if (!old) throw new Error(`model ${modelId} not found in store ${storeId}`);
      const latest = await readLatestModel(opts.apiUrl, storeId);
      if (latest && canonicalModel(latest) === canonicalModel(old)) {
        console.log(`model ${latest.id} (newest) already has the content of ${modelId}; nothing written`);
        await announce(opts.redisUrl, storeId, latest.id, false);
        return;
      }
      const res = await fga.writeAuthorizationModel(modelContent(old));
      console.log(`model ${res.authorization_model_id} (content of ${modelId}, now the newest)`);
      await announce(opts.redisUrl, storeId, res.authorization_model_id, true);
    });

  withRedisUrl(withConn(program.command('active')))
    .description('show the active model id (the Redis key, else the newest model) and whether it is the newest')
    .option('--publish', 'publish the newest model as the active one (repairs a stale or missing key)')
    .action(async (opts: Conn & { redisUrl: string; publish?: boolean }) => {
      const storeId = await resolveStore(opts.apiUrl, opts.storeName);
      const newest = await readLatestModel(opts.apiUrl, storeId);
      if (!newest) throw new Error(`store ${storeId} has no model: run \`npm run policies -- deploy\``);
      if (opts.publish) {
        await withRedis(redisConnectionWithUrl(opts.redisUrl), (redis) => publishActiveModel(redis, storeId, newest.id));
        console.log(`active model ${newest.id} (newest) published (${activeModelKey(storeId)})`);
        return;
      }
      const keyed = await withRedis(redisConnectionWithUrl(opts.redisUrl), (redis) => readActiveModel(redis, storeId));
      const active = keyed ?? newest.id;
      const source = keyed ? activeModelKey(storeId) : 'no key in Redis: the newest model';
      console.log(`active model ${active} (${active === newest.id ? 'the newest' : `NOT the newest, which is ${newest.id}: run \`npm run policies -- active --publish\``}; from ${source})`);
      if (active !== newest.id) process.exitCode = 1;
    });

  addExplainCommands(program, withConn);

  return program;
}

/** Run the CLI with `argv` (process.argv form). Resolves to the exit code; never throws. */
export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    const e = err as { code?: string; exitCode?: number; message?: string };
    if (typeof e.code === 'string' && e.code.startsWith('commander.')) return e.exitCode ?? 1; // commander printed it
    console.error(`error: ${e.message ?? String(err)}`);
    return 1;
  }
}

if (import.meta.main) process.exit(await main(process.argv));
