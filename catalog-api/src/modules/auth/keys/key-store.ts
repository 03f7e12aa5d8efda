/**
 * The issuer's signing keys: kept in `signing_keys` with the private half sealed under the KEK
 * (secrets.ts), published as a JWKS (RFC 7517), rotated without a window in which a verifier meets
 * a token whose key it has not seen.
 *
 * Rotation (RFC 7517 §5 and the usual "publish before use" practice, cf. OpenID Connect Core
 * §10.1.1): there is always a `next` key in the JWKS besides the `active` one. `rotate` promotes
 * `next` to `active` — only once it has been published for `publishAheadMs` (verifiers such as the
 * sidecar cache the JWKS for at most that long, so they all know it) — retires the old active key,
 * and creates a new `next`. A retired key stays in the JWKS until `expiresAt` = retirement +
 * the access-token lifetime + 60 s of clock skew (every token it signed has expired by then); rotate
 * deletes retired keys past that time.
 *
 * Every process reloads the keys every `reloadMs`, so after a rotation all of them sign with the new
 * key within that time; tokens signed meanwhile with the retired key still verify.
 */
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type CryptoKey, type JWK } from 'jose';
import type { EntityManager } from '@mikro-orm/postgresql';
import { query, type Orm } from '../../../db/orm.ts';
import { problem } from '../../../errors.ts';
import { seal, unseal, type Kek } from '../secrets.ts';
import { SigningKey } from './signing-key.entity.ts';

/** The algorithm of new keys (ES256: ECDSA P-256 with SHA-256, RFC 7518 §3.4). */
export const KEY_ALG = 'ES256' as const;
/** Clock skew allowed for when a retired key may leave the JWKS (ms). */
export const RETIRE_SKEW_MS = 60_000;

/** The key that signs now. */
export type ActiveKey = { kid: string; alg: string; privateKey: CryptoKey };

/** The loaded key set of one process. */
export type IssuerKeys = {
  /**
   * @throws ProblemError 503 when the active key cannot be used (sealed under another KEK: see
   *   {@link replaceUnreadableKeys}); Error when the database cannot be read
   */
  signingKey(): Promise<ActiveKey>;
  /** The public JWKS: next, active and still-published retired keys. */
  jwks(): Promise<{ keys: JWK[] }>;
  /** Reload from the database now. */
  reload(): Promise<void>;
  /** Stop the reload timer and wait for a load in progress (so the pool can close under it). */
  close(): Promise<void>;
};

/** Serialise key changes across processes for the rest of `em`'s transaction (advisory lock). */
const lockKeys = (em: EntityManager) => query(em, `select pg_advisory_xact_lock(hashtextextended('signing_keys', 0))`);

/** Retire `key`: it stays published until every token it can have signed has expired. */
function retire(key: SigningKey, now: Date, accessTokenTtlMs: number): void {
  key.status = 'retired';
  key.retiredAt = now;
  key.expiresAt = new Date(now.getTime() + accessTokenTtlMs + RETIRE_SKEW_MS);
}

async function newKey(em: EntityManager, kek: Kek, status: 'next' | 'active', now: Date): Promise<SigningKey> {
  const { privateKey } = await generateKeyPair(KEY_ALG, { extractable: true });
  const privateJwk = await exportJWK(privateKey);
  const { d: _d, ...publicJwk } = privateJwk;
  const kid = await calculateJwkThumbprint(publicJwk);
  return em.create(SigningKey, {
    kid,
    alg: KEY_ALG,
    publicJwk: { ...publicJwk, kid, alg: KEY_ALG, use: 'sig' },
    privateJwe: await seal(kek, JSON.stringify(privateJwk)),
    status,
    createdAt: now,
    activatedAt: status === 'active' ? now : null,
  });
}

/**
 * Make sure an active and a next key exist (first start of a fresh database). Idempotent and safe
 * to run from several processes at once.
 * @returns the kids it created (empty when both existed)
 */
