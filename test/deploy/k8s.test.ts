/**
 * The Kubernetes manifests (deploy/k8s), checked offline — no cluster: each overlay is rendered with
 * kustomize and validated by tools/k8s-validate (strict decoding into k8s.io/api's types plus the
 * project's rules: pinned images, resources, probes, securityContext, references). The checker must
 * also refuse broken copies (so the check can fail). Then the facts this repo relies on:
 * - the ConfigMap `policies` carries exactly policies/model.fga and policies/routes.yaml;
 * - every setting in the settings ConfigMaps is a variable docs/CONTRACTS.md documents;
 * - probes: /readyz for readiness, /healthz for liveness, on each process's own port;
 * - the sidecar container is the same in both shapes; only the settings differ between them;
 * - each shape's wiring (who is the upstream, which Service fronts which port);
 * - HorizontalPodAutoscalers (CPU) and PodDisruptionBudgets for the sidecar and the catalog API;
 * - Secrets hold placeholders only.
 * Binaries: KUSTOMIZE_BIN and K8S_VALIDATE_BIN (scripts/test.sh), else built by scripts/lib.sh.
 */
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { parseAllDocuments } from 'yaml';
import { loadConfig as loadSidecarConfig } from '../../sidecar/src/config.ts';
import { loadConfig as loadCatalogConfig } from '../../catalog-api/src/config.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const OVERLAYS = ['shared-ext-authz', 'sidecar-beside-app'] as const;
const APP_IMAGE = 'registry.example.com/music-publishing/app:0.1.0';

