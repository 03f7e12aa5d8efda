/**
 * The access explorer's static serving (catalog-api/src/modules/explorer/plugin.ts), in process:
 * the shell and its modules under /explorer/ with a strict CSP and no inline script, the two
 * vendor modules and nothing else from node_modules, /explorer → /explorer/, the routes hidden
 * from the OpenAPI document. The page itself is driven in a browser by test/e2e/explorer.test.ts.
 */
import t from 'tap';
import Fastify from 'fastify';
import swagger from '@fastify/swagger';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { EXPLORER_CSP, explorerPlugin } from '../../catalog-api/src/modules/explorer/plugin.ts';

const PUBLIC_DIR = join(import.meta.dirname, '../../catalog-api/src/modules/explorer/public');

const app = Fastify();
await app.register(swagger, { openapi: { info: { title: 't', version: '1' } } });
await app.register(explorerPlugin);
app.get('/api/v1/other', async () => ({ ok: true }));
await app.ready();
t.teardown(() => app.close());

t.test('the shell: index.html under /explorer/, strict CSP, nosniff, no inline script or style', async (t) => {
  const r = await app.inject({ url: '/explorer/' });
  t.equal(r.statusCode, 200);
  t.match(r.headers['content-type'], /^text\/html/);
  t.equal(r.headers['content-security-policy'], EXPLORER_CSP);
  t.match(EXPLORER_CSP, /^default-src 'self';/);
  t.notMatch(EXPLORER_CSP, /unsafe-inline|unsafe-eval/);
  t.equal(r.headers['x-content-type-options'], 'nosniff');
  t.match(r.body, /<script type="module" src="app\.js"><\/script>/);
  // every <script> has a src, no style attribute or <style> element, no on… handler attribute
  t.notMatch(r.body, /<script(?![^>]*\bsrc=)[^>]*>/);
  t.notMatch(r.body, /<style|\sstyle=|\son[a-z]+=/i);
});

t.test('/explorer redirects to /explorer/ (relative module URLs need the slash)', async (t) => {
  const r = await app.inject({ url: '/explorer' });
  t.equal(r.statusCode, 302);
  t.equal(r.headers.location, '/explorer/');
});

t.test('the page modules are served as JavaScript and import only relative files the plugin serves', async (t) => {
  const modules = readdirSync(PUBLIC_DIR).filter((f) => f.endsWith('.js'));
  t.ok(modules.includes('app.js'));
  for (const file of modules) {
    const r = await app.inject({ url: `/explorer/${file}` });
    t.equal(r.statusCode, 200, file);
    t.match(r.headers['content-type'], /javascript/, file);
    t.equal(r.headers['content-security-policy'], EXPLORER_CSP, file);
    for (const m of readFileSync(join(PUBLIC_DIR, file), 'utf8').matchAll(/\bfrom '([^']+)'/g)) {
      const spec = m[1]!;
      t.match(spec, /^\.\//, `${file} imports ${spec} relatively (no bare specifier: no import map)`);
      const target = await app.inject({ url: new URL(spec, 'http://x/explorer/').pathname });
      t.equal(target.statusCode, 200, `${file} → ${spec}`);
    }
  }
  const css = await app.inject({ url: '/explorer/explorer.css' });
  t.equal(css.statusCode, 200);
  t.match(css.headers['content-type'], /^text\/css/);
});

t.test('vendor: exactly Preact and htm, self-contained ES modules; nothing else of node_modules', async (t) => {
  for (const url of ['/explorer/vendor/preact/preact.mjs', '/explorer/vendor/htm/htm.mjs']) {
    const r = await app.inject({ url });
    t.equal(r.statusCode, 200, url);
    t.match(r.headers['content-type'], /javascript/, url);
    t.notMatch(r.body, /\bfrom\s*["'][^./]/, `${url} has no bare import`);
    t.match(r.body, /\bexport\b/, url);
  }
  for (const url of [
    '/explorer/vendor/preact/preact.mjs.map',
    '/explorer/vendor/preact/../package.json',
    '/explorer/vendor/htm/htm.js',
    '/explorer/vendor/preact/../../fastify/package.json',
    '/explorer/../plugin.ts',
    '/explorer/plugin.ts',
    '/explorer/nothing-here.js',
  ]) {
    const r = await app.inject({ url });
    t.equal(r.statusCode, 404, url);
  }
});

t.test('HEAD works like GET (the sidecar maps HEAD to the GET rule)', async (t) => {
  const r = await app.inject({ method: 'HEAD', url: '/explorer/app.js' });
  t.equal(r.statusCode, 200);
  t.equal(r.body, '');
});

t.test('the explorer routes are hidden from the OpenAPI document; the others are not', async (t) => {
  const paths = Object.keys((app.swagger() as { paths?: Record<string, unknown> }).paths ?? {});
  t.ok(paths.includes('/api/v1/other'));
  t.same(paths.filter((p) => p.startsWith('/explorer')), []);
});
