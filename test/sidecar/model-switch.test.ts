/**
 * Hot model switch (policies/src/active-model.ts, docs/CONTRACTS.md "Active model"): two sidecars on
 * one store follow a deploy and a rollback made with the policies CLI within 1 s, without a restart;
 * a lost push is repaired by the poll; an unknown id pushed is refused (the old model keeps deciding);
 * /readyz and /metrics name the id; the catalog API's relationship writer follows too; a start never
 * overwrites the active model, and only an empty store gets the local model.
 */
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { OPENFGA_API_URL, REDIS_URL, raw, startSidecar, useSidecarFixture, type Sidecar } from './helpers.ts';
import { buildProgram, main } from '../../policies/src/cli.ts';
import { DEFAULT_MODEL_FILE, fgaClient, parseModel, readLatestModel } from '../../policies/src/model.ts';
import { activeModelKey, modelChannel, publishActiveModel, readActiveModel, resolveActiveModel } from '../../policies/src/active-model.ts';
import { createRelationshipWriter } from '../../catalog-api/src/outbox/writer.ts';
import { watchActiveModel } from '../../policies/src/active-model.ts';
import { proxyFor } from '../faults/helpers.ts';

const viewer = randomUUID();
const publisher = randomUUID();
// Sidecar 0 polls only every 60 s: what it does within a second it learned by the push.
const fx = useSidecarFixture(t, { sidecars: 0, tuples: [{ user: `user:${viewer}`, relation: 'viewer', object: `publisher:${publisher}` }] });
const sidecars: Sidecar[] = [];
/** When each model id was last announced on the store's channel (this suite's own subscriber). */
const publishedAt = new Map<string, number>();
const listener = new Redis(REDIS_URL);
t.before(async () => {
  await listener.subscribe(modelChannel(fx.store.storeId));
  listener.on('message', (_channel: string, id: string) => publishedAt.set(id, Date.now()));
  sidecars.push(await startSidecar({ ...fx.env, MODEL_POLL_INTERVAL_MS: '60000' }));
  sidecars.push(await startSidecar(fx.env)); // the default poll, 1000 ms
});
t.teardown(async () => {
  for (const s of sidecars) await s.close();
  listener.disconnect();
});

/**
 * The candidate: the local model where a publisher's viewer no longer has works_read (editor and up
 * still do), plus a relation `switch_probe` the writer can only write once it follows the candidate.
 */