/** A binary from its env variable, else the path scripts/lib.sh's ensure function prints (building it once). */
function binary(envName: string, ensure: string): string {
  const fromEnv = process.env[envName];
  if (fromEnv) return fromEnv;
  const r = spawnSync('bash', ['-c', `source "${ROOT}/scripts/lib.sh" && ${ensure}`], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${ensure} failed: ${r.stderr}`);
  return r.stdout.trim().split('\n').at(-1)!;
}
const KUSTOMIZE = binary('KUSTOMIZE_BIN', 'ensure_kustomize_bin');
const K8S_VALIDATE = binary('K8S_VALIDATE_BIN', 'ensure_k8s_validate_bin');

function render(dir: string): string {
  const r = spawnSync(KUSTOMIZE, ['build', dir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`kustomize build ${dir}: ${r.stderr}`);
  return r.stdout;
}
function validate(...files: string[]) {
  const r = spawnSync(K8S_VALIDATE, files, { encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; annotations?: Record<string, string> }; [k: string]: any };
const objects = (text: string): Obj[] => parseAllDocuments(text).map((d) => d.toJSON()).filter(Boolean);
const find = (objs: Obj[], kind: string, name: string) => objs.find((o) => o.kind === kind && o.metadata.name === name);
/** A generated ConfigMap by its name before kustomize's hash suffix. */
const generated = (objs: Obj[], name: string) => objs.find((o) => o.kind === 'ConfigMap' && new RegExp(`^${name}-[a-z0-9]{10}$`).test(o.metadata.name));
const containers = (o: Obj): any[] => o.spec.template.spec.containers;
const container = (o: Obj, name: string) => containers(o).find((c) => c.name === name);
/** The settings a container gets from its generated ConfigMaps (later ones win, as in Kubernetes). */
const settingsOf = (objs: Obj[], c: any): Record<string, string> =>
  Object.assign({}, ...c.envFrom.filter((e: any) => e.configMapRef).map((e: any) => objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name === e.configMapRef.name)!.data));

const tmp = mkdtempSync(join(tmpdir(), 'k8s-test-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
const rendered = Object.fromEntries(OVERLAYS.map((o) => [o, render(join(ROOT, 'deploy/k8s/overlays', o))])) as Record<(typeof OVERLAYS)[number], string>;
const files = Object.fromEntries(OVERLAYS.map((o) => {
  const f = join(tmp, `${o}.yaml`);
  writeFileSync(f, rendered[o]);
  return [o, f];
})) as Record<(typeof OVERLAYS)[number], string>;
const objs = Object.fromEntries(OVERLAYS.map((o) => [o, objects(rendered[o])])) as Record<(typeof OVERLAYS)[number], Obj[]>;

t.test('each overlay renders and validates against the Kubernetes API types and our rules', async (t) => {
  for (const o of OVERLAYS) {
    const r = validate(files[o]);
    t.equal(r.status, 0, `${o}: ${r.out}`);
    t.match(r.out, new RegExp(`^ok .*${o}\\.yaml: \\d+ objects`, 'm'));
    const kinds = new Set(objs[o].map((x) => x.kind));
    for (const k of ['Namespace', 'Deployment', 'Service', 'ConfigMap', 'Secret', 'Job', 'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'NetworkPolicy']) t.ok(kinds.has(k), `${o} has a ${k}`);
    t.ok(objs[o].every((x) => x.kind === 'Namespace' || x.metadata.namespace === 'music-publishing'), `${o}: every object in the namespace`);
  }
});

t.test('the checker refuses broken manifests', async (t) => {
  // A broken source: copy deploy/k8s and policies/, add an unknown field, render, validate.
  const copy = join(tmp, 'copy');
  cpSync(join(ROOT, 'deploy/k8s'), join(copy, 'deploy/k8s'), { recursive: true });
  const policies = join(ROOT, 'policies');
  cpSync(policies, join(copy, 'policies'), { recursive: true, filter: (src) => src === policies || /\/(model\.fga|routes\.yaml|kustomization\.yaml)$/.test(src) });
  const source = join(copy, 'deploy/k8s/base/catalog-api.yaml');
  const text = readFileSync(source, 'utf8');
  writeFileSync(source, text.replace('terminationGracePeriodSeconds: 40', 'terminationGracePeriodSecond: 40'));
  const brokenFile = join(tmp, 'unknown-field.yaml');
  writeFileSync(brokenFile, render(join(copy, 'deploy/k8s/overlays/shared-ext-authz')));
  const r = validate(brokenFile);
  t.equal(r.status, 1, r.out);
  t.match(r.out, /unknown field "spec\.template\.spec\.terminationGracePeriodSecond"/);

  // Broken rendered output, one rule at a time.
  const good = rendered['shared-ext-authz'];
  const cases: [string, string, RegExp][] = [
    ['a wrong type', good.replace('replicas: 2', 'replicas: two'), /cannot unmarshal|invalid|replicas/i],
    ['an unknown kind', `${good}---\napiVersion: v1\nkind: Podd\nmetadata:\n  name: x\n`, /no kind "Podd" is registered/],
    ['an image tagged latest', good.replace('openfga/openfga:v1.22.1', 'openfga/openfga:latest'), /image "openfga\/openfga:latest" is not pinned/],
    ['an untagged image', good.replace(APP_IMAGE, 'registry.example.com/music-publishing/app'), /is not pinned/],
    ['a writable root filesystem', good.replace('readOnlyRootFilesystem: true', 'readOnlyRootFilesystem: false'), /readOnlyRootFilesystem is not true/],
    ['privilege escalation', good.replace('allowPrivilegeEscalation: false', 'allowPrivilegeEscalation: true'), /allowPrivilegeEscalation is not false/],
    ['no seccomp profile', good.replace(/\n\s+seccompProfile:\n\s+type: RuntimeDefault/, ''), /no seccompProfile RuntimeDefault or Localhost/],
    ['no readiness probe', good.replace(/readinessProbe:/, 'startupProbe:'), /no readiness probe/],
    ['a probe on an undeclared port', good.replace('port: sidecar', 'port: public'), /probe port public is not a port of the container/],
    ['no memory limit', good.replace(/limits:\n(\s+)memory: 1Gi/, 'limits:\n$1cpu: "1"'), /no memory limit/],
    ['a missing ConfigMap', good.replace(/configMapRef:\n(\s+)name: sidecar-settings-[a-z0-9]{10}/, 'configMapRef:\n$1name: sidecar-settings'), /ConfigMap sidecar-settings is not among the rendered objects/],
    ['a Service selecting nothing', good.replace('selector:\n    app.kubernetes.io/name: openfga\n', 'selector:\n    app.kubernetes.io/name: openfgaa\n'), /selector .* matches no pod template/],
    ['an HPA of a missing Deployment', good.replace(/(scaleTargetRef:\n(?:.*\n){2}\s+name: )sidecar/, '$1side-car'), /scaleTargetRef Deployment\/side-car is not among/],
    ['a duplicate object', `${good}---\n${good.split('\n---\n').find((d) => d.includes('kind: Service') && d.includes('name: openfga\n'))}\n`, /defined twice/],
  ];
  for (const [name, body, why] of cases) {
    t.not(body, good, `${name}: the copy differs`);
    const f = join(tmp, `broken-${name.replace(/\W+/g, '-')}.yaml`);
    writeFileSync(f, body);
    const b = validate(f);
    t.equal(b.status, 1, `${name} is refused: ${b.out}`);
    t.match(b.out, why, name);
  }
});

t.test('the ConfigMap policies carries exactly policies/model.fga and policies/routes.yaml', async (t) => {
  const model = readFileSync(join(ROOT, 'policies/model.fga'), 'utf8');
  const routes = readFileSync(join(ROOT, 'policies/routes.yaml'), 'utf8');
  for (const o of OVERLAYS) {
    const cm = generated(objs[o], 'policies');
    t.ok(cm, `${o}: ConfigMap policies-<hash>`);
    t.same(Object.keys(cm!.data).sort(), ['model.fga', 'routes.yaml']);
    t.equal(cm!.data['model.fga'], model, `${o}: model.fga byte for byte`);
    t.equal(cm!.data['routes.yaml'], routes, `${o}: routes.yaml byte for byte`);
    // Who reads them: the sidecar (ROUTES_FILE) and the migrate Job (policies deploy --model).
    const sidecar = o === 'shared-ext-authz' ? container(find(objs[o], 'Deployment', 'sidecar')!, 'sidecar') : container(find(objs[o], 'Deployment', 'catalog-api')!, 'sidecar');
    t.equal(settingsOf(objs[o], sidecar).ROUTES_FILE, '/etc/music-publishing/policies/routes.yaml');
    t.ok(sidecar.volumeMounts.some((m: any) => m.mountPath === '/etc/music-publishing/policies'));
    const job = find(objs[o], 'Job', 'catalog-migrate')!;
    t.match(container(job, 'migrate').command.join(' '), /policies\/src\/cli\.ts deploy --model \/etc\/music-publishing\/policies\/model\.fga/);
    t.ok(job.spec.template.spec.volumes.some((v: any) => v.configMap?.name === cm!.metadata.name));
  }
});

t.test('every setting is a variable docs/CONTRACTS.md documents', async (t) => {
  const contracts = readFileSync(join(ROOT, 'docs/CONTRACTS.md'), 'utf8');
  for (const o of OVERLAYS) {
    for (const name of ['common-settings', 'sidecar-settings', 'catalog-api-settings']) {
      const cm = generated(objs[o], name)!;
      for (const key of Object.keys(cm.data)) t.ok(contracts.includes(`\`${key}\``), `${o} ${name}: ${key} is documented`);
    }
    for (const s of objs[o].filter((x) => x.kind === 'Secret')) {
      for (const [key, value] of Object.entries<string>(s.stringData ?? {})) {
        t.match(value, /PLACEHOLDER/, `${o} Secret ${s.metadata.name} ${key}: a placeholder`);
        t.notMatch(value, /BEGIN|PRIVATE KEY/, 'no key material');
        if (/^[A-Z_]+$/.test(key)) t.ok(contracts.includes(`\`${key}\``) || key.startsWith('OPENFGA_'), `${key} is documented`);
      }
      t.notOk(s.data, `${o} Secret ${s.metadata.name}: no base64 data`);
    }
  }
});