export async function ensureKeys(orm: Orm, kek: Kek): Promise<string[]> {
  return orm.em.fork().transactional(async (em: EntityManager) => {
    await lockKeys(em);
    const now = new Date();
    const created: SigningKey[] = [];
    if (!(await em.findOne(SigningKey, { status: 'active' }))) created.push(await newKey(em, kek, 'active', now));
    if (!(await em.findOne(SigningKey, { status: 'next' }))) created.push(await newKey(em, kek, 'next', now));
    return created.map((k) => k.kid);
  });
}

/** What {@link rotateKeys} did. */
export type RotationResult = { activated: string; retired: string | null; next: string; deleted: string[] };

/**
 * Rotate: next → active, active → retired (published until it can have signed nothing still
 * valid), a new next, and delete retired keys past their time.
 * @param opts.publishAheadMs how long the next key must have been published (ms)
 * @param opts.accessTokenTtlMs the access-token lifetime (ms)
 * @param opts.force promote a next key younger than `publishAheadMs` (verifiers that cached the JWKS
 *   refetch it when they meet the new `kid`, after their cooldown)
 * @throws Error when there is no next key, or it is too young and `force` is not set
 */
export async function rotateKeys(orm: Orm, kek: Kek, opts: { publishAheadMs: number; accessTokenTtlMs: number; force?: boolean }): Promise<RotationResult> {
  return orm.em.fork().transactional(async (em: EntityManager) => {
    await lockKeys(em);
    const now = new Date();
    const next = await em.findOne(SigningKey, { status: 'next' });
    if (!next) throw new Error('no next key to promote: start the catalog API once, or run `npm run keys -- init`');
    const age = now.getTime() - next.createdAt.getTime();
    if (age < opts.publishAheadMs && !opts.force) {
      const wait = Math.ceil((opts.publishAheadMs - age) / 1000);
      throw new Error(`the next key ${next.kid} has been published for ${Math.floor(age / 1000)} s; verifiers may not know it yet. Retry in ${wait} s, or pass --force`);
    }
    const active = await em.findOne(SigningKey, { status: 'active' });
    const expired = await em.find(SigningKey, { status: 'retired', expiresAt: { $lte: now } });
    if (active) retire(active, now, opts.accessTokenTtlMs);
    // The unique "one active" index must never see two: retire first.
    await em.flush();
    next.status = 'active';
    next.activatedAt = now;
    await em.flush();
    const fresh = await newKey(em, kek, 'next', now);
    em.remove(expired);
    await em.flush();
    return { activated: next.kid, retired: active?.kid ?? null, next: fresh.kid, deleted: expired.map((k) => k.kid) };
  });
}

/** Whether this KEK opens a key's private half. */
async function opens(kek: Kek, key: SigningKey): Promise<boolean> {
  try {
    await unseal(kek, key.privateJwe);
    return true;
  } catch {
    return false;
  }
}

/** The active and next keys, and whether `kek` opens each (`npm run keys -- check`). */
export async function checkKeys(orm: Orm, kek: Kek): Promise<Array<{ kid: string; status: string; readable: boolean }>> {
  const rows = await orm.em.fork().find(SigningKey, { status: { $in: ['active', 'next'] } }, { orderBy: { createdAt: 'asc' } });
  return Promise.all(rows.map(async (k) => ({ kid: k.kid, status: k.status, readable: await opens(kek, k) })));
}

/** What {@link replaceUnreadableKeys} did. */
export type ReplacementResult = { retired: string[]; deleted: string[]; created: string[] };

/**
 * Recovery after the KEK was lost or replaced: the active key this KEK cannot open is retired (its
 * public half stays in the JWKS until every token it signed has expired, as in a rotation), a next
 * key it cannot open is deleted (it never signed anything), and new keys sealed under `kek` take
 * their places. Keys this KEK opens are left alone; so a second run changes nothing.
 * @param opts.accessTokenTtlMs the access-token lifetime (ms)
 */
export async function replaceUnreadableKeys(orm: Orm, kek: Kek, opts: { accessTokenTtlMs: number }): Promise<ReplacementResult> {
  const done = await orm.em.fork().transactional(async (em: EntityManager) => {
    await lockKeys(em);
    const now = new Date();
    const r: ReplacementResult = { retired: [], deleted: [], created: [] };
    for (const key of await em.find(SigningKey, { status: { $in: ['active', 'next'] } })) {
      if (await opens(kek, key)) continue;
      if (key.status === 'next') {
        em.remove(key);
        r.deleted.push(key.kid);
      } else {
        retire(key, now, opts.accessTokenTtlMs);
        r.retired.push(key.kid);
      }
    }
    await em.flush();
    return r;
  });
  done.created = await ensureKeys(orm, kek);
  return done;
}

