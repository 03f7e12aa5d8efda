/**
 * The OpenFGA authorization model: load the DSL (policies/model.fga), compare it with what a store
 * holds, and deploy it only when its content changed.
 *
 * Sources: OpenFGA API (https://openfga.dev/api/service) — ListStores, CreateStore,
 * ReadAuthorizationModels (newest first), WriteAuthorizationModel; models are immutable and the
 * newest one is what Check uses when no `authorization_model_id` is pinned
 * (https://openfga.dev/docs/getting-started/immutable-models).
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { OpenFgaClient, type AuthorizationModel, type TypeDefinition, type Condition } from '@openfga/sdk';
import { transformer, validator } from '@openfga/syntax-transformer';

/** policies/ (the folder holding model.fga, routes.yaml and tests/). */
export const POLICIES_DIR = resolve(import.meta.dirname, '..');
/** Default model file: policies/model.fga. */
export const DEFAULT_MODEL_FILE = resolve(POLICIES_DIR, 'model.fga');

/** A model's content (what WriteAuthorizationModel takes): no id. */
export type ModelJson = {
  schema_version: string;
  type_definitions: TypeDefinition[];
  conditions?: Record<string, Condition>;
};

/**
 * Parse and validate an OpenFGA DSL file (schema 1.1) into the JSON that WriteAuthorizationModel takes.
 * @param file path of the `.fga` file (default policies/model.fga).
 * @returns `{schema_version, type_definitions, conditions}`.
 * @throws Error naming the file when it cannot be read, has a syntax error, or fails the semantic
 *   checks of `@openfga/syntax-transformer`'s `validateDSL` (undefined relations/types, cycles …).
 */
export function loadModel(file: string = DEFAULT_MODEL_FILE): ModelJson {
  return parseModel(readFileSync(file, 'utf8'), file);
}

/**
 * Parse and validate OpenFGA DSL text (schema 1.1), as {@link loadModel} does for a file.
 * @param source names the text in the error message (a file path, `request body`).
 * @throws Error `<source>: invalid OpenFGA model: …` for a syntax error or a failed semantic check.
 */
export function parseModel(dsl: string, source: string): ModelJson {
  try {
    validator.validateDSL(dsl);
    const m = transformer.transformDSLToJSONObject(dsl);
    return { schema_version: m.schema_version, type_definitions: m.type_definitions, conditions: m.conditions ?? {} };
  } catch (err) {
    throw new Error(`${source}: invalid OpenFGA model: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * Recursively sort keys and drop `null`, `undefined`, `''` and empty arrays (the server fills unset
 * fields with them, e.g. a condition's parameter comes back with `generic_types: []`).
 */
function normalise(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(normalise);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[key];
      if (v === null || v === undefined || v === '' || (Array.isArray(v) && v.length === 0)) continue;
      out[key] = normalise(v);
    }
    return out;
  }
  return value;
}

/**
 * Canonical JSON of a model's content, for equality: only schema_version, type_definitions and
 * conditions (never the id), keys sorted, null/empty-string fields and empty `conditions` dropped.
 * A locally parsed model and the same model read back from OpenFGA give the same string.
 */
export function canonicalModel(model: Pick<AuthorizationModel, 'schema_version' | 'type_definitions' | 'conditions'>): string {
  const conditions = model.conditions && Object.keys(model.conditions).length > 0 ? model.conditions : undefined;
  return JSON.stringify(
    normalise({ schema_version: model.schema_version, type_definitions: model.type_definitions, conditions }),
  );
}

/** The content of a stored model (drops its id), ready for WriteAuthorizationModel. */
export function modelContent(model: AuthorizationModel): ModelJson {
  return { schema_version: model.schema_version, type_definitions: model.type_definitions, conditions: model.conditions ?? {} };
}

/** An SDK client for `apiUrl` (and `storeId` when given). No credentials: the dev server is open. */
export function fgaClient(apiUrl: string, storeId?: string): OpenFgaClient {
  return new OpenFgaClient(storeId ? { apiUrl, storeId } : { apiUrl });
}

/**
 * Find a store by exact name, paging through ListStores (page size 100).
 * @returns the store id, or undefined when no store has that name.
 * @throws Error when several stores share the name (OpenFGA allows it; picking one would be a guess),
 *   or the SDK's FgaError when OpenFGA is unreachable.
 */
export async function findStore(apiUrl: string, storeName: string): Promise<string | undefined> {
  const fga = fgaClient(apiUrl);
  const ids: string[] = [];
  let continuationToken: string | undefined;
  do {
    const page = await fga.listStores({ pageSize: 100, name: storeName, ...(continuationToken ? { continuationToken } : {}) });
    for (const s of page.stores ?? []) if (s.name === storeName) ids.push(s.id);
    continuationToken = page.continuation_token || undefined;
  } while (continuationToken);
  if (ids.length > 1) throw new Error(`${ids.length} OpenFGA stores are named "${storeName}" (${ids.join(', ')}); delete the extra ones`);
  return ids[0];
}

/**
 * The id of the store named `storeName`.
 * @param opts.create create the store when it is missing (default false).
 * @throws Error when it is missing and `create` is false (message says to run `npm run policies -- deploy`),
 *   or as {@link findStore}.
 */
export async function resolveStore(apiUrl: string, storeName: string, opts: { create?: boolean } = {}): Promise<string> {
  const found = await findStore(apiUrl, storeName);
  if (found) return found;
  if (!opts.create) {
    throw new Error(`no OpenFGA store named "${storeName}" at ${apiUrl}: run \`npm run policies -- deploy\``);
  }
  const created = await fgaClient(apiUrl).createStore({ name: storeName });
  return created.id;
}