t.test('each process accepts its settings (its own config schema, as main.ts reads them)', async (t) => {
  /** The environment a container gets: its ConfigMaps and Secrets (envFrom, later ones win) and env. */
  const envOf = (all: Obj[], c: any): Record<string, string> => {
    const env: Record<string, string> = {};
    for (const e of c.envFrom) {
      const ref = e.configMapRef ?? e.secretRef;
      const o = all.find((x) => x.kind === (e.configMapRef ? 'ConfigMap' : 'Secret') && x.metadata.name === ref.name)!;
      Object.assign(env, e.configMapRef ? o.data : o.stringData);
    }
    for (const v of c.env ?? []) env[v.name] = v.value;
    return env;
  };
  for (const o of OVERLAYS) {
    const sidecarPod = o === 'shared-ext-authz' ? find(objs[o], 'Deployment', 'sidecar')! : find(objs[o], 'Deployment', 'catalog-api')!;
    const sidecar = loadSidecarConfig(envOf(objs[o], container(sidecarPod, 'sidecar')));
    t.equal(sidecar.workers, 1, `${o}: one sidecar process per pod`);
    t.same([sidecar.admin.host, sidecar.admin.port], ['0.0.0.0', 9464]);
    t.equal(sidecar.routesFile, '/etc/music-publishing/policies/routes.yaml');
    t.equal(sidecar.assertion.signingKeyFile, '/etc/music-publishing/sidecar-signing-key/sidecar-signing-key.pem');
    t.ok(container(sidecarPod, 'sidecar').volumeMounts.some((m: any) => m.mountPath === '/etc/music-publishing/sidecar-signing-key'), 'the key file is mounted where the setting says');
    const apiPod = find(objs[o], 'Deployment', 'catalog-api')!;
    const apiEnv = envOf(objs[o], container(apiPod, 'catalog-api'));
    const api = loadCatalogConfig(apiEnv);
    t.ok(api, `${o}: the catalog API's settings parse`);
    t.match(apiEnv.JOBS_DATABASE_URL, /^postgres:\/\/catalog_jobs:/, 'the relays get JOBS_DATABASE_URL');
    t.equal(apiEnv.ISSUER_KEK_FILE, '/etc/music-publishing/issuer-kek/issuer-kek.key');
    t.ok(container(apiPod, 'catalog-api').volumeMounts.some((m: any) => m.mountPath === '/etc/music-publishing/issuer-kek'));
    t.notOk(apiEnv.DATABASE_OWNER_URL, 'the schema owner is the migrate Job’s only');
    t.ok(envOf(objs[o], container(find(objs[o], 'Job', 'catalog-migrate')!, 'migrate')).DATABASE_OWNER_URL);
  }
});

