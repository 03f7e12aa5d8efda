/**
 * The isolation matrix as a reusable table (test/e2e/matrix.test.ts through one sidecar,
 * test/e2e/multi-instance.test.ts through a random one of three): every seeded user ×
 * list/get/create/update/delete × works/songwriters/recordings × every publisher (own and other),
 * and, for row actions, the row's publisher sent as context or another publisher of the user's sent
 * instead. Expected statuses come from test/e2e/policy.ts alone.
 */
import type { Test } from 'tap';
import { randomUUID } from 'node:crypto';
import { tokenFor } from './stack.ts';
import { ACTIONS, PUBLISHER_IDS, PUBLISHER_SLUGS, RESOURCES, SEEDED, SUCCESS, allowed, roleAt, type PublisherSlug, type Resource } from './policy.ts';

/** An answer: status, content type and the parsed JSON body (the text when it is not JSON). */
export type Res = { status: number; contentType: string; body: any };

/**
 * Where the matrix sends its requests: `base()` is called once per request (a sidecar's public
 * URL); `fingerprint`, when given, is compared before and after every deny (the database must be
 * unchanged).
 */
export type MatrixTarget = { base: () => string; fingerprint?: () => Promise<string> };

/** A catalog request as the seeded user `email` (a token from the real sign-in flow) in `publisher`'s context. */
export async function call(target: MatrixTarget, email: string, method: string, path: string, publisher: PublisherSlug | null, body?: unknown): Promise<Res> {
  const headers: Record<string, string> = { authorization: `Bearer ${await tokenFor(email)}` };
  if (publisher) headers['x-publisher-id'] = PUBLISHER_IDS[publisher];
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${target.base()}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    /* keep the text */
  }
  return { status: res.status, contentType: res.headers.get('content-type') ?? '', body: parsed };
}

/** The user who creates fixture rows in a publisher: its admin (the system admin where none). */
export function fixtureCreator(p: PublisherSlug): string {
  return Object.keys(SEEDED).find((e) => SEEDED[e]!.roles[p] === 'admin') ?? 'sysadmin@example.com';
}

/** A valid create body for `resource` (`workId`: the work a recording belongs to). */
export function payload(resource: Resource, tag: string, workId: string): Record<string, unknown> {
  switch (resource) {
    case 'works':
      return { title: `Matrix ${tag}`, language: 'en' };
    case 'songwriters':
      return { first_name: 'Matrix', last_name: tag };
    case 'recordings':
      return { title: `Matrix ${tag}`, work_id: workId, duration_ms: 180_000 };
  }
}
function patch(resource: Resource, tag: string): Record<string, unknown> {
  return resource === 'songwriters' ? { last_name: `Patched ${tag}` } : { title: `Patched ${tag}` };
}

/** The fixtures of one matrix run: a work per publisher (and per creator) that recordings can point at. */
export type Fixtures = { workFor: Map<string, string> };

/** Create a row in `publisher` as `email` through the target; @returns its id; @throws unless 201. */
export async function createRow(target: MatrixTarget, fx: Fixtures, email: string, publisher: PublisherSlug, resource: Resource): Promise<string> {
  const tag = randomUUID().slice(0, 8);
  const work = fx.workFor.get(`${email}|${publisher}`) ?? fx.workFor.get(publisher) ?? '';
  const res = await call(target, email, 'POST', `/api/v1/${resource}`, publisher, payload(resource, tag, work));
  if (res.status !== 201) throw new Error(`fixture ${resource} in ${publisher} as ${email}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body.id as string;
}

/** Create the works recordings of the matrix point at (one per publisher, one per songtrust creator). @throws unless each is 201 */
export async function matrixFixtures(target: MatrixTarget): Promise<Fixtures> {
  const fx: Fixtures = { workFor: new Map() }; // `${email}|${publisher}` or publisher → a work id the creator of the row can see
  for (const p of PUBLISHER_SLUGS) fx.workFor.set(p, await createRow(target, fx, fixtureCreator(p), p, 'works'));
  for (const c of ['creator1@songtrust.example', 'creator2@songtrust.example']) {
    fx.workFor.set(`${c}|songtrust`, await createRow(target, fx, c, 'songtrust', 'works'));
  }
  return fx;
}

async function expectStatus(t: Test, target: MatrixTarget, label: string, expected: number, run: () => Promise<Res>): Promise<void> {
  const before = expected >= 400 && target.fingerprint ? await target.fingerprint() : '';
  const res = await run();
  t.equal(res.status, expected, `${label} → ${expected}${res.status !== expected ? ` (got ${res.status}: ${JSON.stringify(res.body)})` : ''}`);
  if (expected >= 400) {
    t.match(res.contentType, /^application\/problem\+json/, `${label}: problem+json`);
    if (target.fingerprint) t.equal(await target.fingerprint(), before, `${label}: database unchanged`);
  }
}

/** Run the matrix of the seeded user `email` as assertions of `t`. */
export async function userMatrix(t: Test, target: MatrixTarget, fx: Fixtures, email: string): Promise<void> {
  const ownPublishers = PUBLISHER_SLUGS.filter((p) => SEEDED[email]!.roles[p]);
  for (const resource of RESOURCES) {
    for (const p of PUBLISHER_SLUGS) {
      for (const action of ACTIONS) {
        const owners = roleAt(email, p) === 'creator' && action !== 'list' && action !== 'create' ? [true, false] : [false];
        for (const ownsRow of owners) {
          const may = allowed(email, p, action, ownsRow);
          const label = `${action} ${resource} @${p}${owners.length > 1 ? (ownsRow ? ' (own row)' : " (another's row)") : ''}`;
          if (action === 'list') {
            await expectStatus(t, target, label, may ? 200 : 403, () => call(target, email, 'GET', `/api/v1/${resource}`, p));
            continue;
          }
          if (action === 'create') {
            const work = fx.workFor.get(`${email}|${p}`) ?? fx.workFor.get(p)!;
            await expectStatus(t, target, label, may ? 201 : 403, () =>
              call(target, email, 'POST', `/api/v1/${resource}`, p, payload(resource, randomUUID().slice(0, 8), work)),
            );
            continue;
          }
          // Row actions: a fresh row per case, so deletes do not disturb later cases.
          const otherCreator = email === 'creator1@songtrust.example' ? 'creator2@songtrust.example' : 'creator1@songtrust.example';
          const rowCreator = roleAt(email, p) === 'creator' ? (ownsRow ? email : otherCreator) : fixtureCreator(p);
          const id = await createRow(target, fx, rowCreator, p, resource);
          const method = action === 'get' ? 'GET' : action === 'update' ? 'PATCH' : 'DELETE';
          const body = action === 'update' ? patch(resource, randomUUID().slice(0, 8)) : undefined;
          // 1. the row's own publisher as context
          await expectStatus(t, target, label, may ? SUCCESS[action] : 403, () => call(target, email, method, `/api/v1/${resource}/${id}`, p, body));
          // 2. another publisher of the user's as context: the PDP may allow (the user reaches the
          //    row through p), but the catalog API then applies the role the user has in that
          //    context (403 when it does not allow the action) and RLS hides the row (404).
          for (const other of ownPublishers.filter((o) => o !== p)) {
            if (may && action === 'delete') continue; // already deleted above
            const expected = may && allowed(email, other, action, true) ? 404 : 403;
            await expectStatus(t, target, `${label} with context @${other}`, expected, () => call(target, email, method, `/api/v1/${resource}/${id}`, other, body));
          }
        }
      }
    }
  }
}