const candidateFile = join(fx.tmp.dir, 'candidate.fga');
const localDsl = readFileSync(DEFAULT_MODEL_FILE, 'utf8');
const candidateDsl = localDsl
  .replace(/(define works_read_all: \(grant_works_read or )viewer( or )/, '$1editor$2')
  .replace(/(\n    define works_read: [^\n]+)/, '$1\n    define switch_probe: [user]');
writeFileSync(candidateFile, candidateDsl);

const policies = async (...args: string[]) => {
  const code = await main(['node', 'policies', ...args, '--api-url', OPENFGA_API_URL, '--store-name', fx.store.storeName, '--redis-url', REDIS_URL]);
  process.exitCode = undefined; // main reads it; it must not leak into tap's exit
  return code;
};
/** `deploy --model <file>`, accepting the changed decisions when the deploy has a shadow check. */
const deploy = (file: string) => {
  const cmd = buildProgram().commands.find((c) => c.name() === 'deploy')!;
  const accept = cmd.options.some((o) => o.long === '--accept-changes') ? ['--accept-changes'] : [];
  return policies('deploy', '--model', file, ...accept);
};
const status = async (s: Sidecar) =>
  (await raw(s.port, 'GET', '/api/v1/works', { authorization: `Bearer ${await fx.issuer.token(viewer)}`, 'x-publisher-id': publisher })).status;
/** ms until `s` answers `want` (polled every 20 ms), -1 beyond `withinMs`. */
const until = async (s: Sidecar, want: number, started: number, withinMs = 3000) => {
  while (Date.now() - started <= withinMs) {
    if ((await status(s)) === want) return Date.now() - started;
    await sleep(20);
  }
  return -1;
};
const readyModel = async (s: Sidecar) => (await raw(s.port, 'GET', '/readyz')).json().model_id as string;
const metrics = async (s: Sidecar) => (await fetch(`${s.adminUrl}/metrics`)).text();
const metric = (text: string, name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
const newest = async () => (await readLatestModel(OPENFGA_API_URL, fx.store.storeId))!.id;
const times: Record<string, number[]> = {};

t.test('the candidate differs from the local model where intended', async (t) => {
  t.not(candidateDsl, localDsl, 'the works_read_all line was found and changed');
  t.match(candidateDsl, /define works_read_all: \(grant_works_read or editor or /);
  t.ok(parseModel(candidateDsl, 'candidate').type_definitions.find((d) => d.type === 'publisher')?.relations?.switch_probe);
});

t.test('at start: both sidecars use the store\u2019s model and report it', async (t) => {
  const original = fx.store.modelId;
  for (const s of sidecars) {
    t.equal(await readyModel(s), original, '/readyz names the model');
    const text = await metrics(s);
    t.match(text, new RegExp(`^sidecar_authorization_model_info\\{model_id="${original}"\\} 1$`, 'm'), 'the info gauge names it');
    t.equal(metric(text, 'sidecar_authorization_model_switches_total'), 0);
    t.equal(await status(s), 200, 'a viewer may list works');
  }
});

t.test('deploy via the CLI → both sidecars decide by the new model within 1 s, no restart; rollback → back within 1 s', async (t) => {
  const original = fx.store.modelId;
  const started = Date.now();
  const watching = Promise.all(sidecars.map((s) => until(s, 403, started, 10_000))); // polled during the deploy too
  t.equal(await deploy(candidateFile), 0, 'deploy succeeded');
  const candidate = await newest();
  t.not(candidate, original, 'a new model was written');
  t.equal(await readActiveModel(fx.redis, fx.store.storeId), candidate, 'and published');
  const deployed = await watching;
  const published = publishedAt.get(candidate);
  t.ok(published, 'the deploy announced the new id on the channel');
  const afterPublish = deployed.map((ms) => started + ms - published!);
  times.deploy = afterPublish;
  for (const [i, ms] of afterPublish.entries()) t.ok(deployed[i]! >= 0 && ms <= 1000, `sidecar ${i}: the viewer is denied by the new model ${ms} ms after the publish (≤ 1000 ms; ${deployed[i]} ms after the deploy call began)`);
  for (const s of sidecars) {
    t.equal(await readyModel(s), candidate, '/readyz names the new model');
    const text = await metrics(s);
    t.match(text, new RegExp(`^sidecar_authorization_model_info\\{model_id="${candidate}"\\} 1$`, 'm'));
    t.notMatch(text, new RegExp(`model_id="${original}"`), 'the old id\u2019s series is gone');
    t.equal(metric(text, 'sidecar_authorization_model_switches_total'), 1);
  }

  const back = Date.now();
  const watchingBack = Promise.all(sidecars.map((s) => until(s, 200, back)));
  t.equal(await policies('rollback', original), 0, 'rollback succeeded');
  const restored = await newest();
  t.not(restored, candidate, 'the old content was written again as the newest model');
  const rolledBack = await watchingBack;
  const afterRollback = rolledBack.map((ms) => back + ms - publishedAt.get(restored)!);
  times.rollback = afterRollback;
  for (const [i, ms] of afterRollback.entries()) t.ok(rolledBack[i]! >= 0 && ms <= 1000, `sidecar ${i}: allowed again by the restored model ${ms} ms after the publish (≤ 1000 ms; ${rolledBack[i]} ms after the rollback call began)`);
  for (const s of sidecars) t.equal(await readyModel(s), restored);
});

t.test('a lost push (the key SET without PUBLISH) → switched by the poll within its period', async (t) => {
  const before = await newest();
  const { authorization_model_id: candidate } = await fgaClient(OPENFGA_API_URL, fx.store.storeId).writeAuthorizationModel(parseModel(candidateDsl, 'candidate'));
  const started = Date.now();
  await fx.redis.set(activeModelKey(fx.store.storeId), candidate);
  const polled = sidecars[1]!;
  const ms = await until(polled, 403, started);
  times.lostPush = [ms];
  t.ok(ms >= 0 && ms <= 1000 + 250, `the polling sidecar switched after ${ms} ms (poll 1000 ms + 250 ms slack)`);
  t.equal(await readyModel(polled), candidate);
  // back to the previous model, pushed this time (sidecar 0 never saw the candidate)
  const back = Date.now();
  await publishActiveModel(fx.redis, fx.store.storeId, before);
  for (const s of sidecars) t.ok((await until(s, 200, back)) >= 0, 'pushed back');
  for (const s of sidecars) t.equal(await readyModel(s), before);
});

t.test('an unknown model id pushed → refused: the sidecars keep deciding with the current model', async (t) => {
  const current = await readyModel(sidecars[0]!);
  const rejectedBefore = await Promise.all(sidecars.map(async (s) => metric(await metrics(s), 'sidecar_authorization_model_rejected_total')));
  const bogus = '01ARZ3NDEKTSV4RRFFQ69G5FAV'; // a well-formed ULID no store has
  await publishActiveModel(fx.redis, fx.store.storeId, bogus);
  await fx.redis.publish(modelChannel(fx.store.storeId), 'not-a-model-id');
  await sleep(1300); // past a poll of sidecar 1 too
  for (const [i, s] of sidecars.entries()) {
    t.equal(await readyModel(s), current, `sidecar ${i}: still the current model`);
    t.equal(await status(s), 200, `sidecar ${i}: still deciding (by the current model)`);
    t.ok(metric(await metrics(s), 'sidecar_authorization_model_rejected_total') > rejectedBefore[i]!, `sidecar ${i}: the refusal is counted`);
  }
  await publishActiveModel(fx.redis, fx.store.storeId, current); // repair the key
});

t.test('a model the route rules do not fit (no works_create) pushed → refused, the current model kept', async (t) => {
  const current = await readyModel(sidecars[0]!);
  const unfit = localDsl.replace(/\n    define works_create: [^\n]+/, '');
  t.not(unfit, localDsl, 'the works_create line was found and removed');
  const { authorization_model_id: id } = await fgaClient(OPENFGA_API_URL, fx.store.storeId).writeAuthorizationModel(parseModel(unfit, 'unfit'));
  const rejectedBefore = metric(await metrics(sidecars[0]!), 'sidecar_authorization_model_rejected_total');
  await publishActiveModel(fx.redis, fx.store.storeId, id);
  await sleep(300);
  t.equal(await readyModel(sidecars[0]!), current, 'still the current model');
  t.equal(metric(await metrics(sidecars[0]!), 'sidecar_authorization_model_rejected_total'), rejectedBefore + 1, 'the refusal is counted');
  t.equal(await status(sidecars[0]!), 200, 'still deciding');
  await publishActiveModel(fx.redis, fx.store.storeId, current);
});

t.test('a sidecar started now uses the active model and writes nothing', async (t) => {
  t.equal(await deploy(candidateFile), 0);
  const candidate = await newest();
  const count = async () => (await fgaClient(OPENFGA_API_URL, fx.store.storeId).readAuthorizationModels({ pageSize: 100 })).authorization_models.length;
  const models = await count();
  const s = await startSidecar(fx.env); // its model file (policies/model.fga) differs from the active model
  t.teardown(() => s.close());
  t.equal(await readyModel(s), candidate, 'the active (deployed) model, not the local file');
  t.equal(await count(), models, 'no model written at start');
  t.equal(await status(s), 403);
  t.equal(await policies('rollback', fx.store.modelId), 0);
  for (const x of [...sidecars, s]) t.ok((await until(x, 200, Date.now())) >= 0);
});

t.test('the catalog API\u2019s relationship writer follows the active model', async (t) => {
  const handle = await createRelationshipWriter({ OPENFGA_API_URL, OPENFGA_STORE_NAME: fx.store.storeName, REDIS_URL });
  t.teardown(() => handle.close());
  t.equal(handle.modelId, await readyModel(sidecars[0]!), 'starts on the active model');
  const probe = { user: `user:${randomUUID()}`, relation: 'switch_probe', object: `publisher:${publisher}` };
  await t.rejects(handle.sink.write({ writes: [probe] }), { message: /switch_probe' not found/ }, 'the current model has no switch_probe: the write is refused');
  const started = Date.now();
  t.equal(await deploy(candidateFile), 0);
  const candidate = await newest();
  while (handle.modelId !== candidate && Date.now() - started < 3000) await sleep(5);
  const ms = Date.now() - publishedAt.get(candidate)!;
  times.writer = [ms];
  t.equal(handle.modelId, candidate, `the writer switched ${ms} ms after the publish (${Date.now() - started} ms after the deploy call began)`);
  t.ok(ms <= 1000, 'within 1 s');
  await handle.sink.write({ writes: [probe] });
  const read = await fgaClient(OPENFGA_API_URL, fx.store.storeId).read(probe);
  t.equal(read.tuples.length, 1, 'the tuple only the new model allows was written');
  t.equal(await policies('rollback', fx.store.modelId), 0);
});

t.test('resolveActiveModel: only an empty store gets the local model; the key wins over the newest when valid', async (t) => {
  const storeName = `test-active-${randomUUID()}`;
  const first = await resolveActiveModel({ apiUrl: OPENFGA_API_URL, storeName, redis: fx.redis });
  const fga = fgaClient(OPENFGA_API_URL, first.storeId);
  t.teardown(() => fga.deleteStore().catch(() => undefined));
  t.equal(first.source, 'bootstrap', 'empty store: the local model is written');
  t.equal((await resolveActiveModel({ apiUrl: OPENFGA_API_URL, storeName, redis: fx.redis })).modelId, first.modelId);
  const { authorization_model_id: other } = await fga.writeAuthorizationModel(parseModel(candidateDsl, 'candidate'));
  const newer = await resolveActiveModel({ apiUrl: OPENFGA_API_URL, storeName, redis: null, modelFile: DEFAULT_MODEL_FILE });
  t.same([newer.source, newer.modelId], ['newest', other], 'no key: the newest model, the local file left alone');
  await publishActiveModel(fx.redis, first.storeId, first.modelId);
  const keyed = await resolveActiveModel({ apiUrl: OPENFGA_API_URL, storeName, redis: fx.redis });
  t.same([keyed.source, keyed.modelId], ['redis', first.modelId], 'the key names a model of the store: it is used');
  await fx.redis.set(activeModelKey(first.storeId), '01ARZ3NDEKTSV4RRFFQ69G5FAV');
  const stale = await resolveActiveModel({ apiUrl: OPENFGA_API_URL, storeName, redis: fx.redis });
  t.same([stale.source, stale.modelId], ['newest', other], 'a key naming no model of the store: the newest');
  await fx.redis.del(activeModelKey(first.storeId));
});

t.test('watchActiveModel: a silent push channel is noticed by the PING and reconnected; the poll bridges the gap', async (t) => {
  const { storeId, modelId: first } = await resolveActiveModel({ apiUrl: OPENFGA_API_URL, storeName: `test-watch-${randomUUID()}`, redis: null });
  const fga = fgaClient(OPENFGA_API_URL, storeId);
  t.teardown(() => fga.deleteStore().catch(() => undefined));
  const write = async () => (await fga.writeAuthorizationModel(parseModel(candidateDsl, 'candidate'))).authorization_model_id;
  const { proxy, url } = await proxyFor(t, REDIS_URL, 6379); // only the subscriber goes through it
  const subscriber = new Redis(url, { lazyConnect: true, connectTimeout: 500, retryStrategy: () => 50 });
  const lines: string[] = [];
  const log = { info: (_o: object, m?: string) => lines.push(`info ${m}`), warn: (_o: object, m?: string) => lines.push(`warn ${m}`), error: (_o: object, m?: string) => lines.push(`error ${m}`) };
  const changes: [string, string][] = [];
  const POLL_MS = 300;
  const w = watchActiveModel({ redis: fx.redis, subscriber, apiUrl: OPENFGA_API_URL, storeId, initial: first, pollMs: POLL_MS, log, onChange: (id, previous) => changes.push([previous, id]) });
  t.teardown(() => w.close());
  await w.start();
  t.equal(w.current, first);
  const switched = async (id: string, withinMs: number) => {
    const started = Date.now();
    while (w.current !== id && Date.now() - started < withinMs) await sleep(5);
    return w.current === id ? Date.now() - started : -1;
  };

  const pushed = await write();
  await publishActiveModel(fx.redis, storeId, pushed);
  const pushMs = await switched(pushed, POLL_MS - 50); // faster than any poll: the push
  t.ok(pushMs >= 0, `pushed: switched after ${pushMs} ms`);
  t.same(changes, [[first, pushed]], 'onChange(new, previous)');
  t.ok(lines.includes('info authorization model switched'), 'a log line per switch');

  await proxy.set('blackhole'); // the subscriber goes silent without a reset
  const unheard = await write();
  await publishActiveModel(fx.redis, storeId, unheard);
  const pollMs = await switched(unheard, POLL_MS + 300);
  t.ok(pollMs >= 0, `push lost: the poll switched after ${pollMs} ms (≤ ${POLL_MS} ms + 300 ms)`);
  const accepted = proxy.accepted;
  const started = Date.now();
  while (!lines.includes('warn active model: the push channel is silent; reconnecting it') && Date.now() - started < 3 * POLL_MS) await sleep(10);
  t.ok(lines.includes('warn active model: the push channel is silent; reconnecting it'), 'the unanswered PING is noticed');
  await proxy.set('pass');
  const back = Date.now();
  while (proxy.accepted === accepted && Date.now() - back < 3000) await sleep(10);
  t.ok(proxy.accepted > accepted, 'the subscriber reconnected');
  t.equal(w.current, unheard);
});

t.teardown(() => {
  console.log(`# observed switch times (ms): ${JSON.stringify(times)}`);
});