t.test('probes: /readyz for readiness, /healthz for liveness, on the process’s own port', async (t) => {
  const expect = (c: any, port: number, what: string) => {
    const portOf = (p: any) => (typeof p === 'number' ? p : c.ports.find((x: any) => x.name === p).containerPort);
    t.equal(c.readinessProbe.httpGet.path, '/readyz', `${what} readiness`);
    t.equal(c.livenessProbe.httpGet.path, '/healthz', `${what} liveness`);
    t.equal(portOf(c.readinessProbe.httpGet.port), port, `${what} readiness port`);
    t.equal(portOf(c.livenessProbe.httpGet.port), port, `${what} liveness port`);
  };
  const shared = objs['shared-ext-authz'];
  const beside = objs['sidecar-beside-app'];
  expect(container(find(shared, 'Deployment', 'sidecar')!, 'sidecar'), 8000, 'shared sidecar');
  expect(container(find(shared, 'Deployment', 'catalog-api')!, 'catalog-api'), 8001, 'catalog API');
  expect(container(find(beside, 'Deployment', 'catalog-api')!, 'sidecar'), 8000, 'sidecar beside the app');
  expect(container(find(beside, 'Deployment', 'catalog-api')!, 'catalog-api'), 8001, 'the app beside its sidecar');
  // The admin listener (metrics) is scraped by annotation.
  for (const [all, d] of [[shared, find(shared, 'Deployment', 'sidecar')!], [beside, find(beside, 'Deployment', 'catalog-api')!]] as const) {
    t.equal(d.spec.template.metadata.annotations!['prometheus.io/port'], '9464');
    const admin = settingsOf(all, container(d, 'sidecar'));
    t.same([admin.ADMIN_HOST, admin.ADMIN_PORT], ['0.0.0.0', '9464'], 'the admin listener on the pod address, port 9464');
    t.ok(container(d, 'sidecar').ports.some((p: any) => p.containerPort === 9464));
  }
});

