/**
 * The access explorer (issue 10 §5): a static page for security admins, served under `/explorer/`
 * with @fastify/static — the shell in `public/` and the two ES modules it imports from npm
 * (Preact, htm) under `/explorer/vendor/…`, straight from node_modules: no build step, no CDN.
 *
 * The shell holds no data: every call it makes goes to the /api/v1 endpoints with the admin's
 * access token, so its route rules (policies/routes.yaml, `GET /explorer`, `GET /explorer/*`) are
 * public. Every response carries a strict Content-Security-Policy (`default-src 'self'`, no inline
 * scripts or styles; W3C CSP Level 3) and the routes are hidden from the OpenAPI document.
 */
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import fastifyStatic from '@fastify/static';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The path prefix of the page (the sidecar forwards it unchanged). */
export const EXPLORER_PREFIX = '/explorer/';

/**
 * The CSP of every explorer response: only same-origin scripts, styles, images and fetches; no
 * framing, no `<base>`, no plugins, forms post nowhere (the page submits with fetch).
 */
export const EXPLORER_CSP = "default-src 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'; form-action 'none'";

const PUBLIC_DIR = join(import.meta.dirname, 'public');

/** A package's ES module entry (its `exports` "import"/"default" file) as folder + file name. */
function moduleEntry(pkg: string): { root: string; file: string } {
  const path = fileURLToPath(import.meta.resolve(pkg));
  return { root: dirname(path), file: basename(path) };
}

/**
 * The vendor modules: URL folder `/explorer/vendor/<name>/` → the package's ES module entry, the
 * one file served from there (`preact.mjs`, `htm.mjs`). Both are self-contained (no bare
 * imports), so the browser needs no import map.
 */
const VENDOR: readonly { name: string; root: string; file: string }[] = ['preact', 'htm'].map((name) => ({ name, ...moduleEntry(name) }));

/**
 * Fastify plugin (encapsulated: its headers apply to its own routes only): `GET /explorer` → 302
 * to `/explorer/`, the shell under `/explorer/`, the vendor modules under `/explorer/vendor/<pkg>/`.
 * Unknown files → the app's 404 problem.
 */
export const explorerPlugin: FastifyPluginAsync = async (app: FastifyInstance) => {
  app.addHook('onSend', async (_request, reply, payload) => {
    reply.header('content-security-policy', EXPLORER_CSP);
    reply.header('x-content-type-options', 'nosniff');
    reply.header('referrer-policy', 'no-referrer');
    return payload;
  });
  app.get('/explorer', { schema: { hide: true } }, async (_request, reply) => reply.redirect(EXPLORER_PREFIX, 302));
  await app.register(fastifyStatic, {
    root: PUBLIC_DIR,
    prefix: EXPLORER_PREFIX,
    index: 'index.html',
    decorateReply: false,
    schemaHide: true,
    cacheControl: true,
    maxAge: 0, // always revalidated (ETag): a redeployed page is seen at once
  });
  for (const v of VENDOR) {
    await app.register(fastifyStatic, {
      root: v.root,
      prefix: `${EXPLORER_PREFIX}vendor/${v.name}/`,
      decorateReply: false,
      schemaHide: true,
      index: false,
      maxAge: 3_600_000, // ms: pinned versions, an hour is safe
      allowedPath: (pathName) => pathName === `/${v.file}`,
    });
  }
};