/** List the keys, newest first (for `npm run keys -- list`). */
export async function listKeys(orm: Orm): Promise<SigningKey[]> {
  return orm.em.fork().find(SigningKey, {}, { orderBy: { createdAt: 'desc' } });
}

/**
 * Load the key set (lazily, on first use — the API starts while the database is still coming up;
 * a fresh database gets its first keys then) and keep it fresh.
 * @param opts.reloadMs reload period (ms); 0 = only on {@link IssuerKeys.reload}
 * @param opts.onError told of a failed reload, and (once per cause) of an active key this KEK
 *   cannot open — sign-in then answers 503 while the JWKS is still served
 */
export function createIssuerKeys(opts: { orm: Orm; kek: Kek; reloadMs: number; onError?: (err: unknown) => void }): IssuerKeys {
  // An active key this KEK cannot open leaves `active` null; the JWKS is public and still served.
  type Loaded = { active: ActiveKey | null; published: JWK[]; loadedAt: number };
  let reported: string | null = null;
  let current: Promise<Loaded> | null = null;
  const privateKeys = new Map<string, CryptoKey>();

  const read = () => opts.orm.em.fork().find(SigningKey, {}, { orderBy: { createdAt: 'asc' } });
  const load = async (): Promise<Loaded> => {
    const now = new Date();
    let rows = await read();
    // A fresh database: the first process to look creates the active and next keys.
    if (!rows.some((k) => k.status === 'active') || !rows.some((k) => k.status === 'next')) {
      await ensureKeys(opts.orm, opts.kek);
      rows = await read();
    }
    const published = rows.filter((k) => k.status !== 'retired' || (k.expiresAt != null && k.expiresAt > now)).map((k) => k.publicJwk);
    const row = rows.find((k) => k.status === 'active');
    let active: ActiveKey | null = null;
    let unusable: string | null = row ? null : 'no active key';
    if (row) {
      let privateKey = privateKeys.get(row.kid);
      if (!privateKey) {
        try {
          privateKey = (await importJWK(JSON.parse(await unseal(opts.kek, row.privateJwe)) as JWK, row.alg)) as CryptoKey;
          privateKeys.set(row.kid, privateKey);
        } catch (err) {
          unusable = `the active key ${row.kid} cannot be opened: ${(err as Error).message} (run \`npm run keys -- reset\` to replace it)`;
        }
      }
      if (privateKey) active = { kid: row.kid, alg: row.alg, privateKey };
    }
    // Said once per cause, not at every reload.
    if (unusable && unusable !== reported) opts.onError?.(new Error(unusable));
    reported = unusable;
    return { active, published, loadedAt: Date.now() };
  };
  // Loads in flight: close() waits for them, since closing the pool under a query never settles.
  const inFlight = new Set<Promise<unknown>>();
  const tracked = <T>(p: Promise<T>): Promise<T> => {
    inFlight.add(p);
    p.then(() => inFlight.delete(p), () => inFlight.delete(p));
    return p;
  };
  const reload = async () => {
    const next = tracked(load());
    await next; // a failed reload keeps the previous set
    current = next;
  };
  const get = () => (current ??= tracked(load()).catch((err) => {
    current = null;
    throw err;
  }));
  const timer = opts.reloadMs > 0 ? setInterval(() => reload().catch((err) => opts.onError?.(err)), opts.reloadMs) : null;
  timer?.unref();

  return {
    async signingKey() {
      const { active } = await get();
      if (!active) throw problem.unavailable('Sign-in is unavailable: the issuer cannot use its signing key. The operator\'s logs say why.');
      return active;
    },
    async jwks() {
      return { keys: (await get()).published };
    },
    reload,
    close: async () => {
      if (timer) clearInterval(timer);
      await Promise.allSettled([...inFlight]);
    },
  };
}