t.test('the two shapes: one sidecar container, wired differently', async (t) => {
  const shared = objs['shared-ext-authz'];
  const beside = objs['sidecar-beside-app'];
  const sharedSidecar = container(find(shared, 'Deployment', 'sidecar')!, 'sidecar');
  const besideSidecar = container(find(beside, 'Deployment', 'catalog-api')!, 'sidecar');
  // envFrom names differ only by the generated hashes (the settings differ, see below).
  const unhash = (c: any) => JSON.parse(JSON.stringify(c).replace(/-[a-z0-9]{10}"/g, '"'));
  t.ok(isDeepStrictEqual(unhash(sharedSidecar), unhash(besideSidecar)), 'the same sidecar container in both shapes');

  // Shared: the sidecar Deployment proxies to the catalog API's Service and answers /ext-authz.
  const s1 = settingsOf(shared, sharedSidecar);
  t.equal(s1.UPSTREAM_URL, 'http://catalog-api:8001');
  t.equal(s1.JWT_JWKS_URL, 'http://catalog-api:8001/api/v1/auth/jwks.json');
  t.equal(settingsOf(shared, container(find(shared, 'Deployment', 'catalog-api')!, 'catalog-api')).SIDECAR_JWKS_URL, 'http://sidecar:8000/.well-known/jwks.json');
  t.same(find(shared, 'Service', 'sidecar')!.spec.ports, [{ name: 'http', port: 8000, targetPort: 'sidecar' }]);
  t.same(containers(find(shared, 'Deployment', 'catalog-api')!).map((c) => c.name), ['catalog-api']);
  const np = find(shared, 'NetworkPolicy', 'catalog-api-from-sidecars')!;
  t.same(np.spec.ingress[0].from[0].podSelector.matchLabels, { 'app.kubernetes.io/name': 'sidecar' }, 'only sidecars reach the catalog API');

  // Beside the app: one pod, loopback both ways, the Service fronts the sidecar.
  const pod = find(beside, 'Deployment', 'catalog-api')!;
  t.same(containers(pod).map((c) => c.name).sort(), ['catalog-api', 'sidecar']);
  t.notOk(find(beside, 'Deployment', 'sidecar'), 'no shared sidecar Deployment');
  const s2 = settingsOf(beside, besideSidecar);
  t.equal(s2.UPSTREAM_URL, 'http://127.0.0.1:8001');
  t.equal(s2.JWT_JWKS_URL, 'http://127.0.0.1:8001/api/v1/auth/jwks.json');
  const api = settingsOf(beside, container(pod, 'catalog-api'));
  t.equal(api.SIDECAR_JWKS_URL, 'http://127.0.0.1:8000/.well-known/jwks.json');
  t.equal(api.TRUSTED_PROXIES, '127.0.0.1,::1');
  t.same(find(beside, 'Service', 'catalog-api')!.spec.ports, [{ name: 'http', port: 8000, targetPort: 'sidecar' }]);
  t.same(find(beside, 'NetworkPolicy', 'catalog-api-through-sidecar')!.spec.ingress[0], { ports: [{ port: 8000, protocol: 'TCP' }] }, 'from other pods: the sidecar port only');

  // Every app container runs the one image of this repo, pinned; the settings every process shares.
  for (const o of OVERLAYS) {
    const app = objs[o].filter((x) => x.kind === 'Deployment' || x.kind === 'Job').flatMap((x) => containers(x)).filter((c) => !c.image.startsWith('openfga/'));
    t.ok(app.length >= 3);
    t.ok(app.every((c) => c.image === APP_IMAGE), `${o}: every app container runs ${APP_IMAGE}`);
    const apiSettings = settingsOf(objs[o], container(find(objs[o], 'Deployment', 'catalog-api')!, 'catalog-api'));
    t.ok(container(find(objs[o], 'Deployment', 'catalog-api')!, 'catalog-api').envFrom.some((e: any) => e.secretRef?.name === 'catalog-api-database'));
    t.ok(find(objs[o], 'Secret', 'catalog-api-database')!.stringData.JOBS_DATABASE_URL, `${o}: the relays' JOBS_DATABASE_URL`);
    t.equal(apiSettings.OPENFGA_API_URL, 'http://openfga:8080');
  }
});

t.test('autoscaling on CPU and disruption budgets for the sidecar and the catalog API', async (t) => {
  const targets: [(typeof OVERLAYS)[number], string][] = [['shared-ext-authz', 'sidecar'], ['shared-ext-authz', 'catalog-api'], ['sidecar-beside-app', 'catalog-api']];
  for (const [o, name] of targets) {
    const hpa = find(objs[o], 'HorizontalPodAutoscaler', name)!;
    t.same(hpa.spec.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name }, `${o}: HPA of ${name}`);
    t.equal(hpa.spec.metrics[0].resource.name, 'cpu');
    t.ok(hpa.spec.minReplicas >= 2, 'at least two replicas');
    const pdb = find(objs[o], 'PodDisruptionBudget', name)!;
    t.same(pdb.spec.selector.matchLabels, { 'app.kubernetes.io/name': name });
    t.equal(pdb.spec.minAvailable, 1);
    // HPA utilization is relative to the requests: every container of the pod has a CPU request.
    t.ok(containers(find(objs[o], 'Deployment', name)!).every((c) => c.resources.requests.cpu), `${o} ${name}: CPU requests`);
  }
  t.ok(find(objs['shared-ext-authz'], 'Job', 'openfga-migrate'), 'OpenFGA’s migrate Job');
  t.same(container(find(objs['shared-ext-authz'], 'Job', 'openfga-migrate')!, 'migrate').args, ['migrate']);
});
