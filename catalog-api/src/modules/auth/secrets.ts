/**
 * Secrets the sign-in service keeps: sealing under the key-encryption key (KEK) and opaque tokens.
 *
 * - Sealing: a compact JWE (RFC 7516) with `alg: dir`, `enc: A256GCM` (RFC 7518 §4.5, §5.3) under a
 *   256-bit KEK read from ISSUER_KEK_FILE (base64url of 32 random bytes). The JWE header names the
 *   KEK by `kid` (first 16 characters of its SHA-256, base64url) so a wrong KEK is reported as such.
 *   Used for the issuer's private keys and TOTP secrets; the database only ever holds the JWE.
 * - Opaque tokens (refresh, reset, verification, MFA challenge, recovery codes): random bytes from
 *   the CSPRNG, stored as their SHA-256 digest. A digest (not a slow hash) is right here: the tokens
 *   carry ≥ 80 bits of entropy, so there is nothing to brute-force.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync, existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { CompactEncrypt, compactDecrypt, decodeProtectedHeader } from 'jose';

/** A loaded key-encryption key. */
export type Kek = { key: Uint8Array; kid: string };

const kidOf = (key: Uint8Array) => createHash('sha256').update(key).digest('base64url').slice(0, 16);

/**
 * Read the KEK from `file`.
 * @throws Error naming the file when it is missing or does not hold 32 bytes (base64url)
 */
export function loadKek(file: string): Kek {
  let text: string;
  try {
    text = readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new Error(`ISSUER_KEK_FILE ${file}: cannot read the key-encryption key (run \`npm run keys -- init\`)`, { cause: err });
  }
  const key = new Uint8Array(Buffer.from(text, 'base64url'));
  if (key.length !== 32) throw new Error(`ISSUER_KEK_FILE ${file}: expected 32 bytes in base64url, found ${key.length}`);
  return { key, kid: kidOf(key) };
}

/**
 * Create a new random KEK at `file` (mode 0600) unless one exists.
 * @returns true when a key was written
 */
export function ensureKekFile(file: string): boolean {
  if (existsSync(file)) return false;
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, randomBytes(32).toString('base64url') + '\n', { mode: 0o600 });
  return true;
}

/** Seal `plaintext` as a compact JWE (dir + A256GCM) under `kek`. */
export async function seal(kek: Kek, plaintext: string): Promise<string> {
  return new CompactEncrypt(new TextEncoder().encode(plaintext)).setProtectedHeader({ alg: 'dir', enc: 'A256GCM', kid: kek.kid }).encrypt(kek.key);
}

/**
 * Open a JWE made by {@link seal}.
 * @throws Error when it was sealed under another KEK, or is not a valid JWE for this key
 */
export async function unseal(kek: Kek, jwe: string): Promise<string> {
  const { kid } = decodeProtectedHeader(jwe);
  if (kid !== kek.kid) throw new Error(`sealed under key-encryption key ${String(kid)}, but ISSUER_KEK_FILE holds ${kek.kid}`);
  const { plaintext } = await compactDecrypt(jwe, kek.key, { keyManagementAlgorithms: ['dir'], contentEncryptionAlgorithms: ['A256GCM'] });
  return new TextDecoder().decode(plaintext);
}

/** A new opaque token: `bytes` random bytes (default 32 = 256 bits), base64url. */
export function newOpaqueToken(bytes = 32): string {
  return randomBytes(bytes).toString('base64url');
}

/** SHA-256 of `token`, base64url: how opaque tokens are stored and looked up. */
export function digest(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('base64url');
}