/**
 * The newest authorization model of a store (what OpenFGA evaluates when no model id is pinned).
 * @returns the model, or undefined when the store has none yet.
 */
export async function readLatestModel(apiUrl: string, storeId: string): Promise<AuthorizationModel | undefined> {
  const res = await fgaClient(apiUrl, storeId).readAuthorizationModels({ pageSize: 1 });
  return res.authorization_models?.[0];
}

/**
 * Write `model` as the store's newest model unless the newest one already has the same content
 * (compared with {@link canonicalModel}), so repeated deploys do not pile up identical models.
 * @returns the id of the newest model after the call and whether a new one was written.
 */
export async function writeModelIfChanged(
  apiUrl: string,
  storeId: string,
  model: ModelJson,
): Promise<{ modelId: string; written: boolean }> {
  const latest = await readLatestModel(apiUrl, storeId);
  if (latest && canonicalModel(latest) === canonicalModel(model)) return { modelId: latest.id, written: false };
  const res = await fgaClient(apiUrl, storeId).writeAuthorizationModel(model);
  return { modelId: res.authorization_model_id, written: true };
}

/**
 * Deploy the local model: find (or create) the store by name, then write the model only when its
 * canonical content differs from the store's newest model.
 * @param opts.apiUrl OpenFGA HTTP API, e.g. http://127.0.0.1:8080.
 * @param opts.storeName store name (CONTRACTS.md: OPENFGA_STORE_NAME, default music-publishing).
 * @param opts.modelFile DSL file (default policies/model.fga).
 * @returns `{storeId, modelId, written}`; modelId is the model to pin (the newest one).
 * @throws as {@link loadModel} (before touching OpenFGA) and {@link findStore}; FgaApiError from the SDK
 *   when OpenFGA rejects the model.
 */
export async function deployModel(opts: {
  apiUrl: string;
  storeName: string;
  modelFile?: string;
}): Promise<{ storeId: string; modelId: string; written: boolean }> {
  const model = loadModel(opts.modelFile);
  const storeId = await resolveStore(opts.apiUrl, opts.storeName, { create: true });
  const { modelId, written } = await writeModelIfChanged(opts.apiUrl, storeId, model);
  return { storeId, modelId, written };
}

/**
 * DSL text of a model with each type's relations in name order: OpenFGA returns relations as a map
 * sorted by name, so both sides of a diff must use the same order to show only real changes
 * (`@openfga/syntax-transformer` `transformJSONToDSL`). Used by `npm run policies -- diff` and the
 * catalog API's model endpoints.
 * @throws Error from the transformer when the JSON is not a valid model
 */
export function toDsl(model: ModelJson): string {
  const sorted = (r: Record<string, unknown> | undefined) =>
    r && Object.fromEntries(Object.keys(r).sort().map((k) => [k, r[k]]));
  const type_definitions = model.type_definitions.map((t) => ({
    ...t,
    relations: sorted(t.relations) as typeof t.relations,
    metadata: t.metadata && { ...t.metadata, relations: sorted(t.metadata.relations) as typeof t.metadata.relations },
  }));
  return transformer.transformJSONToDSL({ ...model, type_definitions });
}
