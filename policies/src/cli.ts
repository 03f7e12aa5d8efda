/**
 * Policies CLI: `npm run policies -- <command>` (or `node policies/src/cli.ts <command>`).
 *   validate              the model parses and every route rule names a relation of the model
 *   test                  `fga model test` on policies/tests/*.fga.yaml
 *   diff [--exit-code]    the store's newest model vs the local one (DSL lines)
 *   deploy                write the local model when its content changed; prints store + model id
 *   models                list the store's model ids (newest first) with their creation time
 *   rollback <modelId>    write an older model's content again as the newest model
 * Options: --api-url (OPENFGA_API_URL, default http://127.0.0.1:8080), --store-name
 * (OPENFGA_STORE_NAME, default music-publishing) — docs/CONTRACTS.md, "Environment".
 * Exit code 0 on success, 1 on failure (message on stderr).
 */
import { Command } from 'commander';
import { transformer } from '@openfga/syntax-transformer';
import { DEFAULT_MODEL_FILE, type ModelJson, canonicalModel, deployModel, fgaClient, loadModel, modelContent, readLatestModel, resolveStore } from './model.ts';
import { DEFAULT_ROUTES_FILE, loadRouteRules, validateRoutesAgainstModel } from './routes.ts';
import { findTestFiles, runModelTests } from './fga-cli.ts';
import { lineDiff } from './diff.ts';
import { ulidTime } from './ulid.ts';

type Conn = { apiUrl: string; storeName: string };

function withConn(cmd: Command): Command {
  return cmd
    .option('--api-url <url>', 'OpenFGA HTTP API', process.env.OPENFGA_API_URL || 'http://127.0.0.1:8080')
    .option('--store-name <name>', 'OpenFGA store name', process.env.OPENFGA_STORE_NAME || 'music-publishing');
}

/**
 * DSL text of a model with each type's relations in name order: OpenFGA returns relations as a map
 * sorted by name, so both sides of a diff must use the same order to show only real changes.
 */
function toDsl(model: ModelJson): string {
  const sorted = (r: Record<string, unknown> | undefined) =>
    r && Object.fromEntries(Object.keys(r).sort().map((k) => [k, r[k]]));
  const type_definitions = model.type_definitions.map((t) => ({
    ...t,
    relations: sorted(t.relations) as typeof t.relations,
    metadata: t.metadata && { ...t.metadata, relations: sorted(t.metadata.relations) as typeof t.metadata.relations },
  }));
  return transformer.transformJSONToDSL({ ...model, type_definitions });
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

  withConn(program.command('deploy'))
    .description('write the local model unless the newest deployed model has the same content')
    .option('--model <file>', 'model DSL file', DEFAULT_MODEL_FILE)
    .action(async (opts: Conn & { model: string }) => {
      const res = await deployModel({ apiUrl: opts.apiUrl, storeName: opts.storeName, modelFile: opts.model });
      console.log(`store ${opts.storeName} ${res.storeId}`);
      console.log(`model ${res.modelId} (${res.written ? 'written' : 'unchanged'})`);
    });

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

  withConn(program.command('rollback'))
    .description("write an older model's content as the newest model (OpenFGA has no activate API)")
    .argument('<modelId>', 'the model id to restore')
    .action(async (modelId: string, opts: Conn) => {
      const storeId = await resolveStore(opts.apiUrl, opts.storeName);
      const fga = fgaClient(opts.apiUrl, storeId);
      const old = (await fga.readAuthorizationModel({ authorizationModelId: modelId })).authorization_model;
      if (!old) throw new Error(`model ${modelId} not found in store ${storeId}`);
      const latest = await readLatestModel(opts.apiUrl, storeId);
      if (latest && canonicalModel(latest) === canonicalModel(old)) {
        console.log(`model ${latest.id} (newest) already has the content of ${modelId}; nothing written`);
        return;
      }
      const res = await fga.writeAuthorizationModel(modelContent(old));
      console.log(`model ${res.authorization_model_id} (content of ${modelId}, now the newest)`);
    });

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
